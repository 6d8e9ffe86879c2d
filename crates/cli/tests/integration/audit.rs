//! The audit log through the real binary (issue 14): `audit list`,
//! `audit export`, `audit verify`, `secret exposure`, what `token revoke`
//! says to rotate, and the warning when a server's log went backwards.

use std::path::Path;

use serde_json::Value;

use crate::harness::{Cli, Server};

/// Runs one SQL statement on a stopped server's SQLite database.
fn sql(data_dir: &Path, statement: &str) {
    let db = data_dir.join("latchkey.db");
    let url = format!("sqlite://{}", db.display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query(statement).execute(&pool).await.unwrap();
        pool.close().await;
    });
}

#[test]
fn reads_changes_and_refusals_are_listed_exported_and_verified() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::try_start(data.path(), &[], &[]).unwrap();
    let admin = Cli::admin(&server);
    admin
        .run(&["secret", "create", "db", "PASSWORD=hunter2-hunter2"])
        .ok();
    admin
        .run(&["token", "create", "ci", "--role", "reader"])
        .ok();
    let ci = admin
        .run(&["token", "create", "ci2", "--role", "developer", "--json"])
        .ok()
        .json();
    let ci_id = ci["token"]["id"].as_str().unwrap().to_owned();
    let dev = Cli::bare()
        .var("LATCHKEY_SERVER_URL", server.url())
        .var("LATCHKEY_TOKEN_ID", &ci_id)
        .var("LATCHKEY_TOKEN_SECRET", ci["secret"].as_str().unwrap());
    dev.run(&["run", "--secret", "db", "--", "true"]).ok();
    dev.run(&["token", "list"]).fails(1, "may not");
    let wrong = Cli::bare()
        .var("LATCHKEY_SERVER_URL", server.url())
        .var("LATCHKEY_TOKEN_ID", &ci_id)
        .var(
            "LATCHKEY_TOKEN_SECRET",
            "as-not-the-secret-not-the-secret-xx",
        );
    wrong.run(&["secret", "list"]).fails(1, "not valid");

    let events = admin.run(&["audit", "list", "--json"]).ok().json();
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "token.create",
        "secret.create",
        "secret.read",
        "permission.denied",
        "auth.failure",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    let reads = admin
        .run(&["audit", "list", "--action", "secret.read", "--json"])
        .ok()
        .json();
    assert_eq!(reads.as_array().unwrap().len(), 1, "{reads}");
    assert_eq!(reads[0]["actor"]["id"], ci_id.as_str());
    assert_eq!(reads[0]["interface"], "api");
    assert_eq!(reads[0]["version"], 1);
    let table = admin.run(&["audit", "list", "--secret", "db"]).ok();
    assert!(table.stdout.contains("secret.read"), "{}", table.stdout);

    // No value or token secret in anything exported.
    let export = admin.run(&["audit", "export"]).ok();
    let lines: Vec<Value> = export
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), events.as_array().unwrap().len());
    for needle in [
        "hunter2",
        ci["secret"].as_str().unwrap(),
        server.token_secret(),
        "not-the-secret",
    ] {
        assert!(!export.stdout.contains(needle), "the log shows {needle:?}");
    }

    // Bad filters, and a token that may not read the log.
    admin
        .run(&["audit", "list", "--action", "secret.steal"])
        .fails(1, "Unknown audit action 'secret.steal'");
    admin
        .run(&[
            "audit",
            "list",
            "--since",
            "2026-02-01",
            "--until",
            "2026-01-01",
        ])
        .fails(1, "'since' is later than 'until'");
    admin
        .run(&["audit", "list", "--token", "nope"])
        .fails(1, "token ids start with ak-");
    dev.run(&["audit", "list"])
        .fails(1, "may not read the audit log");

    // Exposure, and what revoking says to rotate.
    let exposure = admin
        .run(&["secret", "exposure", "db", "--json"])
        .ok()
        .json();
    assert_eq!(exposure["items"][0]["token_id"], ci_id.as_str());
    let revoke = admin.run(&["token", "revoke", &ci_id, "--yes"]).ok();
    assert!(
        revoke.stderr.contains("rotate them")
            && revoke.stderr.contains("db (environment main, version 1"),
        "{revoke:#?}"
    );

    let verify = admin.run(&["audit", "verify"]).ok();
    assert!(
        verify.stdout.contains("The audit log is intact"),
        "{verify:#?}"
    );

    // An event edited in the database: verify fails naming it.
    let seq = reads[0]["seq"].as_i64().unwrap();
    let dir = data.path().to_owned();
    server.stop();
    sql(
        &dir,
        &format!("UPDATE audit_events SET actor_name = 'someone-else' WHERE seq = {seq}"),
    );
    let server = Server::try_start(&dir, &[], &[]).unwrap();
    let admin = admin.var("LATCHKEY_SERVER_URL", server.url());
    admin
        .run(&["audit", "verify"])
        .fails(1, &format!("NOT intact at event {seq}"));
    server.stop();
}

#[test]
fn a_server_restored_from_an_older_copy_is_noticed() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    let server = Server::try_start(&dir, &[], &[]).unwrap();
    let admin = Cli::admin(&server);
    admin.run(&["secret", "create", "a", "K=1"]).ok();
    server.stop();
    let old = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("latchkey.db"), old.path().join("latchkey.db")).unwrap();

    let server = Server::try_start(&dir, &[], &[]).unwrap();
    let admin = admin.var("LATCHKEY_SERVER_URL", server.url());
    admin.run(&["secret", "create", "b", "K=2"]).ok();
    let quiet = admin.run(&["secret", "list"]).ok();
    assert!(!quiet.stderr.contains("WARNING"), "{quiet:#?}");
    server.stop();

    // The database goes back to the older copy.
    std::fs::copy(old.path().join("latchkey.db"), dir.join("latchkey.db")).unwrap();
    let server = Server::try_start(&dir, &[], &[]).unwrap();
    let admin = admin.var("LATCHKEY_SERVER_URL", server.url());
    let warned = admin.run(&["secret", "list"]).ok();
    assert!(
        warned.stderr.contains("WARNING") && warned.stderr.contains("may have been rolled back"),
        "{warned:#?}"
    );
    server.stop();
}

#[test]
fn a_read_whose_event_cannot_be_written_returns_no_value() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::try_start(data.path(), &[], &[]).unwrap();
    let admin = Cli::admin(&server);
    admin
        .run(&["secret", "create", "db", "PASSWORD=never-shown-value"])
        .ok();
    server.stop();
    // An audit device that refuses every event.
    sql(
        data.path(),
        "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events \
         BEGIN SELECT RAISE(ABORT, 'audit device down'); END",
    );
    let server = Server::try_start(data.path(), &[], &[]).unwrap();
    let admin = admin.var("LATCHKEY_SERVER_URL", server.url());
    let out = admin
        .run(&["run", "--secret", "db", "--", "sh", "-c", "echo $PASSWORD"])
        .fails(1, "audit log cannot be written");
    assert!(!out.stdout.contains("never-shown") && !out.stderr.contains("never-shown"));
    admin
        .run(&["secret", "update", "db", "PASSWORD=changed"])
        .fails(1, "audit log cannot be written");
    server.stop();
    sql(data.path(), "DROP TRIGGER audit_down");
    let server = Server::try_start(data.path(), &[], &[]).unwrap();
    let admin = admin.var("LATCHKEY_SERVER_URL", server.url());
    let info = admin.run(&["secret", "info", "db", "--json"]).ok().json();
    assert_eq!(info["version"], 1, "the refused update changed nothing");
    server.stop();
}
