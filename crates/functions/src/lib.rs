//! Modal functions on the server (`latchkey serve --functions`): what
//! `modal run` and `modal deploy` create (apps, functions, mounts), the calls
//! made on them (`.remote`, `.map`) and the containers that run them.
//!
//! A container is a local process: the configured interpreter running
//! Modal's own container runtime (`python -u -m modal._container_entrypoint`)
//! under latchkey's one hardened bubblewrap policy
//! ([`latchkey_launch::Bwrap`], shared with sandboxes), in a directory that
//! holds the files the client uploaded (its mounts), with exactly the
//! function's secrets in its environment over a minimal base. It holds no
//! token: it reaches the server through a Unix socket made for its task
//! alone, which the server serves with the same gRPC service and which ties
//! every call on it to that task (see [`Functions::set_task_server`]).
//!
//! Everything here lives in the server's memory: apps (deployed ones
//! included), functions, uploaded files and calls last until the server
//! stops, when every container is killed. Named secrets stay in the store as
//! always; a function's secrets are resolved when each of its containers
//! starts, through the service layer (permissions, `required_keys`, the
//! audit log and `last_used_at`).
//!
//! # Its place among the crates
//!
//! Errors are [`latchkey_core::Error`]s, which the gRPC adapter of
//! `latchkey-server` turns into status codes; requests and answers are
//! Modal's own messages (`latchkey_proto::api`), as in `latchkey-sandbox`.

mod blobs;
mod calls;
mod containers;
mod mounts;
mod python;
mod refuse;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use latchkey_core::{
    ids, rules,
    time::{micros_to_secs, now_micros},
    Error,
};
use latchkey_proto::api::{self, AppState};
use latchkey_service::{Caller, Service};
use tokio::sync::watch;

pub use blobs::{BlobAccess, MAX_BLOB_BYTES};
pub use python::Interpreter;

/// Default of [`FunctionsConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`FunctionsConfig::max_containers`].
pub const DEFAULT_MAX_CONTAINERS: usize = 8;
/// Default of [`FunctionsConfig::max_containers_per_function`].
pub const DEFAULT_MAX_CONTAINERS_PER_FUNCTION: usize = 2;
/// An ephemeral app whose client sent no heartbeat for this long is stopped
/// (the client sends one every 15 s).
const HEARTBEAT_EXPIRY: Duration = Duration::from_secs(60);
/// Longest long poll of `FunctionGetOutputs` and `FunctionGetInputs`.
const MAX_POLL: Duration = Duration::from_secs(50);
/// Most apps held at once.
const MAX_APPS: usize = 1_000;
/// Most calls held at once.
const MAX_CALLS: usize = 10_000;
/// Most inputs waiting or running at once, over all functions.
const MAX_INPUTS: usize = 100_000;
/// How long the output of a stopped app stays readable.
const LOG_GRACE: Duration = Duration::from_secs(60);
/// Bytes of container output kept per app for `AppGetLogs`.
const LOG_BYTES_PER_APP: usize = 4 * 1024 * 1024;

/// The function settings of `latchkey serve --functions`.
#[derive(Debug, Clone)]
pub struct FunctionsConfig {
    /// The interpreter that runs containers; it must import `modal`.
    pub python: PathBuf,
    /// Host paths containers must not see (the data dir, the database file
    /// and the master key file), beyond what the policy hides anyway.
    pub hidden_paths: Vec<PathBuf>,
    /// A container waiting this long for an input stops (a function's own
    /// `scaledown_window` is used when it sets one).
    pub idle_timeout: Duration,
    /// Containers running at once, over all functions.
    pub max_containers: usize,
    /// Containers one function runs at once.
    pub max_containers_per_function: usize,
    /// The URL clients and containers reach this server at: signed blob
    /// URLs point there. Empty: the address the server listens on.
    pub public_url: String,
}

