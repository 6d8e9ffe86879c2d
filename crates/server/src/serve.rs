//! `latchkey serve`: open the store, bootstrap, serve until asked to stop.

use std::{
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context, Result};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use latchkey_core::paths;
use latchkey_store::{Backend, Store};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;

use latchkey_service::{Service, ServiceConfig};

use latchkey_sandbox::{SandboxConfig, Sandboxes};

use crate::{
    bootstrap::{self, MasterKeySources},
    http, telemetry,
    telemetry::MetricsAccess,
    tls::{Tls, TlsFiles},
};

/// How long in-flight requests may take to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Everything `latchkey serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The data dir.
    pub data_dir: PathBuf,
    /// Database URL; default `sqlite://DIR/latchkey.db`.
    pub database: Option<String>,
    /// How the store is opened (PostgreSQL's pool and timeouts).
    pub store: latchkey_store::Options,
    /// Where the master key comes from.
    pub master_key: MasterKeySources,
    /// Lifetime of anonymous secrets.
    pub anonymous_ttl: Duration,
    /// Versions kept of each named secret (at least 1).
    pub keep_versions: u32,
    /// Whether metadata reads go into the audit log too.
    pub audit_metadata_reads: bool,
    /// How long audit events are kept; `None`: for ever.
    pub audit_retention: Option<Duration>,
    /// How often expired anonymous secrets are removed.
    pub sweep_interval: Duration,
    /// Modal sandboxes (`--sandboxes`); `None`: disabled.
    pub sandboxes: Option<SandboxConfig>,
    /// Modal functions (`--functions`); `None`: disabled.
    pub functions: Option<latchkey_functions::FunctionsConfig>,
    /// Connection and buffering limits.
    pub limits: Limits,
    /// Failed authentications allowed per client address.
    pub auth_failures: latchkey_service::AuthFailureLimit,
    /// `--tls-cert` and `--tls-key`; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Who may read `/metrics` besides loopback clients.
    pub metrics: MetricsAccess,
}

/// What the server grants clients it has not yet heard from, so that idle
/// or slow connections and large bodies cannot exhaust its descriptors or
/// memory. None of it cuts a connection that is in use: Modal's client keeps
/// one HTTP/2 connection open for long, and sandbox long polls and output
/// streams last as long as their sandbox.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections open at once; past it, new ones are closed on
    /// accept. Keep it below the descriptor limit (`ulimit -n`) less what
    /// the store and sandboxes use, so that accepting never fails.
    pub max_connections: usize,
    /// How long an HTTP/1 client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long a new connection may stay without a complete request (an
    /// idle socket, a slow or never-finished first request) before it is
    /// closed.
    pub idle_connection_timeout: Duration,
    /// Most bytes of request bodies read at once, across all requests.
    pub max_buffered_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(30),
            idle_connection_timeout: Duration::from_secs(60),
            max_buffered_bytes: http::DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

/// How often an HTTP/2 connection is pinged, and how long the answer may
/// take: a peer that vanished without closing is dropped, one that answers
/// keeps its connection however long it has no request.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long accepting pauses after an error such as running out of
/// descriptors, instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The URL clients on this machine use to reach a server listening on
/// `addr`, over TLS (`https`) or not.
pub fn local_url(addr: SocketAddr, tls: bool) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{host}:{}", addr.port())
}

