//! Compiled modules: cached on disk per directory (with the `cache` feature), shared in memory across
//! plugins; handles are thread-safe.

use host_harness::{Plugin, Vm};

use crate::support::{StartVm, module};

fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
fn assert_send<T: Send>() {}

#[test]
fn plugins_are_send_sync_and_cheap_to_clone_and_vms_can_move_to_a_worker_thread() {
    assert_send_sync_clone::<Plugin>();
    assert_send::<Vm>();
    let vm = Plugin::builder().module_bytes(module("")).start();
    let moved = std::thread::spawn(move || {
        let mut vm = vm;
        vm.stream().map(|stream| stream.id())
    });
    assert!(moved.join().unwrap().is_ok());
}

#[cfg(feature = "cache")]
#[test]
fn a_cache_directory_receives_the_compiled_module() {
    let dir = std::env::temp_dir().join(format!("host-harness-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A body no other test uses, so this compilation cannot come from the in-memory memo.
    let wat = module("(func (export \"proxy_on_tick\") (param i32) (nop) (nop) (nop))");
    let plugin = Plugin::builder()
        .module_bytes(wat)
        .cache_dir(&dir)
        .build()
        .unwrap();
    plugin.start_vm().unwrap();
    let files = walk(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !files.is_empty(),
        "no cache entries under {}",
        dir.display()
    );
}

#[cfg(feature = "cache")]
#[test]
fn an_unusable_cache_directory_is_reported_with_its_path() {
    let file = std::env::temp_dir().join(format!("host-harness-cache-file-{}", std::process::id()));
    std::fs::write(&file, b"not a directory").unwrap();
    let error = Plugin::builder()
        .module_bytes(module(""))
        .cache_dir(&file)
        .build()
        .unwrap_err();
    let _ = std::fs::remove_file(&file);
    assert!(
        error.to_string().starts_with(&format!(
            "cannot set up the compiled-module cache in {}",
            file.display()
        )),
        "{error}"
    );
}

#[cfg(feature = "cache")]
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}
