//! `latchkey serve`: open the store, bootstrap, serve until asked to stop.

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use latchkey_core::paths;
use latchkey_store::{crypto::Keyring, Backend, Store};
use tokio::net::TcpListener;

use latchkey_service::{Service, ServiceConfig};

use latchkey_sandbox::{SandboxConfig, Sandboxes};

use crate::{
    bootstrap::{self, MasterKeySources},
    http,
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
    /// How often expired anonymous secrets are removed.
    pub sweep_interval: Duration,
    /// Modal sandboxes (`--sandboxes`); `None`: disabled.
    pub sandboxes: Option<SandboxConfig>,
}

/// The URL clients on this machine use to reach a server listening on `addr`.
pub fn local_url(addr: SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", addr.port())
}

/// Opens the configured store, creating it if needed.
async fn open_store(config: &ServeConfig) -> Result<Arc<dyn Store>> {
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
    let key = bootstrap::master_key(&config.data_dir, &config.master_key, exists)?;
    latchkey_store::open(&url, Keyring::new(key), &config.store)
        .await
        .context("cannot open the store")
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    bootstrap::ensure_data_dir(&config.data_dir)?;
    let store = open_store(&config).await?;
    // Bind before bootstrapping so that the admin token names the real
    // address, also when --listen asks for port 0.
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let url = local_url(listener.local_addr()?);
    bootstrap::bootstrap_store(store.as_ref(), &config.data_dir, &url).await?;
    let token_file = config.data_dir.join(paths::ADMIN_TOKEN_FILE);
    let service = Service::new(
        store,
        ServiceConfig {
            anonymous_ttl: config.anonymous_ttl,
        },
    );
    let sandboxes = start_sandboxes(&config).await?;
    let sweeper = tokio::spawn(sweep_forever(service.clone(), config.sweep_interval));
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

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = http::app_with_sandboxes(service.clone(), sandboxes.clone());
    // Small gRPC answers must not wait for the peer's delayed ACK (Nagle):
    // that is a 40 ms stall on some responses.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("stop requested: finishing in-flight requests");
        // Sandbox output streams and waits last as long as their processes:
        // end those first.
        if let Some(sandboxes) = sandboxes {
            sandboxes.shutdown().await;
        }
        let _ = stop_tx.send(true);
    });
    let mut stop_rx_grace = stop_rx.clone();
    tokio::select! {
        result = server => result.context("the server failed")?,
        () = async move {
            let _ = stop_rx_grace.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}; stopping anyway");
        }
    }
    sweeper.abort();
    // A database that stopped answering (a lost network) must not keep the
    // process from exiting: closing waits for connections to be returned.
    if tokio::time::timeout(STORE_CLOSE_LIMIT, service.store().close())
        .await
        .is_err()
    {
        tracing::warn!("the store did not close within {STORE_CLOSE_LIMIT:?}; stopping anyway");
    }
    drop(stop_rx);
    tracing::info!("stopped");
    Ok(())
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

async fn sweep_forever(service: Service, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match service.sweep_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed expired anonymous secrets"),
            Err(e) => tracing::warn!(error = %e, "sweeping expired anonymous secrets failed"),
        }
    }
}
