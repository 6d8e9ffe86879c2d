//! Which database URLs `latchkey_store::open` (what `latchkey serve` now
//! uses) accepts. Before the shared `open`, `serve` took `sqlite://PATH`
//! and `postgres(ql)://` only, and refused anything else as unsupported.
//!
//! A test binary of its own: it changes the process's working directory.

use latchkey_store::{
    crypto::{Keyring, MasterKey},
    Options,
};

/// `sqlite::memory:` was refused by `serve`, and must stay refused: the
/// shared `open` once accepted it, and the SQLite engine took sqlx's
/// in-memory name (`file:sqlx-in-memory-N`) for a path, creating that file
/// and its `.lock` in the working directory, and served a store gone when
/// the process ended (with a master key and an admin token written for it).
#[tokio::test]
async fn an_in_memory_url_is_refused_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let opened = latchkey_store::open(
        "sqlite::memory:",
        Keyring::new(MasterKey::generate()),
        &Options::default(),
    )
    .await;
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    if let Ok(store) = &opened {
        store.close().await;
    }
    assert_eq!(
        left,
        Vec::<String>::new(),
        "files created in the working directory"
    );
    assert!(
        opened.is_err(),
        "sqlite::memory: is not a store latchkey serves (serve refused it before)"
    );
}
