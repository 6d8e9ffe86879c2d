//! How a sandbox's command becomes a process on the server host: inside
//! bubblewrap (`bwrap`) when it is available, or as a plain child process.
//!
//! Either way the process starts from an empty environment: a minimal base
//! (`PATH`, `HOME`, `LANG`, `PWD`) plus the sandbox's secrets, never the server's
//! own variables. It runs in its own process group, so that the whole group
//! can be killed at once.
//!
//! Under bubblewrap it also gets its own PID, IPC and UTS namespaces, a
//! read-only view of the host's file system with a private `/tmp`, fresh
//! `/dev` and `/proc`, an empty `/run`, the server's data dir and master key
//! file hidden, and no capabilities; it dies with the server. bwrap's own
//! `--clearenv --setenv K V` is deliberately not used: it would put the
//! secret values on bwrap's command line, which every user of the host can
//! read in `/proc/PID/cmdline`. bwrap instead starts with exactly the
//! sandbox's environment (`/proc/PID/environ` is private to the owner), and
//! passes it on unchanged, which gives the same result.

use std::{
    collections::BTreeMap,
    fmt,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{bail, Context};
use latchkey_core::Error;
use tokio::process::Command;

/// `PATH` of the minimal base environment.
pub(crate) const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How sandboxes are isolated from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Isolation {
    /// bubblewrap when `bwrap` is installed and works, else a plain process.
    #[default]
    Auto,
    /// Always bubblewrap; the server refuses to start without a working `bwrap`.
    Bubblewrap,
    /// A plain child process of the server, with its user's rights.
    Process,
}

/// The environment of a sandbox: names to values. `Debug` shows names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct SandboxEnv(pub(crate) BTreeMap<String, String>);

impl fmt::Debug for SandboxEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// The command and its arguments (not empty).
    pub(crate) argv: Vec<String>,
    /// Secrets and other variables, applied over the base environment.
    pub(crate) env: SandboxEnv,
    /// Working directory, if the client asked for one.
    pub(crate) workdir: Option<String>,
    /// Whether the sandbox must have no network.
    pub(crate) block_network: bool,
}

/// The resolved way of starting processes.
#[derive(Debug, Clone)]
pub(crate) enum Runner {
    Bubblewrap {
        bwrap: PathBuf,
        /// Host paths the sandbox must not see (the data dir, key files).
        hidden: Vec<PathBuf>,
    },
    Process,
}

impl Runner {
    /// Resolves `isolation` on this host. `Auto` tries bubblewrap first and
    /// falls back to a plain process (with a warning).
    pub(crate) async fn detect(isolation: Isolation, hidden: Vec<PathBuf>) -> anyhow::Result<Self> {
        if isolation == Isolation::Process {
            return Ok(Self::Process);
        }
        let probe = match find_in_path("bwrap", &std::env::var("PATH").unwrap_or_default()) {
            None => Err(anyhow::anyhow!(
                "`bwrap` (bubblewrap) is not installed (e.g. `apt-get install bubblewrap`)"
            )),
            Some(bwrap) => probe_bwrap(&bwrap).await.map(|()| bwrap),
        };
        match (probe, isolation) {
            (Ok(bwrap), _) => Ok(Self::Bubblewrap { bwrap, hidden }),
            (Err(e), Isolation::Bubblewrap) => Err(e.context("--sandbox-isolation bwrap")),
            // Never fall back silently: a plain process can read the data
            // dir and the master key, so that must be an explicit choice.
            (Err(e), _) => Err(e.context(
                "sandboxes need bubblewrap to be isolated; install it, or choose \
                 --sandbox-isolation process to run them as plain processes with the \
                 server's user and rights (they can then read its data dir)",
            )),
        }
    }

