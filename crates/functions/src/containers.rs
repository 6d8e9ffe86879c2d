//! Containers: processes that run Modal's container runtime for one
//! function, started when inputs wait and stopped when idle.
//!
//! Each runs under the one hardened bubblewrap policy
//! ([`latchkey_launch::Bwrap`]): no capabilities, its own namespaces, a
//! read-only host with a private `/tmp`, empty `/run`, `/home` and `/root`,
//! the server's data dir, database and key files hidden; the interpreter's
//! installation is shown read-only wherever it lives. Nothing of the host
//! is writable to it: its task directory (the uploaded files and its
//! control files) is bound read-only, and `/tmp` is its own. Its environment is exactly its function's secrets
//! over a minimal base (`PATH`, `LANG`, `HOME`) plus the variables Modal's
//! runtime reads (`MODAL_*`); bwrap starts with that environment, so that no
//! value ever appears on a command line.
//!
//! Its calls reach the server through a Unix socket in its task directory,
//! served for that task alone: the container holds no token, and the server
//! knows which task is calling from the socket, not from anything the
//! container says.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use latchkey_core::{ids, Error};
use latchkey_launch::{Bwrap, Exit, DEFAULT_PATH};
use latchkey_proto::{api, prost::Message as _};
use latchkey_service::sandboxes::SandboxSecret;
use tokio::{io::AsyncReadExt, sync::watch};

use crate::{
    calls::{complete, fail_queued, failure},
    now_secs, Functions, Interpreter, Logs,
};

/// How long a container asked to stop may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Where the control files appear inside the container.
const CONTROL: &str = "control";

/// Why a container is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// It waited too long for an input.
    Idle,
    /// Its app stopped.
    AppStopped,
    /// A new definition of its function replaced the one it runs.
    Replaced,
    /// Its input ran past the function's timeout.
    Timeout { input_id: String, secs: u32 },
    /// It reported a failure (`TaskResult`).
    Failed,
    /// A call it runs was cancelled.
    Cancelled,
    /// The server stops.
    Shutdown,
}

/// A running container.
pub(crate) struct Task {
    pub(crate) function_id: String,
    pub(crate) app_id: String,
    pub(crate) generation: u64,
    /// Inputs it runs.
    pub(crate) inputs: Vec<String>,
    /// Since when it has waited for an input with none running.
    pub(crate) idle_since: Option<Instant>,
    /// Whether it ever took an input.
    pub(crate) took_input: bool,
    /// What it reported with `TaskResult`.
    pub(crate) failure: Option<api::GenericResult>,
    pub(crate) stop: Arc<watch::Sender<Option<StopReason>>>,
}

impl Task {
    pub(crate) fn stopping(&self) -> bool {
        self.stop.borrow().is_some()
    }

