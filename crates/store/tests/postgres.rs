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

use latchkey_store::audit::AuditEntry;
use std::time::{Duration, Instant};

use latchkey_core::{time::now_micros, ErrorKind};
use latchkey_store::{
    conformance,
    copy::RawStore,
    crypto::{Keyring, MasterKey},
    NewSecret, OnConflict, OpenError, PgOptions, PgStore, Revision, SecretKind, Store,
    DEFAULT_KEEP_VERSIONS,
};
use support::{Proxy, TestDb};

/// Bootstraps `store` and creates the named secret `name` holding `V=0` in
/// the default environment; returns the workspace's id and the secret's.
async fn seeded(store: &PgStore, name: &str) -> (String, String) {
    let admin = conformance::admin_token();
    store.bootstrap(&admin).await.unwrap();
    let ws = admin.workspace_id.clone();
    let env = store.environment(&ws, "").await.unwrap().id;
    let (secret, _) = store
        .create_secret(&named(&ws, &env, name, "0"))
        .await
        .unwrap();
    (ws, secret.summary.id)
}

/// A create of the named secret `name` holding `V=value`, failing if the
/// name is taken.
fn named(ws: &str, env: &str, name: &str, value: &str) -> NewSecret {
    let contents = [("V".to_owned(), value.to_owned())].into();
    conformance::named(ws, env, name, contents, OnConflict::Fail)
}

async fn open(db: &TestDb, key: &MasterKey) -> PgStore {
    PgStore::open(&db.url, Keyring::new(key.clone()), PgOptions::default())
        .await
        .unwrap()
}

/// A new database and a store on it, for each check of the suite.
async fn fresh() -> (TestDb, PgStore) {
    let db = TestDb::create().await;
    let store = open(&db, &MasterKey::generate()).await;
    (db, store)
}

latchkey_store::conformance_tests!(fresh);

/// A new database and two replicas' stores on it, started at once.
async fn fresh_replicas() -> (TestDb, PgStore, PgStore) {
    let db = TestDb::create().await;
    let key = MasterKey::generate();
    let (a, b) = tokio::join!(open(&db, &key), open(&db, &key));
    (db, a, b)
}

latchkey_store::conformance_replica_tests!(fresh_replicas);

/// A store on `db` that commits up to two groups of writes at once.
async fn open_two_groups(db: &TestDb, key: &MasterKey) -> PgStore {
    let options = PgOptions {
        write_groups: 2,
        ..PgOptions::default()
    };
    PgStore::open(&db.url, Keyring::new(key.clone()), options)
        .await
        .unwrap()
}

/// With two groups of writes in flight per replica (`--database-write-groups
/// 2`), 16 writers on each of two replicas create into one environment
/// while a third replica pages through it: no row missed or listed twice,
/// creation times unique.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_in_flight_page_exactly_across_three_replicas() {
    let db = TestDb::create().await;
    let key = MasterKey::generate();
    let (a, b, c) = tokio::join!(
        open_two_groups(&db, &key),
        open_two_groups(&db, &key),
        open_two_groups(&db, &key)
    );
    conformance::paging_while_two_replicas_write(&a, &b, &c).await;
    for store in [a, b, c] {
        store.close().await;
    }
}