    /// A short name for logs: `bwrap` or `process`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Bubblewrap { .. } => "bwrap",
            Self::Process => "process",
        }
    }

    /// The command that starts `launch`, with piped stdio, in its own process
    /// group. `scratch` is a private, writable directory for a plain process
    /// (its `HOME` and default working directory).
    pub(crate) fn command(&self, launch: &Launch, scratch: &Path) -> Result<Command, Error> {
        let Some(program) = launch.argv.first() else {
            return Err(Error::invalid(
                "A sandbox needs a command: latchkey does not run images, so pass the command \
                 to Sandbox.create(\"cmd\", \"arg\", ...)",
            ));
        };
        let mut env = BTreeMap::new();
        env.insert("PATH".to_owned(), BASE_PATH.to_owned());
        env.insert("LANG".to_owned(), "C.UTF-8".to_owned());
        let (mut command, cwd) = match self {
            Self::Bubblewrap { bwrap, hidden } => {
                env.insert("HOME".to_owned(), "/tmp".to_owned());
                let cwd = launch.workdir.clone().unwrap_or_else(|| "/tmp".to_owned());
                // bwrap sets PWD itself.
                env.insert("PWD".to_owned(), cwd.clone());
                let mut command = Command::new(bwrap);
                command.args(bwrap_args(hidden, launch.block_network, &cwd)?);
                command.arg("--").args(&launch.argv);
                (command, None)
            }
            Self::Process => {
                if launch.block_network {
                    return Err(Error::invalid(
                        "block_network needs bubblewrap on the server (plain-process sandboxes \
                         share the host's network)",
                    ));
                }
                env.insert("HOME".to_owned(), scratch.display().to_string());
                let cwd = match &launch.workdir {
                    Some(dir) if !Path::new(dir).is_dir() => {
                        return Err(Error::invalid(format!(
                            "workdir {dir} does not exist on the server host"
                        )))
                    }
                    Some(dir) => PathBuf::from(dir),
                    None => scratch.to_owned(),
                };
                env.insert("PWD".to_owned(), cwd.display().to_string());
                let mut command = Command::new(program);
                command.args(&launch.argv[1..]);
                (command, Some(cwd))
            }
        };
        env.extend(launch.env.0.iter().map(|(k, v)| (k.clone(), v.clone())));
        if !program.contains('/') {
            let path = env.get("PATH").map_or("", String::as_str);
            if find_in_path(program, path).is_none() {
                return Err(Error::invalid(format!(
                    "Command '{program}' not found in the sandbox's PATH ({path})"
                )));
            }
        }
        command
            .env_clear()
            .envs(&env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        Ok(command)
    }
}

/// bwrap's options (before `--` and the command).
fn bwrap_args(hidden: &[PathBuf], block_network: bool, cwd: &str) -> Result<Vec<String>, Error> {
    let mut args: Vec<String> = [
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
        // Sockets under /run (e.g. docker.sock) stay reachable through a
        // read-only bind: hide them.
        "--tmpfs",
        "/run",
        // Users' homes hold profiles with tokens, SSH keys and the like.
        "--tmpfs",
        "/home",
        "--tmpfs",
        "/root",
    ]
    .map(str::to_owned)
    .into();
    // Keep name resolution working where /etc/resolv.conf points into /run.
    if let Ok(target) = std::fs::canonicalize("/etc/resolv.conf") {
        if let Some(dir) = target.parent().filter(|d| d.starts_with("/run")) {
            let dir = dir.display().to_string();
            args.extend(["--ro-bind".to_owned(), dir.clone(), dir]);
        }
    }
    for path in hidden {
        // Relative or symlinked paths name the host path they resolve to;
        // what does not exist needs no hiding.
        let Ok(path) = std::fs::canonicalize(path) else {
            continue;
        };
        // Under the private /tmp or /run they are hidden already.
        if path.starts_with("/tmp") || path.starts_with("/run") {
            continue;
        }
        let shown = path.display().to_string();
        if path.is_dir() {
            args.extend(["--tmpfs".to_owned(), shown]);
        } else if path.exists() {
            args.extend(["--ro-bind".to_owned(), "/dev/null".to_owned(), shown]);
        }
    }
    if block_network {
        args.push("--unshare-net".to_owned());
    }
    let dir = Path::new(cwd);
    if !dir.is_absolute() {
        return Err(Error::invalid(format!(
            "workdir must be an absolute path, got {cwd}"
        )));
    }
    if dir.starts_with("/tmp") {
        // The private /tmp starts empty: create the directory there.
        args.extend(["--dir".to_owned(), cwd.to_owned()]);
    } else if !dir.is_dir() {
        return Err(Error::invalid(format!(
            "workdir {cwd} does not exist on the server host (sandboxes see it read-only; \
             directories under /tmp are created)"
        )));
    }
    args.extend(["--chdir".to_owned(), cwd.to_owned()]);
    Ok(args)
}