    pub(crate) fn request_stop(&self, reason: StopReason) {
        self.stop.send_if_modified(|s| {
            let first = s.is_none();
            if first {
                *s = Some(reason);
            }
            first
        });
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The policy for a container of `python` whose task directory is `dir`.
fn policy(hidden: &[PathBuf], python: &Interpreter, dir: &Path, cwd: &Path) -> Bwrap {
    let mut policy = Bwrap::new();
    for path in &python.visible {
        policy = policy.bind_ro_try(path);
    }
    policy
        .bind_ro(dir)
        .hide_all(hidden.iter().cloned())
        .chdir(cwd, false)
}

/// Checks that bwrap runs the interpreter under the policy on this host.
pub(crate) async fn probe_bwrap(
    hidden: &[PathBuf],
    python: &Interpreter,
) -> Result<PathBuf, Error> {
    let Some(bwrap) =
        latchkey_launch::find_in_path("bwrap", std::env::var_os("PATH").unwrap_or_default())
    else {
        return Err(Error::failed_precondition(
            "functions run under bubblewrap, and `bwrap` is not installed (e.g. `apt-get install \
             bubblewrap`)",
        ));
    };
    let dir = std::env::temp_dir();
    let mut command = tokio::process::Command::from(policy(hidden, python, &dir, &dir).command(
        &bwrap,
        [
            python.path.as_os_str(),
            "-c".as_ref(),
            "import modal".as_ref(),
        ],
    ));
    let output = command
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("LANG", "C.UTF-8")
        .env("HOME", "/tmp")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .map_err(|_| Error::failed_precondition("bwrap did not run the interpreter within 60s"))?
        .map_err(|e| Error::failed_precondition(format!("cannot run {}: {e}", bwrap.display())))?;
    if !output.status.success() {
        return Err(Error::failed_precondition(format!(
            "functions run under bubblewrap, and {} cannot run {} with `import modal` on this \
             host: {}",
            bwrap.display(),
            python.path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(bwrap)
}

impl Functions {
    /// Starts containers for `function_id` while inputs wait for one, up to
    /// the limits.
    pub(crate) fn schedule(&self, function_id: &str) {
        let start = {
            let mut state = self.state();
            if state.shutting_down {
                return;
            }
            let Some(f) = state.functions.get(function_id) else {
                return;
            };
            let waiting = f.queue.len();
            let generation = f.generation;
            let app_id = f.app_id.clone();
            let mine: Vec<&Task> = state
                .tasks
                .values()
                .filter(|t| t.function_id == function_id && !t.stopping())
                .collect();
            let free = mine.iter().filter(|t| t.inputs.is_empty()).count();
            let total = state.tasks.len();
            if waiting <= free
                || mine.len() >= self.inner.config.max_containers_per_function.max(1)
                || total >= self.inner.config.max_containers.max(1)
            {
                return;
            }
            let task_id = ids::new_id("ta-");
            state.tasks.insert(
                task_id.clone(),
                Task {
                    function_id: function_id.to_owned(),
                    app_id,
                    generation,
                    inputs: Vec::new(),
                    idle_since: None,
                    took_input: false,
                    failure: None,
                    stop: Arc::new(watch::Sender::new(None)),
                },
            );
            task_id
        };
        let this = self.clone();
        let function_id = function_id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = this.run_container(&start, &function_id).await {
                tracing::warn!(task = %start, function = %function_id, error = %e, "container could not start");
                let mut state = this.state();
                state.tasks.remove(&start);
                fail_queued(&mut state, &function_id, &failure(e.message(), false));
                drop(state);
                this.bump();
            }
        });
    }

    /// Stops containers that waited longer than their idle timeout.
    pub(crate) fn stop_idle_containers(&self) {
        let state = self.state();
        for task in state.tasks.values() {
            let idle = state
                .functions
                .get(&task.function_id)
                .and_then(|f| f.definition.as_ref())
                .map(|d| d.task_idle_timeout_secs)
                .filter(|s| *s > 0)
                .map_or(self.inner.config.idle_timeout, |s| {
                    Duration::from_secs(u64::from(s))
                });
            if task.inputs.is_empty() && task.idle_since.is_some_and(|at| at.elapsed() > idle) {
                task.request_stop(StopReason::Idle);
            }
        }
        drop(state);
        self.bump();
    }

    /// Starts the container of task `task_id` and supervises it until it
    /// ends. Errors before the process runs are returned.
    async fn run_container(&self, task_id: &str, function_id: &str) -> Result<(), Error> {
        let (def, app_id, caller, environment_name, layout, logs, stop) = {
            let state = self.state();
            let f = state
                .functions
                .get(function_id)
                .ok_or_else(|| Error::not_found("The function is gone"))?;
            let def = f
                .definition
                .clone()
                .ok_or_else(|| Error::failed_precondition("The function has no definition"))?;
            let app = state
                .apps
                .get(&f.app_id)
                .ok_or_else(|| Error::not_found("The function's app is gone"))?;
            let layout = Self::layout(&state, app, Some(&def));
            let stop = state
                .tasks
                .get(task_id)
                .map(|t| Arc::clone(&t.stop))
                .ok_or_else(|| Error::not_found("The task is gone"))?;
            (
                def,
                app.id.clone(),
                app.caller.clone(),
                app.environment_name.clone(),
                layout,
                Arc::clone(&app.logs),
                stop,
            )
        };
        // The secrets, resolved now by the app's creator: permissions, the
        // audit log and `last_used_at` as for any delivery of values.
        let required: Vec<(String, Vec<String>)> = {
            let state = self.state();
            def.secret_ids
                .iter()
                .filter_map(|id| state.required_keys.get(id).map(|k| (id.clone(), k.clone())))
                .collect()
        };
        let service = &self.inner.service;
        let sources: Vec<SandboxSecret<'_>> = def
            .secret_ids
            .iter()
            .map(|id| SandboxSecret::Stored(id.as_str()))
            .collect();
        let secrets = service
            .sandbox_secrets(&caller, sources)
            .await
            .map_err(|e| self.explain_gone_secret(&app_id, e))?;
        for (secret_id, keys) in &required {
            let secret = service.secret(&caller, secret_id).await?;
            let present: Vec<&str> = secret.contents.keys().map(String::as_str).collect();
            let missing: Vec<&str> = keys
                .iter()
                .map(String::as_str)
                .filter(|k| !present.contains(k))
                .collect();
            if !missing.is_empty() {
                return Err(Error::failed_precondition(format!(
                    "Secret is missing key(s): {}",
                    missing.join(", ")
                )));
            }
        }
        if !secrets.named.is_empty() {
            service.mark_used(&caller, &secrets.named).await?;
        }
        // The task's directory: the files under `root`, control files
        // (arguments, socket) under `control`.
        let dir = self.inner.work_dir.join(task_id);
        let root = dir.join("root");
        let control = dir.join(CONTROL);
        let io = |e: std::io::Error| {
            tracing::error!(error = %e, "cannot prepare a container's directory");
            Error::internal("Cannot prepare the container's directory on the server")
        };
        create_private_dir(&root).map_err(io)?;
        create_private_dir(&control).map_err(io)?;
        let cleanup = DirGuard(dir.clone());
        let workspace_id = caller.workspace_id().to_owned();
        self.materialise(&workspace_id, &def.mount_ids, &root)?;
        let arguments = api::ContainerArguments {
            task_id: task_id.to_owned(),
            function_id: function_id.to_owned(),
            app_id: app_id.clone(),
            function_def: Some(def.clone()),
            environment_name: environment_name.clone(),
            app_layout: Some(layout),
            ..Default::default()
        };
        let args_path = control.join("arguments.bin");
        std::fs::write(&args_path, arguments.encode_to_vec()).map_err(io)?;
        let socket = control.join("modal.sock");
        let listener = tokio::net::UnixListener::bind(&socket).map_err(io)?;
        let server = self
            .inner
            .task_server
            .get()
            .ok_or_else(|| Error::unavailable("The server is not ready to run containers"))?;
        // Served until this function returns (the sender drops).
        let (served, ended) = tokio::sync::oneshot::channel::<()>();
        server(
            listener,
            task_id.to_owned(),
            Box::pin(async move {
                let _ = ended.await;
            }),
        );

        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("PATH".into(), DEFAULT_PATH.into());
        env.insert("LANG".into(), "C.UTF-8".into());
        env.insert("HOME".into(), "/tmp".into());
        env.extend(secrets.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        // What Modal's runtime needs; not overridable by a secret.
        for (k, v) in [
            ("MODAL_SERVER_URL", format!("unix:{}", socket.display())),
            (
                "MODAL_CONTAINER_ARGUMENTS_PATH",
                args_path.display().to_string(),
            ),
            ("MODAL_IS_REMOTE", "1".to_owned()),
            ("MODAL_TASK_ID", task_id.to_owned()),
            ("MODAL_ENVIRONMENT", environment_name.clone()),
            ("PWD", root.display().to_string()),
        ] {
            env.insert(k.to_owned(), v);
        }
        let python = &self.inner.python;
        let policy = policy(&self.inner.config.hidden_paths, python, &dir, &root);
        let mut command = tokio::process::Command::from(policy.command(
            &self.inner.bwrap,
            [
                python.path.as_os_str(),
                "-u".as_ref(),
                "-m".as_ref(),
                "modal._container_entrypoint".as_ref(),
            ],
        ));
        command
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            tracing::error!(error = %e, "cannot start a container");
            Error::internal("Cannot start the function's container on the server")
        })?;
        drop(env);
        tracing::info!(task = %task_id, function = %function_id, app = %app_id, secrets = ?secrets, "container started");
        metrics::gauge!("latchkey_function_containers_running").increment(1.0);
        let pumps = [
            child
                .stdout
                .take()
                .map(|p| pump(p, Arc::clone(&logs), task_id, function_id, 1)),
            child
                .stderr
                .take()
                .map(|p| pump(p, Arc::clone(&logs), task_id, function_id, 2)),
        ];
        let pgid = child.id();
        let mut stop_rx = stop.subscribe();
        let exit = tokio::select! {
            status = child.wait() => Some(status),
            _ = stop_rx.wait_for(Option::is_some) => None,
        };
        let exit = match exit {
            Some(status) => status.ok().map(Exit::of),
            None => {
                // Asked to stop: a kill switch ends it cleanly when it waits
                // for an input; otherwise (a timeout, a stuck input) kill it.
                let graceful = matches!(
                    stop.borrow().clone(),
                    Some(StopReason::Idle | StopReason::Replaced | StopReason::Failed)
                );
                self.bump();
                let waited = if graceful {
                    tokio::time::timeout(STOP_GRACE, child.wait()).await.ok()
                } else {
                    None
                };
                match waited {
                    Some(status) => status.ok().map(Exit::of),
                    None => {
                        latchkey_sandbox::kill_group(pgid);
                        child.wait().await.ok().map(Exit::of)
                    }
                }
            }
        };
        latchkey_sandbox::kill_group(pgid);
        metrics::gauge!("latchkey_function_containers_running").decrement(1.0);
        for pump in pumps.into_iter().flatten() {
            let abort = pump.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), pump)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.container_ended(task_id, function_id, exit);
        drop(served);
        drop(cleanup);
        Ok(())
    }

    /// A secret of a deployed app that is gone may be an anonymous one
    /// (`Secret.from_dict`, `from_dotenv`) past its time to live: say so.
    fn explain_gone_secret(&self, app_id: &str, error: Error) -> Error {
        let deployed = self
            .state()
            .apps
            .get(app_id)
            .is_some_and(|a| a.state == api::AppState::Deployed);
        if deployed && error.kind() == latchkey_core::ErrorKind::NotFound {
            return Error::not_found(format!(
                "{} (a Secret.from_dict/from_dotenv/from_local_environ of a deployed app lives \
                 for the server's --anonymous-ttl: deploy the app again)",
                error.message()
            ));
        }
        error
    }

    /// Settles what a container leaves behind: its inputs fail as Modal
    /// reports such ends, and new containers start for waiting inputs.
    fn container_ended(&self, task_id: &str, function_id: &str, exit: Option<Exit>) {
        let mut state = self.state();
        let Some(task) = state.tasks.remove(task_id) else {
            return;
        };
        let reason = task.stop.borrow().clone();
        let code = exit.map_or(-1, |e| e.shell_code(-1));
        tracing::info!(task = %task_id, function = %function_id, exit = code, reason = ?reason, "container ended");
        let result = match (&task.failure, &reason) {
            (Some(failure), _) => failure.clone(),
            (None, Some(StopReason::Timeout { secs, .. })) => api::GenericResult {
                status: api::generic_result::GenericStatus::Timeout as i32,
                exception: format!("Function timed out after {secs} seconds (its timeout)"),
                ..Default::default()
            },
            (None, Some(StopReason::AppStopped)) => failure("The function's app was stopped", true),
            (None, Some(StopReason::Cancelled)) => api::GenericResult {
                status: api::generic_result::GenericStatus::Terminated as i32,
                exception: "The call was cancelled".to_owned(),
                ..Default::default()
            },
            (None, Some(StopReason::Shutdown)) => failure("The latchkey server stopped", true),
            (None, _) => failure(
                &format!("The function's container exited (code {code}) while it ran the input"),
                true,
            ),
        };
        for input_id in &task.inputs {
            complete(&mut state, input_id, result.clone(), 0, task_id);
        }
        // A container that failed to start (import error) or died before it
        // took any input would fail the same way again: the waiting inputs
        // fail with its failure instead of starting more.
        let hopeless = task.failure.is_some() || (!task.took_input && reason.is_none());
        if hopeless {
            let result = match &task.failure {
                Some(f) => f.clone(),
                None => failure(
                    &format!(
                        "The function's container exited (code {code}) before it took an input; \
                         see its output above"
                    ),
                    false,
                ),
            };
            fail_queued(&mut state, function_id, &result);
        }
        let again = !state.shutting_down
            && state
                .functions
                .get(function_id)
                .is_some_and(|f| !f.queue.is_empty());
        drop(state);
        self.bump();
        if again {
            self.schedule(function_id);
        }
    }
}

/// Removes a task directory when dropped.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove a container's directory");
        }
    }
}

