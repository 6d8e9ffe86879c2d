//! Functions that run in containers with their secrets: the Rust form of
//! Modal's `@app.function(secrets=[...])`.
//!
//! ```no_run
//! use latchkey::{app::App, Secret};
//!
//! fn greet(name: String) -> Result<String, String> {
//!     let foo = std::env::var("FOO").map_err(|e| e.to_string())?;
//!     Ok(format!("{name}: FOO={foo}"))
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let app = App::new("example");
//!     let greet = app
//!         .function("greet", greet)
//!         .secrets([Secret::from_dict([("FOO", "bar")])]);
//!     // In a container this runs the requested function and exits.
//!     app.run_container_if_requested();
//!
//!     assert_eq!(greet.remote("ada".to_owned())?, "ada: FOO=bar");
//!     Ok(())
//! }
//! ```
//!
//! # How a call runs
//!
//! Each call starts a fresh process, the *container*: this same program
//! (`std::env::current_exe()`, with the same arguments), in container mode,
//! selected by the variable `LATCHKEY_CONTAINER` that the caller sets. So
//! `main` must build its [`App`] and functions and call
//! [`App::run_container_if_requested`] first, before anything with effects:
//! in a container that call runs the function and exits; otherwise it
//! returns at once. (In a test, use a test target with `harness = false`,
//! whose `main` does the same.) Secrets may be attached after that call
//! (`let f = f.secrets([...])`): only the caller reads them, so a
//! `from_local_environ` or `from_dotenv` that could fail in the container's
//! bare environment never runs there.
//!
//! The container's environment holds only `PATH`, `HOME`, `LANG`, `TERM` and
//! `USER` from the caller, plus the function's secrets, later ones
//! overriding earlier ones key by key: not the rest of the caller's
//! environment. Named secrets are resolved by the caller just before the
//! container starts (so required keys are checked by the server and
//! `last_used_at` is recorded then); the container never holds a latchkey
//! token, only the values it was given. Dict, dotenv and local-environ
//! secrets hold their values already and travel with the call.
//!
//! Arguments and results cross as JSON, through files of a private (0700)
//! directory made for the call. The container's stdout and stderr are the
//! caller's (its `println!` shows, as Modal streams a container's logs).
//! An `Err` returned by the function, a panic, a crash (an exit without a
//! result, a signal) and a timeout each come back as a [`FunctionError`]
//! carrying the message.
//!
//! With [`Isolation::Bwrap`], the container runs inside bubblewrap under
//! the same policy as the server's sandboxes ([`latchkey_launch::Bwrap`]):
//! no capabilities; its own PID, IPC, UTS and cgroup namespaces; a
//! read-only view of the host with a private `/tmp` and empty `/run`,
//! `/home`, `/root` and `$HOME`; the client config (`~/.latchkey.toml`) and
//! the local data dir hidden. Only the program, the working directory and
//! the call's own directory are shown again.

use std::{
    collections::HashMap,
    fmt::Display,
    future::{Future, IntoFuture},
    io::Read,
    marker::PhantomData,
    path::{Path, PathBuf},
    pin::Pin,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{EnvDict, Secret};

/// The variable that selects container mode and names the call.
pub const CONTAINER_VAR: &str = "LATCHKEY_CONTAINER";

/// The variables a container keeps from the caller's environment (the
/// same as `latchkey run --isolate`).
pub use latchkey_launch::BASE_ENV;

/// How much of a crashed container's stderr its error quotes.
const STDERR_TAIL: usize = 2048;

/// Where a container runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Isolation {
    /// A plain child process (the default).
    #[default]
    Process,
    /// Inside bubblewrap (`bwrap`, Debian's `bubblewrap`), under the policy
    /// of the server's sandboxes (see the [module docs](self)). A call
    /// fails with [`FunctionError::Isolation`] when `bwrap` is not installed.
    Bwrap,
}

/// Why a call of a function failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FunctionError {
    /// A secret could not be resolved (unknown, missing required keys...):
    /// the container did not start.
    #[error("function '{function}': {source}")]
    Secret {
        /// The function.
        function: String,
        /// The SDK's error.
        #[source]
        source: crate::Error,
    },
    /// The function returned an error.
    #[error("function '{function}' failed: {message}")]
    Failed {
        /// The function.
        function: String,
        /// The error's message.
        message: String,
    },
    /// The function panicked.
    #[error("function '{function}' panicked: {message}")]
    Panicked {
        /// The function.
        function: String,
        /// The panic's message.
        message: String,
    },
    /// The container ended without a result (exit, crash, signal).
    #[error("function '{function}': container {message}")]
    Crashed {
        /// The function.
        function: String,
        /// How it ended, with the end of its stderr.
        message: String,
    },
    /// The call took longer than its timeout; the container was killed.
    #[error("function '{function}' timed out after {timeout:?}")]
    Timeout {
        /// The function.
        function: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The requested isolation is not available.
    #[error("{message}")]
    Isolation {
        /// What is missing and how to get it.
        message: String,
    },
    /// Starting the container or passing its arguments or result failed.
    #[error("function '{function}': {message}")]
    Io {
        /// The function.
        function: String,
        /// What failed.
        message: String,
    },
}

