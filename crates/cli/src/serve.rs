//! `latchkey serve`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::Args;
use latchkey_core::paths;
use latchkey_server::{bootstrap::MasterKeySources, ServeConfig};
use zeroize::Zeroizing;

/// Run the latchkey server.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  latchkey serve\n  latchkey serve --listen 0.0.0.0:7420 --data-dir /var/lib/latchkey\n  LATCHKEY_MASTER_KEY=$(cat key.b64) latchkey serve --data-dir ./data"
)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LATCHKEY_LISTEN", default_value = paths::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Data dir [default: $XDG_DATA_HOME/latchkey or ~/.local/share/latchkey].
    #[arg(long, env = "LATCHKEY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL [default: sqlite://DATA_DIR/latchkey.db].
    #[arg(long, env = "LATCHKEY_DATABASE_URL")]
    database: Option<String>,
    /// File holding the master key (one line of base64). The key may instead
    /// come from LATCHKEY_MASTER_KEY; without either, DATA_DIR/master.key.
    #[arg(long)]
    master_key_file: Option<PathBuf>,
    /// How long anonymous secrets (from_dict, from_dotenv, from_local_environ) live, e.g. 30s, 10m, 24h.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    anonymous_ttl: Duration,
    /// How often expired anonymous secrets are removed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    sweep_interval: Duration,
}

pub(crate) fn run(args: ServeArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => paths::default_data_dir()
            .context("no data dir: pass --data-dir, or set HOME or XDG_DATA_HOME")?,
    };
    let env_key = std::env::var("LATCHKEY_MASTER_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .map(Zeroizing::new);
    if args.sweep_interval.is_zero() {
        anyhow::bail!("--sweep-interval must be greater than zero");
    }
    let config = ServeConfig {
        listen: args.listen,
        data_dir,
        database: args.database,
        master_key: MasterKeySources {
            file: args.master_key_file,
            env: env_key,
        },
        anonymous_ttl: args.anonymous_ttl,
        sweep_interval: args.sweep_interval,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(latchkey_server::serve(config, stop_signal()))
}

/// Resolves on the first SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