/// Two groups in flight on each replica: of two creates of one name, on
/// one replica or two, one wins and the other sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_in_flight_order_creates_of_one_name() {
    let db = TestDb::create().await;
    let key = MasterKey::generate();
    let (a, b) = tokio::join!(open_two_groups(&db, &key), open_two_groups(&db, &key));
    conformance::replicas_concurrent_creates(&a, &b).await;
    a.close().await;
    b.close().await;
    let db = TestDb::create().await;
    let one = open_two_groups(&db, &key).await;
    conformance::writes_arriving_together(&one).await;
    one.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_starting_at_once_apply_each_migration_once() {
    let (db, a, b) = fresh_replicas().await;
    let (migrations,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert_eq!(
        usize::try_from(migrations).unwrap(),
        files,
        "two replicas starting at once apply each migration once"
    );
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
            environment: env.id.clone(),
            environments: None,
            kind: SecretKind::Anonymous {
                app_id: None,
                expires_at: now - 1,
            },
            created_by: "admin".to_owned(),
            contents: [("A".to_owned(), "1".to_owned())].into(),
            on_conflict: OnConflict::Fail,
            keep_versions: DEFAULT_KEEP_VERSIONS,
            audit: AuditEntry::server(),
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
        ..PgOptions::default()
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
        contents: [("K".to_owned(), name.to_owned())].into(),
        ..named(&ws, &env, name, name)
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
    // The lookup waits for the change feed, which hangs too: bounded all
    // the same.
    let err = store
        .secret_in_environment(&ws, "", "after")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "bounded: {:?}",
        started.elapsed()
    );
    proxy.resume();
    store.ping().await.unwrap();
    // Lookups work again, through a feed that reconnects by itself.
    for _ in 0..3 {
        let found = store.secret_in_environment(&ws, "", "after").await.unwrap();
        assert_eq!(found.expect("found").contents["K"], "after");
    }
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

/// Every connection of both replicas is cut, change feed included: lookups
/// on one replica still see each write made through the other, first by
/// reading the database while the feed is down, then through the cache once
/// it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_stay_exact_when_the_change_feed_is_cut() {
    let db = TestDb::create().await;
    let key = MasterKey::generate();
    let (a, b) = (open(&db, &key).await, open(&db, &key).await);
    let (ws, secret_id) = seeded(&a, "fed").await;
    let looked_up = || async {
        b.secret_in_environment(&ws, "", "fed")
            .await
            .unwrap()
            .expect("the secret is there")
            .contents["V"]
            .clone()
    };
    assert_eq!(looked_up().await, "0");
    assert_eq!(looked_up().await, "0");

    assert!(
        cut_every_connection(&db).await >= 2,
        "both replicas' connections were cut"
    );

    // Through the outage and the feed's reconnection (half a second later).
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(2) {
        round += 1;
        let value = round.to_string();
        a.update_secret(
            &ws,
            &secret_id,
            &[("V".to_owned(), Some(value.clone()))],
            &Revision::by("test"),
        )
        .await
        .unwrap();
        assert_eq!(looked_up().await, value, "round {round}: a stale lookup");
        assert_eq!(looked_up().await, value, "round {round}: a stale repeat");
    }
    a.close().await;
    b.close().await;
}

/// Ends every session on `db` but the caller's; answers how many.
async fn cut_every_connection(db: &TestDb) -> u64 {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&db.pool().await)
    .await
    .unwrap()
    .rows_affected()
}

/// The group commits take a connection used within the last second without
/// checking it first. When every one of them was cut, the next write still
/// succeeds: its group's `BEGIN` fails on each dead one in turn, and it
/// runs on a new connection (two groups in flight, so two dead ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_when_every_group_connection_was_cut() {
    let db = TestDb::create().await;
    let store = open_two_groups(&db, &MasterKey::generate()).await;
    let (ws, secret_id) = seeded(&store, "cut").await;
    let update = |value: String| {
        let (store, ws, secret_id) = (&store, &ws, &secret_id);
        async move {
            store
                .update_secret(
                    ws,
                    secret_id,
                    &[("V".to_owned(), Some(value))],
                    &Revision::by("test"),
                )
                .await
        }
    };
    // Enough writers, long enough, that both groups' connections are open.
    let writer = |w: usize| async move {
        for i in 0..10 {
            update(format!("{w}-{i}")).await?;
        }
        Ok::<_, latchkey_core::Error>(())
    };
    let warm = futures::future::join_all((0..16).map(writer)).await;
    assert!(warm.iter().all(Result::is_ok), "{warm:?}");
    assert!(cut_every_connection(&db).await >= 2);
    for round in 0..3 {
        update(format!("after-{round}"))
            .await
            .unwrap_or_else(|e| panic!("round {round}: a write after the cut failed: {e}"));
    }
    let found = store.secret_by_id(&ws, &secret_id).await.unwrap();
    assert_eq!(found.contents["V"], "after-2");
    store.close().await;
}

