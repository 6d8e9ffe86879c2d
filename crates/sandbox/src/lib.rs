//! Modal sandboxes on the server (`latchkey serve --sandboxes`): the
//! process manager, Modal's V2 sandbox flow over it, output buffers and the
//! command router's tokens.
//!
//! A sandbox is one process on the server host, started from the command of
//! `modal.Sandbox.create(...)` with exactly the sandbox's secrets in its
//! environment (bubblewrap or a plain process, see `process.rs` for the
//! isolation). The image is not pulled.
//!
//! The manager ([`Sandboxes`]) keeps every sandbox in memory, with
//!
//! - its stdout and stderr, each in a ring of at most
//!   [`SandboxConfig::output_buffer_bytes`] (the most recent bytes; a reader
//!   that keeps up loses nothing);
//! - at most [`SandboxConfig::max_sandboxes`] sandboxes, running or finished;
//!   finished ones are dropped after [`SandboxConfig::keep_finished`], or
//!   earlier (oldest first) to make room. So output buffers never take more
//!   than `max_sandboxes × 2 × output_buffer_bytes`.
//! - a supervisor task per sandbox that enforces its timeout, kills its
//!   process group when it ends, is terminated or the server stops, and
//!   records the outcome.
//!
//! Sandboxes do not survive a restart of the server: [`Sandboxes::shutdown`]
//! kills them all.
//!
//! # Its place among the crates
//!
//! Errors are [`latchkey_core::Error`]s, which the gRPC adapter of
//! `latchkey-server` turns into status codes as it does for secrets; this
//! crate knows nothing of tonic. Who may create, see, reach or stop a
//! sandbox, and which values it gets, is decided by the service layer
//! (`latchkey_service::sandboxes`), with the other permissions.
//!
//! The flow's requests and answers are Modal's own messages
//! (`latchkey_proto::api`, plain prost types): they are the only shape the
//! flow has, every field of them is read or written here, and a parallel set
//! of Rust types would be a second copy of the same fields with a
//! field-by-field translation in both directions and no other user. What
//! the wire layer alone knows (the address the client reached, the router
//! token's header) is passed in as plain values.
//!
//! ```
//! use latchkey_sandbox::{Isolation, SandboxConfig, Sandboxes};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // Sandboxes run under bubblewrap; where `bwrap` is missing or cannot
//! // isolate, starting them fails and says so.
//! let sandboxes = Sandboxes::start(SandboxConfig {
//!     isolation: Isolation::Bubblewrap,
//!     ..SandboxConfig::default()
//! })
//! .await?;
//! assert_eq!(sandboxes.isolation(), "bwrap");
//! sandboxes.shutdown().await;
//! # Ok::<(), latchkey_core::Error>(())
//! # }).unwrap();
//! ```

mod modal;
mod output;
mod process;
mod router;
mod token;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use latchkey_core::{ids, Error};
use latchkey_launch::Exit;
use latchkey_proto::api;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    process::ChildStdin,
    sync::watch,
};

pub use output::OutputBuffer;
pub use process::{kill_group, Isolation};
use process::{Launch, Runner};

