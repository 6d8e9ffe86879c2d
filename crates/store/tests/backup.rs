//! Backups taken while the store is written to: the snapshot is one
//! consistent state (the manifest's digests, computed in a first pass, match
//! the rows of the second), on SQLite and on PostgreSQL, and it restores
//! into the other backend with equal digests.
//!
//! Needs PostgreSQL like tests/postgres.rs.

mod support;

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use latchkey_store::{
    backup, conformance,
    copy::RawStore,
    crypto::{Keyring, MasterKey},
    NewSecret, OnConflict, PgOptions, PgStore, Revision, SecretKind, SqliteStore, Store,
    DEFAULT_KEEP_VERSIONS,
};
use support::TestDb;

/// Bootstraps `store` with 50 secrets, then writes backups of it into
/// `file` while another task keeps updating them; each must verify. Returns
/// the workspace's id.
async fn backup_under_writes(store: Arc<dyn Store>, file: &Path) -> String {
    let admin = conformance::admin_token();
    let ws = admin.workspace_id.clone();
    store.bootstrap(&admin).await.unwrap();
    let env = store.environment(&ws, "").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..50 {
        let (secret, _) = store
            .create_secret(&NewSecret {
                workspace_id: ws.clone(),
                environment: env.id.clone(),
                environments: None,
                kind: SecretKind::Named(format!("s-{i}")),
                created_by: "admin".to_owned(),
                contents: [("A".to_owned(), i.to_string())].into(),
                on_conflict: OnConflict::Fail,
                keep_versions: DEFAULT_KEEP_VERSIONS,
                audit: latchkey_store::audit::AuditEntry::server(),
            })
            .await
            .unwrap();
        ids.push(secret.summary.id);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop, ws) = (Arc::clone(&store), Arc::clone(&stop), ws.clone());
        tokio::spawn(async move {
            let mut writes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = &ids[usize::try_from(writes).unwrap() % ids.len()];
                let change = [("A".to_owned(), Some(writes.to_string()))];
                store
                    .update_secret(&ws, id, &change, &Revision::by("writer"))
                    .await
                    .unwrap();
                writes += 1;
            }
            writes
        })
    };
    // Backups while the writer runs: each must be one state (without one
    // snapshot, a write between the two passes breaks a digest).
    let mut bytes = Vec::new();
    for _ in 0..20 {
        bytes.clear();
        let mut chunks = store.backup();
        while let Some(chunk) = chunks.recv().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        std::fs::write(file, &bytes).unwrap();
        backup::verify(file, &|_, _| {}).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 0, "the writer wrote during the backups");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backups_under_writes_are_consistent_and_restore_into_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::generate();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&url, Keyring::new(key.clone()))
            .await
            .unwrap(),
    );
    let file = dir.path().join("a.backup");
    let ws = backup_under_writes(Arc::clone(&store), &file).await;
    store.close().await;

    let db = TestDb::create().await;
    let (manifest, report) =
        backup::restore(&file, &db.url, &Keyring::new(key.clone()), &|_, _, _| {})
            .await
            .unwrap();
    for (table, summary) in manifest.tables.iter().zip(&report.tables) {
        assert_eq!((table.rows, &table.sha256), (summary.rows, &summary.digest));
    }
    // The restored store opens with the key and serves the snapshot.
    let restored = PgStore::open(&db.url, Keyring::new(key), PgOptions::default())
        .await
        .unwrap();
    let env = restored.environment(&ws, "").await.unwrap();
    let listed = restored
        .list_secrets(&ws, &env.id, None, 1000)
        .await
        .unwrap();
    assert_eq!(listed.len(), 50);
    for summary in &listed {
        // Decrypts with the key: sealed rows came back intact.
        restored.secret_by_id(&ws, &summary.id).await.unwrap();
    }
    restored.close().await;
    // A wrong key is refused before the target is touched.
    let other = TestDb::create().await;
    let err = backup::restore(
        &file,
        &other.url,
        &Keyring::new(MasterKey::generate()),
        &|_, _, _| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, backup::BackupError::WrongKey { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backups_under_writes_are_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create().await;
    let store: Arc<dyn Store> = Arc::new(
        PgStore::open(
            &db.url,
            Keyring::new(MasterKey::generate()),
            PgOptions::default(),
        )
        .await
        .unwrap(),
    );
    backup_under_writes(Arc::clone(&store), &dir.path().join("b.backup")).await;
    store.close().await;
}

/// The database file of a finished restore holds every row by itself: a
/// copy of that file alone (without its `-wal`) opens with the backup's row
/// counts and digests. Restored many times over, because what this pins was
/// a race: the pool's close could return with its connection still open,
/// and the process then ended with the rows in the `-wal` file only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_sqlite_file_holds_every_row_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::generate();
    let url = format!("sqlite://{}", dir.path().join("source.db").display());
    let store = SqliteStore::open(&url, Keyring::new(key.clone()))
        .await
        .unwrap();
    let admin = conformance::admin_token();
    store.bootstrap(&admin).await.unwrap();
    for i in 0..20 {
        store
            .create_secret(&conformance::named(
                &admin.workspace_id,
                "",
                &format!("s-{i}"),
                [("A".to_owned(), i.to_string())].into(),
                OnConflict::Fail,
            ))
            .await
            .unwrap();
    }
    let file = dir.path().join("source.backup");
    let mut bytes = Vec::new();
    let mut chunks = store.backup();
    while let Some(chunk) = chunks.recv().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    store.close().await;
    std::fs::write(&file, &bytes).unwrap();

    let keyring = Keyring::new(key);
    for i in 0..40 {
        let restored = dir.path().join(format!("restored-{i}.db"));
        let (manifest, _) = backup::restore(
            &file,
            &format!("sqlite://{}", restored.display()),
            &keyring,
            &|_, _, _| {},
        )
        .await
        .unwrap();
        let alone = dir.path().join(format!("alone-{i}.db"));
        std::fs::copy(&restored, &alone).unwrap();
        let copy = RawStore::open_source(&format!("sqlite://{}", alone.display()))
            .await
            .unwrap_or_else(|e| panic!("restore {i}: the database file alone does not open: {e}"));
        let summary = copy.summary().await.unwrap();
        copy.close().await.unwrap();
        let found: Vec<_> = summary.iter().map(|t| (t.rows, t.digest.clone())).collect();
        let want: Vec<_> = manifest
            .tables
            .iter()
            .map(|t| (t.rows, t.sha256.clone()))
            .collect();
        assert_eq!(
            found, want,
            "restore {i}: the database file alone misses rows"
        );
    }
}
