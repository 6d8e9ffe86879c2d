//! `latchkey db copy`'s engine: a store of 10,000 secrets goes SQLite →
//! PostgreSQL → SQLite and comes back identical and still decryptable with
//! its master key; a destination that is not empty is refused; a copy cut
//! off half-way leaves nothing; and the copy's table list is both schemas.
//!
//! Needs PostgreSQL like tests/postgres.rs.

mod support;

use latchkey_store::audit::AuditEntry;
use std::collections::BTreeMap;

use latchkey_core::{ids, time::now_micros, EnvDict};
use latchkey_store::{
    conformance,
    copy::{self, CopyError, Kind, RawStore, TABLES},
    crypto::{Binding, Keyring, MasterKey},
    NewSecret, NewToken, OnConflict, PgOptions, PgStore, Revision, Role, SecretKind, SqliteStore,
    Store, DEFAULT_KEEP_VERSIONS,
};
use support::{Proxy, TestDb};

const BULK: usize = 10_000;

/// A SQLite store with a bit of everything, written through the adapter, plus
/// `bulk` named secrets sealed with the same key and inserted in one
/// transaction (10,000 durable commits one by one would only test the disk).
/// Returns the contents every secret must have.
async fn populated_sqlite(url: &str, key: &MasterKey, bulk: usize) -> BTreeMap<String, EnvDict> {
    let keyring = Keyring::new(key.clone());
    let store = SqliteStore::open(url, keyring.clone()).await.unwrap();
    let admin = conformance::admin_token();
    let ws = admin.workspace_id.clone();
    store.bootstrap(&admin).await.unwrap();
    store
        .create_token(
            &NewToken {
                id: ids::new_id(ids::TOKEN_ID),
                name: "ci".to_owned(),
                role: Role::Reader,
                environments: Some(vec!["dev".to_owned()]),
                ..admin.clone()
            },
            &AuditEntry::server(),
        )
        .await
        .unwrap();
    let main = store.environment(&ws, "").await.unwrap();
    let dev = store
        .create_environment(&ws, "dev", &AuditEntry::server())
        .await
        .unwrap();
    let mut expected = BTreeMap::new();
    for (i, env) in [&main, &dev, &main].into_iter().enumerate() {
        let contents: EnvDict = [
            (
                "A".to_owned(),
                format!("value {i} with ünïcode and = signs"),
            ),
            ("B".to_owned(), String::new()),
        ]
        .into();
        let (s, _) = store
            .create_secret(&NewSecret {
                workspace_id: ws.clone(),
                environment: env.id.clone(),
                environments: None,
                kind: SecretKind::Named(format!("api-{i}")),
                created_by: "admin".to_owned(),
                contents,
                on_conflict: OnConflict::Fail,
                keep_versions: DEFAULT_KEEP_VERSIONS,
                audit: AuditEntry::server(),
            })
            .await
            .unwrap();
        let updated = store
            .update_secret(
                &ws,
                &s.summary.id,
                &[("C".to_owned(), Some(i.to_string()))],
                &Revision::by("test"),
            )
            .await
            .unwrap();
        store
            .mark_used(&ws, std::slice::from_ref(&s.summary.id), now_micros())
            .await
            .unwrap();
        expected.insert(s.summary.id, updated.contents);
    }
    let (anon, _) = store
        .create_secret(&NewSecret {
            workspace_id: ws.clone(),
            environment: main.id.clone(),
            environments: None,
            kind: SecretKind::Anonymous {
                app_id: Some("ap-copy".to_owned()),
                expires_at: now_micros() + 3_600_000_000,
            },
            created_by: "admin".to_owned(),
            contents: [("ANON".to_owned(), "x".to_owned())].into(),
            on_conflict: OnConflict::Fail,
            keep_versions: DEFAULT_KEEP_VERSIONS,
            audit: AuditEntry::server(),
        })
        .await
        .unwrap();
    expected.insert(anon.summary.id, anon.contents);
    store.close().await;

    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let base = now_micros();
    for i in 0..bulk {
        let id = ids::new_id(ids::SECRET);
        let contents: EnvDict = [
            ("INDEX".to_owned(), i.to_string()),
            ("TOKEN".to_owned(), ids::new_token_secret()),
        ]
        .into();
        let sealed = keyring.seal(
            Binding {
                workspace_id: &ws,
                secret_id: &id,
                version: 1,
            },
            &contents,
        );
        sqlx::query(
            "INSERT INTO secrets (id, workspace_id, environment_id, name, created_at, created_by, \
             version) VALUES (?, ?, ?, ?, ?, 'admin', 1)",
        )
        .bind(&id)
        .bind(&ws)
        .bind(&dev.id)
        .bind(format!("bulk-{i:05}"))
        .bind(base + i as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO secret_versions (secret_id, version, created_at, created_by, action, \
             keys, key_id, wrapped_key, ciphertext) VALUES (?, 1, ?, 'admin', 'created', ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(base + i as i64)
        .bind(serde_json::to_string(&contents.keys().collect::<Vec<_>>()).unwrap())
        .bind(&sealed.key_id)
        .bind(&sealed.wrapped_key)
        .bind(&sealed.ciphertext)
        .execute(&mut *tx)
        .await
        .unwrap();
        expected.insert(id, contents);
    }
    tx.commit().await.unwrap();
    pool.close().await;
    expected
}

async fn copy_urls(from: &str, to: &str) -> Result<copy::CopyReport, CopyError> {
    let source = RawStore::open_source(from).await?;
    let destination = RawStore::open_destination(to).await?;
    let report = copy::copy(&source, &destination, &|_| {}).await;
    source.close().await?;
    let closed = destination.close().await;
    let report = report?;
    closed?;
    Ok(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_sqlite_postgres_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let first = format!("sqlite://{}/first.db", dir.path().display());
    let last = format!("sqlite://{}/last.db", dir.path().display());
    let db = TestDb::create().await;
    let key = MasterKey::generate();
    let expected = populated_sqlite(&first, &key, BULK).await;
    let before = RawStore::open_source(&first)
        .await
        .unwrap()
        .summary()
        .await
        .unwrap();

    let there = copy_urls(&first, &db.url).await.unwrap();
    assert_eq!(there.tables, before, "PostgreSQL holds what SQLite held");
    let rows = |name| there.tables.iter().find(|t| t.table == name).unwrap().rows;
    assert_eq!(rows("secrets") as usize, expected.len());
    // PostgreSQL's planner knows the copy's size at once (autovacuum would
    // take a minute or more), or it plans as if every table were empty.
    let (planned,): (f32,) =
        sqlx::query_as("SELECT reltuples FROM pg_class WHERE oid = 'secrets'::regclass")
            .fetch_one(&db.pool().await)
            .await
            .unwrap();
    assert_eq!(planned as usize, expected.len(), "the copy was analyzed");
    assert_eq!(
        (
            rows("workspaces"),
            rows("environments"),
            rows("tokens"),
            rows("meta")
        ),
        // meta: the key check, the master key's id, the wrapped audit key.
        (1, 2, 2, 3)
    );

    let back = copy_urls(&db.url, &last).await.unwrap();
    assert_eq!(back.tables, before, "and so does the SQLite copy of it");
    assert_eq!(
        RawStore::open_source(&first)
            .await
            .unwrap()
            .summary()
            .await
            .unwrap(),
        before,
        "the source is not modified"
    );

    // Still sealed, and opened by the same key on either backend. The digests
    // above prove every row identical; decrypt a sample of them.
    let pg = PgStore::open(&db.url, Keyring::new(key.clone()), PgOptions::default())
        .await
        .unwrap();
    let copy = SqliteStore::open(&last, Keyring::new(key.clone()))
        .await
        .unwrap();
    let (ws,): (String,) = sqlx::query_as("SELECT id FROM workspaces")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    for (n, (id, contents)) in expected.iter().enumerate() {
        if n % 10 == 0 || !contents.contains_key("INDEX") {
            assert_eq!(
                &copy.secret_by_id(&ws, id).await.unwrap().contents,
                contents
            );
        }
        if n % 100 == 0 {
            assert_eq!(&pg.secret_by_id(&ws, id).await.unwrap().contents, contents);
        }
    }
    let dev = copy.environment(&ws, "dev").await.unwrap();
    let newest = copy.list_secrets(&ws, &dev.id, None, 1).await.unwrap();
    assert_eq!(newest[0].name(), Some("bulk-09999"));

    // A wrong key is still refused after a copy.
    let err = SqliteStore::open(&last, Keyring::new(MasterKey::generate()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot decrypt"), "{err}");

    // A destination that is not empty is refused, and left as it was.
    copy.close().await;
    for target in [&db.url, &last] {
        let err = copy_urls(&first, target).await.unwrap_err();
        assert!(matches!(err, CopyError::NotEmpty { .. }), "{err}");
        assert!(err.to_string().contains("is not empty"), "{err}");
    }
    assert_eq!(
        RawStore::open_source(&last)
            .await
            .unwrap()
            .summary()
            .await
            .unwrap(),
        before
    );
    pg.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_cut_off_half_way_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = format!("sqlite://{}/first.db", dir.path().display());
    populated_sqlite(&first, &MasterKey::generate(), 3_000).await;
    let db = TestDb::create().await;
    let proxy = Proxy::start(db.port()).await;
    let source = RawStore::open_source(&first).await.unwrap();
    let destination = RawStore::open_destination(&db.url_via(proxy.port))
        .await
        .unwrap();
    let err = copy::copy(&source, &destination, &|written| {
        if written >= 1_500 {
            proxy.cut();
        }
    })
    .await
    .unwrap_err();
    assert!(matches!(err, CopyError::Database { .. }), "{err}");
    let pool = db.pool().await;
    for table in TABLES {
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {}", table.name))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{} holds rows of a failed copy", table.name);
    }
    // Nothing half-written: the same destination takes a full copy afterwards.
    proxy.resume();
    let destination = RawStore::open_destination(&db.url).await.unwrap();
    copy::copy(&source, &destination, &|_| {}).await.unwrap();
}

#[tokio::test]
async fn refuses_what_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}/missing.db", dir.path().display());
    assert!(RawStore::open_source(&missing).await.is_err());
    assert!(
        !dir.path().join("missing.db").exists(),
        "opening a source creates nothing"
    );
    let err = RawStore::open_source("mysql://root:pw@localhost/x")
        .await
        .unwrap_err();
    assert!(matches!(err, CopyError::Unsupported(_)), "{err}");
    assert!(!err.to_string().contains("pw"), "{err}");

    // A database of something else is never written into.
    let db = TestDb::create().await;
    let pool = db.pool().await;
    sqlx::query("CREATE TABLE invoices (id INT)")
        .execute(&pool)
        .await
        .unwrap();
    let err = RawStore::open_destination(&db.url).await.unwrap_err();
    assert!(matches!(err, CopyError::Foreign { .. }), "{err}");
    let (tables,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 1, "no latchkey table was created next to it");
}

/// The copy's list of tables and columns is exactly each backend's schema,
/// so a migration that adds a table or a column must also extend the copy.
#[tokio::test]
async fn the_copy_knows_every_table_and_column() {
    fn expected() -> Vec<(String, String, Kind)> {
        let mut cols: Vec<_> = TABLES
            .iter()
            .flat_map(|t| {
                t.columns
                    .iter()
                    .map(|(c, k)| (t.name.to_owned(), (*c).to_owned(), *k))
            })
            .collect();
        cols.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        cols
    }
    fn sorted(mut cols: Vec<(String, String, Kind)>) -> Vec<(String, String, Kind)> {
        cols.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        cols
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/schema.db", dir.path().display());
    SqliteStore::open(&url, Keyring::new(MasterKey::generate()))
        .await
        .unwrap()
        .close()
        .await;
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let sqlite: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT m.name, p.name, p.type FROM sqlite_master m, pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name != '_sqlx_migrations' \
         ORDER BY m.name, p.name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let kind = |ty: &str| match ty.to_ascii_uppercase().as_str() {
        "TEXT" => Kind::Text,
        "INTEGER" | "BIGINT" => Kind::Int,
        "BOOLEAN" => Kind::Bool,
        "BLOB" | "BYTEA" => Kind::Bytes,
        other => panic!("unexpected column type {other}"),
    };
    let sqlite: Vec<_> = sqlite
        .into_iter()
        .map(|(t, c, ty)| {
            (
                t,
                c.clone(),
                if c == "is_default" {
                    Kind::Bool
                } else {
                    kind(&ty)
                },
            )
        })
        .collect();
    assert_eq!(sorted(sqlite), expected(), "SQLite schema");

    let db = TestDb::create().await;
    PgStore::open(
        &db.url,
        Keyring::new(MasterKey::generate()),
        PgOptions::default(),
    )
    .await
    .unwrap()
    .close()
    .await;
    let pg: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name != '_sqlx_migrations' \
         ORDER BY table_name, column_name",
    )
    .fetch_all(&db.pool().await)
    .await
    .unwrap();
    let pg: Vec<_> = pg.into_iter().map(|(t, c, ty)| (t, c, kind(&ty))).collect();
    assert_eq!(sorted(pg), expected(), "PostgreSQL schema");
}

/// A latchkey store at the first schema version only, at `url`, holding one
/// workspace.
async fn older_store<DB: sqlx::Database>(url: &str, backend: &str)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    DB::Connection: sqlx::migrate::Migrate,
{
    let pool = sqlx::Pool::<DB>::connect(url).await.unwrap();
    support::migrate_first(&pool, backend, &["0001_initial.sql"]).await;
    sqlx::raw_sql("INSERT INTO workspaces (id, name, created_at) VALUES ('ws-old', 'old', 1)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// The schema versions applied to the store at `url`, and its workspaces.
async fn versions_and_workspaces<DB: sqlx::Database>(url: &str) -> (Vec<i64>, i64)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let pool = sqlx::Pool::<DB>::connect(url).await.unwrap();
    let versions = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&pool)
        .await
        .unwrap();
    let workspaces = sqlx::query_scalar("SELECT COUNT(*) FROM workspaces")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    (versions, workspaces)
}

/// A destination that is a latchkey store at an older schema is refused
/// before anything migrates it: its versions and rows stay as they were
/// (the latchkey that wrote it must still open it). Both backends.
#[tokio::test]
async fn a_store_at_another_schema_is_refused_before_it_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/old.db", dir.path().display());
    older_store::<sqlx::Sqlite>(&format!("{sqlite}?mode=rwc"), "sqlite").await;
    let db = TestDb::create().await;
    older_store::<sqlx::Postgres>(&db.url, "postgres").await;
    for url in [&sqlite, &db.url] {
        let err = RawStore::open_destination(url).await.unwrap_err();
        assert!(matches!(err, CopyError::OtherSchema { .. }), "{url}: {err}");
        assert!(
            err.to_string().contains("schema version(s) [1]")
                && err.to_string().contains("left as it was"),
            "{err}"
        );
    }
    let untouched = (vec![1], 1);
    assert_eq!(
        versions_and_workspaces::<sqlx::Sqlite>(&sqlite).await,
        untouched
    );
    assert_eq!(
        versions_and_workspaces::<sqlx::Postgres>(&db.url).await,
        untouched
    );
}