/// Default of [`SandboxConfig::output_buffer_bytes`]: 4 MiB per stream.
pub const DEFAULT_OUTPUT_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Default of [`SandboxConfig::max_sandboxes`].
pub const DEFAULT_MAX_SANDBOXES: usize = 16;
/// Default of [`SandboxConfig::max_apps`]: apps are a name and an id each.
pub const DEFAULT_MAX_APPS: usize = 10_000;
/// Default of [`SandboxConfig::keep_finished`].
pub const DEFAULT_KEEP_FINISHED: Duration = Duration::from_secs(15 * 60);
/// Timeout of a sandbox whose request names none (Modal's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest timeout a sandbox may ask for (Modal's limit).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Largest piece of output sent in one message.
pub const READ_CHUNK: usize = 16 * 1024;
/// How long the output of a finished process may still trickle in (from
/// processes that escaped its group) before its streams are closed.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long [`Sandboxes::shutdown`] waits for killed sandboxes to be reaped.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The sandbox settings of `latchkey serve --sandboxes`.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// How processes are isolated from the host.
    pub isolation: Isolation,
    /// Bytes kept of each of a sandbox's stdout and stderr.
    pub output_buffer_bytes: usize,
    /// Sandboxes held at once, running or finished.
    pub max_sandboxes: usize,
    /// Apps (`App.lookup(..., create_if_missing=True)`) held at once.
    pub max_apps: usize,
    /// How long a finished sandbox's result and output stay readable.
    pub keep_finished: Duration,
    /// URL clients reach the task command router at; default: the scheme
    /// and authority of the client's own request.
    pub router_url: Option<String>,
    /// Host paths sandboxes must not see under bubblewrap (the data dir,
    /// the database file and the master key file), beyond what the policy
    /// hides anyway (see [`latchkey_launch::Bwrap`]).
    pub hidden_paths: Vec<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            isolation: Isolation::Auto,
            output_buffer_bytes: DEFAULT_OUTPUT_BUFFER_BYTES,
            max_sandboxes: DEFAULT_MAX_SANDBOXES,
            max_apps: DEFAULT_MAX_APPS,
            keep_finished: DEFAULT_KEEP_FINISHED,
            router_url: None,
            hidden_paths: Vec::new(),
        }
    }
}

/// The sandbox manager. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Sandboxes {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SandboxConfig,
    runner: Runner,
    signer: token::Signer,
    sandboxes: Mutex<HashMap<String, Arc<Sandbox>>>,
    apps: Mutex<HashMap<String, modal::App>>,
    shutting_down: AtomicBool,
}

/// How a sandbox ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The process exited with this code.
    Exited(i32),
    /// The process was killed by this signal.
    Signaled(i32),
    /// It ran past its timeout and was killed.
    TimedOut(Duration),
    /// A client terminated it.
    Terminated,
    /// The server stopped.
    ServerShutdown,
}

impl Outcome {
    /// Modal's form of the outcome.
    pub(crate) fn to_result(&self) -> api::GenericResult {
        use api::generic_result::GenericStatus;
        let (status, exitcode, exception) = match self {
            Self::Exited(0) => (GenericStatus::Success, 0, String::new()),
            Self::Exited(code) => (GenericStatus::Failure, *code, String::new()),
            Self::Signaled(signal) => (
                GenericStatus::Failure,
                Exit::Signal(*signal).shell_code(-1),
                format!("The sandbox's process was killed by signal {signal}"),
            ),
            Self::TimedOut(after) => (
                GenericStatus::Timeout,
                124,
                format!("Sandbox timed out after {}s", after.as_secs()),
            ),
            Self::Terminated => (GenericStatus::Terminated, 137, String::new()),
            Self::ServerShutdown => (
                GenericStatus::Terminated,
                137,
                "The latchkey server stopped".to_owned(),
            ),
        };
        api::GenericResult {
            status: status as i32,
            exitcode,
            exception,
            ..Default::default()
        }
    }
}

/// Why a sandbox is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Terminate,
    Shutdown,
}

#[derive(Debug)]
struct Finished {
    outcome: Outcome,
    at: Instant,
}

/// One sandbox.
#[derive(Debug)]
pub struct Sandbox {
    pub(crate) id: String,
    pub(crate) task_id: String,
    pub(crate) workspace_id: String,
    /// The environment of its app: tokens limited to other environments
    /// cannot see it.
    pub(crate) environment_name: String,
    pub(crate) app_id: String,
    pub(crate) name: Option<String>,
    pub(crate) started_at: SystemTime,
    stdout: OutputBuffer,
    stderr: OutputBuffer,
    stdin: tokio::sync::Mutex<Stdin>,
    finished: watch::Sender<Option<Finished>>,
    stop: watch::Sender<Option<Stop>>,
}

#[derive(Debug)]
struct Stdin {
    pipe: Option<ChildStdin>,
    /// Bytes written so far: the offset the next write must start at.
    written: u64,
}

