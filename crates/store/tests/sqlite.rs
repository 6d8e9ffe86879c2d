//! The SQLite adapter against the conformance suite, and the properties only
//! a file on disk has: no plaintext in any file, and a wrong key refused.

use latchkey_store::{
    conformance,
    crypto::{Keyring, MasterKey},
    NewSecret, OnConflict, SecretKind, SqliteStore, Store,
};

fn url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/latchkey.db", dir.path().display())
}

#[tokio::test]
async fn conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&url(&dir), Keyring::new(MasterKey::generate()))
        .await
        .unwrap();
    conformance::run_all(&store).await;
}

fn files_contain(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).ok()?;
            bytes
                .windows(needle.len())
                .any(|w| w == needle)
                .then(|| path.display().to_string())
        })
        .collect()
}

#[tokio::test]
async fn no_plaintext_on_disk_and_wrong_key_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::generate();
    let store = SqliteStore::open(&url(&dir), Keyring::new(key.clone()))
        .await
        .unwrap();
    let admin = conformance::admin_token();
    store.bootstrap(&admin).await.unwrap();
    let env = store.environment(&admin.workspace_id, "").await.unwrap();
    let value = "plaintext-canary-7f3a9c";
    store
        .create_secret(&NewSecret {
            workspace_id: admin.workspace_id.clone(),
            environment_id: env.id.clone(),
            kind: SecretKind::Named("canary".to_owned()),
            created_by: "admin".to_owned(),
            contents: [("CANARY".to_owned(), value.to_owned())].into(),
            on_conflict: OnConflict::Fail,
        })
        .await
        .unwrap();
    // While open (WAL holds the latest pages) and after closing.
    assert_eq!(
        files_contain(dir.path(), value.as_bytes()),
        Vec::<String>::new()
    );
    store.close().await;
    assert_eq!(
        files_contain(dir.path(), value.as_bytes()),
        Vec::<String>::new()
    );

    let before: Vec<_> = snapshot(dir.path());
    let err = SqliteStore::open(&url(&dir), Keyring::new(MasterKey::generate()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot decrypt this store"),
        "{err}"
    );
    assert_eq!(
        snapshot(dir.path()),
        before,
        "a refused start changes no file"
    );

    let reopened = SqliteStore::open(&url(&dir), Keyring::new(key))
        .await
        .unwrap();
    let secret = reopened
        .secret_by_name(&admin.workspace_id, &env.id, "canary")
        .await
        .unwrap();
    assert_eq!(secret.contents["CANARY"], value);
}

fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}
