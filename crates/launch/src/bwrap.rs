//! The one bubblewrap policy for code latchkey runs: sandboxes on the server
//! and the SDK's `Isolation::Bwrap` containers.
//!
//! Such code must never obtain the server's own environment, data dir, key
//! or database, whatever its isolation mode or its caller. So the policy starts from nothing and opens only what a program needs:
//!
//! - no capabilities (`--cap-drop ALL`: the server often runs as root in a
//!   container, and bwrap keeps root's capabilities unless told otherwise);
//! - its own PID, IPC, UTS and cgroup namespaces, a new session (no
//!   `TIOCSTI` into the caller's terminal), death with its parent;
//! - a read-only view of the host, fresh `/dev` and `/proc`, a private
//!   `/tmp`;
//! - empty `/run` (sockets such as `docker.sock` stay reachable through a
//!   read-only bind), `/home`, `/root` and `$HOME` wherever it is (profiles
//!   with tokens, SSH keys);
//! - the latchkey files of the process that builds the policy hidden
//!   wherever they live: the client config (`LATCHKEY_CONFIG_PATH`, else
//!   `~/.latchkey.toml`) and the data dir (`LATCHKEY_DATA_DIR`, else the
//!   default one); the server adds its own data dir, database file and
//!   master key file with [`Bwrap::hide`];
//! - optionally no network.
//!
//! Paths a caller needs back (the SDK's program, working directory and call
//! directory) are bound after the empty directories and before the hidden
//! paths, so that binding a directory never uncovers a hidden file in it; a
//! bind that would show a whole emptied directory again (`/`, `/home`...)
//! is left out.
//!
//! No variable is ever passed on bwrap's command line (`--setenv`): every
//! user of the host can read `/proc/PID/cmdline`. The caller starts bwrap
//! with exactly the environment the program must get instead.

use std::{
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
};

/// Directories replaced by an empty tmpfs, in this order.
const EMPTIED: [&str; 4] = ["/tmp", "/run", "/home", "/root"];

/// The client config's file name in `$HOME`.
const CLIENT_CONFIG_FILE: &str = ".latchkey.toml";

/// A host path made visible again inside the sandbox.
#[derive(Debug, Clone)]
struct Bind {
    path: PathBuf,
    writable: bool,
    /// Skipped by bwrap when the path does not exist.
    optional: bool,
}

/// Builds the arguments of `bwrap` (everything before `--` and the command)
/// for the hardened policy described in the module docs.
#[derive(Debug, Clone)]
pub struct Bwrap {
    /// Directories replaced by an empty tmpfs: [`EMPTIED`] and `$HOME`.
    emptied: Vec<PathBuf>,
    hidden: Vec<PathBuf>,
    binds: Vec<Bind>,
    network: bool,
    chdir: Option<(PathBuf, bool)>,
}

impl Default for Bwrap {
    fn default() -> Self {
        Self::new()
    }
}

impl Bwrap {
    /// The policy, with the client config and data dir named by this
    /// process's environment hidden; network on.
    pub fn new() -> Self {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        let mut hidden = Vec::new();
        hidden.extend(var("LATCHKEY_CONFIG_PATH").map(PathBuf::from));
        hidden.extend(var("HOME").map(|home| Path::new(&home).join(CLIENT_CONFIG_FILE)));
        hidden.extend(var("LATCHKEY_DATA_DIR").map(PathBuf::from));
        hidden.extend(latchkey_core::paths::default_data_dir());
        let mut emptied: Vec<PathBuf> = EMPTIED.iter().map(PathBuf::from).collect();
        let home = var("HOME").and_then(|home| std::fs::canonicalize(home).ok());
        if let Some(home) = home.filter(|h| h.is_dir() && !emptied.iter().any(|e| h.starts_with(e)))
        {
            emptied.push(home);
        }
        Self {
            emptied,
            hidden,
            binds: Vec::new(),
            network: true,
            chdir: None,
        }
    }

    /// Hides `path` (a directory becomes empty, a file reads as empty).
    /// Relative and symlinked paths hide what they resolve to; a path that
    /// does not exist needs no hiding and is left out.
    pub fn hide(mut self, path: impl Into<PathBuf>) -> Self {
        self.hidden.push(path.into());
        self
    }

    /// Hides each of `paths`, as [`Bwrap::hide`].
    pub fn hide_all(mut self, paths: impl IntoIterator<Item = PathBuf>) -> Self {
        self.hidden.extend(paths);
        self
    }