/// A sandbox to start.
#[derive(Debug)]
pub(crate) struct Spawn {
    pub(crate) workspace_id: String,
    pub(crate) environment_name: String,
    pub(crate) app_id: String,
    pub(crate) name: Option<String>,
    pub(crate) launch: Launch,
    pub(crate) timeout: Duration,
}

impl Sandbox {
    /// Its id (`sb-...`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When its process started.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// Its stdout.
    pub fn stdout(&self) -> &OutputBuffer {
        &self.stdout
    }

    /// Its stderr.
    pub fn stderr(&self) -> &OutputBuffer {
        &self.stderr
    }

    /// The outcome, once it has ended.
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        self.finished.borrow().as_ref().map(|f| f.outcome.clone())
    }

    /// Waits at most `timeout` for the sandbox to end.
    pub(crate) async fn wait(&self, timeout: Duration) -> Option<Outcome> {
        let mut rx = self.finished.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        self.outcome()
    }

    /// Asks the supervisor to kill the sandbox. Returns the outcome if it had
    /// ended already.
    pub(crate) fn terminate(&self) -> Option<Outcome> {
        let outcome = self.outcome();
        if outcome.is_none() {
            self.stop.send_if_modified(|stop| {
                let first = stop.is_none();
                if first {
                    *stop = Some(Stop::Terminate);
                }
                first
            });
        }
        outcome
    }

    /// Writes `data`, which starts at byte `offset` of the stdin stream; bytes
    /// already written (a retried write) are skipped. `eof` closes stdin.
    pub async fn write_stdin(&self, offset: u64, data: &[u8], eof: bool) -> Result<(), Error> {
        let mut stdin = self.stdin.lock().await;
        if offset > stdin.written {
            return Err(Error::invalid(format!(
                "stdin write at offset {offset}, but only {} bytes were written",
                stdin.written
            )));
        }
        let skip = usize::try_from(stdin.written - offset).unwrap_or(usize::MAX);
        let fresh = data.get(skip..).unwrap_or_default();
        if !fresh.is_empty() {
            let Some(pipe) = stdin.pipe.as_mut() else {
                return Err(Error::failed_precondition(format!(
                    "The stdin of sandbox {} is closed",
                    self.id
                )));
            };
            if let Err(e) = pipe.write_all(fresh).await.and(pipe.flush().await) {
                // The process closed its stdin or ended: like a broken pipe.
                tracing::debug!(sandbox = %self.id, error = %e, "stdin write failed");
                stdin.pipe = None;
                return Err(Error::failed_precondition(format!(
                    "The stdin of sandbox {} is closed (the process no longer reads it)",
                    self.id
                )));
            }
            stdin.written += fresh.len() as u64;
        }
        if eof {
            stdin.pipe = None;
        }
        Ok(())
    }
}

impl Sandboxes {
    /// A manager with `config`, after resolving its isolation on this host.
    pub async fn start(config: SandboxConfig) -> Result<Self, Error> {
        let runner = Runner::detect(config.isolation, config.hidden_paths.clone()).await?;
        Ok(Self::with_runner(config, runner))
    }

