//! One value of the filter's shared data, kept in a file across restarts of the standalone proxy: the
//! key is `[state] shared_data_key` (by default the credential filter's OAuth2 token state).
//!
//! With a rotating refresh token, the newest refresh token lives only in shared data: a restart that
//! went back to the configured one would send a token the endpoint already spent (and may revoke the
//! whole token family for it). The filter cannot write files, so the proxy does it: before any VM starts
//! it seeds shared data from the file ([`StateFile::load_into`]), and after VM event-loop turns it writes
//! the state back whenever its cas changed ([`StateFile::persist_if_changed`]): to a temporary file in
//! the same directory, mode 0600, fsynced, then renamed over the old one, so a crash leaves either the
//! old or the new state, never a torn one. The file holds tokens: its contents never appear in errors.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use host_harness::shared::SharedRegistry;

/// Largest state file accepted; a token state is a few hundred bytes.
const MAX_STATE_BYTES: u64 = 256 * 1024;

/// Why the state file could not be used. Never carries the file's contents.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file exists but could not be read.
    #[error("cannot read the token state file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The file is not a JSON object (or is implausibly large).
    #[error(
        "the token state file {path} is not a token state document; move it away to start from the configured token"
    )]
    Invalid {
        /// The file.
        path: PathBuf,
    },
    /// The new state could not be written.
    #[error("cannot write the token state file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
}

/// One state file bound to one shared-data key of one VM id.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    vm_id: String,
    key: String,
    /// The cas of the value last read from or written to the file.
    last_cas: Option<u32>,
}

impl StateFile {
    /// A state file at `path` for `key` in the shared data of `vm_id` (the plugin's VM id).
    pub fn new(path: impl Into<PathBuf>, vm_id: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            vm_id: vm_id.into(),
            key: key.into(),
            last_cas: None,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seeds shared data from the file, before any VM starts. Returns whether a state was loaded: a
    /// missing file is a first start (`Ok(false)`), and a key that already has a value is left alone.
    ///
    /// # Errors
    /// [`StateFileError::Read`] or [`StateFileError::Invalid`]: the proxy should refuse to start rather
    /// than fall back to a refresh token that may be spent.
    pub fn load_into(&mut self, registry: &SharedRegistry) -> Result<bool, StateFileError> {
        let bytes = match read_bounded(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                return Err(StateFileError::Invalid {
                    path: self.path.clone(),
                });
            }
            Err(source) => {
                return Err(StateFileError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let is_object = matches!(
            serde_json::from_slice::<serde_json::Value>(&bytes),
            Ok(serde_json::Value::Object(_))
        );
        if !is_object {
            return Err(StateFileError::Invalid {
                path: self.path.clone(),
            });
        }
        if registry.get(&self.vm_id, self.key.as_bytes()).is_some() {
            return Ok(false);
        }
        let cas = registry.set(&self.vm_id, self.key.as_bytes(), &bytes);
        self.last_cas = Some(cas);
        Ok(true)
    }

    /// Writes the current state to the file when it changed since the last load or write. Returns
    /// whether it wrote. Cheap when nothing changed (one lookup): call it after every VM event-loop turn
    /// or on a short interval.
    ///
    /// # Errors
    /// [`StateFileError::Write`]; the next call tries again.
    pub fn persist_if_changed(
        &mut self,
        registry: &SharedRegistry,
    ) -> Result<bool, StateFileError> {
        let Some((value, cas)) = registry.get(&self.vm_id, self.key.as_bytes()) else {
            return Ok(false);
        };
        if self.last_cas == Some(cas) || value.is_empty() {
            return Ok(false);
        }
        write_atomically(&self.path, &value).map_err(|source| StateFileError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.last_cas = Some(cas);
        Ok(true)
    }
}

fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    if file.metadata()?.len() > MAX_STATE_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "too large"));
    }
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, MAX_STATE_BYTES + 1), &mut bytes)?;
    Ok(bytes)
}