/// The lookup cache is in use once the change feed is up, and only an
/// announcement makes it read again: a change made behind the feed's back
/// (its triggers off) stays unseen until it is announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_served_from_the_cache_and_announcements_refresh_it() {
    let db = TestDb::create().await;
    let store = open(&db, &MasterKey::generate()).await;
    let (ws, id) = seeded(&store, "cached").await;
    let last_used = || async {
        store
            .secret_in_environment(&ws, "", "cached")
            .await
            .unwrap()
            .expect("the secret is there")
            .summary
            .last_used_at
    };
    let pool = db.pool().await;
    let quietly_mark = |at: i64| {
        let (pool, id) = (pool.clone(), id.clone());
        async move {
            let mut tx = pool.begin().await.unwrap();
            for sql in [
                "ALTER TABLE secrets DISABLE TRIGGER secrets_announce_change",
                "UPDATE secrets SET last_used_at = $1 WHERE id = $2",
                "ALTER TABLE secrets ENABLE TRIGGER secrets_announce_change",
            ] {
                sqlx::query(sql)
                    .bind(at)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
    };
    // The feed comes up shortly after the store opens.
    let started = Instant::now();
    let mut at = 0;
    loop {
        last_used().await;
        at += 1;
        quietly_mark(at).await;
        if last_used().await != Some(at) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no lookup was served from the cache in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::query("SELECT pg_notify('latchkey_changes', $1)")
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        last_used().await,
        Some(at),
        "an announcement refreshes the lookup"
    );
    store.close().await;
}

/// The change feed listens on a connection of its own: a store whose pool
/// holds one connection still serves requests, and its lookups still
/// follow writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_one_connection_is_not_taken_by_the_feed() {
    let db = TestDb::create().await;
    let options = PgOptions {
        pool_size: 1,
        acquire_timeout: Duration::from_secs(2),
        ..PgOptions::default()
    };
    let store = PgStore::open(&db.url, Keyring::new(MasterKey::generate()), options)
        .await
        .unwrap();
    let (ws, secret_id) = seeded(&store, "one").await;
    // Long enough for the feed to be up and holding its connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 1..=5 {
        let value = round.to_string();
        store
            .update_secret(
                &ws,
                &secret_id,
                &[("V".to_owned(), Some(value.clone()))],
                &Revision::by("test"),
            )
            .await
            .unwrap();
        let found = store.secret_in_environment(&ws, "", "one").await.unwrap();
        assert_eq!(found.expect("found").contents["V"], value);
    }
    store.close().await;
}

/// The server closes its store through the [`Store`] trait: that must end
/// every connection the store opened, the change feed's included (it did
/// not: the trait's `close` closed the request pool only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_through_the_store_trait_ends_every_connection() {
    let db = TestDb::create().await;
    let options = latchkey_store::Options::default();
    let store = latchkey_store::open(&db.url, Keyring::new(MasterKey::generate()), &options)
        .await
        .unwrap();
    let admin = conformance::admin_token();
    store.bootstrap(&admin).await.unwrap();
    let look = db.pool().await;
    let ours = || async {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'latchkey'",
        )
        .fetch_one(&look)
        .await
        .unwrap();
        n
    };
    // A lookup waits for the feed: once it is answered, the feed listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ours().await < 2 {
        assert!(Instant::now() < deadline, "the store never connected twice");
        store
            .secret_in_environment(&admin.workspace_id, "", "none")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = ours().await;
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} connection(s) of the store still open after Store::close"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    look.close().await;
}

