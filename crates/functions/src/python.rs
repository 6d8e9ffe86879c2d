//! The interpreter that runs function containers (`--function-python`).
//!
//! Containers run Modal's own container runtime from the installed package
//! (`python -m modal._container_entrypoint`). Arguments and results cross
//! between client and container as pickles, so the container's `modal` must
//! be the client's version: the server learns it here, once, at start, and
//! refuses to start when the interpreter is missing or cannot import
//! `modal`, rather than failing at the first call.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use latchkey_core::Error;
use latchkey_launch::DEFAULT_PATH;
use tokio::process::Command;

/// What the server knows of the configured interpreter.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// The interpreter, as configured.
    pub path: PathBuf,
    /// `modal.__version__`.
    pub modal_version: String,
    /// `major.minor`.
    pub python_version: String,
    /// Directories the interpreter needs to see (its prefixes and its
    /// `sys.path`): shown read-only to containers wherever they live.
    pub visible: Vec<PathBuf>,
}

const PROBE: &str = "import sys, modal; \
print(modal.__version__); \
print('%d.%d' % sys.version_info[:2]); \
print('\\n'.join([sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix] + sys.path))";

impl Interpreter {
    /// Runs `path` once to learn its `modal` version and where it lives.
    pub async fn probe(path: &Path) -> Result<Self, Error> {
        let shown = path.display();
        if !path.exists() && !path.to_string_lossy().contains('/') {
            // A bare name: look it up in the server's PATH.
            if latchkey_launch::find_in_path(path, std::env::var_os("PATH").unwrap_or_default())
                .is_none()
            {
                return Err(Error::failed_precondition(format!(
                    "--function-python {shown}: no such interpreter in PATH"
                )));
            }
        } else if !path.exists() {
            return Err(Error::failed_precondition(format!(
                "--function-python {shown}: no such file"
            )));
        }
        let output = Command::new(path)
            .args(["-I", "-c", PROBE])
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), output)
            .await
            .map_err(|_| {
                Error::failed_precondition(format!(
                    "--function-python {shown}: `import modal` did not finish within 60s"
                ))
            })?
            .map_err(|e| {
                Error::failed_precondition(format!("--function-python {shown}: cannot run it: {e}"))
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().last().unwrap_or("").trim();
            return Err(Error::failed_precondition(format!(
                "--function-python {shown} cannot import modal ({last}); install the client \
                 in it (pip install modal==1.6.4)"
            )));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut lines = stdout.lines();
        let modal_version = lines.next().unwrap_or("").trim().to_owned();
        let python_version = lines.next().unwrap_or("").trim().to_owned();
        if modal_version.is_empty() || python_version.is_empty() {
            return Err(Error::failed_precondition(format!(
                "--function-python {shown} did not report modal's version: is it a Python \
                 interpreter with modal installed?"
            )));
        }
        let mut visible: Vec<PathBuf> = Vec::new();
        for line in lines {
            let p = PathBuf::from(line.trim());
            if p.is_absolute() && p.exists() && !visible.contains(&p) {
                visible.push(p);
            }
        }
        // The interpreter itself (a venv's `python` links elsewhere).
        for p in [Some(path.to_path_buf()), std::fs::canonicalize(path).ok()]
            .into_iter()
            .flatten()
        {
            if let Some(dir) = p.parent().filter(|d| d.is_absolute()) {
                if !visible.iter().any(|v| v == dir) {
                    visible.push(dir.to_path_buf());
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            modal_version,
            python_version,
            visible,
        })
    }
}
