//! The client commands of `latchkey` (issue 3, "The CLI"): the real binary
//! against a real server, with a private HOME and profile file.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use latchkey::{blocking::Wait, Client, Config, Secret};
use serde_json::Value;

use crate::harness::{binary, Cli, Out, Server};

/// The SDK, to check what the CLI did.
fn sdk(server: &Server) -> Client {
    let (id, secret) = server.admin_token();
    Client::new(Config::new(server.url(), &id, &secret)).unwrap()
}

fn values(client: &Client, name: &str, env: Option<&str>) -> Vec<(String, String)> {
    let mut secret = Secret::from_name(name);
    if let Some(env) = env {
        secret = secret.environment_name(env);
    }
    secret
        .resolve_with(client)
        .wait()
        .unwrap()
        .into_iter()
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn secret_create_list_info_update_delete() {
    let server = Server::start();
    let cli = Cli::admin(&server);
    let client = sdk(&server);

    let out = cli.run(&["secret", "create", "app", "A=1", "B=x=y"]).ok();
    assert!(
        out.stdout
            .contains("Created secret 'app' in environment 'main'"),
        "{out:?}"
    );
    assert_eq!(
        values(&client, "app", None),
        pairs(&[("A", "1"), ("B", "x=y")])
    );
    // KEY=- with empty stdin: the empty value.
    cli.run(&["secret", "create", "db", "URL=-"]).ok();
    assert_eq!(values(&client, "db", None), pairs(&[("URL", "")]));
    // KEY=- without a terminal: the value is stdin, less one newline.
    cli.run_stdin(
        &["secret", "create", "piped", "PASSWORD=-", "USER=ada"],
        "s3cret value\n",
    )
    .ok();
    assert_eq!(
        values(&client, "piped", None),
        pairs(&[("PASSWORD", "s3cret value"), ("USER", "ada")])
    );

    // Listing: a table for people, JSON for scripts, newest first.
    let out = cli.run(&["secret", "list"]).ok();
    let header = out.stdout.lines().next().unwrap();
    for column in ["Name", "Created at", "Created by", "Last used at"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(out.stdout.contains("piped") && out.stdout.contains("admin"));
    assert!(!out.stdout.contains('\x1b'), "no colour off a terminal");
    let list = cli.run(&["secret", "list", "--json"]).ok().json();
    assert_eq!(names(&list), ["piped", "db", "app"]);
    assert_eq!(list[0]["created_by"], "admin");
    // Paging: the newest N, then those created before the last one shown.
    let page = cli
        .run(&["secret", "list", "--max", "2", "--json"])
        .ok()
        .json();
    assert_eq!(names(&page), ["piped", "db"]);
    let oldest = page[1]["created_at"].as_str().unwrap().to_owned();
    let rest = cli
        .run(&["secret", "list", "--created-before", &oldest, "--json"])
        .ok()
        .json();
    assert_eq!(names(&rest), ["app"], "created before {oldest}");
    assert!(
        list[2]["last_used_at"].is_string(),
        "resolved above: {list}"
    );

    let info = cli.run(&["secret", "info", "app", "--json"]).ok().json();
    assert_eq!(info["keys"], serde_json::json!(["A", "B"]));
    assert_eq!(info["environment"], "main");
    let out = cli.run(&["secret", "info", "app"]).ok();
    assert!(out.stdout.contains("Keys:") && out.stdout.contains("A, B"));
    assert!(!out.stdout.contains("x=y"), "info never shows values");

    // Update merges: set, unset, KEY=- from stdin; other keys stay.
    cli.run_stdin(
        &["secret", "update", "app", "C=-", "A=2", "--unset", "B"],
        "from stdin\n",
    )
    .ok();
    assert_eq!(
        values(&client, "app", None),
        pairs(&[("A", "2"), ("C", "from stdin")])
    );
    let info = cli
        .run(&["secret", "update", "app", "--unset", "C", "--json"])
        .ok()
        .json();
    assert_eq!(info["keys"], serde_json::json!(["A"]));

    // An existing name is an error unless --force, which overwrites.
    cli.run(&["secret", "create", "app", "Z=1"])
        .fails(1, "already exists");
    let out = cli.run(&["secret", "create", "app", "Z=1", "--force"]).ok();
    assert!(out.stdout.contains("Overwrote"), "{out:?}");
    assert_eq!(values(&client, "app", None), pairs(&[("Z", "1")]));

    // Delete: refused without --yes off a terminal, then done with it.
    cli.run(&["secret", "delete", "app"]).fails(2, "--yes");
    assert_eq!(values(&client, "app", None), pairs(&[("Z", "1")]));
    cli.run(&["secret", "delete", "app", "--yes"]).ok();
    cli.run(&["secret", "info", "app"])
        .fails(1, "Secret 'app' not found");
    cli.run(&["secret", "delete", "app", "--yes"])
        .fails(1, "not found");
    cli.run(&["secret", "delete", "app", "--yes", "--allow-missing"])
        .ok();
}

#[test]
fn bad_input_is_refused_with_a_clear_message_and_the_right_exit_code() {
    let server = Server::start();
    let cli = Cli::admin(&server);
    let secret_value = "hunter2-never-shown";

    // Not KEY=VALUE: a usage error that does not echo the argument.
    let out = cli
        .run(&["secret", "create", "x", "A=1", secret_value])
        .fails(2, "argument 2");
    assert!(!out.stderr.contains(secret_value), "{out:?}");
    cli.run(&["secret", "create", "x", "=v"])
        .fails(2, "empty key");
    cli.run(&["secret", "create", "x"])
        .fails(2, "at least one key");
    cli.run(&["secret", "update", "x"])
        .fails(2, "nothing to change");
    cli.run(&["secret", "update", "x", "A=1", "--unset", "A"])
        .fails(2, "both set and unset");
    cli.run_stdin(&["secret", "create", "x", "A=-", "B=-"], "v\n")
        .fails(2, "only one KEY=-");

    // The server's own messages, values never quoted.
    cli.run(&["secret", "create", "bad name", "A=1"])
        .fails(1, "Invalid Secret name: 'bad name'");
    let out = cli
        .run(&["secret", "create", "x", &format!("1BAD={secret_value}")])
        .fails(1, "1BAD");
    assert!(!out.stderr.contains(secret_value), "{out:?}");
    cli.run(&["secret", "info", "nope"])
        .fails(1, "Secret 'nope' not found");
    cli.run(&["secret", "update", "nope", "A=1"])
        .fails(1, "Secret 'nope' not found");
    cli.run(&["secret", "list", "--env", "no-such-env"])
        .fails(1, "no-such-env");
    cli.run(&["environment", "create", "en-reserved"])
        .fails(1, "en-reserved");

    // clap's usage errors.
    cli.run(&["secret", "frobnicate"]).fails(2, "frobnicate");
    cli.run(&["secret", "list", "--bogus"]).fails(2, "--bogus");
    cli.run(&["secret", "list", "--max", "lots"])
        .fails(2, "lots");
    cli.run(&["secret", "list", "--created-before", "last-tuesday"])
        .fails(1, "last-tuesday");
    cli.run(&["completions", "tcsh"]).fails(2, "tcsh");

    // No server there: a failure that names the URL.
    Cli::admin(&server)
        .var("LATCHKEY_SERVER_URL", "http://127.0.0.1:1")
        .run(&["secret", "list"])
        .fails(1, "http://127.0.0.1:1");
    // A wrong token: the server's message.
    Cli::admin(&server)
        .var("LATCHKEY_TOKEN_SECRET", "as-wrong")
        .run(&["secret", "list"])
        .fails(1, "");
}

#[test]
fn create_from_dotenv_and_json_files() {
    let server = Server::start();
    let cli = Cli::admin(&server);
    let client = sdk(&server);
    let dir = tempfile::tempdir().unwrap();
    let dotenv = dir.path().join("app.env");
    std::fs::write(
        &dotenv,
        "# comment\nexport USER='ada'\nGREETING=\"hello\\nworld\"\nURL=http://${USER}@host\nEMPTY=\n",
    )
    .unwrap();
    let json = dir.path().join("creds.json");
    std::fs::write(
        &json,
        r#"{"TOKEN": "t-1", "USER": "from-json", "DROPPED": null}"#,
    )
    .unwrap();

    cli.run(&[
        "secret",
        "create",
        "files",
        "--from-dotenv",
        &dotenv.display().to_string(),
        "--from-json",
        &json.display().to_string(),
        "EXTRA=arg",
    ])
    .ok();
    assert_eq!(
        values(&client, "files", None),
        pairs(&[
            ("EMPTY", ""),
            ("EXTRA", "arg"),
            ("GREETING", "hello\nworld"),
            ("TOKEN", "t-1"),
            ("URL", "http://ada@host"),
            ("USER", "from-json"),
        ])
    );
    // Arguments override files.
    cli.run(&[
        "secret",
        "create",
        "over",
        "--from-json",
        &json.display().to_string(),
        "TOKEN=arg",
    ])
    .ok();
    assert_eq!(
        values(&client, "over", None)[0],
        pairs(&[("TOKEN", "arg")])[0]
    );

    // A directory means its .env, as in Modal.
    std::fs::write(dir.path().join(".env"), "FROM_DIR=1\n").unwrap();
    cli.run(&[
        "secret",
        "create",
        "dir",
        "--from-dotenv",
        &dir.path().display().to_string(),
    ])
    .ok();
    assert_eq!(values(&client, "dir", None), pairs(&[("FROM_DIR", "1")]));

    // Bad files name the problem without quoting values.
    let bad = dir.path().join("bad.env");
    std::fs::write(&bad, "A=1\nB=\"never closed-s3cret\n").unwrap();
    let out = cli
        .run(&[
            "secret",
            "create",
            "b",
            "--from-dotenv",
            &bad.display().to_string(),
        ])
        .fails(1, "line 2");
    assert!(!out.stderr.contains("s3cret"), "{out:?}");
    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, r#"{"PORT": 5432}"#).unwrap();
    cli.run(&[
        "secret",
        "create",
        "b",
        "--from-json",
        &bad_json.display().to_string(),
    ])
    .fails(1, "PORT is not a string");
    std::fs::write(&bad_json, "\"s3cret-string\"").unwrap();
    let out = cli
        .run(&[
            "secret",
            "create",
            "b",
            "--from-json",
            &bad_json.display().to_string(),
        ])
        .fails(1, "JSON object");
    assert!(!out.stderr.contains("s3cret"), "{out:?}");
    cli.run(&["secret", "create", "b", "--from-dotenv", "/no/such/file"])
        .fails(1, "/no/such/file");
}

#[test]
fn environments_and_secrets_in_them() {
    let server = Server::start();
    let cli = Cli::admin(&server);
    let client = sdk(&server);

    cli.run(&["environment", "create", "dev"]).ok();
    cli.run(&["environment", "create", "dev"])
        .fails(1, "already exists");
    let list = cli.run(&["environment", "list", "--json"]).ok().json();
    assert_eq!(names(&list), ["main", "dev"]);
    assert_eq!(list[0]["is_default"], true);
    let out = cli.run(&["environment", "list"]).ok();
    assert!(out.stdout.starts_with("Name") && out.stdout.contains("dev"));

    cli.run(&["secret", "create", "s", "K=dev", "--env", "dev"])
        .ok();
    assert_eq!(values(&client, "s", Some("dev")), pairs(&[("K", "dev")]));
    let dev = cli
        .run(&["secret", "list", "--env", "dev", "--json"])
        .ok()
        .json();
    assert_eq!(names(&dev), ["s"]);
    let main = cli.run(&["secret", "list", "--json"]).ok().json();
    assert!(names(&main).is_empty());
    let out = cli.run(&["secret", "list"]).ok();
    assert!(out.stdout.contains("No secrets"), "{out:?}");
    // LATCHKEY_ENVIRONMENT is the default of --env.
    let env_cli = Cli::admin(&server).var("LATCHKEY_ENVIRONMENT", "dev");
    assert_eq!(
        names(&env_cli.run(&["secret", "list", "--json"]).ok().json()),
        ["s"]
    );

    cli.run(&["environment", "rename", "dev", "staging"]).ok();
    let info = cli
        .run(&["secret", "info", "s", "--env", "staging", "--json"])
        .ok()
        .json();
    assert_eq!(info["environment"], "staging");

    cli.run(&["environment", "delete", "staging"])
        .fails(2, "--yes");
    cli.run(&["environment", "delete", "staging", "--yes"])
        .fails(1, "");
    cli.run(&[
        "environment",
        "delete",
        "staging",
        "--with-secrets",
        "--yes",
    ])
    .ok();
    let list = cli.run(&["environment", "list", "--json"]).ok().json();
    assert_eq!(names(&list), ["main"]);
    cli.run(&["environment", "delete", "main", "--yes"])
        .fails(1, "");
}

#[test]
fn tokens_create_list_revoke() {
    let server = Server::start();
    let cli = Cli::admin(&server);

    // People get dotenv lines on stdout, the warning on stderr.
    let out = cli.run(&["token", "create", "ci", "--role", "reader"]).ok();
    assert!(out.stdout.starts_with("LATCHKEY_TOKEN_ID=ak-"), "{out:?}");
    assert!(
        out.stdout.contains("\nLATCHKEY_TOKEN_SECRET=as-"),
        "{out:?}"
    );
    assert!(out.stderr.contains("only this once"), "{out:?}");

    let created = cli
        .run(&[
            "token",
            "create",
            "deployer",
            "--role",
            "developer",
            "--env",
            "main",
            "--json",
        ])
        .ok()
        .json();
    let id = created["token"]["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(created["token"]["role"], "developer");
    assert_eq!(
        created["token"]["environments"],
        serde_json::json!(["main"])
    );

    let list = cli.run(&["token", "list", "--json"]).ok().json();
    assert_eq!(names(&list), ["admin", "ci", "deployer"]);
    let out = cli.run(&["token", "list"]).ok();
    assert!(out.stdout.contains("deployer") && !out.stdout.contains(&secret));

    // The new token works, as itself.
    let deployer = Cli::bare()
        .var("LATCHKEY_SERVER_URL", server.url())
        .var("LATCHKEY_TOKEN_ID", &id)
        .var("LATCHKEY_TOKEN_SECRET", &secret);
    let me = deployer.run(&["whoami", "--json"]).ok().json();
    assert_eq!(me["token"]["name"], "deployer");
    assert_eq!(me["server_url"], server.url());
    deployer
        .run(&["secret", "create", "by-deployer", "A=1"])
        .ok();
    let list = cli.run(&["secret", "list", "--json"]).ok().json();
    assert_eq!(list[0]["created_by"], "deployer");
    // ...within its role.
    deployer.run(&["token", "list"]).fails(1, "");

    cli.run(&["token", "revoke", &id]).fails(2, "--yes");
    cli.run(&["token", "revoke", &id, "--yes"]).ok();
    deployer.run(&["whoami"]).fails(1, "");
    let list = cli.run(&["token", "list", "--json"]).ok().json();
    assert!(list[2]["revoked_at"].is_string(), "{list}");
    cli.run(&["token", "create", "x", "--role", "root"])
        .fails(2, "root");
}

#[test]
fn login_writes_a_profile_and_profiles_switch() {
    let server = Server::start();
    let admin = Cli::admin(&server);
    let created = admin
        .run(&["token", "create", "second", "--role", "developer", "--json"])
        .ok()
        .json();
    let (second_id, second_secret) = (
        created["token"]["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    );
    let (admin_id, admin_secret) = server.admin_token();

    // No LATCHKEY_TOKEN_* variables: only the profile file matters.
    let cli = Cli::bare();
    let config = cli.config_path();

    // A wrong secret is refused and nothing is written.
    cli.run_stdin(
        &["login", "--server", server.url(), "--token-id", &admin_id],
        "as-wrong\n",
    )
    .fails(1, "");
    assert!(!config.exists());
    // Without a terminal, the id must be given.
    cli.run_stdin(&["login", "--server", server.url()], "x\n")
        .fails(2, "--token-id");

    // The secret comes from stdin, never argv.
    let out = cli
        .run_stdin(
            &["login", "--server", server.url(), "--token-id", &admin_id],
            &format!("{admin_secret}\n"),
        )
        .ok();
    assert!(out.stdout.contains("Saved profile 'default'"), "{out:?}");
    assert!(!out.stdout.contains(&admin_secret));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The secret from LATCHKEY_TOKEN_SECRET; a second profile, not active.
    cli.run_with_var(
        "LATCHKEY_TOKEN_SECRET",
        &second_secret,
        &[
            "login",
            "--server",
            server.url(),
            "--token-id",
            &second_id,
            "--profile",
            "second",
            "--env",
            "main",
            "--no-activate",
        ],
    )
    .ok();

    let profiles = cli.run(&["profile", "list", "--json"]).ok().json();
    assert_eq!(names(&profiles), ["default", "second"]);
    assert_eq!(profiles[0]["active"], true);
    assert_eq!(profiles[1]["active"], false);
    assert_eq!(profiles[1]["environment"], "main");
    assert!(
        !profiles.to_string().contains(&second_secret),
        "no secrets listed"
    );
    let out = cli.run(&["profile", "list"]).ok();
    assert!(out.stdout.contains("second") && !out.stdout.contains(&admin_secret));

    let me = cli.run(&["whoami", "--json"]).ok().json();
    assert_eq!(me["token"]["name"], "admin");
    assert!(me["credentials"]
        .as_str()
        .unwrap()
        .contains("profile 'default'"));
    cli.run(&["profile", "activate", "second"]).ok();
    let me = cli.run(&["whoami", "--json"]).ok().json();
    assert_eq!(me["token"]["name"], "second");
    assert_eq!(me["environment"], "main");
    cli.run(&["secret", "create", "via-profile", "A=1"]).ok();
    let list = admin.run(&["secret", "list", "--json"]).ok().json();
    assert_eq!(list[0]["created_by"], "second");
    // LATCHKEY_PROFILE picks another one for one command.
    let me = cli
        .run_with_var("LATCHKEY_PROFILE", "default", &["whoami", "--json"])
        .ok()
        .json();
    assert_eq!(me["token"]["name"], "admin");
    cli.run(&["profile", "activate", "nope"])
        .fails(1, "No profile 'nope'");
    // Deleting the active profile leaves the only other one in charge.
    cli.run(&["profile", "delete", "nope"])
        .fails(1, "No profile 'nope'");
    let out = cli.run(&["profile", "delete", "second"]).ok();
    assert!(
        out.stdout.contains("Profile 'default' is active"),
        "{out:?}"
    );
    let profiles = cli.run(&["profile", "list", "--json"]).ok().json();
    assert_eq!(names(&profiles), ["default"]);
    let me = cli.run(&["whoami", "--json"]).ok().json();
    assert_eq!(me["token"]["name"], "admin");
}

impl Cli {
    fn run_with_var(&self, key: &str, value: &str, args: &[&str]) -> Out {
        let out = self
            .command(args)
            .env(key, value)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }
}

#[test]
fn modal_env_points_the_modal_client_here() {
    let server = Server::start();
    let cli = Cli::admin(&server);
    let (id, secret) = server.admin_token();
    let out = cli.run(&["modal-env"]).ok();
    assert_eq!(
        out.stdout,
        format!(
            "export MODAL_SERVER_URL={}\nexport MODAL_TOKEN_ID={id}\nexport MODAL_TOKEN_SECRET={secret}\nunset MODAL_ENVIRONMENT\n",
            server.url()
        )
    );
    // eval "$(latchkey modal-env)" in a shell.
    let script = format!(
        "eval \"$('{}' modal-env)\"; echo \"$MODAL_SERVER_URL $MODAL_TOKEN_ID ${{MODAL_ENVIRONMENT-unset}}\"",
        binary().display()
    );
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", cli.home.path())
        .env("MODAL_ENVIRONMENT", "stale")
        .envs(cli.vars.iter().map(|(k, v)| (k, v)));
    let out = sh.output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{} {id} unset\n", server.url())
    );

    let with_env = Cli::admin(&server).var("LATCHKEY_ENVIRONMENT", "main");
    let out = with_env.run(&["modal-env", "--shell", "fish"]).ok();
    assert!(out
        .stdout
        .contains(&format!("set -gx MODAL_TOKEN_ID {id}\n")));
    assert!(out.stdout.contains("set -gx MODAL_ENVIRONMENT main\n"));
    let out = with_env.run(&["modal-env", "--shell", "dotenv"]).ok();
    assert!(out
        .stdout
        .contains(&format!("MODAL_SERVER_URL={}\n", server.url())));
}

#[test]
fn completions_and_help_with_examples_everywhere() {
    let cli = Cli::bare();
    for shell in ["bash", "zsh", "fish"] {
        let out = cli.run(&["completions", shell]).ok();
        assert!(
            out.stdout.contains("latchkey") && out.stdout.contains("modal-env"),
            "{shell}: {}",
            &out.stdout[..out.stdout.len().min(300)]
        );
    }
    let commands: &[&[&str]] = &[
        &[],
        &["secret"],
        &["secret", "create"],
        &["secret", "list"],
        &["secret", "info"],
        &["secret", "update"],
        &["secret", "delete"],
        &["environment"],
        &["environment", "list"],
        &["environment", "create"],
        &["environment", "delete"],
        &["environment", "rename"],
        &["token"],
        &["token", "create"],
        &["token", "list"],
        &["token", "revoke"],
        &["token", "rotate"],
        &["backup"],
        &["backup", "verify"],
        &["restore"],
        &["profile"],
        &["profile", "list"],
        &["profile", "activate"],
        &["login"],
        &["whoami"],
        &["modal-env"],
        &["completions"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let out = cli.run(&args).ok();
        assert!(
            out.stdout.contains("Examples:"),
            "{command:?} --help has no examples:\n{}",
            out.stdout
        );
    }
}

/// The issue's "done when": `latchkey serve` in one terminal, `latchkey
/// secret create demo A=1` in another, nothing configured.
#[test]
fn zero_config_uses_the_local_servers_admin_token() {
    let tmp = tempfile::tempdir().unwrap();
    let xdg = tmp.path().join("xdg");
    let _server = Server::try_start(&xdg.join("latchkey"), &[], &[]).unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let run = |args: &[&str], vars: &[(&str, &Path)]| {
        let out = Command::new(binary())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let xdg_vars = [("HOME", home.as_path()), ("XDG_DATA_HOME", xdg.as_path())];
    let out = run(&["secret", "create", "demo", "A=1"], &xdg_vars);
    assert!(out.contains("Created secret 'demo'"), "{out}");
    assert!(run(&["secret", "list"], &xdg_vars).contains("demo"));
    assert!(run(&["whoami"], &xdg_vars).contains("admin token file"));

    // The same with HOME alone: ~/.local/share/latchkey.
    let tmp2 = tempfile::tempdir().unwrap();
    let _server2 = Server::try_start(&tmp2.path().join(".local/share/latchkey"), &[], &[]).unwrap();
    let home_vars = [("HOME", tmp2.path())];
    run(&["secret", "create", "demo", "A=1"], &home_vars);
    assert!(run(&["secret", "list"], &home_vars).contains("demo"));
}

/// On a terminal (a pty from `script`): delete asks, colour is on unless
/// NO_COLOR, and KEY=- opens $EDITOR.
#[test]
fn on_a_terminal_it_asks_colours_and_edits() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to make a pty");
        return;
    }
    let server = Server::start();
    let cli = Cli::admin(&server);
    let client = sdk(&server);
    cli.run(&["secret", "create", "s", "A=1"]).ok();
    let dir = tempfile::tempdir().unwrap();
    let editor = dir.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nprintf 'typed-in-editor\\n' > \"$1\"\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let on_tty = |command: &str, stdin: &str, vars: &[(&str, &str)]| {
        let mut cmd = cli.command(&[]);
        cmd.envs(vars.iter().copied());
        let mut child = Command::new("script")
            .args([
                "-qec",
                &format!("{} {command}", binary().display()),
                "/dev/null",
            ])
            .env_clear()
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .env("TERM", "xterm")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).unwrap();
        // `script` may stop at the end of its stdin: keep it open until
        // the command is done.
        let out = child.wait_with_output().unwrap();
        drop(input);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    let (_, text) = on_tty("secret list", "", &[]);
    assert!(
        text.contains("\x1b[1m"),
        "bold header on a terminal: {text:?}"
    );
    let (_, text) = on_tty("secret list", "", &[("NO_COLOR", "1")]);
    assert!(text.contains("Name") && !text.contains('\x1b'), "{text:?}");

    let editor = editor.display().to_string();
    let (code, text) = on_tty("secret update s B=-", "", &[("EDITOR", &editor)]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        values(&client, "s", None),
        pairs(&[("A", "1"), ("B", "typed-in-editor")])
    );

    let (code, text) = on_tty("secret delete s", "n\n", &[]);
    assert!(text.contains("[y/N]"), "{text}");
    assert_ne!(code, 0, "{text}");
    assert_eq!(values(&client, "s", None).len(), 2);
    let (code, text) = on_tty("secret delete s", "y\n", &[]);
    assert_eq!(code, 0, "{text}");
    assert!(client.secrets().list().wait().unwrap().is_empty(), "{text}");
}