    fn with_runner(config: SandboxConfig, runner: Runner) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                runner,
                signer: token::Signer::random(),
                sandboxes: Mutex::new(HashMap::new()),
                apps: Mutex::new(HashMap::new()),
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    /// How processes are started: `bwrap` or `process`.
    pub fn isolation(&self) -> &'static str {
        self.inner.runner.name()
    }

    /// The settings.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Sandbox>>> {
        self.inner
            .sandboxes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a sandbox.
    pub(crate) fn spawn(&self, spawn: Spawn) -> Result<Arc<Sandbox>, Error> {
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::unavailable("The server is shutting down"));
        }
        let scratch = std::env::temp_dir().join(format!("latchkey-sandbox-{}", ids::new_id("")));
        let mut command = self.inner.runner.command(&spawn.launch, &scratch)?;
        let mut registry = self.registry();
        self.make_room(&mut registry)?;
        if let Some(name) = &spawn.name {
            let taken = registry.values().any(|s| {
                s.app_id == spawn.app_id && s.name.as_ref() == Some(name) && s.outcome().is_none()
            });
            if taken {
                return Err(Error::already_exists(format!(
                    "Sandbox with name '{name}' already exists in this app (a running sandbox holds it)"
                )));
            }
        }
        let plain = self.inner.runner.needs_scratch();
        if plain {
            create_private_dir(&scratch).map_err(|e| {
                tracing::error!(error = %e, dir = %scratch.display(), "cannot create a sandbox's scratch dir");
                Error::internal("Cannot prepare the sandbox's directory on the server")
            })?;
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                if plain {
                    let _ = std::fs::remove_dir_all(&scratch);
                }
                return Err(Error::invalid(format!(
                    "Cannot start '{}': {e}",
                    spawn.launch.argv[0]
                )));
            }
        };
        metrics::gauge!("latchkey_sandboxes_running").increment(1.0);
        let sandbox = Arc::new(Sandbox {
            // Not the 22-character shape of V1 ids: the client treats any
            // other shape as a V2 sandbox.
            id: format!("{}V", ids::new_id("sb-")),
            // Modal marks the tasks of V2 sandboxes with a trailing `V`.
            task_id: format!("{}V", ids::new_id("ta-")),
            workspace_id: spawn.workspace_id,
            environment_name: spawn.environment_name,
            app_id: spawn.app_id,
            name: spawn.name,
            started_at: SystemTime::now(),
            stdout: OutputBuffer::new(self.inner.config.output_buffer_bytes),
            stderr: OutputBuffer::new(self.inner.config.output_buffer_bytes),
            stdin: tokio::sync::Mutex::new(Stdin {
                pipe: child.stdin.take(),
                written: 0,
            }),
            finished: watch::Sender::new(None),
            stop: watch::Sender::new(None),
        });
        registry.insert(sandbox.id.clone(), Arc::clone(&sandbox));
        drop(registry);
        tracing::info!(
            sandbox = %sandbox.id,
            app = %sandbox.app_id,
            isolation = self.isolation(),
            env = ?spawn.launch.env,
            timeout_secs = spawn.timeout.as_secs(),
            "sandbox started"
        );
        let pumps = [
            child
                .stdout
                .take()
                .map(|out| pump(out, Arc::clone(&sandbox), Stream::Stdout)),
            child
                .stderr
                .take()
                .map(|err| pump(err, Arc::clone(&sandbox), Stream::Stderr)),
        ];
        tokio::spawn(supervise(
            Arc::clone(&sandbox),
            child,
            spawn.timeout,
            pumps,
            plain.then_some(scratch),
        ));
        Ok(sandbox)
    }

    /// Drops expired finished sandboxes, then the oldest finished ones while
    /// the registry is full. Fails when it is full of running ones.
    fn make_room(&self, registry: &mut HashMap<String, Arc<Sandbox>>) -> Result<(), Error> {
        let keep = self.inner.config.keep_finished;
        registry.retain(|_, s| {
            s.finished
                .borrow()
                .as_ref()
                .is_none_or(|f| f.at.elapsed() < keep)
        });
        let max = self.inner.config.max_sandboxes.max(1);
        while registry.len() >= max {
            let oldest = registry
                .values()
                .filter_map(|s| s.finished.borrow().as_ref().map(|f| (f.at, s.id.clone())))
                .min();
            match oldest {
                Some((_, id)) => {
                    registry.remove(&id);
                }
                None => {
                    return Err(Error::resource_exhausted(format!(
                        "{max} sandboxes are running on this server, its limit \
                         (latchkey serve --sandbox-max); wait for one to finish"
                    )))
                }
            }
        }
        Ok(())
    }

    /// The sandbox `id` of `workspace_id`.
    pub(crate) fn get(&self, workspace_id: &str, id: &str) -> Result<Arc<Sandbox>, Error> {
        self.registry()
            .get(id)
            .filter(|s| s.workspace_id == workspace_id)
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!(
                    "Sandbox '{}' not found",
                    latchkey_core::rules::echo(id)
                ))
            })
    }

    /// The sandbox whose task is `task_id`.
    pub(crate) fn by_task(&self, task_id: &str) -> Option<Arc<Sandbox>> {
        self.registry()
            .values()
            .find(|s| s.task_id == task_id)
            .cloned()
    }

    /// Kills every sandbox and waits (a few seconds at most) until they are
    /// reaped. New sandboxes are refused from now on.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let all: Vec<Arc<Sandbox>> = self.registry().values().cloned().collect();
        let running: Vec<_> = all.into_iter().filter(|s| s.outcome().is_none()).collect();
        if running.is_empty() {
            return;
        }
        tracing::info!(count = running.len(), "stopping sandboxes");
        for sandbox in &running {
            sandbox.stop.send_if_modified(|stop| {
                let first = stop.is_none();
                *stop = Some(Stop::Shutdown);
                first
            });
        }
        let waits = running.iter().map(|s| s.wait(SHUTDOWN_WAIT));
        futures::future::join_all(waits).await;
    }
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Copies a pipe into the sandbox's output buffer until end of file.
fn pump(
    mut pipe: impl AsyncRead + Unpin + Send + 'static,
    sandbox: Arc<Sandbox>,
    stream: Stream,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let buffer = match stream {
            Stream::Stdout => &sandbox.stdout,
            Stream::Stderr => &sandbox.stderr,
        };
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match pipe.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buffer.push(&chunk[..n]),
                Err(e) => {
                    tracing::debug!(sandbox = %sandbox.id, ?stream, error = %e, "output pipe failed");
                    break;
                }
            }
        }
        buffer.close();
    })
}