/// Opens the configured store, creating it if needed, with the keys the
/// start found (see [`bootstrap::start_keys`]).
async fn open_store(config: &ServeConfig) -> Result<(Arc<dyn Store>, bootstrap::StartKeys)> {
    let url = config
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", config.data_dir.join("latchkey.db").display()));
    if Backend::of(&url).is_none() {
        bail!(
            "unsupported --database URL (expected sqlite://PATH or postgres://USER@HOST:PORT/DB)"
        );
    }
    // Several PostgreSQL replicas share one database and must share its
    // key: a key is generated only for a store that does not exist yet.
    let exists = latchkey_store::exists(&url, &config.store)
        .await
        .context("cannot open the store")?;
    let keys = bootstrap::start_keys(&config.data_dir, &config.master_key, exists)?;
    let store = latchkey_store::open(&url, keys.keyring.clone(), &config.store)
        .await
        .context("cannot open the store")?;
    Ok((store, keys))
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Bad TLS files are refused before anything is created or served.
    let tls = config.tls.clone().map(Tls::load).transpose()?;
    let reloads = tls.as_ref().map(reload_on_sighup).transpose()?;
    if tls.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.listen,
            "serving without TLS on an address other hosts can reach: tokens and secret values \
             cross the network in clear; pass --tls-cert PEM --tls-key PEM"
        );
    }
    bootstrap::ensure_data_dir(&config.data_dir)?;
    let (store, keys) = open_store(&config).await?;
    // Bind before bootstrapping so that the admin token names the real
    // address, also when --listen asks for port 0.
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let url = local_url(listener.local_addr()?, tls.is_some());
    bootstrap::bootstrap_store(store.as_ref(), &config.data_dir, &url).await?;
    let token_file = config.data_dir.join(paths::ADMIN_TOKEN_FILE);
    let mut service = Service::new(
        store,
        ServiceConfig {
            anonymous_ttl: config.anonymous_ttl,
            keep_versions: config.keep_versions,
            audit_metadata_reads: config.audit_metadata_reads,
            auth_failures: config.auth_failures,
        },
    );
    if let Some(files) = keys.files {
        files.tidy();
        service = service.with_key_files(files);
    }
    if let Some(replica) = keys.replica {
        service = service.with_key_files(replica);
    }
    if let Some(new) = keys.resume {
        if let Some(mut events) = service.resume_key_rotation(new) {
            tokio::spawn(async move { while events.recv().await.is_some() {} });
        }
    }
    let sandboxes = start_sandboxes(&config).await?;
    let functions = start_functions(&config, &service, &url).await?;
    let sweeper = tokio::spawn(sweep_forever(
        service.clone(),
        config.sweep_interval,
        config.audit_retention,
    ));
    tracing::info!(
        url = %url,
        data_dir = %config.data_dir.display(),
        admin_token = %token_file.display(),
        "latchkey is serving"
    );
    eprintln!(
        "latchkey serving on {url} (admin token in {})",
        token_file.display()
    );

    let app = http::app_with_options(
        service.clone(),
        sandboxes.clone(),
        &http::AppOptions {
            max_buffered_bytes: config.limits.max_buffered_bytes,
            tls: tls.is_some(),
            metrics: config.metrics.clone(),
            functions: functions.clone(),
        },
    );
    let upkeep = tokio::spawn(async {
        let mut ticker = tokio::time::interval(telemetry::UPKEEP_INTERVAL);
        loop {
            ticker.tick().await;
            telemetry::handle().run_upkeep();
        }
    });
    let stop = async move {
        shutdown.await;
        tracing::info!("stop requested: finishing in-flight requests");
        // Sandbox output streams and waits last as long as their processes:
        // end those first.
        if let Some(sandboxes) = sandboxes {
            sandboxes.shutdown().await;
        }
        if let Some(functions) = functions {
            functions.shutdown().await;
        }
    };
    let acceptor = tls.as_ref().map(|tls| tls.acceptor().clone());
    let graceful = accept_until(listener, acceptor, app, &config.limits, stop).await;
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}; stopping anyway");
        }
    }
    sweeper.abort();
    upkeep.abort();
    if let Some(reloads) = reloads {
        reloads.abort();
    }
    // A database that stopped answering (a lost network) must not keep the
    // process from exiting: closing waits for connections to be returned.
    if tokio::time::timeout(STORE_CLOSE_LIMIT, service.store().close())
        .await
        .is_err()
    {
        tracing::warn!("the store did not close within {STORE_CLOSE_LIMIT:?}; stopping anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Serves connections on `listener` until `stop` completes; the connections
/// still open are then the returned [`GracefulShutdown`]'s to finish.
async fn accept_until(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: axum::Router,
    limits: &Limits,
    stop: impl Future<Output = ()>,
) -> GracefulShutdown {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let idle_timeout = limits.idle_connection_timeout;
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        // Closing at once frees the descriptor; the client sees a reset.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "connection refused: --max-connections reached");
            drop(tcp);
            continue;
        };
        // Small gRPC answers must not wait for the peer's delayed ACK
        // (Nagle): that is a 40 ms stall on some responses.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
        let requested = Arc::new(AtomicBool::new(false));
        let service = {
            let requested = Arc::clone(&requested);
            let app = app.clone();
            let client = latchkey_service::ClientAddr(peer.ip());
            hyper::service::service_fn(move |mut request: hyper::Request<_>| {
                requested.store(true, Ordering::Relaxed);
                // Who is calling: for the throttling of failed authentication,
                // audit events, and /metrics (open to loopback clients).
                request.extensions_mut().insert(client);
                // The router is always ready: no poll_ready needed.
                tower::Service::call(&mut app.clone(), request)
            })
        };
        let connection = Connection {
            builder: Arc::clone(&builder),
            watcher: graceful.watcher(),
            requested,
            idle_timeout,
            peer,
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection.serve(tcp, service).await,
                // The handshake counts as part of the first request: it
                // gets the same time.
                Some(acceptor) => {
                    match tokio::time::timeout(idle_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection.serve(stream, service).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => {
                            tracing::debug!(%peer, "closing a connection whose TLS handshake took over {idle_timeout:?}")
                        }
                    }
                }
            }
            drop(slot);
        });
    }
    graceful
}