    /// Whether the process may use the network (default: yes).
    pub fn network(mut self, on: bool) -> Self {
        self.network = on;
        self
    }

    /// Shows `path` read-only even where the policy empties its directory
    /// (e.g. a program under `/home`); bwrap fails if it does not exist.
    pub fn bind_ro(self, path: impl Into<PathBuf>) -> Self {
        self.bind(path.into(), false, false)
    }

    /// As [`Bwrap::bind_ro`], skipped when `path` does not exist.
    pub fn bind_ro_try(self, path: impl Into<PathBuf>) -> Self {
        self.bind(path.into(), false, true)
    }

    /// Shows `path` writable: the one place a process may hand results back.
    pub fn bind_rw(self, path: impl Into<PathBuf>) -> Self {
        self.bind(path.into(), true, false)
    }

    fn bind(mut self, path: PathBuf, writable: bool, optional: bool) -> Self {
        self.binds.push(Bind {
            path,
            writable,
            optional,
        });
        self
    }

    /// Starts the process in `dir`; `create` makes it first (for a
    /// directory of the private `/tmp`, which starts empty). Without it,
    /// bwrap keeps the caller's working directory where it is visible.
    pub fn chdir(mut self, dir: impl Into<PathBuf>, create: bool) -> Self {
        self.chdir = Some((dir.into(), create));
        self
    }

    /// bwrap's options, to be followed by `--` and the command.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = [
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
        ]
        .map(OsString::from)
        .into();
        for dir in &self.emptied {
            push(&mut args, ["--tmpfs".as_ref(), dir.as_os_str()]);
        }
        // Keep name resolution working where /etc/resolv.conf points into /run.
        if let Ok(target) = std::fs::canonicalize("/etc/resolv.conf") {
            if let Some(dir) = target.parent().filter(|d| d.starts_with("/run")) {
                push(
                    &mut args,
                    ["--ro-bind".as_ref(), dir.as_os_str(), dir.as_os_str()],
                );
            }
        }
        for bind in &self.binds {
            if self.emptied.iter().any(|dir| dir.starts_with(&bind.path)) {
                continue;
            }
            let option = match (bind.writable, bind.optional) {
                (true, false) => "--bind",
                (true, true) => "--bind-try",
                (false, false) => "--ro-bind",
                (false, true) => "--ro-bind-try",
            };
            let path = bind.path.as_os_str();
            push(&mut args, [option.as_ref(), path, path]);
        }
        for path in &self.hidden {
            let Ok(path) = std::fs::canonicalize(path) else {
                continue;
            };
            if self.emptied_already(&path) {
                continue;
            }
            if path.is_dir() {
                push(&mut args, ["--tmpfs".as_ref(), path.as_os_str()]);
            } else {
                push(&mut args, ["--ro-bind", "/dev/null"]);
                args.push(path.into_os_string());
            }
        }
        if !self.network {
            args.push("--unshare-net".into());
        }
        if let Some((dir, create)) = &self.chdir {
            if *create {
                push(&mut args, ["--dir".as_ref(), dir.as_os_str()]);
            }
            push(&mut args, ["--chdir".as_ref(), dir.as_os_str()]);
        }
        args
    }

    /// Whether `path` lies in a directory the policy empties and no bind
    /// shows again: hiding it there would only create an empty mount point.
    fn emptied_already(&self, path: &Path) -> bool {
        self.emptied.iter().any(|dir| path.starts_with(dir))
            && !self.binds.iter().any(|b| path.starts_with(&b.path))
    }

    /// `bwrap` (the program at `bwrap`) running `argv` under this policy.
    /// The environment is the caller's to set, see the module docs.
    pub fn command<I, S>(&self, bwrap: &Path, argv: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = std::process::Command::new(bwrap);
        command.args(self.args()).arg("--").args(argv);
        command
    }
}

