//! Helpers for the tests that need PostgreSQL: a fresh database per test, and
//! a TCP proxy that can make the database vanish or go silent.

#![allow(dead_code, unreachable_pub)]

use std::{
    str::FromStr,
    sync::atomic::{AtomicU32, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    Connection, PgConnection, PgPool,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// The server the tests use.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn base_url() -> String {
    std::env::var("LATCHKEY_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// A database of its own for one test, dropped with it (also when the test
/// panics).
pub struct TestDb {
    /// The URL of the new database.
    pub url: String,
    base: String,
    name: String,
}

impl TestDb {
    /// Creates a new, empty database on the server of
    /// `LATCHKEY_TEST_DATABASE_URL`; panics with what to do when the server
    /// cannot be reached.
    pub async fn create() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let base = base_url();
        let mut admin = PgConnection::connect(&base).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {base} ({e}).\n\
                 The PostgreSQL tests need a server: run scripts/ensure-postgres, or point \
                 LATCHKEY_TEST_DATABASE_URL at one (a user that may CREATE DATABASE)."
            )
        });
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "lk_test_{}_{}_{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database on {base}: {e}"));
        admin.close().await.ok();
        Self {
            url: with_database(&base, &name),
            base,
            name,
        }
    }

    /// A small pool on the test database, for looking under the adapter.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .unwrap()
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        PgConnectOptions::from_str(&self.url).unwrap().get_port()
    }

    /// The test database's URL through 127.0.0.1:`port` (a [`Proxy`]).
    pub fn url_via(&self, port: u16) -> String {
        let (scheme, rest) = self.url.split_once("://").unwrap();
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let user = authority
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        format!("{scheme}://{user}127.0.0.1:{port}{path}")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // Drop runs inside the test's runtime: drop the database from a
        // thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = PgConnection::connect(&base).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}

/// `base` with its database name replaced by `db`.
pub fn with_database(base: &str, db: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (base, String::new()),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let path_start = head[authority_start..]
        .find('/')
        .map_or(head.len(), |i| authority_start + i);
    format!("{}/{db}{query}", &head[..path_start])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward everything.
    Pass,
    /// Close every connection; close new ones at once (a stopped server).
    Cut,
    /// Keep connections open but forward nothing (a lost network).
    Stall,
}

/// A TCP proxy to 127.0.0.1:`upstream` on a port of its own.
pub struct Proxy {
    /// Where it listens.
    pub port: u16,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mode, _) = watch::channel(Mode::Pass);
        let modes = mode.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(relay(client, upstream, modes.subscribe()));
            }
        });
        Self { port, mode, task }
    }

    /// The database is gone: connections closed, new ones closed at once.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// The network is lost: nothing is answered.
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    /// Back to normal; connections from before are closed.
    pub fn resume(&self) {
        self.mode.send_replace(Mode::Pass);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut client: TcpStream, upstream: u16, mut mode: watch::Receiver<Mode>) {
    let current = *mode.borrow_and_update();
    match current {
        Mode::Cut => return,
        Mode::Stall => {
            let _ = mode.wait_for(|m| *m != Mode::Stall).await;
            return;
        }
        Mode::Pass => {}
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let changed = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        m = mode.wait_for(|m| *m != Mode::Pass) => m.map(|m| *m),
    };
    if matches!(changed, Ok(Mode::Stall)) {
        // Hold both ends open, silent, until the network is "back"; the
        // connection is then dead, as after a real partition.
        let _ = mode.wait_for(|m| *m != Mode::Stall).await;
    }
}

/// Applies to `pool` the first of this crate's migrations for `backend`
/// ("sqlite" or "postgres"): the files named, in order. A store as an older
/// latchkey left it.
pub async fn migrate_first<DB>(pool: &sqlx::Pool<DB>, backend: &str, files: &[&str])
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
{
    let dir = tempfile::tempdir().unwrap();
    for file in files {
        std::fs::copy(
            format!("{}/migrations/{backend}/{file}", env!("CARGO_MANIFEST_DIR")),
            dir.path().join(file),
        )
        .unwrap();
    }
    sqlx::migrate::Migrator::new(dir.path())
        .await
        .unwrap()
        .run(pool)
        .await
        .unwrap();
}