/// The first executable file named `name` in the directories of `path`.
pub(crate) fn find_in_path(name: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Checks that bwrap can create the namespaces we use on this host (it cannot
/// in some containers).
async fn probe_bwrap(bwrap: &Path) -> anyhow::Result<()> {
    let mut args = bwrap_args(&[], false, "/tmp").map_err(|e| anyhow::anyhow!("{e}"))?;
    args.extend(["--".to_owned(), "true".to_owned()]);
    let output = Command::new(bwrap)
        .args(&args)
        .env_clear()
        .env("PATH", BASE_PATH)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(10), output)
        .await
        .context("bwrap did not answer within 10s")?
        .with_context(|| format!("cannot run {}", bwrap.display()))?;
    if !output.status.success() {
        bail!(
            "{} cannot create a sandbox on this host: {}",
            bwrap.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Kills a whole process group (SIGKILL). No error if it is gone already.
pub(crate) fn kill_group(pgid: Option<u32>) {
    use nix::{
        sys::signal::{killpg, Signal},
        unistd::Pid,
    };
    let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 1) else {
        return;
    };
    match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, error = %e, "cannot kill a sandbox's process group"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(argv: &[&str]) -> Launch {
        Launch {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            env: SandboxEnv(BTreeMap::from([("A".to_owned(), "secret-a".to_owned())])),
            workdir: None,
            block_network: false,
        }
    }

    #[test]
    fn debug_of_an_env_shows_names_only() {
        let shown = format!("{:?}", launch(&["true"]));
        assert!(shown.contains("\"A\""), "{shown}");
        assert!(!shown.contains("secret-a"), "{shown}");
    }

    #[test]
    fn an_unknown_command_is_refused_before_it_runs() {
        let err = Runner::Process
            .command(&launch(&["no-such-command-xyz"]), Path::new("/tmp"))
            .unwrap_err();
        assert!(
            err.message().contains("'no-such-command-xyz' not found"),
            "{err:?}"
        );
        let err = Runner::Process
            .command(&launch(&[]), Path::new("/tmp"))
            .unwrap_err();
        assert!(err.message().contains("needs a command"), "{err:?}");
    }

    #[test]
    fn bwrap_options_hide_paths_and_keep_values_off_the_command_line() {
        let hidden = vec![PathBuf::from("/etc"), PathBuf::from("/tmp/data")];
        let args = bwrap_args(&hidden, true, "/tmp/work").unwrap();
        let joined = args.join(" ");
        assert!(joined.contains("--unshare-pid"));
        assert!(joined.contains("--ro-bind / /"));
        assert!(joined.contains("--tmpfs /etc"), "{joined}");
        assert!(!joined.contains("/tmp/data"), "{joined}");
        assert!(joined.contains("--unshare-net"));
        assert!(
            joined.ends_with("--dir /tmp/work --chdir /tmp/work"),
            "{joined}"
        );
        assert!(!joined.contains("setenv"));
        assert!(bwrap_args(&[], false, "/no/such/dir").is_err());
        assert!(bwrap_args(&[], false, "relative").is_err());
    }

    #[test]
    fn finds_executables_in_path() {
        assert!(find_in_path("sh", BASE_PATH).is_some());
        assert!(find_in_path("sh", "").is_none());
        assert!(find_in_path("no-such-command-xyz", BASE_PATH).is_none());
    }
}
