//! `latchkey run` (issue 4 §1): the real binary against a real server.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt,
    process::{Command, Output, Stdio},
    time::Duration,
};

use latchkey::{blocking::Wait, Client, Config};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::harness::{binary, Server};

/// A server with the secrets `a` = {A, B} and `b` = {B, C}.
struct Fixture {
    server: Server,
    client: Client,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let server = Server::start();
        let (id, secret) = server.admin_token();
        let client = Client::new(Config::new(server.url(), &id, &secret)).unwrap();
        client
            .secrets()
            .create("a", [("A", "a-from-a"), ("B", "b-from-a")])
            .wait()
            .unwrap();
        client
            .secrets()
            .create("b", [("B", "b-from-b"), ("C", "c-from-b")])
            .wait()
            .unwrap();
        Fixture {
            server,
            client,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `latchkey run ARGS` with this server's admin token in its environment.
    fn cmd(&self, args: &[&str]) -> Command {
        let (id, secret) = self.server.admin_token();
        let mut cmd = Command::new(binary());
        cmd.arg("run")
            .args(args)
            .env("LATCHKEY_SERVER_URL", self.server.url())
            .env("LATCHKEY_TOKEN_ID", id)
            .env("LATCHKEY_TOKEN_SECRET", secret)
            .env("LATCHKEY_CONFIG_PATH", self.dir.path().join("none.toml"))
            .env_remove("LATCHKEY_ENVIRONMENT")
            .env_remove("LATCHKEY_PROFILE")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn last_used(&self, name: &str) -> Option<latchkey::Timestamp> {
        self.client
            .secrets()
            .list()
            .wait()
            .unwrap()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap()
            .last_used_at
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const ECHO_ABCD: &str = "echo $A $B $C $D";

#[test]
fn sources_apply_in_command_line_order_later_overriding_earlier() {
    let f = Fixture::new();
    let env_file = f.file("x.env", "C=c-from-file\nD=d-from-file\n");
    let out = f.run(&[
        "--secret",
        "a",
        "--secret",
        "b",
        "--env-file",
        &env_file,
        "--set",
        "D=d-set",
        "--",
        "sh",
        "-c",
        ECHO_ABCD,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "a-from-a b-from-b c-from-file d-set\n");

    // The same sources in the opposite order.
    let out = f.run(&[
        "--set",
        "D=d-set",
        "--env-file",
        &env_file,
        "--secret",
        "b",
        "--secret",
        "a",
        "--",
        "sh",
        "-c",
        ECHO_ABCD,
    ]);
    assert_eq!(stdout(&out), "a-from-a b-from-a c-from-b d-from-file\n");

    // --local copies from the caller's environment, in its place.
    let out = f
        .cmd(&[
            "--local", "A", "--secret", "a", "--set", "B=set", "--local", "C", "--", "sh", "-c",
            ECHO_ABCD,
        ])
        .env("A", "local-a")
        .env("C", "local-c")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "a-from-a set local-c\n");
}

#[test]
fn env_selects_the_environment_of_named_secrets() {
    let f = Fixture::new();
    f.client.environments().create("dev").wait().unwrap();
    f.client
        .secrets()
        .create("a", [("A", "a-dev")])
        .environment_name("dev")
        .wait()
        .unwrap();
    let out = f.run(&["--env", "dev", "--secret", "a", "--", "sh", "-c", "echo $A"]);
    assert_eq!(stdout(&out), "a-dev\n", "{}", stderr(&out));
}

#[test]
fn required_keys_are_checked_and_use_is_recorded() {
    let f = Fixture::new();
    assert_eq!(f.last_used("a"), None);
    let out = f.run(&["--secret", "a:A,B", "--", "sh", "-c", "echo $A"]);
    assert_eq!(stdout(&out), "a-from-a\n", "{}", stderr(&out));
    assert!(f.last_used("a").is_some());
    assert_eq!(f.last_used("b"), None);

    let marker = f.dir.path().join("ran");
    let out = f.run(&[
        "--secret",
        "b:B,NOPE,ALSO_NOPE",
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("missing key(s): NOPE, ALSO_NOPE"),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists(), "the command must not run");
}

#[test]
fn isolate_gives_only_the_minimal_base_and_the_secrets() {
    let f = Fixture::new();
    let out = f
        .cmd(&[
            "--isolate",
            "--secret",
            "a",
            "--set",
            "EXTRA=1",
            "--",
            "env",
        ])
        .env("CALLER_ONLY", "caller-value")
        .env("HOME", "/home/someone")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let keys: Vec<&str> = text.lines().map(|l| l.split_once('=').unwrap().0).collect();
    for key in &keys {
        assert!(
            ["PATH", "HOME", "LANG", "TERM", "USER", "A", "B", "EXTRA"].contains(key),
            "{key} leaked into the isolated environment:\n{text}"
        );
    }
    assert!(text.contains("A=a-from-a\n") && text.contains("B=b-from-a\n"));
    assert!(text.contains("HOME=/home/someone\n"));
    assert!(!text.contains("caller-value") && !text.contains("LATCHKEY_"));

    // Without --isolate the caller's environment is kept.
    let out = f
        .cmd(&["--secret", "a", "--", "env"])
        .env("CALLER_ONLY", "caller-value")
        .output()
        .unwrap();
    assert!(stdout(&out).contains("CALLER_ONLY=caller-value\n"));
    assert!(stdout(&out).contains("A=a-from-a\n"));
}

#[test]
fn exit_codes_are_the_commands() {
    let f = Fixture::new();
    let code = |script: &str| {
        f.run(&["--set", "X=1", "--", "sh", "-c", script])
            .status
            .code()
    };
    assert_eq!(code("exit 0"), Some(0));
    assert_eq!(code("exit 7"), Some(7));
    assert_eq!(code("kill -KILL $$"), Some(128 + 9));
    assert_eq!(code("kill -TERM $$"), Some(128 + 15));
    // Also with --mask, where the output goes through latchkey.
    let out = f.run(&[
        "--set",
        "X=long-value",
        "--mask",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
}

/// Starts `latchkey run -- sh -c SCRIPT`, waits for its "ready" line,
/// sends `signal` to latchkey and returns the rest of its output.
fn signal_run(f: &Fixture, extra: &[&str], script: &str, signal: Signal) -> (String, Option<i32>) {
    let mut args = extra.to_vec();
    args.extend(["--", "sh", "-c", script]);
    let mut child = f.cmd(&args).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), None, "latchkey itself must not die");
    (rest.join("\n"), status.code())
}

/// Whether this process ignores SIGHUP (as under `nohup`): its children
/// then start with it ignored, and a shell cannot trap a signal that was
/// ignored when it started, so the forwarded HUP would never be answered.
/// Read from the `SigIgn` mask of `/proc/self/status` (bit 0 is signal 1).
fn hup_is_ignored() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .expect("a SigIgn line in /proc/self/status");
    u64::from_str_radix(mask.trim(), 16).unwrap() & 1 != 0
}

#[test]
fn signals_are_forwarded_to_the_command() {
    assert!(
        !hup_is_ignored(),
        "SIGHUP is ignored in this test process (started under nohup?), so the shell this \
         test runs cannot trap it and the test would wait forever; run it without nohup"
    );
    let f = Fixture::new();
    for (signal, name) in [
        (Signal::SIGTERM, "TERM"),
        (Signal::SIGINT, "INT"),
        (Signal::SIGHUP, "HUP"),
    ] {
        let script = format!(
            "trap 'echo got-{name}; exit 42' {name}; echo ready; while :; do sleep 0.05; done"
        );
        for extra in [&[][..], &["--set", "S=masked-value", "--mask"][..]] {
            let (out, code) = signal_run(&f, extra, &script, signal);
            assert_eq!(out, format!("got-{name}"), "{name} {extra:?}");
            assert_eq!(code, Some(42), "{name} {extra:?}");
        }
    }
    // A command that does not handle the signal dies of it: 128+signal.
    let (_, code) = signal_run(&f, &[], "echo ready; exec sleep 30", Signal::SIGTERM);
    assert_eq!(code, Some(128 + 15));
}

#[test]
fn mask_hides_values_even_when_written_one_byte_at_a_time() {
    let f = Fixture::new();
    // The value of A is printed one byte per write, with pauses between.
    let script = "for c in a - f r o m - a; do printf %s \"$c\"; sleep 0.02; done; echo '!'; \
                  echo \"err:$B short:$S\" >&2; echo \"$C\"";
    let out = f.run(&[
        "--secret",
        "a",
        "--set",
        "S=abc",
        "--set",
        "C=c-from-set",
        "--mask",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "*****!\n*****\n");
    // Values under 4 characters are left alone.
    assert_eq!(stderr(&out), "err:***** short:abc\n");

    // Without --mask, nothing is changed.
    let out = f.run(&["--secret", "a", "--", "sh", "-c", "echo $A"]);
    assert_eq!(stdout(&out), "a-from-a\n");

    // A large output passes through whole.
    let out = f.run(&[
        "--set",
        "K=zzzzzz",
        "--mask",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 20000 ]; do echo line-$i-zzzzzz; i=$((i+1)); done",
    ]);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 20000);
    assert!(text.ends_with("line-19999-*****\n") && !text.contains('z'));
}

#[test]
fn errors_are_reported_before_anything_runs() {
    let f = Fixture::new();
    let marker = f.dir.path().join("ran");
    let touch = marker.to_str().unwrap().to_owned();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--secret", "nope"], "Secret 'nope' not found"),
        (vec!["--secret", "a:A,Z"], "missing key(s): Z"),
        (vec!["--env-file", "/no/such/file.env"], "/no/such/file.env"),
        (
            vec!["--local", "LATCHKEY_TEST_UNSET_VAR"],
            "LATCHKEY_TEST_UNSET_VAR",
        ),
        (vec!["--set", "NOEQUALS"], "KEY=VALUE"),
        (vec!["--set", "1BAD=x"], "1BAD"),
    ];
    for (args, expected) in cases {
        let mut all = args.clone();
        all.extend(["--", "touch", &touch]);
        let out = f.run(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!marker.exists(), "{args:?}: the command ran");
    }

    // An unknown command is found out before any secret is resolved.
    let out = f.run(&["--secret", "a", "--", "no-such-command-latchkey"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("command not found: no-such-command-latchkey"),
        "{}",
        stderr(&out)
    );
    let out = f.run(&["--secret", "a", "--", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/no/such/program"));
    assert_eq!(f.last_used("a"), None);
    std::thread::sleep(Duration::from_millis(10));
}