/// Every operation of the store, writes included, is bounded by the
/// operation timeout when the database stops answering (a lost network):
/// Unavailable, never a hang. The shared SQL layer runs writes through
/// `Engine::write`; this checks each Store method still goes through a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_is_bounded_when_the_database_hangs() {
    use latchkey_store::{EnvironmentUpdate, NewToken, Role};

    let db = TestDb::create().await;
    let proxy = Proxy::start(db.port()).await;
    let options = PgOptions {
        pool_size: 32,
        acquire_timeout: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(2),
        ..PgOptions::default()
    };
    let store = PgStore::open(
        &db.url_via(proxy.port),
        Keyring::new(MasterKey::generate()),
        options,
    )
    .await
    .unwrap();
    let (ws, id) = seeded(&store, "s").await;
    let env = store.environment(&ws, "").await.unwrap().id;
    store
        .create_environment(&ws, "dev", &AuditEntry::server())
        .await
        .unwrap();
    let token = NewToken {
        id: "ak-hang".to_owned(),
        workspace_id: ws.clone(),
        name: "t".to_owned(),
        role: Role::Admin,
        environments: None,
        secret_hash: latchkey_store::crypto::hash_token_secret("as-hang"),
        expires_at: None,
    };

    proxy.stall();
    let started = Instant::now();
    let s = &store;
    let (ws, id, env, token) = (&ws, &id, &env, &token);
    let update = EnvironmentUpdate {
        name: Some("dev2".to_owned()),
        webhook_suffix: None,
    };
    let new = NewSecret {
        workspace_id: ws.clone(),
        environment: env.clone(),
        environments: None,
        kind: SecretKind::Named("n".to_owned()),
        created_by: "admin".to_owned(),
        contents: [("K".to_owned(), "v".to_owned())].into(),
        on_conflict: OnConflict::Overwrite,
        keep_versions: DEFAULT_KEEP_VERSIONS,
        audit: AuditEntry::server(),
    };
    let change = [("K".to_owned(), Some("v".to_owned()))];
    let ids = [id.clone()];
    let kind = |r: Result<(), latchkey_core::Error>| r.map_err(|e| e.kind());
    let results: Vec<(&str, Result<(), ErrorKind>)> = vec![
        ("ping", kind(s.ping().await.map(drop))),
        (
            "bootstrap",
            kind(s.bootstrap(&conformance::admin_token()).await.map(drop)),
        ),
        ("workspace", kind(s.workspace(ws).await.map(drop))),
        (
            "list_environments",
            kind(s.list_environments(ws).await.map(drop)),
        ),
        (
            "environment",
            kind(s.environment(ws, "dev").await.map(drop)),
        ),
        (
            "create_environment",
            kind(
                s.create_environment(ws, "qa", &AuditEntry::server())
                    .await
                    .map(drop),
            ),
        ),
        (
            "update_environment",
            kind(
                s.update_environment(ws, "dev", &update, &AuditEntry::server())
                    .await
                    .map(drop),
            ),
        ),
        (
            "delete_environment",
            kind(
                s.delete_environment(ws, "dev", true, &AuditEntry::server())
                    .await,
            ),
        ),
        (
            "create_token",
            kind(s.create_token(token, &AuditEntry::server()).await.map(drop)),
        ),
        (
            "token_for_auth",
            kind(s.token_for_auth("ak-x", 0).await.map(drop)),
        ),
        ("mark_token_used", kind(s.mark_token_used("ak-x", 0).await)),
        (
            "rotate_token",
            kind(
                s.rotate_token(
                    ws,
                    "ak-x",
                    &[0; 32],
                    None,
                    &latchkey_store::audit::AuditEntry::server(),
                )
                .await
                .map(drop),
            ),
        ),
        ("list_tokens", kind(s.list_tokens(ws).await.map(drop))),
        (
            "revoke_token",
            kind(s.revoke_token(ws, "ak-x", &AuditEntry::server()).await),
        ),
        ("create_secret", kind(s.create_secret(&new).await.map(drop))),
        (
            "secret_by_name",
            kind(s.secret_by_name(ws, env, "s").await.map(drop)),
        ),
        ("secret_by_id", kind(s.secret_by_id(ws, id).await.map(drop))),
        (
            "update_secret",
            kind(
                s.update_secret(ws, id, &change, &Revision::by("test"))
                    .await
                    .map(drop),
            ),
        ),
        (
            "list_secrets",
            kind(s.list_secrets(ws, env, None, 10).await.map(drop)),
        ),
        (
            "mark_used",
            kind(s.mark_used(ws, &ids, now_micros() + 3_600_000_000).await),
        ),
        (
            "sweep_expired",
            kind(s.sweep_expired(now_micros()).await.map(drop)),
        ),
        (
            "delete_secret",
            kind(s.delete_secret(ws, id, &AuditEntry::server(), None).await),
        ),
    ];
    let elapsed = started.elapsed();
    proxy.resume();
    for (op, result) in &results {
        assert_eq!(*result, Err(ErrorKind::Unavailable), "{op}");
    }
    // 20 operations one after another, each within acquire + statement + 1 s.
    assert!(
        elapsed < Duration::from_secs(20 * 4 + 5),
        "bounded: {elapsed:?}"
    );
    store.close().await;
}

