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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_online_under_load_then_the_old_key_is_refused() {
    let mut server = Server::start();
    let data = server.data_dir().to_owned();
    let dir = server.keep_dir().expect("a temp data dir");
    let client = client(&server);
    // 2 × 400 versions: more than one batch of 500.
    populate(&client, 400).await;
    let old_key = read(&data.join("master.key"));

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = (0..3)
        .map(|w| {
            let (client, stop, ok, failed) =
                (client.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("k-{}", (w * 131 + i) % 400);
                    let secret = Secret::from_name(name.as_str());
                    let read = secret.resolve_with(&client).await;
                    let write = secret
                        .update_with(&client, [("W", format!("{w}-{i}").as_str())])
                        .await;
                    let created = client
                        .secrets()
                        .create(format!("new-{w}-{i}").as_str(), [("N", "1")])
                        .await;
                    for r in [read.map(drop), write.map(drop), created.map(drop)] {
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
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = ok.load(Ordering::Relaxed);
    let cli = Cli::admin(&server);
    let out = tokio::task::spawn_blocking(move || cli.run(&["key", "rotate", "--quiet"]))
        .await
        .unwrap()
        .ok();
    assert!(out.stdout.contains("rotated the master key"), "{out:#?}");
    let during = ok.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
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
