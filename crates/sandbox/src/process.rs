//! How a sandbox's command becomes a process on the server host: inside
//! bubblewrap (`bwrap`) when it is available, or as a plain child process.
//!
//! Either way the process starts from an empty environment: a minimal base
//! (`PATH`, `HOME`, `LANG`, `PWD`) plus the sandbox's secrets, never the server's
//! own variables. It runs in its own process group, so that the whole group
//! can be killed at once.
//!
//! Under bubblewrap it runs under latchkey's one hardened policy
//! ([`latchkey_launch::Bwrap`], shared with the SDK's isolated functions):
//! no capabilities, its own namespaces, a read-only host with a private
//! `/tmp`, empty `/run`, `/home` and `/root`, the server's data dir,
//! database and master key file hidden; it dies with the server. bwrap's
//! own `--clearenv --setenv K V` is deliberately not used: it would put the
//! secret values on bwrap's command line, which every user of the host can
//! read in `/proc/PID/cmdline`. bwrap instead starts with exactly the
//! sandbox's environment (`/proc/PID/environ` is private to the owner), and
//! passes it on unchanged, which gives the same result.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    process::Stdio,
};

use latchkey_core::Error;
use latchkey_launch::{find_in_path, Bwrap, DEFAULT_PATH};
use tokio::process::Command;

/// How sandboxes are isolated from the host: always bubblewrap. A plain
/// child process is no isolation: run as the server's user it reads the
/// server's environment (`/proc/$PPID/environ`: the master key, a database
/// password, tokens), its data dir and other sandboxes' variables, whatever
/// its caller's token. So there is no such mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Isolation {
    /// bubblewrap; the server refuses to start sandboxes where `bwrap` is
    /// missing or does not work.
    #[default]
    Auto,
    /// The same, said explicitly (`--sandbox-isolation bwrap`).
    Bubblewrap,
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
    /// A plain process, for the manager's own tests only (see [`Isolation`]).
    #[cfg(test)]
    Process,
}

impl Runner {
    /// Resolves `isolation` on this host: bubblewrap, or an error that says
    /// what is missing.
    pub(crate) async fn detect(isolation: Isolation, hidden: Vec<PathBuf>) -> Result<Self, Error> {
        let probe = match find_in_path("bwrap", std::env::var_os("PATH").unwrap_or_default()) {
            None => Err(
                "`bwrap` (bubblewrap) is not installed (e.g. `apt-get install bubblewrap`)"
                    .to_owned(),
            ),
            Some(bwrap) => probe_bwrap(&bwrap).await.map(|()| bwrap),
        };
        let context = match isolation {
            Isolation::Bubblewrap => "--sandbox-isolation bwrap",
            Isolation::Auto => "sandboxes need bubblewrap to be isolated",
        };
        match probe {
            Ok(bwrap) => Ok(Self::Bubblewrap { bwrap, hidden }),
            Err(e) => Err(Error::failed_precondition(format!("{context}: {e}"))),
        }
    }

    /// Whether a sandbox needs a scratch directory on the host (bubblewrap
    /// gives it a private `/tmp` instead).
    pub(crate) fn needs_scratch(&self) -> bool {
        match self {
            Self::Bubblewrap { .. } => false,
            #[cfg(test)]
            Self::Process => true,
        }
    }

