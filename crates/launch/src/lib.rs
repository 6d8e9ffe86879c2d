//! How latchkey starts code that is not its own: `latchkey run`, the SDK's
//! function containers and the server's sandboxes.
//!
//! Those three used to carry their own copy of each piece below, and the
//! copies had drifted: the SDK's bubblewrap policy kept every capability and
//! left `/home`, `/root`, `/run`, the data dir and `~/.latchkey.toml`
//! readable, while the server's sandboxes hid them. One crate holds each
//! rule once, so that a process started by any of them gets the same
//! treatment:
//!
//! - [`BASE_ENV`] and [`base_env`]: the few variables a process keeps from
//!   its caller when it must not get the caller's whole environment;
//! - [`find_in_path`]: the PATH search, done before starting anything so
//!   that an unknown command is an error naming it, not a failed spawn;
//! - [`Exit`]: how a process ended, and the shell's exit code for it
//!   (128 + signal for a killed process);
//! - [`Bwrap`]: the one hardened bubblewrap policy.
//!
//! ```
//! use latchkey_launch::{find_in_path, Bwrap};
//!
//! let args = Bwrap::new().network(false).chdir("/tmp/work", true).args();
//! assert!(args.iter().any(|a| a == "--unshare-net"));
//! assert!(find_in_path("sh", latchkey_launch::DEFAULT_PATH).is_some());
//! ```

mod bwrap;

use std::{
    ffi::{OsStr, OsString},
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::ExitStatus,
};

pub use bwrap::Bwrap;

/// The variables a process keeps from its caller's environment when it gets
/// only a minimal base plus its secrets (`latchkey run --isolate`, the SDK's
/// containers): what programs need to find commands, files, a language and a
/// terminal, and nothing that commonly holds a credential.
pub const BASE_ENV: [&str; 5] = ["PATH", "HOME", "LANG", "TERM", "USER"];

/// `PATH` for a process that does not inherit one (sandboxes): the usual
/// system directories.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The caller's values of [`BASE_ENV`] (those that are set).
pub fn base_env() -> Vec<(&'static str, OsString)> {
    BASE_ENV
        .iter()
        .filter_map(|key| Some((*key, std::env::var_os(key)?)))
        .collect()
}

/// Whether `path` is a file that someone may execute.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first executable file named `name` in the directories of `search` (a
/// `PATH` value). Empty entries are skipped: to a shell they mean the current
/// directory, which would let a file dropped there shadow a system command.
pub fn find_in_path(name: impl AsRef<OsStr>, search: impl AsRef<OsStr>) -> Option<PathBuf> {
    let name = name.as_ref();
    std::env::split_paths(search.as_ref())
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// Neither (a status that does not come from a terminated process).
    Unknown,
}

impl Exit {
    /// The exit of `status`.
    pub fn of(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(signal)) => Self::Signal(signal),
            (None, None) => Self::Unknown,
        }
    }

    /// The code a shell reports for it: the exit code, or 128 + the signal;
    /// `unknown` for [`Exit::Unknown`].
    pub fn shell_code(self, unknown: i32) -> i32 {
        match self {
            Self::Code(code) => code,
            Self::Signal(signal) => 128 + signal,
            Self::Unknown => unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn finds_executables_in_path() {
        assert!(find_in_path("sh", DEFAULT_PATH).is_some());
        assert!(find_in_path("sh", "").is_none());
        assert!(find_in_path("no-such-command-xyz", DEFAULT_PATH).is_none());
    }

    #[test]
    fn empty_path_entries_do_not_mean_the_current_directory() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("lk-tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let search = format!("::{}", dir.path().display());
        assert_eq!(find_in_path("lk-tool", &search), Some(tool));
        // Not executable: not found.
        let plain = dir.path().join("lk-plain");
        std::fs::write(&plain, "").unwrap();
        assert_eq!(find_in_path("lk-plain", &search), None);
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        let run =
            |script: &str| Exit::of(Command::new("sh").args(["-c", script]).status().unwrap());
        assert_eq!(run("exit 3"), Exit::Code(3));
        assert_eq!(run("exit 3").shell_code(1), 3);
        assert_eq!(run("kill -TERM $$"), Exit::Signal(15));
        assert_eq!(run("kill -TERM $$").shell_code(1), 143);
        assert_eq!(Exit::Unknown.shell_code(-1), -1);
    }

    #[test]
    fn base_env_names_no_credential() {
        assert_eq!(BASE_ENV, ["PATH", "HOME", "LANG", "TERM", "USER"]);
        assert!(base_env().iter().all(|(k, _)| BASE_ENV.contains(k)));
    }
}