/// What a function may return: a `Result<T, E>` whose `Err` becomes
/// [`FunctionError::Failed`] with `E`'s message, or a plain value.
pub trait FunctionOutput {
    /// The value the caller receives.
    type Value: Serialize + DeserializeOwned + Send + 'static;
    /// The value, or the error's message.
    fn into_output(self) -> Result<Self::Value, String>;
}

impl<T, E> FunctionOutput for Result<T, E>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    E: Display,
{
    type Value = T;
    fn into_output(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

macro_rules! plain_output {
    ($($t:ty),* $(,)?) => {$(
        impl FunctionOutput for $t {
            type Value = $t;
            fn into_output(self) -> Result<$t, String> {
                Ok(self)
            }
        }
    )*};
}
plain_output!(
    (),
    bool,
    String,
    i32,
    i64,
    u32,
    u64,
    usize,
    f64,
    serde_json::Value,
    EnvDict
);

impl<T: Serialize + DeserializeOwned + Send + 'static> FunctionOutput for Vec<T> {
    type Value = Vec<T>;
    fn into_output(self) -> Result<Vec<T>, String> {
        Ok(self)
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> FunctionOutput for Option<T> {
    type Value = Option<T>;
    fn into_output(self) -> Result<Option<T>, String> {
        Ok(self)
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> FunctionOutput for HashMap<String, T> {
    type Value = HashMap<String, T>;
    fn into_output(self) -> Result<HashMap<String, T>, String> {
        Ok(self)
    }
}

type Handler = Arc<dyn Fn(serde_json::Value) -> Outcome + Send + Sync>;

/// What a container writes back.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Ok(serde_json::Value),
    Err(String),
    Panic(String),
}

/// What the caller tells the container, in [`CONTAINER_VAR`].
#[derive(Debug, Serialize, Deserialize)]
struct CallSpec {
    app: String,
    function: String,
    dir: PathBuf,
}

/// A group of functions: Modal's `modal.App`.
#[derive(Clone)]
pub struct App {
    name: String,
    functions: Arc<Mutex<HashMap<String, Handler>>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("name", &self.name).finish()
    }
}

impl App {
    /// An app named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            functions: Arc::default(),
        }
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Registers `f` as the function `name`: `f` takes one serde value (a
    /// tuple for several) and returns a [`FunctionOutput`]. Configure it with
    /// [`Function::secrets`], [`Function::timeout`], [`Function::isolation`].
    pub fn function<A, O, F>(&self, name: &str, f: F) -> Function<A, O::Value>
    where
        A: Serialize + DeserializeOwned,
        O: FunctionOutput,
        F: Fn(A) -> O + Send + Sync + 'static,
    {
        let handler: Handler = Arc::new(move |args| {
            let args: A = match serde_json::from_value(args) {
                Ok(a) => a,
                Err(e) => return Outcome::Err(format!("invalid arguments: {e}")),
            };
            match f(args).into_output() {
                Ok(value) => match serde_json::to_value(value) {
                    Ok(v) => Outcome::Ok(v),
                    Err(e) => Outcome::Err(format!("cannot serialize the result: {e}")),
                },
                Err(message) => Outcome::Err(message),
            }
        });
        self.functions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), handler);
        Function {
            app: self.name.clone(),
            name: name.to_owned(),
            secrets: Vec::new(),
            timeout: None,
            isolation: Isolation::Process,
            _types: PhantomData,
        }
    }

    /// In a container started for a function of this app: runs it, hands
    /// back its result and exits the process. Otherwise (no container
    /// variable, or one for another app) returns at once. Call it at the
    /// start of `main`, after registering the functions.
    pub fn run_container_if_requested(&self) {
        let Some(spec) = std::env::var_os(CONTAINER_VAR) else {
            return;
        };
        let Ok(spec) = serde_json::from_str::<CallSpec>(&spec.to_string_lossy()) else {
            eprintln!("latchkey: malformed {CONTAINER_VAR}");
            std::process::exit(125);
        };
        if spec.app != self.name {
            return;
        }
        // The function sees only its base and its secrets.
        std::env::remove_var(CONTAINER_VAR);
        let handler = self
            .functions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&spec.function)
            .cloned();
        let outcome = match (handler, read_args(&spec.dir)) {
            (None, _) => Outcome::Err(format!(
                "no function '{}' in app '{}' (register it before run_container_if_requested)",
                spec.function, spec.app
            )),
            (_, Err(e)) => Outcome::Err(e),
            (Some(handler), Ok(args)) => {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(args))) {
                    Ok(outcome) => outcome,
                    Err(payload) => Outcome::Panic(panic_message(payload.as_ref())),
                }
            }
        };
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let written = serde_json::to_vec(&outcome)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                std::fs::write(spec.dir.join("result.json"), bytes).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            eprintln!("latchkey: cannot write the result: {e}");
            std::process::exit(125);
        }
        std::process::exit(0);
    }
}

