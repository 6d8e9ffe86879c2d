//! Secret versions in the CLI (issue 13): `secret history`, `secret
//! rollback`, `secret info --version`, `run --secret NAME@N` and lockfiles
//! (`run --lock`, `run --locked`, `lock status`), through the real binary.

use std::path::PathBuf;

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

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
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

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
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

    // A lockfile whose version is destroyed later: `lock status` says so,
    // and `run --locked` refuses.
    let lock = f.path("s.lock");
    f.sh(&["--lock", &lock, "--secret", "s@2"], "true").ok();
    f.run(&["secret", "update", "s", "N=value-z1"]).ok();
    let out = f.run(&["lock", "status", &lock, "--json"]).fails(
        1,
        "secret 's' (environment 'main', version 2): version 2 is no longer kept (destroyed); \
         versions 3 to 5 are kept",
    );
    let status = out.json();
    assert_eq!(status[0]["pinned_version"], 2);
    assert_eq!(status[0]["current_version"], 5);
    assert_eq!(status[0]["keys_changed"], Value::Null);
    f.refused(
        &["--locked", &lock],
        1,
        "Secret 's' has no version 2 (it was destroyed or never existed); versions 3 to 5 are kept",
    );
}

/// The `[[secret]]` tables of a lockfile, as JSON.
fn lock_entries(path: &str) -> (toml::Table, Vec<Value>) {
    let text = std::fs::read_to_string(path).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let entries = table["secret"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    (table, entries)
}

#[test]
fn a_lockfile_pins_versions_until_it_is_written_again() {
    let f = Fixture::new();
    f.run(&["secret", "create", "a", "A=value-a1", "B=value-b1"])
        .ok();
    f.run(&["secret", "create", "b", "C=value-c1"]).ok();
    let lock = f.path("app.lock");
    let echo = "echo \"$A|$B|$C|$D\"";

    // Resolves as usual, writes the file, then runs.
    let out = f
        .sh(
            &[
                "--lock", &lock, "--secret", "a:A", "--set", "D=set", "--secret", "b",
            ],
            &format!("test -f {lock} && {echo}"),
        )
        .ok();
    assert_eq!(out.stdout, "value-a1|value-b1|value-c1|set\n");
    let text = std::fs::read_to_string(&lock).unwrap();
    for value in VALUES.iter().chain(&["set"]) {
        assert!(!text.contains(&format!("\"{value}\"")), "{value} in {text}");
    }
    let (table, entries) = lock_entries(&lock);
    assert_eq!(table["latchkey_lockfile"].as_integer(), Some(1));
    let ids: Vec<String> = ["a", "b"]
        .iter()
        .map(|n| {
            Secret::from_name(*n)
                .info_with(&f.client)
                .wait()
                .unwrap()
                .id
        })
        .collect();
    assert_eq!(
        entries,
        [
            json!({"environment": "main", "name": "a", "id": ids[0], "version": 1, "required_keys": ["A"]}),
            json!({"environment": "main", "name": "b", "id": ids[1], "version": 1, "required_keys": []}),
        ]
    );
    let leftovers: Vec<PathBuf> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy() != lock)
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

    let status = f.run(&["lock", "status", &lock, "--json"]).ok().json();
    assert_eq!(status[0]["name"], "a");
    assert_eq!(status[0]["pinned_version"], 1);
    assert_eq!(status[0]["current_version"], 1);
    assert_eq!(status[0]["keys_changed"], json!([]));
    assert_eq!(status[0]["error"], Value::Null);

    // The secrets change; the lockfile still gives the old values.
    f.run(&[
        "secret",
        "update",
        "a",
        "A=value-a2",
        "D=value-d",
        "--unset",
        "B",
    ])
    .ok();
    let out = f.sh(&["--locked", &lock], echo).ok();
    assert_eq!(out.stdout, "value-a1|value-b1|value-c1|\n");
    // In its place among other sources: later ones override it.
    let out = f
        .sh(
            &["--set", "A=before", "--locked", &lock, "--set", "C=after"],
            echo,
        )
        .ok();
    assert_eq!(out.stdout, "value-a1|value-b1|after|\n");
    let out = f.sh(&["--secret", "a", "--secret", "b"], echo).ok();
    assert_eq!(out.stdout, "value-a2||value-c1|value-d\n");

    // `lock status` shows what changed since, by key name.
    let out = f.run(&["lock", "status", &lock, "--json"]).ok();
    assert_no_value(&out);
    let status = out.json();
    assert_eq!(status[0]["pinned_version"], 1);
    assert_eq!(status[0]["current_version"], 2);
    assert_eq!(strings(&status[0]["keys_added"]), ["D"]);
    assert_eq!(strings(&status[0]["keys_removed"]), ["B"]);
    assert_eq!(strings(&status[0]["keys_changed"]), ["A"]);
    assert_eq!(status[1]["name"], "b");
    assert_eq!(status[1]["current_version"], 1);
    assert_eq!(status[1]["keys_added"], json!([]));
    let out = f.run(&["lock", "status", &lock]).ok();
    assert_no_value(&out);
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["a", "main", "1", "2", "D", "B", "A"],
            vec!["b", "main", "1", "1", "-", "-", "-"],
        ]
    );

    // Written again: the current versions.
    f.sh(&["--lock", &lock, "--secret", "a"], "true").ok();
    let (_, entries) = lock_entries(&lock);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["version"], 2);
    // A pinned version is what the lockfile records.
    f.sh(&["--lock", &lock, "--secret", "a@1:B"], "true").ok();
    let (_, entries) = lock_entries(&lock);
    assert_eq!(entries[0]["version"], 1);
    assert_eq!(entries[0]["required_keys"], json!(["B"]));
}