impl FunctionsConfig {
    /// The settings with `python` and the defaults.
    pub fn new(python: impl Into<PathBuf>) -> Self {
        Self {
            python: python.into(),
            hidden_paths: Vec::new(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_containers: DEFAULT_MAX_CONTAINERS,
            max_containers_per_function: DEFAULT_MAX_CONTAINERS_PER_FUNCTION,
            public_url: String::new(),
        }
    }
}

/// What a client says of itself in its headers: its `modal` version
/// (`x-modal-client-version`) and its Python (`x-modal-python-version`).
#[derive(Debug, Clone, Default)]
pub struct ClientVersions {
    /// The `modal` package's version.
    pub modal: Option<String>,
    /// `major.minor.micro`.
    pub python: Option<String>,
}

/// Serves the gRPC service on a task's Unix socket until the future
/// completes; the task id (the `String`) is the identity of every call made
/// on it.
pub type TaskServer = Arc<
    dyn Fn(tokio::net::UnixListener, String, futures::future::BoxFuture<'static, ()>) + Send + Sync,
>;

/// The function manager. Cheap to clone.
#[derive(Clone)]
pub struct Functions {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Functions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Functions")
            .field("python", &self.inner.python.path)
            .field("modal_version", &self.inner.python.modal_version)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: FunctionsConfig,
    python: Interpreter,
    bwrap: PathBuf,
    service: Service,
    /// Where task directories are made (private to the server's user).
    work_dir: PathBuf,
    state: Mutex<State>,
    /// Bumped on every change that a long poll may wait for.
    tick: watch::Sender<u64>,
    task_server: OnceLock<TaskServer>,
}

#[derive(Default)]
struct State {
    apps: HashMap<String, App>,
    functions: HashMap<String, Func>,
    mounts: mounts::Mounts,
    blobs: blobs::Blobs,
    calls: HashMap<String, calls::Call>,
    inputs: HashMap<String, calls::Input>,
    tasks: HashMap<String, containers::Task>,
    /// `required_keys` the client named when it looked a secret up
    /// (`Secret.from_name(..., required_keys=...)`): checked again when a
    /// container starts with it.
    required_keys: HashMap<String, Vec<String>>,
    shutting_down: bool,
}

/// An app: what `modal run` (ephemeral) or `modal deploy` (deployed) makes.
struct App {
    id: String,
    workspace_id: String,
    environment_name: String,
    description: String,
    /// The deployment's name, once published as deployed.
    name: Option<String>,
    state: AppState,
    created_at: f64,
    stopped_at: Option<f64>,
    /// Who created it: containers resolve its functions' secrets as this
    /// caller (in its workspace, with its environment limits).
    caller: Caller,
    function_ids: BTreeMap<String, String>,
    last_heartbeat: Instant,
    logs: Arc<Logs>,
}

impl App {
    fn running(&self) -> bool {
        !matches!(self.state, AppState::Stopped | AppState::Stopping)
    }
}

/// A function of an app.
struct Func {
    id: String,
    app_id: String,
    tag: String,
    definition: Option<api::Function>,
    /// Its definition's version: containers of an older one stop.
    generation: u64,
    /// Inputs waiting for a container, oldest first.
    queue: VecDeque<String>,
}

/// The output of an app's containers, for `AppGetLogs`. Its `Debug`-free
/// state never reaches a log: a function may print its secrets.
struct Logs {
    inner: Mutex<LogsInner>,
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct LogsInner {
    next: u64,
    batches: VecDeque<(u64, api::TaskLogsBatch)>,
    bytes: usize,
    done: bool,
}

impl Logs {
    fn new() -> Self {
        Self {
            inner: Mutex::new(LogsInner {
                next: 1,
                ..LogsInner::default()
            }),
            changed: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogsInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, mut batch: api::TaskLogsBatch) {
        let mut inner = self.lock();
        if inner.done {
            return;
        }
        let id = inner.next;
        inner.next += 1;
        batch.entry_id = id.to_string();
        inner.bytes += batch.items.iter().map(|i| i.data.len()).sum::<usize>();
        inner.batches.push_back((id, batch));
        while inner.bytes > LOG_BYTES_PER_APP {
            let Some((_, old)) = inner.batches.pop_front() else {
                break;
            };
            inner.bytes -= old.items.iter().map(|i| i.data.len()).sum::<usize>();
        }
        drop(inner);
        self.changed.send_modify(|v| *v += 1);
    }

    fn clear(&self) {
        let mut inner = self.lock();
        if !inner.batches.is_empty() {
            inner.batches.clear();
            inner.bytes = 0;
        }
    }

    fn finish(&self) {
        self.lock().done = true;
        self.changed.send_modify(|v| *v += 1);
    }
}

fn echo(s: &str) -> String {
    rules::echo(s)
}

fn now_secs() -> f64 {
    micros_to_secs(now_micros())
}

impl Functions {
    /// A manager with `config`: checks the interpreter (it must import
    /// `modal`) and bubblewrap, and refuses to start without them.
    pub async fn start(config: FunctionsConfig, service: Service) -> Result<Self, Error> {
        let python = Interpreter::probe(&config.python).await?;
        let bwrap = containers::probe_bwrap(&config.hidden_paths, &python).await?;
        let work_dir = std::env::temp_dir().join(format!("latchkey-functions-{}", ids::new_id("")));
        containers::create_private_dir(&work_dir).map_err(|e| {
            Error::failed_precondition(format!(
                "cannot create the functions' work dir {}: {e}",
                work_dir.display()
            ))
        })?;
        let functions = Self {
            inner: Arc::new(Inner {
                config,
                python,
                bwrap,
                service,
                work_dir,
                state: Mutex::new(State::default()),
                tick: watch::Sender::new(0),
                task_server: OnceLock::new(),
            }),
        };
        tokio::spawn(reap_forever(Arc::downgrade(&functions.inner)));
        Ok(functions)
    }

    /// The interpreter containers run with.
    pub fn interpreter(&self) -> &Interpreter {
        &self.inner.python
    }

    /// Sets how a task's Unix socket is served (once; later calls are
    /// ignored). Until then no container can start.
    pub fn set_task_server(&self, server: TaskServer) {
        let _ = self.inner.task_server.set(server);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bump(&self) {
        self.inner.tick.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Checks that the client's `modal` and Python are the container's:
    /// arguments and results cross between them as pickles of the client's
    /// classes.
    pub fn check_client_version(&self, client: &ClientVersions) -> Result<(), Error> {
        let python = &self.inner.python.python_version;
        if let Some(theirs) = &client.python {
            let minor: String = theirs.split('.').take(2).collect::<Vec<_>>().join(".");
            if &minor != python {
                return Err(Error::failed_precondition(format!(
                    "This latchkey server runs functions with Python {python}, but this client \
                     runs Python {}: arguments and results cross as pickles, which need the same \
                     Python on both sides",
                    echo(theirs)
                )));
            }
        }
        let ours = &self.inner.python.modal_version;
        match client.modal.as_deref() {
            Some(v) if v == ours => Ok(()),
            Some(v) => Err(Error::failed_precondition(format!(
                "This latchkey server runs functions with modal {ours}, but this client is modal \
                 {}: install modal=={ours} (the client and the containers must match)",
                echo(v)
            ))),
            None => Err(Error::failed_precondition(format!(
                "The client sent no x-modal-client-version; this server runs functions with \
                 modal {ours}"
            ))),
        }
    }

    /// Records the keys a client required of a secret it looked up: a
    /// container that starts with the secret checks them again.
    pub fn remember_required_keys(&self, secret_id: &str, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let mut state = self.state();
        if state.required_keys.len() < MAX_CALLS {
            let entry = state.required_keys.entry(secret_id.to_owned()).or_default();
            for key in keys {
                if !entry.contains(key) {
                    entry.push(key.clone());
                }
            }
        }
    }

    /// The workspace of the app whose container runs task `task_id`.
    pub fn task_workspace(&self, task_id: &str) -> Result<String, Error> {
        let state = self.state();
        state
            .tasks
            .get(task_id)
            .and_then(|t| state.apps.get(&t.app_id))
            .map(|a| a.workspace_id.clone())
            .ok_or_else(|| Error::not_found(format!("Task '{}' not found", echo(task_id))))
    }

    /// Kills every container; new ones are refused from now on.
    pub async fn shutdown(&self) {
        let stops: Vec<_> = {
            let mut state = self.state();
            state.shutting_down = true;
            for app in state.apps.values() {
                app.logs.finish();
            }
            state.tasks.values().map(|t| t.stop.clone()).collect()
        };
        for stop in &stops {
            stop.send_if_modified(|s| {
                let first = s.is_none();
                if first {
                    *s = Some(containers::StopReason::Shutdown);
                }
                first
            });
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !self.state().tasks.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = std::fs::remove_dir_all(&self.inner.work_dir);
    }

    // Apps.

    /// The app `app_id`, as the caller may see it.
    fn app_of<'a>(state: &'a State, caller: &Caller, app_id: &str) -> Result<&'a App, Error> {
        state
            .apps
            .get(app_id)
            .filter(|a| a.workspace_id == caller.workspace_id())
            .filter(|a| caller.check_environment(&a.environment_name).is_ok())
            .ok_or_else(|| Error::not_found(format!("App '{}' not found", echo(app_id))))
    }

    /// `AppCreate`: `modal run` (ephemeral, or detached with `-d`) and a
    /// first `modal deploy` (initializing).
    pub async fn app_create(
        &self,
        caller: &Caller,
        req: &api::AppCreateRequest,
    ) -> Result<api::AppCreateResponse, Error> {
        caller.require(latchkey_service::Role::Developer, "create apps")?;
        let env = self
            .inner
            .service
            .environment(caller, &req.environment_name)
            .await?;
        let state = AppState::try_from(req.app_state).unwrap_or(AppState::Unspecified);
        let state = match state {
            AppState::Ephemeral | AppState::Detached | AppState::Initializing => state,
            AppState::Unspecified => AppState::Ephemeral,
            other => {
                return Err(Error::invalid(format!(
                    "Cannot create an app in state {}",
                    other.as_str_name()
                )))
            }
        };
        if req.description.chars().count() > 256 {
            return Err(Error::invalid(
                "An app's description is at most 256 characters",
            ));
        }
        let mut guard = self.state();
        if guard.shutting_down {
            return Err(Error::unavailable("The server is shutting down"));
        }
        if matches!(state, AppState::Ephemeral | AppState::Detached) {
            let running = guard.apps.values().find(|a| {
                a.workspace_id == caller.workspace_id()
                    && a.environment_name == env.name
                    && a.name.is_none()
                    && a.description == req.description
                    && matches!(a.state, AppState::Ephemeral | AppState::Detached)
            });
            if let Some(app) = running {
                return Err(Error::already_exists(format!(
                    "App '{}' is already running in environment '{}' ({}); stop it first \
                     (modal app stop {}) or give this run another name",
                    echo(&req.description),
                    env.name,
                    app.id,
                    app.id
                )));
            }
        }
        // Make room: stopped apps go first, oldest first.
        if guard.apps.len() >= MAX_APPS {
            let oldest = guard
                .apps
                .values()
                .filter(|a| !a.running())
                .min_by(|a, b| a.created_at.total_cmp(&b.created_at))
                .map(|a| a.id.clone());
            match oldest {
                Some(id) => {
                    guard.apps.remove(&id);
                    guard.functions.retain(|_, f| f.app_id != id);
                }
                None => {
                    return Err(Error::resource_exhausted(format!(
                        "This server holds {MAX_APPS} running apps, its limit; stop some \
                         (modal app stop)"
                    )))
                }
            }
        }
        let id = ids::new_id(ids::APP);
        guard.apps.insert(
            id.clone(),
            App {
                id: id.clone(),
                workspace_id: caller.workspace_id().to_owned(),
                environment_name: env.name.clone(),
                description: req.description.clone(),
                name: None,
                state,
                created_at: now_secs(),
                stopped_at: None,
                caller: caller.clone(),
                function_ids: BTreeMap::new(),
                last_heartbeat: Instant::now(),
                logs: Arc::new(Logs::new()),
            },
        );
        tracing::info!(app = %id, environment = %env.name, state = state.as_str_name(), "app created");
        Ok(api::AppCreateResponse {
            app_id: id,
            ..Default::default()
        })
    }

    /// `AppHeartbeat`: keeps an ephemeral app alive.
    pub fn app_heartbeat(&self, caller: &Caller, app_id: &str) -> Result<(), Error> {
        let mut state = self.state();
        Self::app_of(&state, caller, app_id)?;
        if let Some(app) = state.apps.get_mut(app_id) {
            app.last_heartbeat = Instant::now();
        }
        Ok(())
    }

    /// `AppClientDisconnect`: the client of a `modal run` is done; its app
    /// stops. A deployed app stays, and so does a detached one (`modal run
    /// -d`) until `modal app stop`.
    pub async fn app_client_disconnect(&self, caller: &Caller, app_id: &str) -> Result<(), Error> {
        let stays = {
            let state = self.state();
            let app = Self::app_of(&state, caller, app_id)?;
            matches!(app.state, AppState::Deployed | AppState::Detached)
        };
        if !stays {
            self.stop_app(app_id, "its client disconnected");
        }
        Ok(())
    }

    /// `AppStop` (`modal app stop`).
    pub fn app_stop(&self, caller: &Caller, app_id: &str) -> Result<(), Error> {
        caller.require(latchkey_service::Role::Developer, "stop apps")?;
        {
            let state = self.state();
            Self::app_of(&state, caller, app_id)?;
        }
        self.stop_app(app_id, "it was stopped");
        Ok(())
    }

    /// Stops the caller's app `app_id`, if it may see it.
    fn stop_app_checked(&self, caller: &Caller, app_id: &str) -> Result<(), Error> {
        {
            let state = self.state();
            Self::app_of(&state, caller, app_id)?;
        }
        self.stop_app(app_id, "latchkey does not serve it live");
        Ok(())
    }

    /// Stops an app: its containers are killed, its waiting inputs fail, its
    /// log stream ends.
    fn stop_app(&self, app_id: &str, why: &str) {
        let mut state = self.state();
        let Some(app) = state.apps.get_mut(app_id) else {
            return;
        };
        if !app.running() {
            return;
        }
        app.state = AppState::Stopped;
        app.stopped_at = Some(now_secs());
        app.logs.finish();
        let function_ids: Vec<String> = state
            .functions
            .values()
            .filter(|f| f.app_id == app_id)
            .map(|f| f.id.clone())
            .collect();
        let message = format!("App {app_id} stopped: {why}");
        for function_id in &function_ids {
            calls::fail_queued(&mut state, function_id, &calls::failure(&message, true));
        }
        for task in state.tasks.values().filter(|t| t.app_id == app_id) {
            task.request_stop(containers::StopReason::AppStopped);
        }
        drop(state);
        tracing::info!(app = %app_id, why, "app stopped");
        self.bump();
    }

    /// `AppPublish`: names the app's functions; a deployed app gets its
    /// name, replacing an older deployment of the same name.
    pub fn app_publish(
        &self,
        caller: &Caller,
        req: &api::AppPublishRequest,
    ) -> Result<api::AppPublishResponse, Error> {
        caller.require(latchkey_service::Role::Developer, "publish apps")?;
        if !req.class_ids.is_empty() {
            return Err(refuse::refused("classes (@app.cls)"));
        }
        let target = AppState::try_from(req.app_state).unwrap_or(AppState::Unspecified);
        if target == AppState::Unspecified {
            // Only `modal serve` republishes a running app this way.
            drop(self.stop_app_checked(caller, &req.app_id));
            return Err(refuse::refused(
                "live reload (modal serve); use modal run or modal deploy",
            ));
        }
        let mut state = self.state();
        let app = Self::app_of(&state, caller, &req.app_id)?;
        if !app.running() {
            return Err(Error::failed_precondition(format!(
                "App {} is stopped",
                req.app_id
            )));
        }
        let (workspace, environment) = (app.workspace_id.clone(), app.environment_name.clone());
        for (tag, id) in &req.function_ids {
            let ok = state
                .functions
                .get(id)
                .is_some_and(|f| f.app_id == req.app_id && &f.tag == tag);
            if !ok {
                return Err(Error::invalid(format!(
                    "Function {} ('{}') is not a function of app {}",
                    echo(id),
                    echo(tag),
                    req.app_id
                )));
            }
        }
        let mut replaced = None;
        if target == AppState::Deployed {
            rules::check_app_name(&req.name)?;
            replaced = state
                .apps
                .values()
                .find(|a| {
                    a.id != req.app_id
                        && a.workspace_id == workspace
                        && a.environment_name == environment
                        && a.name.as_deref() == Some(req.name.as_str())
                        && a.running()
                })
                .map(|a| a.id.clone());
        }
        let app = state.apps.get_mut(&req.app_id).expect("checked above");
        app.function_ids = req
            .function_ids
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match target {
            AppState::Deployed => {
                app.state = AppState::Deployed;
                app.name = Some(req.name.clone());
            }
            AppState::Ephemeral | AppState::Detached => app.state = target,
            _ => {}
        }
        drop(state);
        if let Some(old) = replaced {
            self.stop_app(&old, "a new deployment replaced it");
        }
        Ok(api::AppPublishResponse {
            url: format!("latchkey app {}", req.app_id),
            server_warnings: Vec::new(),
            deployed_at: if target == AppState::Deployed {
                now_secs()
            } else {
                0.0
            },
        })
    }

    /// `AppGetByDeploymentName`: the running deployment of that name, or an
    /// empty answer (the client then creates one).
    pub async fn app_get_by_deployment_name(
        &self,
        caller: &Caller,
        req: &api::AppGetByDeploymentNameRequest,
    ) -> Result<api::AppGetByDeploymentNameResponse, Error> {
        let env = self
            .inner
            .service
            .environment(caller, &req.environment_name)
            .await?;
        let state = self.state();
        let app = Self::deployed(&state, caller.workspace_id(), &env.name, &req.name);
        Ok(api::AppGetByDeploymentNameResponse {
            app_id: app.map(|a| a.id.clone()).unwrap_or_default(),
            environment_name: env.name,
            ..Default::default()
        })
    }

    fn deployed<'a>(
        state: &'a State,
        workspace_id: &str,
        environment: &str,
        name: &str,
    ) -> Option<&'a App> {
        state.apps.values().find(|a| {
            a.workspace_id == workspace_id
                && a.environment_name == environment
                && a.name.as_deref() == Some(name)
                && a.running()
        })
    }

    /// `AppGetLayout`: the app's functions by tag (for a redeploy).
    pub fn app_get_layout(
        &self,
        caller: &Caller,
        app_id: &str,
    ) -> Result<api::AppGetLayoutResponse, Error> {
        let state = self.state();
        let app = Self::app_of(&state, caller, app_id)?;
        Ok(api::AppGetLayoutResponse {
            app_layout: Some(Self::layout(&state, app, None)),
        })
    }

    /// The layout the client and the container runtime read: the app's
    /// functions with their metadata, plus an object without metadata for
    /// each dependency of `definition` (its secrets and image).
    fn layout(state: &State, app: &App, definition: Option<&api::Function>) -> api::AppLayout {
        let mut objects = Vec::new();
        let mut function_ids = HashMap::new();
        let mut tags: BTreeMap<String, String> = app.function_ids.clone();
        for f in state.functions.values().filter(|f| f.app_id == app.id) {
            tags.entry(f.tag.clone()).or_insert_with(|| f.id.clone());
        }
        for (tag, id) in &tags {
            let Some(f) = state.functions.get(id) else {
                continue;
            };
            function_ids.insert(tag.clone(), id.clone());
            objects.push(api::Object {
                object_id: id.clone(),
                handle_metadata_oneof: Some(
                    api::object::HandleMetadataOneof::FunctionHandleMetadata(handle_metadata(
                        f, &app.id,
                    )),
                ),
            });
        }
        if let Some(def) = definition {
            for dep in &def.object_dependencies {
                if !objects.iter().any(|o| o.object_id == dep.object_id) {
                    objects.push(api::Object {
                        object_id: dep.object_id.clone(),
                        handle_metadata_oneof: None,
                    });
                }
            }
        }
        api::AppLayout {
            objects,
            function_ids,
            class_ids: HashMap::new(),
        }
    }

    /// `AppList` (`modal app list`): the apps of an environment.
    pub async fn app_list(
        &self,
        caller: &Caller,
        environment_name: &str,
    ) -> Result<api::AppListResponse, Error> {
        let env = self
            .inner
            .service
            .environment(caller, environment_name)
            .await?;
        let state = self.state();
        let mut apps: Vec<&App> = state
            .apps
            .values()
            .filter(|a| a.workspace_id == caller.workspace_id() && a.environment_name == env.name)
            .collect();
        apps.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
        let items = apps
            .into_iter()
            .map(|a| api::app_list_response::AppListItem {
                app_id: a.id.clone(),
                description: a.name.clone().unwrap_or_else(|| a.description.clone()),
                state: a.state as i32,
                created_at: a.created_at,
                stopped_at: a.stopped_at.unwrap_or(0.0),
                n_running_tasks: i32::try_from(
                    state.tasks.values().filter(|t| t.app_id == a.id).count(),
                )
                .unwrap_or(i32::MAX),
                name: a.name.clone().unwrap_or_default(),
                metadata: Some(api::AppHandleMetadata {
                    description: a.description.clone(),
                    app_id: a.id.clone(),
                    environment_name: a.environment_name.clone(),
                    lifecycle: Some(api::AppLifecycle {
                        app_state: a.state as i32,
                        created_at: a.created_at,
                        stopped_at: a.stopped_at.unwrap_or(0.0),
                        created_by: a.caller.token().name.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            })
            .collect();
        Ok(api::AppListResponse { apps: items })
    }

    /// The container output of `app_id` after log entry `after`: waits up to
    /// `timeout` for some. Returns the batches and whether the app is done
    /// (then nothing more will come).
    pub async fn app_logs(
        &self,
        caller: &Caller,
        app_id: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<(Vec<api::TaskLogsBatch>, bool), Error> {
        let logs = {
            let state = self.state();
            Arc::clone(&Self::app_of(&state, caller, app_id)?.logs)
        };
        let mut rx = logs.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_POLL);
        loop {
            rx.borrow_and_update();
            {
                let inner = logs.lock();
                let batches: Vec<_> = inner
                    .batches
                    .iter()
                    .filter(|(id, _)| *id > after)
                    .map(|(_, b)| b.clone())
                    .collect();
                if !batches.is_empty() || inner.done {
                    return Ok((batches, inner.done));
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Ok((Vec::new(), false));
            }
        }
    }

    /// `ImageGetOrCreate`: images are not built; every image "exists", with
    /// an id derived from its definition.
    pub fn image_get_or_create(
        &self,
        req: &api::ImageGetOrCreateRequest,
    ) -> api::ImageGetOrCreateResponse {
        use sha2::{Digest, Sha256};
        let definition = req
            .image
            .as_ref()
            .map(latchkey_proto::prost::Message::encode_to_vec)
            .unwrap_or_default();
        let digest = Sha256::digest(&definition);
        let hex: String = digest.iter().take(11).map(|b| format!("{b:02x}")).collect();
        api::ImageGetOrCreateResponse {
            image_id: format!("im-{hex}"),
            result: Some(api::GenericResult {
                status: api::generic_result::GenericStatus::Success as i32,
                ..Default::default()
            }),
            metadata: None,
        }
    }
}

/// What the client and the container runtime know of a function.
fn handle_metadata(f: &Func, app_id: &str) -> api::FunctionHandleMetadata {
    let def = f.definition.as_ref();
    api::FunctionHandleMetadata {
        function_name: def.map_or_else(|| f.tag.clone(), |d| d.function_name.clone()),
        function_type: def.map_or(api::function::FunctionType::Function as i32, |d| {
            d.function_type
        }),
        function_schema: def.and_then(|d| d.function_schema.clone()),
        supported_input_formats: def
            .map(|d| d.supported_input_formats.clone())
            .unwrap_or_default(),
        supported_output_formats: def
            .map(|d| d.supported_output_formats.clone())
            .unwrap_or_default(),
        app_id: app_id.to_owned(),
        ..Default::default()
    }
}

/// Stops ephemeral apps whose client went away without a word and
/// containers that waited too long for an input.
async fn reap_forever(inner: std::sync::Weak<Inner>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let functions = Functions { inner };
        let expired: Vec<String> = functions
            .state()
            .apps
            .values()
            .filter(|a| {
                a.running()
                    && a.state != AppState::Deployed
                    && a.state != AppState::Detached
                    && a.last_heartbeat.elapsed() > HEARTBEAT_EXPIRY
            })
            .map(|a| a.id.clone())
            .collect();
        for id in expired {
            functions.stop_app(&id, "its client sent no heartbeat for a minute");
        }
        // The output of stopped apps goes once their clients had time to
        // read its end.
        for app in functions.state().apps.values() {
            if app
                .stopped_at
                .is_some_and(|at| now_secs() - at > LOG_GRACE.as_secs_f64())
            {
                app.logs.clear();
            }
        }
        functions.stop_idle_containers();
    }
}
