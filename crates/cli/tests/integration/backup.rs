//! `latchkey backup` / `backup verify` / `restore` through the real binary,
//! on both backends: a backup taken from a running server, restored into a
//! new store of the other backend, is served with every secret, version and
//! token, with equal digests; every bad backup is refused before anything
//! changes.
//!
//! The round trip makes `LATCHKEY_TEST_BACKUP_SECRETS` secrets (default
//! 300, to keep the debug-build suite fast); the issue's full run is
//! `LATCHKEY_TEST_BACKUP_SECRETS=10000 cargo test -p latchkey-cli --test
//! integration backup`.

use std::{
    collections::BTreeMap,
    future::IntoFuture as _,
    path::{Path, PathBuf},
};

use latchkey::{blocking::Wait, Client, Config, Role, Secret};
use serde_json::Value;

use crate::{
    crash::pg::TestDb,
    harness::{Cli, Out, Server},
};

fn secret_count() -> usize {
    std::env::var("LATCHKEY_TEST_BACKUP_SECRETS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

fn client(server: &Server) -> Client {
    let (id, secret) = server.admin_token();
    Client::new(Config::new(server.url(), &id, &secret)).unwrap()
}

/// Fills a server: `n` secrets (one of them with three versions) and a
/// reader token; returns the token's id and secret.
async fn populate(server: &Server, n: usize) -> (String, String) {
    let client = client(server);
    let names: Vec<String> = (0..n).map(|i| format!("s-{i:05}")).collect();
    for chunk in names.chunks(32) {
        let creates = chunk.iter().map(|name| {
            let value = format!("value of {name}");
            client
                .secrets()
                .create(name.as_str(), [("KEY", value.as_str()), ("OTHER", "x")])
                .into_future()
        });
        for created in futures::future::join_all(creates).await {
            created.unwrap();
        }
    }
    let versioned = Secret::from_name("s-00000");
    for v in ["2", "3"] {
        versioned.update_with(&client, [("KEY", v)]).await.unwrap();
    }
    let token = client.tokens().create("ci", Role::Reader).await.unwrap();
    (token.info.id.clone(), token.secret.expose().to_owned())
}

/// The `table rows sha256 digest` lines a backup, verify or restore printed.
fn digests(out: &Out) -> BTreeMap<String, (u64, String)> {
    out.stdout
        .lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                [table, rows, "rows", "sha256", digest] => Some((
                    (*table).to_owned(),
                    (rows.parse().ok()?, (*digest).to_owned()),
                )),
                _ => None,
            }
        })
        .collect()
}

/// A new data dir holding the admin-token file of `from` (a restored store
/// has its tokens, and the harness signs in with that one).
fn data_dir_for_restore(from: &Server, root: &Path) -> PathBuf {
    let dir = root.join("restored");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(from.data_dir().join("admin-token"), dir.join("admin-token")).unwrap();
    dir
}