#[test]
fn nothing_is_written_or_run_when_a_lock_cannot_be_made() {
    let f = Fixture::new();
    f.run(&["secret", "create", "a", "A=value-a1"]).ok();
    let lock = f.path("app.lock");
    std::fs::write(&lock, "# the old file\n").unwrap();
    let unchanged = || assert_eq!(std::fs::read_to_string(&lock).unwrap(), "# the old file\n");

    f.refused(
        &["--lock", &lock, "--secret", "a", "--secret", "nope"],
        1,
        "Secret 'nope' not found",
    );
    unchanged();
    f.refused(
        &["--lock", &lock, "--secret", "a:NOPE"],
        1,
        "missing key(s): NOPE",
    );
    unchanged();
    f.refused(
        &["--lock", &lock, "--secret", "a@0"],
        2,
        "Invalid version 0",
    );
    unchanged();
    f.refused(&["--lock", &lock, "--set", "A=1"], 2, "nothing to lock");
    unchanged();
    f.refused(
        &["--lock", &lock, "--locked", &lock, "--secret", "a"],
        2,
        "cannot be used with",
    );
    unchanged();
    f.refused(
        &["--lock", &f.path("no/such/dir/x.lock"), "--secret", "a"],
        1,
        "cannot write lockfile",
    );
    let out = f.run(&[
        "run",
        "--lock",
        &lock,
        "--secret",
        "a",
        "--",
        "no-such-command-latchkey",
    ]);
    out.fails(1, "command not found");
    unchanged();
}

