//! Secret versions in the CLI (issue 13): `secret history`, `secret
//! rollback`, `secret info --version`, `run --secret NAME@N` and lockfiles
//! (`run --lock`, `run --locked`, `lock status`), through the real binary.

use latchkey::{blocking::Wait, Client, Config, Role, Secret};
use serde_json::{json, Value};

use crate::harness::{Cli, Out, Server};

/// A server, the admin's CLI and SDK client, and a directory for files.
struct Fixture {
    server: Server,
    cli: Cli,
    client: Client,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_server(Server::start())
    }

    fn with_server(server: Server) -> Fixture {
        let (id, secret) = server.admin_token();
        let client = Client::new(Config::new(server.url(), &id, &secret)).unwrap();
        Fixture {
            cli: Cli::admin(&server),
            server,
            client,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        self.cli.run(args)
    }

    /// `latchkey run ARGS -- sh -c SCRIPT`.
    fn sh(&self, args: &[&str], script: &str) -> Out {
        let mut all = vec!["run"];
        all.extend(args);
        all.extend(["--", "sh", "-c", script]);
        self.run(&all)
    }

    /// `latchkey run ARGS -- touch MARKER`, which must fail with `code`
    /// and `needle` on stderr without running the command.
    #[track_caller]
    fn refused(&self, args: &[&str], code: i32, needle: &str) -> Out {
        let marker = self.dir.path().join("ran");
        let mut all = vec!["run"];
        all.extend(args);
        all.extend(["--", "touch", marker.to_str().unwrap()]);
        let out = self.run(&all).fails(code, needle);
        assert!(!marker.exists(), "{args:?}: the command ran");
        out
    }

    fn versions(&self, name: &str) -> Vec<i64> {
        Secret::from_name(name)
            .history_with(&self.client)
            .wait()
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect()
    }
}

/// The values this file's secrets hold: none may ever be printed.
const VALUES: [&str; 8] = [
    "value-a1",
    "value-b1",
    "value-a2",
    "value-c1",
    "value-z1",
    "first-pw",
    "second-pw",
    "value-d",
];

#[track_caller]
fn assert_no_value(out: &Out) {
    for value in VALUES {
        assert!(
            !out.stdout.contains(value) && !out.stderr.contains(value),
            "{value} printed: {out:#?}"
        );
    }
}

#[test]
fn history_lists_every_kind_of_change_newest_first_without_values() {
    let f = Fixture::new();
    f.run(&["secret", "create", "app", "A=value-a1", "B=value-b1"])
        .ok();
    // Another token, whose name is the author of its changes.
    let deployer = f
        .client
        .tokens()
        .create("deployer", Role::Developer)
        .wait()
        .unwrap();
    Cli::admin(&f.server)
        .var("LATCHKEY_TOKEN_ID", &deployer.info.id)
        .var("LATCHKEY_TOKEN_SECRET", deployer.secret.expose())
        .run(&[
            "secret",
            "update",
            "app",
            "A=value-a2",
            "C=value-c1",
            "--unset",
            "B",
        ])
        .ok();
    f.run(&["secret", "create", "app", "Z=value-z1", "--force"])
        .ok();
    f.run(&["secret", "rollback", "app", "--to", "2"]).ok();

    let out = f.run(&["secret", "history", "app", "--json"]).ok();
    assert_no_value(&out);
    let history = out.json();
    let field = |name: &str| -> Vec<Value> {
        history
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v[name].clone())
            .collect()
    };
    assert_eq!(field("version"), [json!(4), json!(3), json!(2), json!(1)]);
    assert_eq!(
        field("action"),
        [
            json!("rolled back to 2"),
            json!("overwritten"),
            json!("updated"),
            json!("created")
        ]
    );
    assert_eq!(
        field("created_by"),
        [
            json!("admin"),
            json!("admin"),
            json!("deployer"),
            json!("admin")
        ]
    );
    assert_eq!(
        field("keys_added"),
        [
            json!(["A", "C"]),
            json!(["Z"]),
            json!(["C"]),
            json!(["A", "B"])
        ]
    );
    assert_eq!(
        field("keys_removed"),
        [json!(["Z"]), json!(["A", "C"]), json!(["B"]), json!([])]
    );
    assert_eq!(
        field("keys_changed"),
        [json!([]), json!([]), json!(["A"]), json!([])]
    );
    for v in history.as_array().unwrap() {
        let at = v["created_at"].as_str().unwrap();
        assert!(at.parse::<latchkey::Timestamp>().is_ok(), "{at}");
    }

    // The table for people: one row per version, newest first.
    let out = f.run(&["secret", "history", "app"]).ok();
    assert_no_value(&out);
    let lines: Vec<&str> = out.stdout.lines().collect();
    for column in [
        "Version",
        "Created at",
        "Created by",
        "Action",
        "Keys added",
    ] {
        assert!(lines[0].contains(column), "{}", out.stdout);
    }
    assert_eq!(lines.len(), 5, "{}", out.stdout);
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // Version, date, time, UTC, author, action..., added, removed, changed.
    let row4 = words(lines[1]);
    assert_eq!(row4[0], "4");
    assert_eq!(
        row4[4..],
        ["admin", "rolled", "back", "to", "2", "A,", "C", "Z", "-"]
    );
    let row2 = words(lines[3]);
    assert_eq!(row2[4..], ["deployer", "updated", "C", "B", "A"]);
    let row1 = words(lines[4]);
    assert_eq!(row1[4..], ["admin", "created", "A,", "B", "-", "-"]);

    f.run(&["secret", "history", "nope"])
        .fails(1, "Secret 'nope' not found");
    f.run(&["secret", "history", "app", "--env", "nowhere"])
        .fails(1, "nowhere");
}