    /// A short name for logs: `bwrap` (or `process` in the manager's tests).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Bubblewrap { .. } => "bwrap",
            #[cfg(test)]
            Self::Process => "process",
        }
    }

    /// The command that starts `launch`, with piped stdio, in its own process
    /// group. `scratch` is a private, writable directory for a plain process
    /// (its `HOME` and default working directory).
    pub(crate) fn command(
        &self,
        launch: &Launch,
        // Only the manager's tests run plain processes, which use it.
        #[cfg_attr(not(test), allow(unused_variables))] scratch: &Path,
    ) -> Result<Command, Error> {
        let Some(program) = launch.argv.first() else {
            return Err(Error::invalid(
                "A sandbox needs a command: latchkey does not run images, so pass the command \
                 to Sandbox.create(\"cmd\", \"arg\", ...)",
            ));
        };
        let mut env = BTreeMap::new();
        env.insert("PATH".to_owned(), DEFAULT_PATH.to_owned());
        env.insert("LANG".to_owned(), "C.UTF-8".to_owned());
        let (mut command, cwd): (Command, Option<PathBuf>) = match self {
            Self::Bubblewrap { bwrap, hidden } => {
                env.insert("HOME".to_owned(), "/tmp".to_owned());
                let cwd = launch.workdir.clone().unwrap_or_else(|| "/tmp".to_owned());
                // bwrap sets PWD itself.
                env.insert("PWD".to_owned(), cwd.clone());
                let policy = policy(hidden, launch.block_network, &cwd)?;
                (Command::from(policy.command(bwrap, &launch.argv)), None)
            }
            #[cfg(test)]
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

/// The policy for a sandbox that starts in `cwd`. The workdir rules are the
/// sandbox's own: bwrap would fail later, with a less helpful message.
fn policy(hidden: &[PathBuf], block_network: bool, cwd: &str) -> Result<Bwrap, Error> {
    let dir = Path::new(cwd);
    if !dir.is_absolute() {
        return Err(Error::invalid(format!(
            "workdir must be an absolute path, got {cwd}"
        )));
    }
    // The private /tmp starts empty: a directory there is created.
    let create = dir.starts_with("/tmp");
    if !create && !dir.is_dir() {
        return Err(Error::invalid(format!(
            "workdir {cwd} does not exist on the server host (sandboxes see it read-only; \
             directories under /tmp are created)"
        )));
    }
    Ok(Bwrap::new()
        .hide_all(hidden.iter().cloned())
        .network(!block_network)
        .chdir(dir, create))
}

/// Checks that bwrap can create the namespaces we use on this host (it cannot
/// in some containers).
async fn probe_bwrap(bwrap: &Path) -> Result<(), String> {
    let mut command = Command::from(
        policy(&[], false, "/tmp")
            .map_err(|e| e.to_string())?
            .command(bwrap, ["true"]),
    );
    let output = command
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(10), output)
        .await
        .map_err(|_| "bwrap did not answer within 10s".to_owned())?
        .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} cannot create a sandbox on this host: {}",
            bwrap.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// Kills a whole process group (SIGKILL) led by bubblewrap, with the PID
/// namespace it started. No error if it is gone already. Function containers
/// (`latchkey-functions`) stop theirs with it too.
pub fn kill_group(pgid: Option<u32>) {
    use nix::{
        sys::signal::{kill, killpg, Signal},
        unistd::Pid,
    };
    let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 1) else {
        return;
    };
    // The group leader is bubblewrap. Its child (the PID namespace's init,
    // which holds the sandbox's processes) leaves the group at once
    // (`--new-session`) and dies with its parent only once it has armed
    // `--die-with-parent`: killed in that window, it would outlive the
    // sandbox. So stop the group first (no more children), kill the
    // leader's children by pid (an init takes its namespace with it), then
    // the group.
    let group = Pid::from_raw(pgid);
    let _ = killpg(group, Signal::SIGSTOP);
    for child in children_of(pgid) {
        let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
    }
    match killpg(group, Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, error = %e, "cannot kill a sandbox's process group"),
    }
}

/// The pids of the processes whose parent is `parent`, from `/proc` (the
/// kernel's `children` file needs an option some kernels lack).
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
            let ppid: i32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
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
        let args = policy(&hidden, true, "/tmp/work").unwrap().args();
        let joined = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
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
        assert!(policy(&[], false, "/no/such/dir").is_err());
        assert!(policy(&[], false, "relative").is_err());
    }
}