#[test]
fn a_locked_secret_that_is_gone_fails_with_nothing_run() {
    let f = Fixture::new();
    f.client.environments().create("dev").wait().unwrap();
    f.run(&["secret", "create", "a", "A=value-a1"]).ok();
    f.run(&["secret", "create", "d", "D=value-d", "--env", "dev"])
        .ok();
    let lock_d = f.path("dev.lock");
    f.sh(
        &["--lock", &lock_d, "--env", "dev", "--secret", "d"],
        "true",
    )
    .ok();
    let (_, entries) = lock_entries(&lock_d);
    assert_eq!(entries[0]["environment"], "dev");
    // The file names the environment: --env does not move a locked secret.
    let out = f
        .sh(
            &["--locked", &lock_d, "--env", "main", "--secret", "a"],
            "echo $A $D",
        )
        .ok();
    assert_eq!(out.stdout, "value-a1 value-d\n");

    // The environment is deleted (with its secrets).
    f.run(&["environment", "delete", "dev", "--with-secrets", "--yes"])
        .ok();
    f.refused(
        &["--secret", "a", "--locked", &lock_d],
        1,
        &format!(
            "lockfile {lock_d}: secret 'd' (environment 'dev', version 1): \
             Environment 'dev' not found"
        ),
    );
    f.run(&["lock", "status", &lock_d]).fails(
        1,
        "secret 'd' (environment 'dev', version 1): Environment 'dev' not found",
    );

    // The secret is deleted.
    let lock_a = f.path("a.lock");
    f.sh(&["--lock", &lock_a, "--secret", "a"], "true").ok();
    f.run(&["secret", "delete", "a", "--yes"]).ok();
    f.refused(&["--locked", &lock_a], 1, "Secret 'a' not found");
    let out = f
        .run(&["lock", "status", &lock_a, "--json"])
        .fails(1, "1 of 1 locked secret(s) can no longer be resolved");
    assert_eq!(out.json()[0]["error"], "Secret 'a' not found");
    assert_eq!(out.json()[0]["current_version"], Value::Null);

    // Created again under the same name: numbered from 1 again, but not
    // the secret that was locked.
    f.run(&["secret", "create", "a", "A=value-z1"]).ok();
    let out = f.refused(&["--locked", &lock_a], 1, "deleted and created again");
    assert_no_value(&out);
    f.run(&["lock", "status", &lock_a])
        .fails(1, "deleted and created again");
}

#[test]
fn files_that_are_not_lockfiles_are_refused_without_being_quoted() {
    let f = Fixture::new();
    f.run(&["secret", "create", "a", "A=value-a1"]).ok();
    let write = |name: &str, text: &str| -> String {
        let path = f.path(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let dotenv = write(".env", "PASSWORD=first-pw\nTOKEN=\"second-pw\"\n");
    let config = write("config.toml", "password = \"first-pw\"\n");
    let newer = write("newer.lock", "latchkey_lockfile = 2\n");
    let bad_version = write(
        "bad.lock",
        "latchkey_lockfile = 1\n[[secret]]\nenvironment = \"main\"\nname = \"a\"\nid = \"st-x\"\nversion = 0\n",
    );
    let missing = f.path("missing.lock");
    for (path, needle) in [
        (
            &dotenv,
            format!("{dotenv} is not a latchkey lockfile: it is not valid TOML (line 1)"),
        ),
        (
            &config,
            format!("{config} is not a latchkey lockfile: it has no `latchkey_lockfile = 1` line"),
        ),
        (&newer, format!("{newer} is a lockfile of format 2")),
        (
            &bad_version,
            format!("{bad_version}: secret 1: Invalid version 0: versions are numbered from 1"),
        ),
        (&missing, format!("cannot read lockfile {missing}")),
    ] {
        let out = f.refused(&["--locked", path], 1, &needle);
        assert_no_value(&out);
        let out = f.run(&["lock", "status", path]).fails(1, &needle);
        assert_no_value(&out);
    }
    // The lockfile is read before any request: a bad one fails even with
    // no server to ask.
    let offline = Cli::bare().var("LATCHKEY_SERVER_URL", "http://127.0.0.1:9");
    offline
        .run(&["run", "--locked", &dotenv, "--", "true"])
        .fails(1, "is not a latchkey lockfile");
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
        (&["run", "--help"], "latchkey run --locked secrets.lock"),
        (
            &["lock", "status", "--help"],
            "latchkey lock status secrets.lock",
        ),
    ] {
        let out = f.run(args).ok();
        assert!(out.stdout.contains(example), "{args:?}: {}", out.stdout);
    }
}