/// Copies a container's stdout (fd 1) or stderr (fd 2) into its app's logs.
fn pump(
    mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    logs: Arc<Logs>,
    task_id: &str,
    function_id: &str,
    fd: i32,
) -> tokio::task::JoinHandle<()> {
    let (task_id, function_id) = (task_id.to_owned(), function_id.to_owned());
    tokio::spawn(async move {
        let mut chunk = vec![0u8; 16 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let n = match pipe.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&chunk[..n]);
            // Whole UTF-8 characters only; the rest waits for the next read.
            let valid = match std::str::from_utf8(&pending) {
                Ok(_) => pending.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => pending.len(),
            };
            let text = String::from_utf8_lossy(&pending[..valid]).into_owned();
            pending.drain(..valid);
            if !text.is_empty() {
                logs.push(batch(&task_id, &function_id, fd, text));
            }
        }
        if !pending.is_empty() {
            logs.push(batch(
                &task_id,
                &function_id,
                fd,
                String::from_utf8_lossy(&pending).into_owned(),
            ));
        }
    })
}

fn batch(task_id: &str, function_id: &str, fd: i32, data: String) -> api::TaskLogsBatch {
    api::TaskLogsBatch {
        task_id: task_id.to_owned(),
        function_id: function_id.to_owned(),
        items: vec![api::TaskLogs {
            data,
            file_descriptor: fd,
            timestamp: now_secs(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_shows_the_interpreter_and_the_task_read_only() {
        let python = Interpreter {
            path: PathBuf::from("/opt/py/bin/python"),
            modal_version: "1.6.4".into(),
            python_version: "3.12".into(),
            visible: vec![PathBuf::from("/opt/py")],
        };
        let args: Vec<String> = policy(
            &[PathBuf::from("/var/lib/latchkey")],
            &python,
            Path::new("/tmp/fn/ta-1"),
            Path::new("/tmp/fn/ta-1/root"),
        )
        .args()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
        let joined = args.join(" ");
        assert!(joined.contains("--ro-bind-try /opt/py /opt/py"), "{joined}");
        assert!(
            joined.contains("--ro-bind /tmp/fn/ta-1 /tmp/fn/ta-1"),
            "{joined}"
        );
        assert!(joined.contains("--cap-drop ALL"), "{joined}");
        assert!(joined.ends_with("--chdir /tmp/fn/ta-1/root"), "{joined}");
        assert!(!joined.contains("--bind "), "nothing writable: {joined}");
    }
}
