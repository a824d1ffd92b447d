//! Engines and compiled modules, shared by every plugin of the process.
//!
//! Compiling a module is by far the most expensive step (Cranelift takes on the order of a second for a
//! real filter); a proxy compiles once at start, but a test suite builds a plugin per test. Plugins with
//! the same engine settings therefore share one `Engine` (as wasmtime intends) and a module compiled for
//! the same bytes is reused. The memo is bounded and compares the full module bytes, so two modules that
//! merely hash alike never share code. On-disk caching across processes is wasmtime's own cache
//! (`Config::cache`), enabled per cache directory when the crate's `cache` feature is on.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use wasmtime::{Config, Engine, Module};

use crate::error::HarnessError;

/// How often the engine's epoch advances; callback deadlines are counted in these ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Compiled modules kept for reuse; the oldest goes first.
const REMEMBERED_MODULES: usize = 16;

#[derive(Default)]
struct Compiled {
    engines: HashMap<Option<PathBuf>, Engine>,
    modules: VecDeque<RememberedModule>,
}

struct RememberedModule {
    cache_dir: Option<PathBuf>,
    digest: u64,
    bytes: Arc<[u8]>,
    module: Module,
}

fn compiled() -> &'static Mutex<Compiled> {
    static COMPILED: OnceLock<Mutex<Compiled>> = OnceLock::new();
    COMPILED.get_or_init(Mutex::default)
}

fn digest(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// The engine for these settings and `bytes` compiled on it, reusing earlier work where it can.
///
/// # Errors
/// [`HarnessError::Engine`], [`HarnessError::Cache`], [`HarnessError::Compile`].
pub(crate) fn compile(
    bytes: &[u8],
    cache_dir: Option<&Path>,
) -> Result<(Engine, Module), HarnessError> {
    let key = cache_dir.map(Path::to_path_buf);
    let digest = digest(bytes);
    let engine = {
        let mut memo = compiled()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let reused = memo.modules.iter().find(|entry| {
            entry.cache_dir == key && entry.digest == digest && *entry.bytes == *bytes
        });
        if let Some(entry) = reused {
            return Ok((entry.module.engine().clone(), entry.module.clone()));
        }
        match memo.engines.get(&key) {
            Some(engine) => engine.clone(),
            None => {
                let engine = build_engine(cache_dir)?;
                start_epoch_ticker(&engine);
                memo.engines.insert(key.clone(), engine.clone());
                engine
            }
        }
    };
    // Compiled outside the lock: other plugins need not wait for this one.
    let module = Module::new(&engine, bytes)
        .map_err(|error| HarnessError::Compile(compile_error(bytes, &error)))?;
    let mut memo = compiled()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if memo.modules.len() >= REMEMBERED_MODULES {
        memo.modules.pop_front();
    }
    memo.modules.push_back(RememberedModule {
        cache_dir: key,
        digest,
        bytes: Arc::from(bytes),
        module: module.clone(),
    });
    Ok((engine, module))
}

fn build_engine(cache_dir: Option<&Path>) -> Result<Engine, HarnessError> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    // Without the `cache` feature the builder has no way to set a directory, so this is always `None`.
    #[cfg(not(feature = "cache"))]
    let _ = cache_dir;
    #[cfg(feature = "cache")]
    if let Some(dir) = cache_dir {
        let cache_error = |reason: String| HarnessError::Cache {
            path: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|error| cache_error(error.to_string()))?;
        let mut cache_config = wasmtime::CacheConfig::new();
        cache_config.with_directory(dir);
        let cache = wasmtime::Cache::new(cache_config)
            .map_err(|error| cache_error(format!("{error:#}")))?;
        config.cache(Some(cache));
    }
    Engine::new(&config).map_err(|error| HarnessError::Engine(format!("{error:#}")))
}

/// Advances the engine's epoch so long-running callbacks hit their deadline.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(error) = spawned {
        log::error!(
            "cannot start the epoch thread; callback deadlines will not be enforced: {error}"
        );
    }
}

/// The first bytes of every WebAssembly binary.
const WASM_MAGIC: &[u8] = b"\0asm";

/// One line saying why `bytes` did not compile. Anything that is not a WebAssembly binary is parsed as
/// WebAssembly text, and a text parse error quotes the offending source line: for a file that is not a
/// module at all (a token file named by mistake) that line could be a secret, so only its position is
/// given.
fn compile_error(bytes: &[u8], error: &wasmtime::Error) -> String {
    if bytes.starts_with(WASM_MAGIC) {
        return format!("{error:#}").replace('\n', "; ");
    }
    let text = format!("{error:#}");
    let position = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("--> "))
        .and_then(|location| {
            let mut parts = location.rsplit(':');
            let column = parts.next()?;
            let line = parts.next()?;
            Some(format!(
                " (text parse error at line {line}, column {column})"
            ))
        })
        .unwrap_or_default();
    format!(
        "not a WebAssembly binary (it does not start with \\0asm) nor valid WebAssembly text{position}"
    )
}