#[test]
fn rollback_prints_the_new_version_and_refuses_bad_versions() {
    let f = Fixture::new();
    f.run(&["secret", "create", "db", "PASSWORD=first-pw"]).ok();
    f.run(&[
        "secret",
        "update",
        "db",
        "PASSWORD=second-pw",
        "EXTRA=value-d",
    ])
    .ok();

    let out = f.run(&["secret", "rollback", "db", "--to", "1"]).ok();
    assert_no_value(&out);
    assert_eq!(
        out.stdout,
        "Rolled back secret 'db' in environment 'main' to version 1: \
         it is now at version 3 (key PASSWORD).\n"
    );
    let values = Secret::from_name("db")
        .resolve_with(&f.client)
        .wait()
        .unwrap();
    assert_eq!(values.get("PASSWORD").map(String::as_str), Some("first-pw"));
    assert!(!values.contains_key("EXTRA"));

    // Roll forward again, asking for JSON.
    let info = f
        .run(&["secret", "rollback", "db", "--to", "2", "--json"])
        .ok()
        .json();
    assert_eq!(info["version"], 4);
    assert_eq!(info["keys"], json!(["EXTRA", "PASSWORD"]));

    // Bad versions: usage errors before any request, or the server's
    // message naming what is kept; nothing is written either way.
    for (to, code, needle) in [
        ("0", 2, "Invalid version 0: versions are numbered from 1"),
        ("-1", 2, "Invalid version -1: versions are numbered from 1"),
        (
            "two",
            2,
            "Invalid version 'two': expected a whole number from 1",
        ),
        ("", 2, "Invalid version ''"),
        (
            "9",
            1,
            "Secret 'db' has no version 9 (it was destroyed or never existed); \
             versions 1 to 4 are kept",
        ),
        (
            "4",
            1,
            "Secret 'db' is at version 4 already; nothing was rolled back",
        ),
    ] {
        let out = f
            .run(&["secret", "rollback", "db", "--to", to])
            .fails(code, needle);
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    f.run(&["secret", "rollback", "db"]).fails(2, "--to");
    f.run(&["secret", "rollback", "nope", "--to", "1"])
        .fails(1, "Secret 'nope' not found");
    assert_eq!(f.versions("db"), [4, 3, 2, 1]);
}

#[test]
fn info_shows_the_keys_and_record_of_a_kept_version() {
    let f = Fixture::new();
    f.run(&["secret", "create", "app", "A=value-a1"]).ok();
    f.run(&["secret", "update", "app", "B=value-b1"]).ok();

    let v1 = f
        .run(&["secret", "info", "app", "--version", "1", "--json"])
        .ok()
        .json();
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["keys"], json!(["A"]));
    assert_eq!(v1["name"], "app");
    assert_eq!(v1["version_info"]["action"], "created");
    assert_eq!(v1["version_info"]["created_by"], "admin");
    assert_eq!(v1["version_info"]["keys_added"], json!(["A"]));

    let out = f.run(&["secret", "info", "app", "--version", "2"]).ok();
    assert_no_value(&out);
    let line = |label: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label} in {}", out.stdout))
            .to_owned()
    };
    assert!(
        line("Version:").contains("2 (updated by admin at "),
        "{}",
        out.stdout
    );
    // Labels are padded to one column, as for the current version.
    assert_eq!(line("Changes:"), format!("{:15}added B", "Changes:"));
    assert_eq!(line("Keys:"), format!("{:15}A, B", "Keys:"));
    let out = f.run(&["secret", "info", "app", "--version", "1"]).ok();
    assert!(
        out.stdout.contains(&format!("\n{:15}A\n", "Keys:")),
        "{}",
        out.stdout
    );
    // Without --version: the current version, no record.
    let current = f.run(&["secret", "info", "app", "--json"]).ok().json();
    assert_eq!(current["version"], 2);
    assert!(current.get("version_info").is_none(), "{current}");

    f.run(&["secret", "info", "app", "--version", "0"])
        .fails(2, "Invalid version 0: versions are numbered from 1");
    f.run(&["secret", "info", "app", "--version", "-3"])
        .fails(2, "Invalid version -3");
    f.run(&["secret", "info", "app", "--version", "latest"])
        .fails(2, "Invalid version 'latest'");
    f.run(&["secret", "info", "app", "--version", "3"])
        .fails(1, "Secret 'app' has no version 3 (it was destroyed or never existed); versions 1 to 2 are kept");
    // --version names a secret's version here; latchkey's own is still there.
    let out = f.run(&["--version"]).ok();
    assert!(out.stdout.starts_with("latchkey "), "{out:?}");
}