/// Runs until the sandbox ends: waits for its process, enforces its timeout,
/// kills it on request, then closes its streams and records the outcome.
async fn supervise(
    sandbox: Arc<Sandbox>,
    mut child: tokio::process::Child,
    timeout: Duration,
    pumps: [Option<tokio::task::JoinHandle<()>>; 2],
    scratch: Option<PathBuf>,
) {
    let pgid = child.id();
    let mut stop = sandbox.stop.subscribe();
    let outcome = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => match Exit::of(status) {
                Exit::Code(code) => Outcome::Exited(code),
                Exit::Signal(signal) => Outcome::Signaled(signal),
                _ => Outcome::Exited(-1),
            },
            Err(e) => {
                tracing::error!(sandbox = %sandbox.id, error = %e, "cannot wait for a sandbox's process");
                Outcome::Exited(-1)
            }
        },
        () = tokio::time::sleep(timeout) => Outcome::TimedOut(timeout),
        reason = stop.wait_for(Option::is_some) => match reason.ok().and_then(|r| *r) {
            Some(Stop::Shutdown) => Outcome::ServerShutdown,
            _ => Outcome::Terminated,
        },
    };
    // Kill what is left: the whole group (the process itself after a
    // timeout or termination, whatever it started otherwise).
    process::kill_group(pgid);
    let _ = child.wait().await;
    metrics::gauge!("latchkey_sandboxes_running").decrement(1.0);
    sandbox.stdin.lock().await.pipe = None;
    for pump in pumps.into_iter().flatten() {
        let abort = pump.abort_handle();
        if tokio::time::timeout(DRAIN_GRACE, pump).await.is_err() {
            // A process outside the group still holds the pipe.
            abort.abort();
        }
    }
    sandbox.stdout.close();
    sandbox.stderr.close();
    if let Some(dir) = scratch {
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a sandbox's scratch dir");
        }
    }
    tracing::info!(sandbox = %sandbox.id, outcome = ?outcome, "sandbox finished");
    sandbox.finished.send_replace(Some(Finished {
        outcome,
        at: Instant::now(),
    }));
}

#[cfg(test)]
mod tests;