/// One accepted connection, and what serving it needs.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    /// Set once the connection delivered a request.
    requested: Arc<AtomicBool>,
    idle_timeout: Duration,
    peer: SocketAddr,
}

impl Connection {
    /// Serves the connection (plain TCP or TLS) until it ends.
    async fn serve<I, S>(self, io: I, service: S)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<
                hyper::Request<hyper::body::Incoming>,
                Response = axum::response::Response,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let Self {
            builder,
            watcher,
            requested,
            idle_timeout,
            peer,
        } = self;
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        let connection = watcher.watch(connection.into_owned());
        tokio::pin!(connection);
        // A connection is cut for idleness only if it never delivered a
        // request; once in use, HTTP/2 keepalive watches it instead.
        let result = tokio::select! {
            result = &mut connection => Some(result),
            () = tokio::time::sleep(idle_timeout) => {
                if requested.load(Ordering::Relaxed) {
                    None
                } else {
                    tracing::debug!(%peer, "closing a connection that sent no request in {idle_timeout:?}");
                    return;
                }
            }
        };
        let result = match result {
            Some(result) => result,
            None => connection.await,
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// Reloads the certificate and key on each SIGHUP, from now on (the handler
/// is installed before serving, so that an early SIGHUP does not stop the
/// server). A pair that fails to load leaves the one in use.
fn reload_on_sighup(tls: &Tls) -> Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let tls = tls.clone();
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let files = tls.files();
            match tls.reload() {
                Ok(()) => tracing::info!(
                    cert = %files.cert.display(),
                    key = %files.key.display(),
                    "SIGHUP: reloaded the TLS certificate and key; new connections use them"
                ),
                Err(e) => tracing::error!(
                    "SIGHUP: cannot reload the TLS certificate, still serving the previous one: {e:#}"
                ),
            }
        }
    }))
}

/// How long closing the store may take at shutdown.
const STORE_CLOSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The sandbox manager, when `--sandboxes` is on. Sandboxes never see the
/// data dir, the master key file or a SQLite database kept elsewhere (with
/// its journal files, which hold recent writes).
async fn start_sandboxes(config: &ServeConfig) -> Result<Option<Sandboxes>> {
    let Some(sandbox_config) = &config.sandboxes else {
        return Ok(None);
    };
    let mut sandbox_config = sandbox_config.clone();
    sandbox_config.hidden_paths.push(config.data_dir.clone());
    sandbox_config
        .hidden_paths
        .extend(config.master_key.file.iter().cloned());
    sandbox_config.hidden_paths.extend(
        config
            .database
            .iter()
            .flat_map(|url| latchkey_store::database_files(url)),
    );
    let sandboxes = Sandboxes::start(sandbox_config)
        .await
        .context("cannot enable sandboxes")?;
    tracing::info!(
        isolation = sandboxes.isolation(),
        max = sandboxes.config().max_sandboxes,
        output_buffer_bytes = sandboxes.config().output_buffer_bytes,
        "Modal sandboxes are enabled"
    );
    Ok(Some(sandboxes))
}

/// The function manager, when `--functions` is on. Containers, like
/// sandboxes, never see the data dir, the master key file or the database.
async fn start_functions(
    config: &ServeConfig,
    service: &Service,
    url: &str,
) -> Result<Option<latchkey_functions::Functions>> {
    let Some(function_config) = &config.functions else {
        return Ok(None);
    };
    let mut function_config = function_config.clone();
    if function_config.public_url.is_empty() {
        url.clone_into(&mut function_config.public_url);
    }
    function_config.hidden_paths.push(config.data_dir.clone());
    function_config
        .hidden_paths
        .extend(config.master_key.file.iter().cloned());
    function_config.hidden_paths.extend(
        config
            .database
            .iter()
            .flat_map(|url| latchkey_store::database_files(url)),
    );
    let functions = latchkey_functions::Functions::start(function_config, service.clone())
        .await
        .context("cannot enable functions")?;
    let python = functions.interpreter();
    tracing::info!(
        python = %python.path.display(),
        modal = %python.modal_version,
        python_version = %python.python_version,
        "Modal functions are enabled"
    );
    Ok(Some(functions))
}

async fn sweep_forever(service: Service, every: Duration, audit_retention: Option<Duration>) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match service.sweep_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed expired anonymous secrets"),
            Err(e) => tracing::warn!(error = %e, "sweeping expired anonymous secrets failed"),
        }
        if let Some(keep) = audit_retention {
            match service
                .audit_retain(latchkey_service::retention_cutoff(keep))
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed audit events past their retention"),
                Err(e) => tracing::warn!(error = %e, "removing old audit events failed"),
            }
        }
    }
}
