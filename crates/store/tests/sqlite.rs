//! The SQLite adapter against the conformance suite, and the properties only
//! a file on disk has: no plaintext in any file, and a wrong key refused.

mod support;

use latchkey_store::audit::AuditEntry;
use latchkey_store::{
    conformance,
    crypto::{Keyring, MasterKey},
    NewSecret, NewToken, OnConflict, Revision, SecretKind, SqliteStore, Store,
    DEFAULT_KEEP_VERSIONS,
};

fn url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/latchkey.db", dir.path().display())
}

/// A new data dir and a store in it, for each check of the suite.
async fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&url(&dir), Keyring::new(MasterKey::generate()))
        .await
        .unwrap();
    (dir, store)
}

latchkey_store::conformance_tests!(fresh);

/// A new data dir and a bootstrapped store in it, sealed under `key`; and
/// its admin token.
async fn bootstrapped(key: &MasterKey) -> (tempfile::TempDir, SqliteStore, NewToken) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&url(&dir), Keyring::new(key.clone()))
        .await
        .unwrap();
    let admin = conformance::admin_token();
    store.bootstrap(&admin).await.unwrap();
    (dir, store, admin)
}

/// Opening the store in `dir` with another master key is refused, saying
/// why, and leaves every file of the data dir as it was.
async fn assert_wrong_key_refused_without_writing(dir: &tempfile::TempDir) {
    let before = snapshot(dir.path());
    let err = SqliteStore::open(&url(dir), Keyring::new(MasterKey::generate()))
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
    let key = MasterKey::generate();
    let (dir, store, admin) = bootstrapped(&key).await;
    let env = store.environment(&admin.workspace_id, "").await.unwrap();
    let value = "plaintext-canary-7f3a9c";
    store
        .create_secret(&NewSecret {
            workspace_id: admin.workspace_id.clone(),
            environment: env.id.clone(),
            environments: None,
            kind: SecretKind::Named("canary".to_owned()),
            created_by: "admin".to_owned(),
            contents: [("CANARY".to_owned(), value.to_owned())].into(),
            on_conflict: OnConflict::Fail,
            keep_versions: DEFAULT_KEEP_VERSIONS,
            audit: AuditEntry::server(),
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

    assert_wrong_key_refused_without_writing(&dir).await;

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

/// A write whose caller stops waiting (a client gone, a deadline) still
/// commits on SQLite; the lookup cache must hear of it all the same.
#[tokio::test]
async fn a_write_whose_caller_stops_waiting_still_reaches_the_cache() {
    use std::{future::Future, pin::pin, task::Context, task::Waker};

    let (_dir, store, admin) = bootstrapped(&MasterKey::generate()).await;
    let ws = admin.workspace_id.clone();
    let env = store.environment(&ws, "").await.unwrap();
    let secret = |value: &str, on_conflict| NewSecret {
        workspace_id: ws.clone(),
        environment: env.id.clone(),
        environments: None,
        kind: SecretKind::Named("dropped".to_owned()),
        created_by: "admin".to_owned(),
        contents: [("V".to_owned(), value.to_owned())].into(),
        on_conflict,
        keep_versions: DEFAULT_KEEP_VERSIONS,
        audit: AuditEntry::server(),
    };
    let (created, _) = store
        .create_secret(&secret("1", OnConflict::Fail))
        .await
        .unwrap();
    let id = created.summary.id;
    let looked_up = || async {
        store
            .secret_in_environment(&ws, "", "dropped")
            .await
            .unwrap()
            .expect("found")
            .contents["V"]
            .clone()
    };
    let committed = || async { store.secret_by_id(&ws, &id).await.unwrap().contents["V"].clone() };
    // Polled once (so the write has started), then dropped.
    fn start_and_drop<F: Future>(write: F) {
        let mut write = pin!(write);
        let _ = write.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    }
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(300));

    assert_eq!(looked_up().await, "1");
    start_and_drop(store.create_secret(&secret("2", OnConflict::Overwrite)));
    settle().await;
    assert_eq!(committed().await, "2", "the overwrite committed");
    assert_eq!(looked_up().await, "2", "the lookup saw the overwrite");

    let change = [("V".to_owned(), Some("3".to_owned()))];
    start_and_drop(store.update_secret(&ws, &id, &change, &Revision::by("test")));
    settle().await;
    assert_eq!(committed().await, "3", "the update committed");
    assert_eq!(looked_up().await, "3", "the lookup saw the update");

    start_and_drop(store.delete_secret(&ws, &id, &AuditEntry::server(), None));
    settle().await;
    let found = store
        .secret_in_environment(&ws, "", "dropped")
        .await
        .unwrap();
    assert!(found.is_none(), "the lookup saw the delete");
}

/// One database has one lock, whatever name it is opened by.
#[tokio::test]
async fn a_database_in_use_is_refused_by_any_name() {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::generate();
    let store = SqliteStore::open(&url(&dir), Keyring::new(key.clone()))
        .await
        .unwrap();
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(dir.path().join("latchkey.db"), &link).unwrap();
    let err = SqliteStore::open(
        &format!("sqlite://{}", link.display()),
        Keyring::new(key.clone()),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("in use by another latchkey server"),
        "{err}"
    );
    store.close().await;
    SqliteStore::open(&url(&dir), Keyring::new(key))
        .await
        .expect("free once closed")
        .close()
        .await;
}

/// A closed store's database file holds every write by itself: a copy of
/// the file alone (say, a backup taken by copying it after a stop) opens with
/// the last write in it. Closed many times over, because what this pins was
/// a race: the pool's close could return with its connection still open,
/// and the last writes then stayed in the `-wal` file only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_file_holds_every_write_by_itself() {
    let key = MasterKey::generate();
    let (dir, store, admin) = bootstrapped(&key).await;
    store.close().await;
    let ws = &admin.workspace_id;
    for i in 0..30 {
        let store = SqliteStore::open(&url(&dir), Keyring::new(key.clone()))
            .await
            .unwrap();
        let name = format!("s-{i}");
        store
            .create_secret(&conformance::named(
                ws,
                "",
                &name,
                [].into(),
                OnConflict::Fail,
            ))
            .await
            .unwrap();
        store.close().await;
        let alone = tempfile::tempdir().unwrap();
        std::fs::copy(
            dir.path().join("latchkey.db"),
            alone.path().join("latchkey.db"),
        )
        .unwrap();
        let copy = SqliteStore::open(&url(&alone), Keyring::new(key.clone()))
            .await
            .unwrap_or_else(|e| panic!("close {i}: the database file alone does not open: {e}"));
        let found = copy.secret_in_environment(ws, "", &name).await;
        copy.close().await;
        let found = found.map(|s| s.is_some());
        assert!(
            matches!(found, Ok(true)),
            "close {i}: the database file alone misses {name}: {found:?}"
        );
    }
}

/// A server that stopped without closing its store (killed) leaves its
/// latest writes in the WAL; a start with another key is refused all the
/// same, and changes no file (the WAL is not replayed, nothing is created).
#[tokio::test]
async fn a_wrong_key_after_an_unclean_stop_changes_no_file() {
    let (dir, store, admin) = bootstrapped(&MasterKey::generate()).await;
    let env = store.environment(&admin.workspace_id, "").await.unwrap();
    store
        .create_secret(&NewSecret {
            workspace_id: admin.workspace_id.clone(),
            environment: env.id.clone(),
            environments: None,
            kind: SecretKind::Named("s".to_owned()),
            created_by: "admin".to_owned(),
            contents: [("K".to_owned(), "v".to_owned())].into(),
            on_conflict: OnConflict::Fail,
            keep_versions: DEFAULT_KEEP_VERSIONS,
            audit: AuditEntry::server(),
        })
        .await
        .unwrap();
    // Never closed: its pools, its WAL and its lock stay as a killed
    // server's would.
    std::mem::forget(store);
    assert!(
        snapshot(dir.path())
            .iter()
            .any(|(name, _)| name.ends_with("-wal")),
        "the WAL holds the latest writes"
    );
    assert_wrong_key_refused_without_writing(&dir).await;
}

/// Finding 4 of the hardening review: one damaged ciphertext must not break
/// its environment's listing or the secret's deletion.
#[tokio::test]
async fn a_damaged_ciphertext_is_listed_deleted_and_named() {
    let (dir, store) = fresh().await;
    let file = dir.path().join("latchkey.db");
    conformance::damaged_ciphertext(&store, |secret_id| async move {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        let (mut ciphertext,): (Vec<u8>,) =
            sqlx::query_as("SELECT ciphertext FROM secret_versions WHERE secret_id = $1")
                .bind(&secret_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        ciphertext[20] ^= 1;
        sqlx::query("UPDATE secret_versions SET ciphertext = $1 WHERE secret_id = $2")
            .bind(ciphertext)
            .bind(&secret_id)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    })
    .await;
    store.close().await;
}

/// A store made by the first schema, before versions were kept, migrates:
/// each secret's contents become its current version.
#[tokio::test]
async fn a_store_without_versions_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Keyring::new(MasterKey::generate());
    let old = conformance::Unversioned::new();
    let pool = sqlx::SqlitePool::connect(&format!("{}?mode=rwc", url(&dir)))
        .await
        .unwrap();
    support::migrate_first(&pool, "sqlite", &["0001_initial.sql"]).await;
    let blob = |bytes: &[u8]| {
        format!(
            "X'{}'",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    };
    sqlx::raw_sql(&old.seed_sql(&keyring, blob))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let store = SqliteStore::open(&url(&dir), keyring).await.unwrap();
    conformance::history_after_migration(&store, &old).await;
    store.close().await;
}

/// Issue 14: rows of the audit log edited, deleted or swapped in the file
/// are found by verify; an event that cannot be written fails its change.
#[tokio::test]
async fn audit_tampering_is_found_and_a_failed_event_fails_closed() {
    let (dir, store) = fresh().await;
    let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let exec = move |sql: String| {
        let url = url.clone();
        Box::pin(async move {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query(&sql).execute(&pool).await.unwrap();
            pool.close().await;
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    };
    conformance::audit_tampering(
        &store,
        &exec,
        "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events \
         BEGIN SELECT RAISE(ABORT, 'audit device down'); END",
        "DROP TRIGGER audit_down",
    )
    .await;
    store.close().await;
}

/// Opens the SQLite store in `dir` with a given keyring, for the rotation checks.
fn open_in(dir: &tempfile::TempDir) -> conformance::OpenWith {
    let url = url(dir);
    Box::new(move |keyring| {
        let url = url.clone();
        Box::pin(async move {
            SqliteStore::open(&url, keyring)
                .await
                .map(|s| Box::new(s) as Box<dyn Store>)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    conformance::master_key_rotation(open_in(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_resumes() {
    let dir = tempfile::tempdir().unwrap();
    conformance::master_key_rotation_resumes(open_in(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_under_load() {
    let dir = tempfile::tempdir().unwrap();
    conformance::master_key_rotation_under_load(open_in(&dir)).await;
}