/// A write whose COMMIT is still running when the operation's time bound
/// ends is reported as what it is, a success: the bound covers the
/// statements before COMMIT, and the server's `statement_timeout` the
/// COMMIT itself. (It was reported UNAVAILABLE, while the write committed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_commits_after_the_operation_bound_succeeds() {
    let db = TestDb::create().await;
    // The operation bound is 0.5 + 3 + 1 = 4.5 s.
    let options = PgOptions {
        pool_size: 4,
        acquire_timeout: Duration::from_millis(500),
        statement_timeout: Duration::from_secs(3),
        ..PgOptions::default()
    };
    let store = PgStore::open(&db.url, Keyring::new(MasterKey::generate()), options)
        .await
        .unwrap();
    let (ws, secret_id) = seeded(&store, "slow").await;
    // 2.5 s in the UPDATE, 2.5 s more in COMMIT (a deferred trigger): each
    // within the statement timeout, together past the operation bound.
    let look = db.pool().await;
    for sql in [
        "CREATE FUNCTION lk_test_nap() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(2.5); RETURN NEW; END $$",
        "CREATE TRIGGER lk_test_slow_update BEFORE UPDATE ON secrets \
         FOR EACH ROW EXECUTE FUNCTION lk_test_nap()",
        "CREATE CONSTRAINT TRIGGER lk_test_slow_commit AFTER UPDATE ON secrets \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION lk_test_nap()",
    ] {
        sqlx::query(sql).execute(&look).await.unwrap();
    }
    let started = Instant::now();
    let updated = store
        .update_secret(
            &ws,
            &secret_id,
            &[("V".to_owned(), Some("1".to_owned()))],
            &Revision::by("test"),
        )
        .await;
    let took = started.elapsed();
    assert!(
        took > Duration::from_millis(4600),
        "the write took {took:?}"
    );
    assert_eq!(updated.expect("the write committed").contents["V"], "1");
    let read = store.secret_by_id(&ws, &secret_id).await.unwrap();
    assert_eq!(read.contents["V"], "1");
    look.close().await;
    store.close().await;
}

/// Finding 4 of the hardening review: one damaged ciphertext must not break
/// its environment's listing or the secret's deletion.
#[tokio::test]
async fn a_damaged_ciphertext_is_listed_deleted_and_named() {
    let (db, store) = fresh().await;
    let url = db.url.clone();
    conformance::damaged_ciphertext(&store, |secret_id| async move {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query(
            "UPDATE secret_versions SET ciphertext = \
             overlay(ciphertext PLACING '\\xff'::bytea FROM 21 FOR 1) WHERE secret_id = $1",
        )
        .bind(&secret_id)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    })
    .await;
    store.close().await;
}