/// Temp file beside the target, mode 0600, fsync, rename, fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".{}.tmp", std::process::id()));
    let temporary = directory.join(temporary_name);
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, path)?;
        // The rename itself must survive a crash too.
        File::open(&directory)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let path = std::env::temp_dir()
                .join(format!("state-file-{name}-{}-{nanos}", std::process::id()));
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const KEY: &str = "credential_filter.oauth2.oauth.state";

    #[test]
    fn a_missing_file_is_a_first_start() {
        let dir = TempDir::new("missing");
        let registry = SharedRegistry::new();
        let mut file = StateFile::new(dir.0.join("state.json"), "", KEY);
        assert!(!file.load_into(&registry).unwrap());
        assert_eq!(registry.get("", KEY.as_bytes()), None);
        assert!(
            !file.persist_if_changed(&registry).unwrap(),
            "nothing to write yet"
        );
        assert!(!dir.0.join("state.json").exists());
    }

    #[test]
    fn state_round_trips_through_the_file_with_mode_0600() {
        let dir = TempDir::new("round-trip");
        let path = dir.0.join("state.json");
        let registry = SharedRegistry::new();
        let mut file = StateFile::new(&path, "vm", KEY);
        registry.set(
            "vm",
            KEY.as_bytes(),
            br#"{"v":1,"generation":1,"refresh_token":"rt-1"}"#,
        );
        assert!(file.persist_if_changed(&registry).unwrap());
        assert!(
            !file.persist_if_changed(&registry).unwrap(),
            "unchanged: no write"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        registry.set(
            "vm",
            KEY.as_bytes(),
            br#"{"v":1,"generation":2,"refresh_token":"rt-2"}"#,
        );
        assert!(file.persist_if_changed(&registry).unwrap());
        let leftovers: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers,
            vec![std::ffi::OsString::from("state.json")],
            "no temporary file left behind"
        );

        // A restart: a fresh registry is seeded from the file, and the seeded value is not written back.
        let restarted = SharedRegistry::new();
        let mut again = StateFile::new(&path, "vm", KEY);
        assert!(again.load_into(&restarted).unwrap());
        let (value, _) = restarted.get("vm", KEY.as_bytes()).unwrap();
        assert_eq!(value, br#"{"v":1,"generation":2,"refresh_token":"rt-2"}"#);
        assert!(!again.persist_if_changed(&restarted).unwrap());
    }

    #[test]
    fn a_corrupt_file_is_refused_without_quoting_it() {
        let dir = TempDir::new("corrupt");
        let path = dir.0.join("state.json");
        fs::write(&path, "rt-secret-garbage").unwrap();
        let mut file = StateFile::new(&path, "", KEY);
        let error = file.load_into(&SharedRegistry::new()).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("not a token state document"), "{message}");
        assert!(!message.contains("rt-secret"), "{message}");
        fs::write(&path, vec![b' '; (MAX_STATE_BYTES + 1) as usize]).unwrap();
        assert!(matches!(
            file.load_into(&SharedRegistry::new()),
            Err(StateFileError::Invalid { .. })
        ));
    }

    #[test]
    fn an_existing_value_is_not_overwritten_by_the_file() {
        let dir = TempDir::new("existing");
        let path = dir.0.join("state.json");
        fs::write(&path, r#"{"v":1,"generation":1}"#).unwrap();
        let registry = SharedRegistry::new();
        registry.set("", KEY.as_bytes(), br#"{"v":1,"generation":7}"#);
        let mut file = StateFile::new(&path, "", KEY);
        assert!(!file.load_into(&registry).unwrap());
        assert_eq!(
            registry.get("", KEY.as_bytes()).unwrap().0,
            br#"{"v":1,"generation":7}"#
        );
    }

    #[test]
    fn an_unwritable_directory_is_a_write_error() {
        let dir = TempDir::new("unwritable");
        let registry = SharedRegistry::new();
        registry.set("", KEY.as_bytes(), b"{}");
        let mut file = StateFile::new(dir.0.join("no-such-dir").join("state.json"), "", KEY);
        let error = file.persist_if_changed(&registry).unwrap_err();
        assert!(matches!(error, StateFileError::Write { .. }));
        assert!(error.to_string().contains("no-such-dir"));
    }
}
