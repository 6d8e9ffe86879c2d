//! The process manager, with real processes (plain, and under bubblewrap
//! where it works).

use std::{collections::BTreeMap, path::Path};

use latchkey_core::ErrorKind;

use super::*;
use process::SandboxEnv;

fn config() -> SandboxConfig {
    SandboxConfig::default()
}

fn manager() -> Sandboxes {
    Sandboxes::with_runner(config(), Runner::Process)
}

fn spawn_of(argv: &[&str], env: &[(&str, &str)]) -> Spawn {
    Spawn {
        workspace_id: "ac-1".to_owned(),
        environment_name: "main".to_owned(),
        app_id: "ap-1".to_owned(),
        name: None,
        launch: Launch {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            env: SandboxEnv(
                env.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            workdir: None,
            block_network: false,
        },
        timeout: Duration::from_secs(30),
    }
}

fn sh(script: &str) -> Spawn {
    spawn_of(&["sh", "-c", script], &[])
}

async fn read_all(buffer: &OutputBuffer) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = 0;
    while let Some((at, bytes)) = buffer.next(offset, READ_CHUNK).await {
        assert_eq!(at, offset, "nothing dropped");
        offset = at + bytes.len() as u64;
        out.extend(bytes);
    }
    out
}

async fn finish(sandbox: &Sandbox) -> Outcome {
    sandbox
        .wait(Duration::from_secs(20))
        .await
        .expect("the sandbox ends")
}

fn pid_is_alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