#[test]
fn run_resolves_the_version_after_the_last_at_sign() {
    let f = Fixture::new();
    // Names may hold '.', so NAME@N splits on the last '@'.
    f.run(&["secret", "create", "db.prod", "PASSWORD=first-pw"])
        .ok();
    f.run(&[
        "secret",
        "update",
        "db.prod",
        "PASSWORD=second-pw",
        "EXTRA=value-d",
    ])
    .ok();
    let echo = "echo \"$PASSWORD|$EXTRA\"";
    let out = f.sh(&["--secret", "db.prod@1"], echo).ok();
    assert_eq!(out.stdout, "first-pw|\n");
    let out = f.sh(&["--secret", "db.prod@2:PASSWORD,EXTRA"], echo).ok();
    assert_eq!(out.stdout, "second-pw|value-d\n");
    let out = f.sh(&["--secret", "db.prod"], echo).ok();
    assert_eq!(out.stdout, "second-pw|value-d\n");
    // Later sources override earlier ones, versions or not.
    let out = f
        .sh(&["--secret", "db.prod", "--secret", "db.prod@1"], echo)
        .ok();
    assert_eq!(out.stdout, "first-pw|value-d\n");

    // Required keys are checked against the version asked for.
    f.refused(&["--secret", "db.prod@1:EXTRA"], 1, "missing key(s): EXTRA");
    // Bad versions name the problem; nothing runs.
    for (spec, code, needle) in [
        (
            "db.prod@0",
            2,
            "--secret 'db.prod@0': Invalid version 0: versions are numbered from 1",
        ),
        ("db.prod@-1", 2, "Invalid version -1"),
        (
            "db.prod@two",
            2,
            "Invalid version 'two': expected a whole number from 1",
        ),
        ("db.prod@", 2, "--secret 'db.prod@': no version after '@'"),
        ("db.prod@:PASSWORD", 2, "no version after '@'"),
        ("@1", 2, "no secret name before '@'"),
        (
            "db.prod:PASSWORD@1",
            2,
            "put the version before the keys: db.prod@1:PASSWORD",
        ),
        (
            "db.prod@7",
            1,
            "Secret 'db.prod' has no version 7 (it was destroyed or never existed); \
             versions 1 to 2 are kept",
        ),
        ("nope@1", 1, "Secret 'nope' not found"),
    ] {
        let out = f.refused(&["--secret", spec], code, needle);
        assert_no_value(&out);
    }
}

#[test]
fn keep_versions_destroys_old_versions_and_errors_name_the_kept_ones() {
    let f = Fixture::with_server(Server::start_with(&["--keep-versions", "3"]));
    f.run(&["secret", "create", "s", "N=value-a1"]).ok();
    for value in ["value-a2", "value-b1", "value-c1"] {
        f.run(&["secret", "update", "s", &format!("N={value}")])
            .ok();
    }
    let history = f.run(&["secret", "history", "s", "--json"]).ok().json();
    let versions: Vec<_> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].clone())
        .collect();
    assert_eq!(versions, [json!(4), json!(3), json!(2)]);
    // Version 2's changes were recorded while version 1 was kept.
    assert_eq!(history[2]["keys_changed"], json!(["N"]));

    let gone = "Secret 's' has no version 1 (it was destroyed or never existed); \
                versions 2 to 4 are kept";
    f.refused(&["--secret", "s@1"], 1, gone);
    let out = f.sh(&["--secret", "s@2"], "echo $N").ok();
    assert_eq!(out.stdout, "value-a2\n");
    f.run(&["secret", "rollback", "s", "--to", "1"])
        .fails(1, gone);
    f.run(&["secret", "info", "s", "--version", "1"])
        .fails(1, gone);
    assert_eq!(f.versions("s"), [4, 3, 2]);
}

#[test]
fn help_shows_examples_of_the_version_commands() {
    let f = Fixture::new();
    for (args, example) in [
        (
            &["secret", "history", "--help"][..],
            "latchkey secret history my-secret",
        ),
        (
            &["secret", "rollback", "--help"],
            "latchkey secret rollback my-secret --to 3",
        ),
        (
            &["secret", "info", "--help"],
            "latchkey secret info my-secret --version 2",
        ),
        (&["run", "--help"], "latchkey run --secret db@3"),
    ] {
        let out = f.run(args).ok();
        assert!(out.stdout.contains(example), "{args:?}: {}", out.stdout);
    }
}