fn read_args(dir: &Path) -> Result<serde_json::Value, String> {
    let bytes = std::fs::read(dir.join("args.json")).map_err(|e| format!("arguments: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("arguments: {e}"))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}

/// A function of an [`App`], called with [`Function::remote`] or
/// [`Function::spawn`]. `A` is its argument, `R` its result.
pub struct Function<A, R> {
    app: String,
    name: String,
    secrets: Vec<Secret>,
    timeout: Option<Duration>,
    isolation: Isolation,
    _types: PhantomData<fn(A) -> R>,
}

impl<A, R> Clone for Function<A, R> {
    fn clone(&self) -> Self {
        Self {
            app: self.app.clone(),
            name: self.name.clone(),
            secrets: self.secrets.clone(),
            timeout: self.timeout,
            isolation: self.isolation,
            _types: PhantomData,
        }
    }
}

impl<A, R> std::fmt::Debug for Function<A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("app", &self.app)
            .field("name", &self.name)
            .field("secrets", &self.secrets)
            .field("timeout", &self.timeout)
            .field("isolation", &self.isolation)
            .finish()
    }
}

impl<A, R> Function<A, R>
where
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    /// The secrets of its containers, later ones overriding earlier ones.
    pub fn secrets(mut self, secrets: impl IntoIterator<Item = Secret>) -> Self {
        self.secrets = secrets.into_iter().collect();
        self
    }

    /// Kills a container that runs longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Where its containers run (default [`Isolation::Process`]).
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Runs the function in a container and waits for its result.
    pub fn remote(&self, args: A) -> Result<R, FunctionError> {
        self.spawn(args)?.get()
    }

    /// Starts the function in a container (after resolving its secrets) and
    /// returns a handle to its result: [`FunctionCall::get`] or `.await`.
    pub fn spawn(&self, args: A) -> Result<FunctionCall<R>, FunctionError> {
        let io = |message: String| FunctionError::Io {
            function: self.name.clone(),
            message,
        };
        let args = serde_json::to_vec(&args).map_err(|e| io(format!("arguments: {e}")))?;
        let exe = current_exe().map_err(io)?;
        let bwrap = match self.isolation {
            Isolation::Process => None,
            Isolation::Bwrap => Some(find_bwrap()?),
        };
        let env =
            crate::blocking::block_on(Secret::resolve_all(&self.secrets)).map_err(|source| {
                FunctionError::Secret {
                    function: self.name.clone(),
                    source,
                }
            })?;
        let dir = CallDir::new().map_err(|e| io(format!("call directory: {e}")))?;
        std::fs::write(dir.0.join("args.json"), args).map_err(|e| io(format!("arguments: {e}")))?;
        let mut command = match bwrap {
            None => Command::new(exe),
            Some(bwrap) => bwrap_command(&bwrap, &exe, &dir.0),
        };
        let spec = serde_json::to_string(&CallSpec {
            app: self.app.clone(),
            function: self.name.clone(),
            dir: dir.0.clone(),
        })
        .map_err(|e| io(e.to_string()))?;
        command
            .args(std::env::args_os().skip(1))
            .env_clear()
            .envs(latchkey_launch::base_env())
            .envs(&env)
            .env(CONTAINER_VAR, spec)
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        drop(env);
        let mut child = command
            .spawn()
            .map_err(|e| io(format!("cannot start the container: {e}")))?;
        let stderr = child.stderr.take();
        let tail = std::thread::spawn(move || forward_stderr(stderr));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let function = self.name.clone();
        let timeout = self.timeout;
        std::thread::spawn(move || {
            let result = wait(&function, child, timeout, tail, &dir.0);
            drop(dir);
            let _ = tx.send(result);
        });
        Ok(FunctionCall { rx })
    }
}