async fn pid_from(sandbox: &Sandbox) -> i32 {
    let mut offset = 0;
    let mut line = Vec::new();
    while !line.ends_with(b"\n") {
        let (at, bytes) = sandbox.stdout.next(offset, 64).await.expect("a pid line");
        offset = at + bytes.len() as u64;
        line.extend(bytes);
    }
    String::from_utf8(line).unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn runs_with_exactly_the_base_and_its_secrets() {
    std::env::set_var("LK_TEST_SERVER_ONLY", "server-value");
    let sandboxes = manager();
    let sandbox = sandboxes
        .spawn(spawn_of(&["env"], &[("A", "1"), ("PATH", "/usr/bin:/bin")]))
        .unwrap();
    let out = String::from_utf8(read_all(&sandbox.stdout).await).unwrap();
    assert_eq!(finish(&sandbox).await, Outcome::Exited(0));
    let env: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(
        env.keys().copied().collect::<Vec<_>>(),
        ["A", "HOME", "LANG", "PATH", "PWD"]
    );
    assert_eq!(env["A"], "1");
    // A secret overrides the base.
    assert_eq!(env["PATH"], "/usr/bin:/bin");
    assert_eq!(env["HOME"], env["PWD"]);
    assert!(!out.contains("server-value"));
    // The private scratch dir is removed once the sandbox ends.
    assert!(!Path::new(env["HOME"]).exists());
}

#[tokio::test]
async fn reports_exit_codes_and_signals() {
    let sandboxes = manager();
    for (script, outcome, code) in [
        ("exit 0", Outcome::Exited(0), 0),
        ("exit 3", Outcome::Exited(3), 3),
        ("kill -TERM $$", Outcome::Signaled(15), 143),
    ] {
        let sandbox = sandboxes.spawn(sh(script)).unwrap();
        let got = finish(&sandbox).await;
        assert_eq!(got, outcome, "{script}");
        assert_eq!(got.to_result().exitcode, code);
    }
    assert_eq!(
        Outcome::Exited(0).to_result().status,
        api::generic_result::GenericStatus::Success as i32
    );
}

#[tokio::test]
async fn keeps_stdout_and_stderr_apart_and_complete() {
    let sandboxes = manager();
    let sandbox = sandboxes
        .spawn(sh("seq 1 200000; seq 200001 300000 >&2"))
        .unwrap();
    let (out, err) = tokio::join!(read_all(&sandbox.stdout), read_all(&sandbox.stderr));
    let want = |a: u32, b: u32| (a..=b).map(|i| format!("{i}\n")).collect::<String>();
    assert_eq!(String::from_utf8(out).unwrap(), want(1, 200_000));
    assert_eq!(String::from_utf8(err).unwrap(), want(200_001, 300_000));
    assert_eq!(finish(&sandbox).await, Outcome::Exited(0));
}

#[tokio::test]
async fn output_beyond_the_bound_keeps_the_most_recent_bytes() {
    let config = SandboxConfig {
        output_buffer_bytes: 1000,
        ..config()
    };
    let sandboxes = Sandboxes::with_runner(config, Runner::Process);
    let sandbox = sandboxes.spawn(sh("seq 1 10000")).unwrap();
    finish(&sandbox).await;
    let total: usize = (1..=10_000).map(|i: u32| i.to_string().len() + 1).sum();
    let (at, bytes) = sandbox.stdout.next(0, usize::MAX).await.unwrap();
    assert_eq!(at, (total - 1000) as u64);
    assert_eq!(bytes.len(), 1000);
    assert!(bytes.ends_with(b"9999\n10000\n"));
}

#[tokio::test]
async fn a_timeout_kills_the_whole_group() {
    let sandboxes = manager();
    let mut spawn = sh("sleep 300 & echo $!; wait");
    spawn.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let sandbox = sandboxes.spawn(spawn).unwrap();
    let child = pid_from(&sandbox).await;
    assert!(pid_is_alive(child));
    let outcome = finish(&sandbox).await;
    assert_eq!(outcome, Outcome::TimedOut(Duration::from_millis(300)));
    assert_eq!(
        outcome.to_result().status,
        api::generic_result::GenericStatus::Timeout as i32
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The background `sleep` died with its group.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pid_is_alive(child), "pid {child} survived the timeout");
}

#[tokio::test]
async fn terminate_kills_and_reports_terminated() {
    let sandboxes = manager();
    let sandbox = sandboxes.spawn(sh("echo $$; sleep 300")).unwrap();
    let pid = pid_from(&sandbox).await;
    assert_eq!(sandbox.terminate(), None);
    assert_eq!(finish(&sandbox).await, Outcome::Terminated);
    assert!(!pid_is_alive(pid));
    // Terminating again answers the existing result.
    assert_eq!(sandbox.terminate(), Some(Outcome::Terminated));
}

#[tokio::test]
async fn stdin_writes_are_ordered_and_retries_are_idempotent() {
    let sandboxes = manager();
    let sandbox = sandboxes.spawn(spawn_of(&["cat"], &[])).unwrap();
    sandbox.write_stdin(0, b"hello ", false).await.unwrap();
    // A retried write of bytes already written is skipped...
    sandbox.write_stdin(0, b"hello ", false).await.unwrap();
    // ...and one that overlaps writes only its new part.
    sandbox.write_stdin(3, b"lo world", false).await.unwrap();
    // A gap is refused.
    let gap = sandbox.write_stdin(100, b"x", false).await.unwrap_err();
    assert_eq!(gap.kind(), ErrorKind::Invalid);
    sandbox.write_stdin(11, b"", true).await.unwrap();
    assert_eq!(read_all(&sandbox.stdout).await, b"hello world");
    assert_eq!(finish(&sandbox).await, Outcome::Exited(0));
    let closed = sandbox.write_stdin(11, b"more", false).await.unwrap_err();
    assert_eq!(closed.kind(), ErrorKind::FailedPrecondition);
}

#[tokio::test]
async fn holds_a_bounded_number_of_sandboxes() {
    let config = SandboxConfig {
        max_sandboxes: 2,
        ..config()
    };
    let sandboxes = Sandboxes::with_runner(config, Runner::Process);
    let first = sandboxes.spawn(sh("exit 0")).unwrap();
    finish(&first).await;
    let _running = sandboxes.spawn(sh("sleep 300")).unwrap();
    // The finished one makes room.
    let second = sandboxes.spawn(sh("sleep 300")).unwrap();
    assert_eq!(
        sandboxes.get("ac-1", &first.id).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Two running: full.
    let full = sandboxes.spawn(sh("true")).unwrap_err();
    assert_eq!(full.kind(), ErrorKind::ResourceExhausted);
    assert!(
        full.message().contains("--sandbox-max"),
        "{}",
        full.message()
    );
    // Other workspaces see nothing.
    assert!(sandboxes.get("ac-1", &second.id).is_ok());
    assert_eq!(
        sandboxes.get("ac-2", &second.id).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(sandboxes.by_task(&second.task_id).unwrap().id, second.id);
    sandboxes.shutdown().await;
}

#[tokio::test]
async fn names_are_unique_among_running_sandboxes_of_an_app() {
    let sandboxes = manager();
    let named = |script: &str| Spawn {
        name: Some("web".to_owned()),
        ..sh(script)
    };
    let first = sandboxes.spawn(named("sleep 300")).unwrap();
    let taken = sandboxes.spawn(named("true")).unwrap_err();
    assert_eq!(taken.kind(), ErrorKind::AlreadyExists);
    first.terminate();
    finish(&first).await;
    let again = sandboxes.spawn(named("true")).unwrap();
    finish(&again).await;
}

#[tokio::test]
async fn shutdown_kills_everything_and_refuses_new_sandboxes() {
    let sandboxes = manager();
    let a = sandboxes.spawn(sh("echo $$; sleep 300")).unwrap();
    let b = sandboxes.spawn(sh("echo $$; sleep 300")).unwrap();
    let pids = [pid_from(&a).await, pid_from(&b).await];
    let started = Instant::now();
    sandboxes.shutdown().await;
    assert!(started.elapsed() < SHUTDOWN_WAIT);
    assert_eq!(a.outcome(), Some(Outcome::ServerShutdown));
    assert_eq!(b.outcome(), Some(Outcome::ServerShutdown));
    for pid in pids {
        assert!(!pid_is_alive(pid), "pid {pid} survived the shutdown");
    }
    // Streams are closed, so readers end.
    assert_eq!(
        sandboxes.spawn(sh("true")).unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    let err = sandboxes.spawn(sh("true")).unwrap_err();
    assert!(err.message().contains("shutting down"));
}

#[tokio::test]
async fn unknown_commands_are_refused_at_spawn() {
    let sandboxes = manager();
    let err = sandboxes
        .spawn(spawn_of(&["no-such-command-xyz"], &[]))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let err = sandboxes
        .spawn(spawn_of(&["/no/such/program"], &[]))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(
        err.message().contains("/no/such/program"),
        "{}",
        err.message()
    );
}

/// bubblewrap hiding `hidden`; sandboxes need it, so a host without a
/// working `bwrap` fails here saying so.
async fn bubblewrap(hidden: Vec<std::path::PathBuf>) -> Runner {
    Runner::detect(Isolation::Bubblewrap, hidden)
        .await
        .unwrap_or_else(|e| panic!("sandboxes need bubblewrap (apt-get install bubblewrap): {e}"))
}

/// The command lines of this host's processes that hold `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.ok()?.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(marker).then_some(text)
        })
        .collect()
}

/// Terminated at any moment, even while bubblewrap is still setting up its
/// namespace, a sandbox leaves no process behind (its namespace's init
/// once outlived it, with the sandbox's program, when killed early).
#[tokio::test]
async fn a_sandbox_killed_while_bubblewrap_starts_leaves_nothing() {
    let sandboxes = Sandboxes::with_runner(config(), bubblewrap(Vec::new()).await);
    // At a spread of moments in its first milliseconds.
    for round in 0..40u64 {
        let marker = format!("lk-early-kill-{}-{round}", std::process::id());
        let sandbox = sandboxes
            .spawn(sh(&format!("sleep 600 # {marker}")))
            .unwrap();
        tokio::time::sleep(Duration::from_micros(round * 250)).await;
        sandbox.terminate();
        finish(&sandbox).await;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left = processes_with(&marker);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: outlived the sandbox: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Under bubblewrap: own PID namespace, read-only host, hidden paths, same
/// environment rules.
#[tokio::test]
async fn bubblewrap_isolates_the_process() {
    let hidden = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    std::fs::write(hidden.path().join("master.key"), "k").unwrap();
    let runner = bubblewrap(vec![hidden.path().to_owned()]).await;
    let sandboxes = Sandboxes::with_runner(config(), runner);
    let script = format!(
        "echo $$; ls -A {dir} | wc -l; touch /etc/lk-test 2>/dev/null || echo read-only; env | sort",
        dir = hidden.path().display()
    );
    let sandbox = sandboxes
        .spawn(spawn_of(&["sh", "-c", &script], &[("SECRET", "s")]))
        .unwrap();
    let out = String::from_utf8(read_all(&sandbox.stdout).await).unwrap();
    assert_eq!(finish(&sandbox).await, Outcome::Exited(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].parse::<u32>().unwrap() < 10,
        "own PID namespace: {out}"
    );
    assert_eq!(lines[1], "0", "the hidden dir looks empty: {out}");
    assert_eq!(lines[2], "read-only");
    let keys: Vec<&str> = lines[3..]
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    // `sh` adds SHLVL to what it prints; nothing else comes from outside.
    let keys: Vec<&str> = keys.into_iter().filter(|k| *k != "SHLVL").collect();
    assert_eq!(keys, ["HOME", "LANG", "PATH", "PWD", "SECRET"]);
}
