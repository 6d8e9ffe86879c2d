//! `latchkey serve`: bootstrap, restarts, the master key, shutdown.

use std::{collections::BTreeMap, os::unix::fs::PermissionsExt, path::Path};

use crate::harness::{http_get, Server};

/// Every file of `dir` with its length and a hash of its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, (usize, u64)> {
    use std::hash::{Hash, Hasher};
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut hasher);
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, (bytes.len(), hasher.finish()))
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn first_start_bootstraps_and_a_restart_reuses_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::try_start(&dir, &[], &[]).unwrap();
    let token_text = std::fs::read_to_string(dir.join("admin-token")).unwrap();
    assert!(
        token_text.starts_with(&format!("LATCHKEY_SERVER_URL={}\n", server.url())),
        "{token_text}"
    );
    let (id, secret) = server.admin_token();
    assert!(id.starts_with("ak-") && secret.starts_with("as-"));
    assert_eq!(mode(&dir.join("admin-token")), 0o600);
    assert_eq!(mode(&dir.join("master.key")), 0o600);
    assert_eq!(mode(&dir.join("latchkey.db")), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(
        std::fs::read_to_string(dir.join("master.key"))
            .unwrap()
            .trim()
            .len(),
        44
    );
    assert!(
        !server.log().contains(&secret),
        "the token secret is never logged"
    );
    let key = std::fs::read(dir.join("master.key")).unwrap();
    assert!(server.stop().success());

    let again = Server::try_start(&dir, &[], &[]).unwrap();
    assert_eq!(
        std::fs::read(dir.join("master.key")).unwrap(),
        key,
        "key unchanged"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("admin-token")).unwrap(),
        token_text,
        "token unchanged"
    );
    assert!(again.stop().success());
}

#[tokio::test]
async fn a_wrong_master_key_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::try_start(&dir, &[], &[]).unwrap();
    let mut client = server.client().await;
    client
        .secret_get_or_create(latchkey_proto::api::SecretGetOrCreateRequest {
            deployment_name: "kept".into(),
            object_creation_type: 2,
            env_dict: [("K".to_owned(), "v".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(server.stop_async().await.success());
    let before = snapshot(&dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        [
            "admin-token",
            "latchkey.db",
            "latchkey.db.lock",
            "master.key"
        ],
        "a clean stop leaves no WAL behind"
    );
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let log = Server::try_start(&dir, &[], &[("LATCHKEY_MASTER_KEY", wrong)])
        .err()
        .expect("a wrong key must be refused");
    assert!(log.contains("cannot decrypt this store"), "{log}");
    assert!(!log.contains(wrong), "the key is never printed: {log}");
    assert_eq!(snapshot(&dir), before, "no file changed");

    // The key file missing while the store exists: refused, no new key made.
    let key = std::fs::read(dir.join("master.key")).unwrap();
    std::fs::remove_file(dir.join("master.key")).unwrap();
    let log = Server::try_start(&dir, &[], &[]).err().expect("refused");
    assert!(log.contains("master.key is missing"), "{log}");
    assert!(!dir.join("master.key").exists());
    // Given by file, it works.
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, &key).unwrap();
    let server = Server::try_start(
        &dir,
        &["--master-key-file", key_file.to_str().unwrap()],
        &[],
    )
    .unwrap();
    assert!(server.stop().success());
}

#[test]
fn a_second_server_on_the_same_database_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let first = Server::try_start(&dir, &[], &[]).unwrap();
    let log = Server::try_start(&dir, &[], &[])
        .err()
        .expect("a second server on one SQLite database must be refused");
    assert!(
        log.contains("is in use by another latchkey server"),
        "{log}"
    );
    // The first goes on serving, and once it stops the data dir is free.
    assert_eq!(http_get(first.url(), "/readyz").0, 200);
    assert!(first.stop().success());
    let again = Server::try_start(&dir, &[], &[]).unwrap();
    assert!(again.stop().success());
}

#[test]
fn two_master_key_sources_and_bad_keys_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    let log = Server::try_start(
        &tmp.path().join("a"),
        &["--master-key-file", key_file.to_str().unwrap()],
        &[(
            "LATCHKEY_MASTER_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )],
    )
    .err()
    .unwrap();
    assert!(log.contains("given twice"), "{log}");
    let log = Server::try_start(
        &tmp.path().join("b"),
        &[],
        &[("LATCHKEY_MASTER_KEY", "c2hvcnQ=")],
    )
    .err()
    .unwrap();
    assert!(log.contains("32 bytes"), "{log}");
    let log = Server::try_start(&tmp.path().join("c"), &["--database", "mysql://x"], &[])
        .err()
        .unwrap();
    assert!(log.contains("unsupported --database URL"), "{log}");
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let mut server = Server::start();
    let mut client = server.client().await;
    // A request in flight while the signal arrives still completes.
    let many: Vec<_> = (0..50)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move {
                c.secret_get_or_create(latchkey_proto::api::SecretGetOrCreateRequest {
                    deployment_name: format!("s{i}"),
                    object_creation_type: 2,
                    env_dict: [("K".to_owned(), "v".to_owned())].into(),
                    ..Default::default()
                })
                .await
            })
        })
        .collect();
    client.client_hello(()).await.unwrap();
    let pid = i32::try_from(server.pid()).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut acknowledged = Vec::new();
    for (i, task) in many.into_iter().enumerate() {
        if task.await.unwrap().is_ok() {
            acknowledged.push(format!("s{i}"));
        }
    }
    assert!(!acknowledged.is_empty(), "requests in flight completed");
    let dir = server.data_dir().to_path_buf();
    let tmp = server.keep_dir();
    assert!(server.stop_async().await.success(), "exit code 0");
    // Every acknowledged write is there after a restart.
    let again = Server::try_start(&dir, &[], &[]).unwrap();
    let mut client = again.client().await;
    for name in acknowledged {
        client
            .secret_get_or_create(latchkey_proto::api::SecretGetOrCreateRequest {
                deployment_name: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged {name} lost: {e:?}"));
    }
    drop(tmp);
}

#[test]
fn health_and_readiness() {
    let server = Server::start();
    assert_eq!(http_get(server.url(), "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(
        http_get(server.url(), "/readyz"),
        (200, "ready\n".to_owned())
    );
    assert_eq!(http_get(server.url(), "/no-such-page").0, 404);
}