fn push<'a>(
    args: &mut Vec<OsString>,
    items: impl IntoIterator<Item = &'a (impl AsRef<OsStr> + ?Sized + 'a)>,
) {
    args.extend(items.into_iter().map(|item| item.as_ref().to_owned()));
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use super::*;

    fn joined(bwrap: &Bwrap) -> String {
        bwrap
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn the_policy_drops_capabilities_unshares_and_empties() {
        let args = joined(&Bwrap::new());
        for part in [
            "--die-with-parent --new-session",
            "--unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup-try",
            "--cap-drop ALL",
            "--ro-bind / / --dev /dev --proc /proc",
            "--tmpfs /tmp --tmpfs /run --tmpfs /home --tmpfs /root",
        ] {
            assert!(args.contains(part), "{part} missing from {args}");
        }
        assert!(!args.contains("--unshare-net"), "{args}");
        assert!(!args.contains("setenv"), "{args}");
        // A bind that would show an emptied directory again is left out.
        let args = joined(&Bwrap::new().bind_ro("/").bind_ro_try("/home"));
        assert!(!args.contains("--ro-bind-try"), "{args}");
        assert_eq!(args.matches("--ro-bind / /").count(), 1, "{args}");
    }

    #[test]
    fn hidden_paths_binds_network_and_workdir() {
        // Outside /tmp, /run, /home and /root, which the policy empties
        // anyway (a checkout may well live under one of them).
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let key = dir.path().join("master.key");
        std::fs::write(&key, "k").unwrap();
        let bwrap = Bwrap::new()
            .hide("/etc")
            .hide(&key)
            .hide("/tmp/data")
            .hide("/no/such/path")
            .bind_rw("/tmp/call")
            .network(false)
            .chdir("/tmp/work", true);
        let args = joined(&bwrap);
        assert!(args.contains("--tmpfs /etc"), "{args}");
        assert!(
            args.contains(&format!("--ro-bind /dev/null {}", key.display())),
            "{args}"
        );
        // Under the private /tmp already; absent paths need no hiding.
        assert!(!args.contains("/tmp/data"), "{args}");
        assert!(!args.contains("/no/such/path"), "{args}");
        assert!(args.contains("--bind /tmp/call /tmp/call"), "{args}");
        assert!(args.contains("--unshare-net"), "{args}");
        assert!(
            args.ends_with("--dir /tmp/work --chdir /tmp/work"),
            "{args}"
        );
        // A bind comes before the hiding, so it cannot uncover what is hidden.
        let bind_at = args.find("--bind /tmp/call").unwrap();
        assert!(bind_at < args.find("--tmpfs /etc").unwrap(), "{args}");
    }

    #[test]
    fn a_bound_directory_does_not_uncover_a_hidden_file_in_it() {
        // Outside /tmp, /run, /home and /root, which the policy empties
        // anyway (a checkout may well live under one of them).
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let config = dir.path().join(CLIENT_CONFIG_FILE);
        std::fs::write(&config, "token").unwrap();
        let args = joined(&Bwrap::new().bind_ro_try(dir.path()).hide(&config));
        let bind = args
            .find(&format!("--ro-bind-try {}", dir.path().display()))
            .unwrap();
        let hide = args
            .find(&format!("--ro-bind /dev/null {}", config.display()))
            .unwrap();
        assert!(bind < hide, "{args}");
    }

    /// The policy as bwrap applies it. Skipped where bwrap is missing or
    /// cannot create namespaces (some containers).
    #[test]
    fn under_bwrap_the_process_has_no_capabilities_and_sees_no_hidden_file() {
        let Some(bwrap) = crate::find_in_path("bwrap", crate::DEFAULT_PATH) else {
            eprintln!("skipped: no bwrap");
            return;
        };
        // Outside /tmp, /run, /home and /root, which the policy empties
        // anyway (a checkout may well live under one of them).
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let config = dir.path().join(CLIENT_CONFIG_FILE);
        std::fs::write(&config, "secret-token").unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("master.key"), "k").unwrap();
        let script = format!(
            "grep CapEff /proc/self/status; cat {config}; echo END; ls -A {data} | wc -l; \
             ls -A /home /root | grep -v ':$' | grep -cv '^$'; \
             touch /etc/lk-test 2>/dev/null || echo read-only; echo $$",
            config = config.display(),
            data = data.display(),
        );
        let output = Bwrap::new()
            .hide(&config)
            .hide(&data)
            .command(&bwrap, ["sh", "-c", &script])
            .env_clear()
            .env("PATH", crate::DEFAULT_PATH)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if !output.status.success() {
            eprintln!("skipped: {}", String::from_utf8_lossy(&output.stderr));
            return;
        }
        let out = String::from_utf8(output.stdout).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "CapEff:\t0000000000000000", "{out}");
        // The config reads as empty, the data dir, /home and /root look empty.
        assert_eq!(lines[1], "END", "{out}");
        assert!(!out.contains("secret-token"), "{out}");
        assert_eq!(lines[2], "0", "{out}");
        assert_eq!(lines[3], "0", "{out}");
        assert_eq!(lines[4], "read-only", "{out}");
        assert!(
            lines[5].parse::<u32>().unwrap() < 10,
            "own PID namespace: {out}"
        );
    }
}