/// `bwrap` from `PATH`, or why a container cannot run in it.
fn find_bwrap() -> Result<PathBuf, FunctionError> {
    latchkey_launch::find_in_path("bwrap", std::env::var_os("PATH").unwrap_or_default()).ok_or_else(
        || FunctionError::Isolation {
            message: "Isolation::Bwrap needs bubblewrap, and `bwrap` is not in PATH \
                      (Debian/Ubuntu: apt-get install bubblewrap)"
                .to_owned(),
        },
    )
}

/// The command that starts `exe` under the sandboxes' bubblewrap policy,
/// without the program's own arguments. The program and the working
/// directory are shown read-only where the policy empties their directory
/// (a program built under `/home` or `/tmp`); `call_dir` is the one
/// writable place, for the result.
fn bwrap_command(bwrap: &Path, exe: &Path, call_dir: &Path) -> Command {
    let mut policy = latchkey_launch::Bwrap::new().bind_ro(exe);
    if let Ok(cwd) = std::env::current_dir() {
        // Not a directory that holds the caller's home: showing it would
        // undo the policy's empty /home (or /root).
        let home = std::env::var_os("HOME").map(PathBuf::from);
        if !home.is_some_and(|home| home.starts_with(&cwd)) {
            policy = policy.bind_ro_try(cwd);
        }
    }
    policy.bind_rw(call_dir).command(bwrap, [exe])
}

fn current_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find the current executable: {e}"))
}

/// Copies the container's stderr to ours and returns its last bytes.
fn forward_stderr(stderr: Option<std::process::ChildStderr>) -> Vec<u8> {
    use std::io::Write;
    let mut tail = Vec::new();
    let Some(mut stderr) = stderr else {
        return tail;
    };
    let mut buf = [0u8; 8192];
    loop {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let _ = std::io::stderr().write_all(&buf[..n]);
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
        }
    }
    if tail.len() > STDERR_TAIL {
        tail.drain(..tail.len() - STDERR_TAIL);
    }
    tail
}

fn wait<R: DeserializeOwned>(
    function: &str,
    mut child: std::process::Child,
    timeout: Option<Duration>,
    tail: std::thread::JoinHandle<Vec<u8>>,
    dir: &Path,
) -> Result<R, FunctionError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                return Err(FunctionError::Io {
                    function: function.to_owned(),
                    message: format!("cannot wait for the container: {e}"),
                })
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(FunctionError::Timeout {
                function: function.to_owned(),
                timeout: timeout.unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = tail.join().unwrap_or_default();
    let function = function.to_owned();
    match std::fs::read(dir.join("result.json")) {
        Ok(bytes) => match serde_json::from_slice::<Outcome>(&bytes) {
            Ok(Outcome::Ok(value)) => {
                serde_json::from_value(value).map_err(|e| FunctionError::Io {
                    function,
                    message: format!("unexpected result: {e}"),
                })
            }
            Ok(Outcome::Err(message)) => Err(FunctionError::Failed { function, message }),
            Ok(Outcome::Panic(message)) => Err(FunctionError::Panicked { function, message }),
            Err(e) => Err(FunctionError::Io {
                function,
                message: format!("malformed result: {e}"),
            }),
        },
        Err(_) => {
            let how = match latchkey_launch::Exit::of(status) {
                latchkey_launch::Exit::Code(code) => {
                    format!("exited with status {code} without a result")
                }
                latchkey_launch::Exit::Signal(signal) => format!("was killed by signal {signal}"),
                _ => format!("ended without a result ({status})"),
            };
            let stderr = String::from_utf8_lossy(&stderr);
            let stderr = stderr.trim();
            let message = if stderr.is_empty() {
                how
            } else {
                format!("{how}; stderr:\n{stderr}")
            };
            Err(FunctionError::Crashed { function, message })
        }
    }
}

/// A private directory for one call's arguments and result, removed on drop.
struct CallDir(PathBuf);

impl CallDir {
    fn new() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "latchkey-call-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self(path))
    }
}

impl Drop for CallDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A call started by [`Function::spawn`]: [`FunctionCall::get`] waits for
/// its result; so does `.await`.
#[derive(Debug)]
pub struct FunctionCall<R> {
    rx: tokio::sync::oneshot::Receiver<Result<R, FunctionError>>,
}

impl<R: Send + 'static> FunctionCall<R> {
    /// Waits for the result.
    pub fn get(self) -> Result<R, FunctionError> {
        crate::blocking::block_on(self.into_future())
    }
}

impl<R: Send + 'static> IntoFuture for FunctionCall<R> {
    type Output = Result<R, FunctionError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            self.rx.await.unwrap_or_else(|_| {
                Err(FunctionError::Io {
                    function: String::new(),
                    message: "the call's waiter ended without a result".to_owned(),
                })
            })
        })
    }
}
