//! `latchkey key rotate` through the real binary: an online rotation under
//! a concurrent read and write load fails no request, replaces `master.key`,
//! and leaves a store the old key no longer opens; bad inputs are refused
//! before anything changes.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use latchkey::{blocking::Wait, Client, Config, Role, Secret};

use crate::harness::{Cli, Server};

fn client(server: &Server) -> Client {
    let (id, secret) = server.admin_token();
    Client::new(Config::new(server.url(), &id, &secret)).unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A start on `data` with `old_key` alone is refused with the wrong-key
/// message; returns the temp dir the key file was written to.
fn old_key_refused(data: &Path, old_key: &str) -> tempfile::TempDir {
    let keys = tempfile::tempdir().unwrap();
    let old_file = keys.path().join("old.key");
    std::fs::write(&old_file, old_key).unwrap();
    let err = Server::try_start(
        data,
        &["--master-key-file", old_file.to_str().unwrap()],
        &[],
    )
    .err()
    .expect("the old key is refused");
    assert!(err.contains("cannot decrypt this store"), "{err}");
    keys
}

/// Secrets `k-0..n`, each with two versions.
async fn populate(client: &Client, n: usize) {
    let names: Vec<String> = (0..n).map(|i| format!("k-{i}")).collect();
    for chunk in names.chunks(32) {
        let creates = chunk.iter().map(|name| async move {
            client.secrets().create(name.as_str(), [("V", "1")]).await?;
            Secret::from_name(name.as_str())
                .update_with(client, [("V", format!("{name}-2").as_str())])
                .await
        });
        for done in futures::future::join_all(creates).await {
            done.unwrap();
        }
    }
}

/// The replicas a load balancer sends requests to: a replica is taken out
/// before it is stopped and put back once it serves.
type Pool = Arc<std::sync::RwLock<Vec<Client>>>;

/// A read, write and create load through the clients of a [`Pool`], which
/// counts its failed requests.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    created: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `workers` tasks, each reading the secret `read(w, i)`, updating
    /// `write(w, i)` and creating `new-w-i` in its turn `i`.
    fn start(
        pool: &Pool,
        workers: usize,
        read: fn(usize, usize) -> String,
        write: fn(usize, usize) -> String,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let created = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..workers)
            .map(|w| {
                let (pool, stop, ok, failed, created) = (
                    pool.clone(),
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    created.clone(),
                );
                tokio::spawn(async move {
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let client = {
                            let pool = pool.read().unwrap();
                            pool[(w + i) % pool.len()].clone()
                        };
                        let got = Secret::from_name(read(w, i).as_str())
                            .resolve_with(&client)
                            .await;
                        let updated = Secret::from_name(write(w, i).as_str())
                            .update_with(&client, [("W", format!("{w}-{i}").as_str())])
                            .await;
                        let new_name = format!("new-{w}-{i}");
                        let made = client
                            .secrets()
                            .create(new_name.as_str(), [("N", "1")])
                            .await;
                        if made.is_ok() {
                            created.lock().unwrap().push(new_name);
                        }
                        for r in [got.map(drop), updated.map(drop), made.map(drop)] {
                            match r {
                                Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                                Err(e) => {
                                    eprintln!("request failed during the rotation: {e}");
                                    failed.fetch_add(1, Ordering::Relaxed)
                                }
                            };
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            created,
            tasks,
        }
    }

    /// Requests answered so far.
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the load; returns how many requests failed and the names of
    /// the secrets it created.
    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let created = self.created.lock().unwrap().clone();
        (self.failed.load(Ordering::Relaxed), created)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_online_under_load_then_the_old_key_is_refused() {
    let mut server = Server::start();
    let data = server.data_dir().to_owned();
    let dir = server.keep_dir().expect("a temp data dir");
    let client = client(&server);
    // 2 × 400 versions: more than one batch of 500.
    populate(&client, 400).await;
    let old_key = read(&data.join("master.key"));

    let pool: Pool = Arc::new(std::sync::RwLock::new(vec![client.clone()]));
    let name = |w: usize, i: usize| format!("k-{}", (w * 131 + i) % 400);
    let load = Load::start(&pool, 3, name, name);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = load.ok();
    let cli = Cli::admin(&server);
    let out = tokio::task::spawn_blocking(move || cli.run(&["key", "rotate", "--quiet"]))
        .await
        .unwrap()
        .ok();
    assert!(out.stdout.contains("rotated the master key"), "{out:#?}");
    let during = load.ok() - before;
    let (failed, _) = load.stop().await;
    assert_eq!(failed, 0, "no request failed");
    assert!(during > 0, "requests ran during the rotation");

    let new_key = read(&data.join("master.key"));
    assert_ne!(new_key, old_key, "master.key holds the new key");
    assert!(!data.join("master.key.new").exists());
    assert!(!data.join("master.key.old").exists());
    let log = server.log();
    assert!(!log.contains(old_key.trim()), "no key in the log");
    assert!(!log.contains(new_key.trim()), "no key in the log");
    let audit = Cli::admin(&server).run(&["audit", "list", "--action", "key.rotate", "--json"]);
    assert!(audit.stdout.contains("key.rotate"), "{audit:#?}");
    server.stop();

    // The old key alone is refused, saying why.
    let _keys = old_key_refused(&data, &old_key);

    // The new key serves every secret, old versions included.
    let server = Server::try_start(&data, &[], &[]).unwrap();
    let admin = self::client(&server);
    for i in [0usize, 199, 399] {
        let name = format!("k-{i}");
        let secret = Secret::from_name(name.as_str());
        let values = secret.resolve_with(&admin).await.unwrap();
        assert_eq!(values["V"], format!("{name}-2"));
        let first = Secret::from_name(name.as_str())
            .version(1)
            .resolve_with(&admin)
            .await
            .unwrap();
        assert_eq!(first["V"], "1");
    }
    drop(server);
    drop(dir);
}

#[test]
fn rotate_refuses_bad_inputs_and_changes_nothing() {
    // A key given in the environment: the online rotation names the
    // offline procedure.
    let dir = tempfile::tempdir().unwrap();
    let key = latchkey_store::crypto::MasterKey::generate();
    let server = Server::try_start(
        dir.path(),
        &[],
        &[("LATCHKEY_MASTER_KEY", key.to_base64().as_str())],
    )
    .unwrap();
    Cli::admin(&server)
        .run(&["key", "rotate"])
        .fails(1, "--new-key-file");
    drop(server);

    // A data dir that cannot take the new key: refused, nothing changed.
    let server = Server::start();
    let data = server.data_dir().to_owned();
    let before = read(&data.join("master.key"));
    std::fs::create_dir(data.join("master.key.tmp")).unwrap();
    Cli::admin(&server)
        .run(&["key", "rotate"])
        .fails(1, "cannot write the new master key");
    assert_eq!(read(&data.join("master.key")), before);
    assert!(!data.join("master.key.new").exists());
    assert!(!data.join("master.key.old").exists());
    std::fs::remove_dir(data.join("master.key.tmp")).unwrap();

    // Not an admin of the first workspace, unlimited.
    let reader = client(&server)
        .tokens()
        .create("ci", Role::Reader)
        .wait()
        .unwrap();
    Cli::bare()
        .var("LATCHKEY_SERVER_URL", server.url())
        .var("LATCHKEY_TOKEN_ID", &reader.info.id)
        .var("LATCHKEY_TOKEN_SECRET", reader.secret.expose())
        .run(&["key", "rotate"])
        .fails(1, "may not rotate the master key");
    assert_eq!(read(&data.join("master.key")), before);

    // Offline: a new key file that is the current key, or no current key.
    let current = data.join("master.key");
    let url = format!("sqlite://{}/latchkey.db", data.display());
    Cli::bare()
        .run(&[
            "key",
            "rotate",
            "--new-key-file",
            current.to_str().unwrap(),
            "--master-key-file",
            current.to_str().unwrap(),
            "--database",
            &url,
        ])
        .fails(1, "holds the current master key");
    Cli::bare()
        .run(&[
            "key",
            "rotate",
            "--new-key-file",
            "/nonexistent/x",
            "--database",
            &url,
        ])
        .fails(1, "needs the current master key");
    assert_eq!(read(&data.join("master.key")), before);
}

/// A start that finds `master.key.new` (a rotation that stopped after the
/// new key was written) finishes the rotation; then the offline rotation
/// of a key given by flag moves the store to another key file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_resumes_a_rotation_and_an_offline_rotation_finishes() {
    let mut server = Server::start();
    let data = server.data_dir().to_owned();
    let dir = server.keep_dir().expect("a temp data dir");
    populate(&client(&server), 20).await;
    server.stop();
    let old_key = read(&data.join("master.key"));
    let new = latchkey_store::crypto::MasterKey::generate();
    std::fs::write(data.join("master.key.new"), new.to_base64().as_bytes()).unwrap();
    std::fs::write(data.join("master.key.old"), &old_key).unwrap();

    let server = Server::try_start(&data, &[], &[]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while data.join("master.key.new").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the start resumes the rotation"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        read(&data.join("master.key")).trim(),
        new.to_base64().as_str()
    );
    assert!(!data.join("master.key.old").exists());
    let values = Secret::from_name("k-7")
        .resolve_with(&client(&server))
        .await
        .unwrap();
    assert_eq!(values["V"], "k-7-2");
    server.stop();
    let keys = old_key_refused(&data, &old_key);

    // Offline, from the key file to a new file given by flag.
    let next = keys.path().join("next.key");
    let url = format!("sqlite://{}/latchkey.db", data.display());
    let current = data.join("master.key");
    let out = Cli::bare()
        .run(&[
            "key",
            "rotate",
            "--quiet",
            "--new-key-file",
            next.to_str().unwrap(),
            "--master-key-file",
            current.to_str().unwrap(),
            "--database",
            &url,
        ])
        .ok();
    assert!(out.stdout.contains("40 data keys rewrapped"), "{out:#?}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&next).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        Server::try_start(&data, &[], &[]).is_err(),
        "master.key no longer opens it"
    );
    let server =
        Server::try_start(&data, &["--master-key-file", next.to_str().unwrap()], &[]).unwrap();
    let values = Secret::from_name("k-3")
        .resolve_with(&client(&server))
        .await
        .unwrap();
    assert_eq!(values["V"], "k-3-2");
    drop(server);
    drop(dir);
}

/// A replica on the shared PostgreSQL database `url`, data dir `data`
/// (where the first start leaves the admin token), with these key flags.
fn replica(data: &Path, url: &str, keys: &[&str]) -> Server {
    let mut args = vec!["--database", url];
    args.extend_from_slice(keys);
    Server::try_start(data, &args, &[]).unwrap_or_else(|e| panic!("replica did not start:\n{e}"))
}

/// Takes replica `i` out of `pool`, lets its requests finish, stops it and
/// starts it again with `keys`, then puts it back.
async fn restart(
    replicas: &mut [Option<Server>],
    pool: &Pool,
    i: usize,
    data: &Path,
    url: &str,
    keys: &[&str],
) {
    let old = replicas[i].take().unwrap();
    let url_of_old = old.url().to_owned();
    pool.write()
        .unwrap()
        .retain(|c| c.config().server_url() != url_of_old);
    // Requests already holding its client finish first: an operation of
    // several requests on a loaded machine can take well over 300 ms (CI
    // once saw one refused after that wait).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    old.stop_async().await;
    let (data, url, keys) = (
        data.to_owned(),
        url.to_owned(),
        keys.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>(),
    );
    let server = tokio::task::spawn_blocking(move || {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        replica(&data, &url, &keys)
    })
    .await
    .unwrap();
    pool.write().unwrap().push(client(&server));
    replicas[i] = Some(server);
    // Both replicas serve the load for a while in this mixed state.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
}

/// Two PostgreSQL replicas under a read/write load through both rotate
/// their master key online by the README's procedure: no request fails,
/// no version stays under the old key, every version reads with the new
/// key alone, and the old key alone is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_replicas_rotate_online_under_load() {
    let db = crate::crash::pg::TestDb::create().await;
    let url = db.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (old, new) = (
        latchkey_store::crypto::MasterKey::generate(),
        latchkey_store::crypto::MasterKey::generate(),
    );
    let (old_file, new_file, other_file) = (
        keys.join("old.key"),
        keys.join("new.key"),
        keys.join("other.key"),
    );
    std::fs::write(&old_file, old.to_base64().as_bytes()).unwrap();
    std::fs::write(&new_file, new.to_base64().as_bytes()).unwrap();
    std::fs::write(
        &other_file,
        latchkey_store::crypto::MasterKey::generate()
            .to_base64()
            .as_bytes(),
    )
    .unwrap();
    let (old_f, new_f, other_f) = (
        old_file.to_str().unwrap(),
        new_file.to_str().unwrap(),
        other_file.to_str().unwrap(),
    );

    let first = replica(&data, &url, &["--master-key-file", old_f]);
    let second = replica(&data, &url, &["--master-key-file", old_f]);
    // 2 × 300 versions: more than one batch of 500.
    populate(&client(&first), 300).await;
    let pool: Pool = Arc::new(std::sync::RwLock::new(vec![
        client(&first),
        client(&second),
    ]));
    let mut replicas = [Some(first), Some(second)];

    // Half the reads go to the secrets the load updates; updates go to
    // k-150.. only, whose old versions the server may prune, so that
    // k-0..150 keep versions 1 and 2.
    let load = Load::start(
        &pool,
        4,
        |w, i| format!("k-{}", (w * 131 + i * 151) % 300),
        |w, i| format!("k-{}", 150 + (w * 37 + i) % 150),
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Bad inputs: the same key twice, a previous key that does not open
    // the store, two second keys at once.
    let refused = |keys: &[&str], needle: &str| {
        let mut args = vec!["--database", url.as_str()];
        args.extend_from_slice(keys);
        let err = Server::try_start(&data, &args, &[]).err().expect("refused");
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains(old.to_base64().as_str()), "{err}");
    };
    refused(
        &["--master-key-file", old_f, "--next-master-key-file", old_f],
        "holds the same key as the master key",
    );
    refused(
        &[
            "--master-key-file",
            new_f,
            "--previous-master-key-file",
            other_f,
        ],
        "cannot decrypt this store",
    );
    refused(
        &[
            "--master-key-file",
            new_f,
            "--previous-master-key-file",
            old_f,
            "--next-master-key-file",
            other_f,
        ],
        "cannot be used with",
    );

    refused(
        &["--next-master-key-file", new_f],
        "is for a rotation across replicas whose key is given by --master-key-file",
    );

    // Round 1: every replica opens the new key, still sealing under the old.
    for i in 0..2 {
        let flags = ["--master-key-file", old_f, "--next-master-key-file", new_f];
        restart(&mut replicas, &pool, i, &data, &url, &flags).await;
    }
    // Finishing is refused on a replica that still seals under the old key.
    Cli::admin(replicas[0].as_ref().unwrap())
        .run(&["key", "rotate"])
        .fails(1, "still seals under its master key");
    // Round 2: every replica seals under the new key.
    for i in 0..2 {
        let flags = [
            "--master-key-file",
            new_f,
            "--previous-master-key-file",
            old_f,
        ];
        restart(&mut replicas, &pool, i, &data, &url, &flags).await;
        if i == 0 {
            // What the first replica now seals under the new key, the
            // other one (still sealing under the old key) reads.
            let (sealing_new, sealing_old) = (
                client(replicas[0].as_ref().unwrap()),
                client(replicas[1].as_ref().unwrap()),
            );
            sealing_new
                .secrets()
                .create("mixed", [("M", "new")])
                .await
                .unwrap();
            let values = Secret::from_name("mixed")
                .resolve_with(&sealing_old)
                .await
                .unwrap();
            assert_eq!(values["M"], "new");
        }
    }
    // Both replicas finish the rotation at once.
    let before = load.ok();
    let finishing: Vec<_> = replicas
        .iter()
        .map(|r| {
            let cli = Cli::admin(r.as_ref().unwrap());
            tokio::task::spawn_blocking(move || cli.run(&["key", "rotate", "--quiet"]))
        })
        .collect();
    for f in finishing {
        let out = f.await.unwrap().ok();
        assert!(out.stdout.contains("rotated the master key"), "{out:#?}");
        assert!(out.stdout.contains(&new.id()), "{out:#?}");
    }
    assert!(load.ok() > before, "requests ran during the rewrap");
    let pg = db.pool().await;
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM secret_versions WHERE key_id <> $1")
        .bind(new.id())
        .fetch_one(&pg)
        .await
        .unwrap();
    assert_eq!(left, 0, "no version is under another key than the new one");
    // Round 3: the previous key is no longer given.
    for i in 0..2 {
        restart(
            &mut replicas,
            &pool,
            i,
            &data,
            &url,
            &["--master-key-file", new_f],
        )
        .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (failed, made) = load.stop().await;
    assert_eq!(failed, 0, "no request failed");
    for r in &replicas {
        let log = r.as_ref().unwrap().log();
        assert!(!log.contains(old.to_base64().as_str()), "no key in the log");
        assert!(!log.contains(new.to_base64().as_str()), "no key in the log");
    }
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM secret_versions WHERE key_id <> $1")
        .bind(new.id())
        .fetch_one(&pg)
        .await
        .unwrap();
    assert_eq!(left, 0, "the load wrote under the new key only");
    pg.close().await;

    // Every version reads with the new key alone.
    let admin = client(replicas[1].as_ref().unwrap());
    for i in 0..150 {
        let name = format!("k-{i}");
        let first = Secret::from_name(name.as_str())
            .version(1)
            .resolve_with(&admin)
            .await
            .unwrap();
        assert_eq!(first["V"], "1");
        let second = Secret::from_name(name.as_str())
            .version(2)
            .resolve_with(&admin)
            .await
            .unwrap();
        assert_eq!(second["V"], format!("{name}-2"));
    }
    assert!(!made.is_empty());
    for name in made {
        let values = Secret::from_name(name.as_str())
            .resolve_with(&admin)
            .await
            .unwrap();
        assert_eq!(values["N"], "1");
    }
    for r in replicas.iter_mut() {
        r.take().unwrap().stop_async().await;
    }
    // The old key alone is refused with the wrong-key message.
    refused(&["--master-key-file", old_f], "cannot decrypt this store");
    drop(db);
}
