//! The PostgreSQL adapter against the conformance suite, as one store and as
//! two replicas on one database, and the properties only a shared server has:
//! concurrent starts, one sweeper at a time, failing fast and recovering when
//! the database goes away.
//!
//! Needs a PostgreSQL server: `LATCHKEY_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`; `scripts/ensure-postgres`
//! starts one). Each test creates its own database and drops it afterwards.
//! Without a reachable server the tests fail; they never skip.

mod support;

use std::time::{Duration, Instant};

use latchkey_core::{time::now_micros, ErrorKind};
use latchkey_store::{
    conformance,
    copy::RawStore,
    crypto::{Keyring, MasterKey},
    NewSecret, OnConflict, OpenError, PgOptions, PgStore, SecretKind, Store,
};
use support::{Proxy, TestDb};

async fn open(db: &TestDb, key: &MasterKey) -> PgStore {
    PgStore::open(&db.url, Keyring::new(key.clone()), PgOptions::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let db = TestDb::create().await;
    let store = open(&db, &MasterKey::generate()).await;
    conformance::run_all(&store).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_two_replicas() {
    let db = TestDb::create().await;
    let key = MasterKey::generate();
    let (a, b) = tokio::join!(
        PgStore::open(&db.url, Keyring::new(key.clone()), PgOptions::default()),
        PgStore::open(&db.url, Keyring::new(key.clone()), PgOptions::default()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let (migrations,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert_eq!(migrations, 1, "two replicas starting at once migrate once");
    conformance::replicas(&a, &b).await;
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn wrong_master_key_is_refused_before_anything_is_written() {
    let db = TestDb::create().await;
    let key = MasterKey::generate();
    let store = open(&db, &key).await;
    let admin = conformance::admin_token();
    store.bootstrap(&admin).await.unwrap();
    store.close().await;
    let before = RawStore::open_source(&db.url)
        .await
        .unwrap()
        .summary()
        .await
        .unwrap();

    let err = PgStore::open(
        &db.url,
        Keyring::new(MasterKey::generate()),
        PgOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, OpenError::WrongMasterKey { .. }), "{err}");
    assert!(
        err.to_string().contains("cannot decrypt this store"),
        "{err}"
    );
    let after = RawStore::open_source(&db.url)
        .await
        .unwrap()
        .summary()
        .await
        .unwrap();
    assert_eq!(before, after, "a refused start changes nothing");

    // Two replicas with different keys starting on a new database: one wins.
    let fresh = TestDb::create().await;
    let (x, y) = tokio::join!(
        PgStore::open(&fresh.url, Keyring::new(key.clone()), PgOptions::default()),
        PgStore::open(
            &fresh.url,
            Keyring::new(MasterKey::generate()),
            PgOptions::default()
        ),
    );
    assert!(
        x.is_ok() ^ y.is_ok(),
        "exactly one of two different keys is accepted"
    );
}

#[tokio::test]
async fn url_errors_never_show_the_password() {
    let err = PgStore::open(
        "postgres://latchkey:hunter2-pw@127.0.0.1:1/nodb",
        Keyring::new(MasterKey::generate()),
        PgOptions {
            acquire_timeout: Duration::from_millis(300),
            ..PgOptions::default()
        },
    )
    .await
    .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("127.0.0.1:1/nodb"), "{text}");
}

#[tokio::test]
async fn one_sweeper_at_a_time() {
    let db = TestDb::create().await;
    let store = open(&db, &MasterKey::generate()).await;
    let admin = conformance::admin_token();
    store.bootstrap(&admin).await.unwrap();
    let env = store.environment(&admin.workspace_id, "").await.unwrap();
    let now = now_micros();
    store
        .create_secret(&NewSecret {
            workspace_id: admin.workspace_id.clone(),
            environment_id: env.id.clone(),
            kind: SecretKind::Anonymous {
                app_id: None,
                expires_at: now - 1,
            },
            created_by: "admin".to_owned(),
            contents: [("A".to_owned(), "1".to_owned())].into(),
            on_conflict: OnConflict::Fail,
        })
        .await
        .unwrap();

    // Another replica is sweeping: hold its lock (the adapter's key for
    // the sweeper) on another connection.
    let pool = db.pool().await;
    let mut other = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(0x6c6b_0002_i64)
        .execute(&mut *other)
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(store.sweep_expired(now).await.unwrap(), 0, "skips its turn");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "without waiting"
    );
    other.rollback().await.unwrap();
    assert_eq!(store.sweep_expired(now).await.unwrap(), 1);
    store.close().await;
}

/// The database goes away (every connection cut, new ones refused), comes
/// back, and goes silent (connections accepted, nothing answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_fast_when_the_database_is_gone_and_recovers() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(db.port()).await;
    let options = PgOptions {
        pool_size: 4,
        acquire_timeout: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(2),
    };
    let url = db.url_via(proxy.port);
    let store = PgStore::open(&url, Keyring::new(MasterKey::generate()), options)
        .await
        .unwrap();
    let admin = conformance::admin_token();
    store.bootstrap(&admin).await.unwrap();
    let ws = admin.workspace_id.clone();
    let env = store.environment(&ws, "").await.unwrap().id;
    let secret = |name: &str| NewSecret {
        workspace_id: ws.clone(),
        environment_id: env.clone(),
        kind: SecretKind::Named(name.to_owned()),
        created_by: "admin".to_owned(),
        contents: [("K".to_owned(), name.to_owned())].into(),
        on_conflict: OnConflict::Fail,
    };
    store.create_secret(&secret("before")).await.unwrap();

    proxy.cut();
    for _ in 0..3 {
        let started = Instant::now();
        let err = store.secret_by_name(&ws, &env, "before").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "failed in {:?}",
            started.elapsed()
        );
        let err = store.create_secret(&secret("during")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
        assert_eq!(
            store.ping().await.unwrap_err().kind(),
            ErrorKind::Unavailable
        );
    }

    proxy.resume();
    assert_eq!(
        store
            .secret_by_name(&ws, &env, "before")
            .await
            .unwrap()
            .contents["K"],
        "before",
        "recovers by itself"
    );
    store.create_secret(&secret("after")).await.unwrap();
    assert_eq!(
        store
            .secret_by_name(&ws, &env, "during")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound,
        "a failed write left nothing behind"
    );

    // Silent: connections open but nothing answers; a lost network.
    proxy.stall();
    let started = Instant::now();
    let err = store.ping().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let err = store.secret_by_name(&ws, &env, "after").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded: {:?}",
        started.elapsed()
    );
    proxy.resume();
    store.ping().await.unwrap();
    assert_eq!(
        store
            .secret_by_name(&ws, &env, "after")
            .await
            .unwrap()
            .contents["K"],
        "after"
    );
    store.close().await;
}