/// What a restored server must serve of the original: every table's
/// digest, taken from a backup of it, the versions, the reader token.
async fn check_restored(
    original: &BTreeMap<String, (u64, String)>,
    restored: &Server,
    n: usize,
    reader: &(String, String),
    tmp: &Path,
) {
    let cli = Cli::admin(restored);
    let again = tmp.join("again.backup");
    let out = cli
        .run(&["backup", again.to_str().unwrap(), "--quiet"])
        .ok();
    let found = digests(&out);
    for (table, (rows, digest)) in original {
        if table == "tokens" {
            // The tokens' last use changes as they are used.
            assert_eq!(found[table].0, *rows, "{table}");
        } else if table == "audit_events" {
            // The audit log goes on: the second backup is an event of its own.
            assert_eq!(found[table].0, *rows + 1, "{table}");
        } else if table == "audit_head" {
            assert_eq!(found[table].0, *rows, "{table}");
        } else {
            assert_eq!(&found[table], &(*rows, digest.clone()), "{table}");
        }
    }
    assert_eq!(original["secrets"].0, n as u64);
    let client = client(restored);
    let first = Secret::from_name("s-00000");
    assert_eq!(first.resolve_with(&client).await.unwrap()["KEY"], "3");
    assert_eq!(first.history_with(&client).await.unwrap().len(), 3);
    let last = format!("s-{:05}", n - 1);
    assert_eq!(
        Secret::from_name(last.as_str())
            .resolve_with(&client)
            .await
            .unwrap()["KEY"],
        format!("value of {last}")
    );
    let ci = Client::new(Config::new(restored.url(), &reader.0, &reader.1)).unwrap();
    assert_eq!(ci.whoami().await.unwrap().token.name, "ci");
    // The restored audit log, and what was logged since, verify as one chain.
    let verdict = client.audit().verify().await.unwrap();
    assert!(verdict.intact, "{verdict:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backup_restores_into_postgres_and_serves() {
    let n = secret_count();
    let tmp = tempfile::tempdir().unwrap();
    let source = Server::start();
    let reader = populate(&source, n).await;
    let file = tmp.path().join("store.backup");
    let file = file.to_str().unwrap();
    let backed_up = Cli::admin(&source).run(&["backup", file, "--quiet"]).ok();
    let original = digests(&backed_up);
    assert_eq!(original.len(), 8, "{backed_up:?}");
    // While it keeps serving: the backup was online.
    client(&source)
        .secrets()
        .create("after", [("A", "1")])
        .wait()
        .unwrap();
    let verified = Cli::bare().run(&["backup", "verify", file]).ok();
    assert_eq!(digests(&verified), original);

    let db = TestDb::create().await;
    restore_and_serve(&source, file, &db.url, &original, n, &reader, tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backup_restores_into_sqlite_and_serves() {
    let n = 20;
    let tmp = tempfile::tempdir().unwrap();
    let db = TestDb::create().await;
    let source = Server::start_with(&["--database", &db.url]);
    let reader = populate(&source, n).await;
    let file = tmp.path().join("store.backup");
    let file = file.to_str().unwrap();
    let original = digests(&Cli::admin(&source).run(&["backup", file, "--quiet"]).ok());
    let url = format!("sqlite://{}", tmp.path().join("new/latchkey.db").display());
    restore_and_serve(&source, file, &url, &original, n, &reader, tmp.path()).await;
}

/// Restores `file` (a backup of `source`) into the new store at `url`,
/// checks that the restore printed the backup's digests, starts a server on
/// it, and checks what it serves.
async fn restore_and_serve(
    source: &Server,
    file: &str,
    url: &str,
    original: &BTreeMap<String, (u64, String)>,
    n: usize,
    reader: &(String, String),
    tmp: &Path,
) {
    let key = source.data_dir().join("master.key");
    let key = key.to_str().unwrap();
    let restored = Cli::bare()
        .run(&[
            "restore",
            file,
            "--database",
            url,
            "--master-key-file",
            key,
            "--quiet",
        ])
        .ok();
    assert_eq!(&digests(&restored), original);
    let dir = data_dir_for_restore(source, tmp);
    let target =
        Server::try_start(&dir, &["--database", url, "--master-key-file", key], &[]).unwrap();
    check_restored(original, &target, n, reader, tmp).await;
}

/// Rewrites line `index` (0: the manifest) of a backup with `edit`.
fn edit_line(text: &str, index: usize, edit: impl Fn(&mut Value)) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut value: Value = serde_json::from_str(&lines[index]).unwrap();
    edit(&mut value);
    lines[index] = value.to_string();
    lines.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_backups_are_refused_before_anything_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let source = Server::start();
    let (reader_id, reader_secret) = populate(&source, 5).await;
    let good = tmp.path().join("good.backup");
    let admin = Cli::admin(&source);
    admin
        .run(&["backup", good.to_str().unwrap(), "--quiet"])
        .ok();
    // A backup never replaces a file; a reader may not take one.
    admin
        .run(&["backup", good.to_str().unwrap()])
        .fails(1, "exists");
    let by_reader = Cli::bare()
        .var("LATCHKEY_SERVER_URL", source.url())
        .var("LATCHKEY_TOKEN_ID", &reader_id)
        .var("LATCHKEY_TOKEN_SECRET", &reader_secret);
    let denied = tmp.path().join("denied.backup");
    by_reader
        .run(&["backup", denied.to_str().unwrap()])
        .fails(1, "may not back up the store");
    assert!(!denied.exists() && !tmp.path().join("denied.backup.partial").exists());

    let text = std::fs::read_to_string(&good).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let last_row = lines.len() - 2;
    // The row of a secret version: its ciphertext is its last cell.
    let version_row = lines
        .iter()
        .position(|l| l.starts_with(r#"{"r":"#) && l.contains(r#""t":"secret_versions""#))
        .unwrap();
    let flip_ciphertext = |v: &mut Value| {
        let cells = v["r"].as_array_mut().unwrap();
        let ct = cells.last_mut().unwrap();
        let mut s = ct.as_str().unwrap().to_owned();
        let c = if s.starts_with('A') { "B" } else { "A" };
        s.replace_range(0..1, c);
        *ct = Value::from(s);
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "empty",
            String::new(),
            "is not a latchkey backup: it is empty",
        ),
        ("text", "hello\n".to_owned(), "is not a latchkey backup"),
        (
            "truncated-mid-line",
            text[..text.len() - lines[lines.len() - 1].len() - 40].to_owned(),
            "is truncated",
        ),
        (
            "truncated-at-a-line",
            lines[..last_row].join("\n") + "\n",
            "is truncated",
        ),
        (
            "altered-ciphertext",
            edit_line(&text, version_row, flip_ciphertext),
            "is damaged or was altered",
        ),
        (
            "altered-and-rehashed-row-count",
            edit_line(&text, 0, |v| v["tables"][5]["rows"] = Value::from(99)),
            "is damaged or was altered",
        ),
        (
            "altered-end-marker",
            edit_line(&text, lines.len() - 1, |v| {
                v["end"]["sha256"] = Value::from("0".repeat(64));
            }),
            "is damaged or was altered",
        ),
        (
            "another-version",
            edit_line(&text, 0, |v| v["format_version"] = Value::from(2)),
            "format version 2; this latchkey reads version 1 only",
        ),
        (
            "trailing",
            text.clone() + "{}\n",
            "goes on after its end marker",
        ),
    ];
    let key = source.data_dir().join("master.key");
    let key = key.to_str().unwrap();
    for (name, content, needle) in &cases {
        let file = tmp.path().join(format!("{name}.backup"));
        std::fs::write(&file, content).unwrap();
        let file = file.to_str().unwrap();
        Cli::bare()
            .run(&["backup", "verify", file])
            .fails(1, needle);
        let target = tmp.path().join(format!("{name}/latchkey.db"));
        let url = format!("sqlite://{}", target.display());
        Cli::bare()
            .run(&[
                "restore",
                file,
                "--database",
                &url,
                "--master-key-file",
                key,
            ])
            .fails(1, needle);
        assert!(!target.exists(), "{name}: nothing may be created");
        assert!(!target.parent().unwrap().exists(), "{name}");
    }

    // Another master key: refused before the target is created.
    let other_key = tmp.path().join("other.key");
    std::fs::write(
        &other_key,
        latchkey_store::crypto::MasterKey::generate()
            .to_base64()
            .as_bytes(),
    )
    .unwrap();
    let target = tmp.path().join("wrong-key/latchkey.db");
    let url = format!("sqlite://{}", target.display());
    Cli::bare()
        .run(&[
            "restore",
            good.to_str().unwrap(),
            "--database",
            &url,
            "--master-key-file",
            other_key.to_str().unwrap(),
        ])
        .fails(1, "cannot open this backup");
    assert!(!target.parent().unwrap().exists());
    Cli::bare()
        .run(&["restore", good.to_str().unwrap(), "--database", &url])
        .fails(1, "--master-key-file");

    // A non-empty target: refused, and left as it was.
    let target = tmp.path().join("twice/latchkey.db");
    let url = format!("sqlite://{}", target.display());
    let args = [
        "restore",
        good.to_str().unwrap(),
        "--database",
        &url,
        "--master-key-file",
        key,
    ];
    let first = digests(&Cli::bare().run(&args).ok());
    let before = std::fs::read(&target).unwrap();
    Cli::bare().run(&args).fails(1, "is not empty");
    assert_eq!(std::fs::read(&target).unwrap(), before);
    let verified = digests(
        &Cli::bare()
            .run(&["backup", "verify", good.to_str().unwrap()])
            .ok(),
    );
    assert_eq!(first, verified);
}