/// A store made by the schema before versions were kept migrates: each
/// secret's contents become its current version.
#[tokio::test]
async fn a_store_without_versions_migrates() {
    let db = TestDb::create().await;
    let key = MasterKey::generate();
    let old = conformance::Unversioned::new();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    support::migrate_first(
        &pool,
        "postgres",
        &["0001_initial.sql", "0002_change_feed.sql"],
    )
    .await;
    let blob = |bytes: &[u8]| {
        format!(
            "'\\x{}'::bytea",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    };
    sqlx::raw_sql(&old.seed_sql(&Keyring::new(key.clone()), blob))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let store = open(&db, &key).await;
    conformance::history_after_migration(&store, &old).await;
    store.close().await;
}

/// Issue 14: rows of the audit log edited, deleted or swapped in the
/// database are found by verify; an event that cannot be written fails its
/// change.
#[tokio::test]
async fn audit_tampering_is_found_and_a_failed_event_fails_closed() {
    let (db, store) = fresh().await;
    let url = db.url.clone();
    let exec = move |sql: String| {
        let url = url.clone();
        Box::pin(async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::raw_sql(&sql).execute(&pool).await.unwrap();
            pool.close().await;
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    };
    conformance::audit_tampering(
        &store,
        &exec,
        "CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'audit device down'; END $$; \
         CREATE TRIGGER audit_down BEFORE INSERT ON audit_events \
         FOR EACH ROW EXECUTE FUNCTION audit_down();",
        "DROP TRIGGER audit_down ON audit_events; DROP FUNCTION audit_down();",
    )
    .await;
    store.close().await;
}

/// Opens a store on `db` with a given keyring, for the rotation checks.
fn open_on(db: &TestDb) -> conformance::OpenWith {
    let url = db.url.clone();
    Box::new(move |keyring| {
        let url = url.clone();
        Box::pin(async move {
            PgStore::open(&url, keyring, PgOptions::default())
                .await
                .map(|s| Box::new(s) as Box<dyn Store>)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation() {
    let db = TestDb::create().await;
    conformance::master_key_rotation(open_on(&db)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_by_two_replicas() {
    let db = TestDb::create().await;
    conformance::master_key_rotation_by_two_replicas(open_on(&db)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_resumes() {
    let db = TestDb::create().await;
    conformance::master_key_rotation_resumes(open_on(&db)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_under_load() {
    let db = TestDb::create().await;
    conformance::master_key_rotation_under_load(open_on(&db)).await;
}

/// A check of a name reads the unique index of names, however fast the
/// table grows: autovacuum is off and the statistics were taken at one
/// secret, then sixteen writers fill the environment with thousands (in
/// groups of many names). The store keeps the statistics near the table's
/// size itself, so the next groups of creates read about one entry of the
/// indexes that start with the environment each (the newest creation
/// time), not the whole environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_check_their_names_by_index_while_the_table_grows() {
    let (db, store) = fresh().await;
    let (ws, _) = seeded(&store, "first").await;
    let env = store.environment(&ws, "").await.unwrap().id;
    let pool = db.pool().await;
    for statement in [
        "ALTER TABLE secrets SET (autovacuum_enabled = false)",
        "ANALYZE secrets",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let fill = |from: usize, to: usize| {
        let mut writers = tokio::task::JoinSet::new();
        for writer in 0..16 {
            let (store, ws, env) = (store.clone(), ws.clone(), env.clone());
            writers.spawn(async move {
                for i in (from + writer..to).step_by(16) {
                    store
                        .create_secret(&named(&ws, &env, &format!("s{i}"), &i.to_string()))
                        .await
                        .unwrap();
                }
            });
        }
        writers.join_all()
    };
    // (secrets inserted, groups, index entries read), once PostgreSQL's
    // statistics show `inserted` secrets. A backend reports them at most once
    // a second, at the end of a transaction: one more write a second later
    // reports everything before it.
    let counts = |inserted: i64, last: &'static str| {
        let (store, pool, ws, env) = (store.clone(), pool.clone(), ws.clone(), env.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            store
                .create_secret(&named(&ws, &env, last, "0"))
                .await
                .unwrap();
            let started = Instant::now();
            loop {
                let counts: (i64, i64, i64) = sqlx::query_as(
                    "SELECT \
                       (SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'secrets'), \
                       (SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables \
                        WHERE relname = 'audit_head'), \
                       (SELECT sum(idx_tup_read)::BIGINT FROM pg_stat_user_indexes \
                        WHERE indexrelname IN ('secrets_by_name', 'secrets_by_created'))",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                if counts.0 >= inserted {
                    return counts;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the statistics never showed the {inserted} secrets inserted ({} so far)",
                    counts.0
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    fill(0, 3_000).await;
    let (_, groups_before, reads_before) = counts(3_002, "filled").await;
    fill(3_000, 3_320).await;
    let (_, groups_after, reads_after) = counts(3_323, "last").await;
    let (groups, reads) = (groups_after - groups_before, reads_after - reads_before);
    assert!(
        reads <= 2 * groups,
        "{reads} index entries read by {groups} groups creating 321 secrets in an environment \
         of 3,002 (about {} per group): a name check read the environment",
        reads / groups.max(1)
    );
    store.close().await;
}

/// A group locks the audit chain's head only once its rows are written: a
/// create that waits for another transaction's uncommitted row of the same
/// name holds nothing the audit log needs (else a group of another replica
/// that waits for the head while holding that name would deadlock with it),
/// and it goes on once that transaction ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_waiting_for_a_name_does_not_hold_the_audit_head() {
    use sqlx::Connection as _;
    let (db, store) = fresh().await;
    let (ws, _) = seeded(&store, "first").await;
    let env = store.environment(&ws, "").await.unwrap().id;

    // Another writer's row of the name "held", not yet committed.
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query(
        "INSERT INTO secrets (id, workspace_id, environment_id, name, created_at, created_by, \
         version) VALUES ('st-held', $1, $2, 'held', $3, 'other', 1)",
    )
    .bind(&ws)
    .bind(&env)
    .bind(now_micros())
    .execute(&mut other)
    .await
    .unwrap();

    let create = tokio::spawn({
        let store = store.clone();
        let new = named(&ws, &env, "held", "mine");
        async move { store.create_secret(&new).await }
    });
    // The group's insert waits for the other writer's transaction.
    let started = Instant::now();
    loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO secrets%'",
        )
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the create never waited for the other writer's name"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Meanwhile the head is free: the audit log can be appended to.
    let mut auditor = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = auditor.begin().await.unwrap();
    let head = sqlx::query("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE NOWAIT")
        .execute(&mut *tx)
        .await;
    assert!(
        head.is_ok(),
        "a group waiting for a name held the audit head: {head:?}"
    );
    tx.rollback().await.unwrap();

    // The other writer gives up; the create goes on and takes the name.
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let (secret, created) = create.await.unwrap().unwrap();
    assert!(created);
    assert_eq!(secret.contents["V"], "mine");
    store.close().await;
}
