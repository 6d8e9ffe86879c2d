//! `latchkey serve`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::Args;
use latchkey_core::paths;
use latchkey_sandbox::{Isolation, SandboxConfig};
use latchkey_server::{
    bootstrap::MasterKeySources, serve::Limits, telemetry::MetricsAccess, tls::TlsFiles,
    ServeConfig,
};
use latchkey_store::PgOptions;
use zeroize::Zeroizing;

/// Run the latchkey server.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  latchkey serve\n  latchkey serve --listen 0.0.0.0:7420 --data-dir /var/lib/latchkey --tls-cert cert.pem --tls-key key.pem\n  LATCHKEY_MASTER_KEY=$(cat key.b64) latchkey serve --data-dir ./data"
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
    /// PostgreSQL: most connections this server opens (requests and group
    /// commits of writes), plus one that listens for changes (two while it
    /// reconnects): replicas × (size + 2) must stay below the database's
    /// max_connections.
    #[arg(long, env = "LATCHKEY_DATABASE_POOL_SIZE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(2..=1000))]
    database_pool_size: u32,
    /// PostgreSQL: groups of writes this server commits at once, each over a
    /// connection of the pool. 1 serves best when the database shares this
    /// machine's processors; 2 or 3 when it is on another host, where each
    /// round trip is slow.
    #[arg(long, env = "LATCHKEY_DATABASE_WRITE_GROUPS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    database_write_groups: u32,
    /// PostgreSQL: how long a request waits for a connection before it fails
    /// with UNAVAILABLE (e.g. while the database is down).
    #[arg(long, env = "LATCHKEY_DATABASE_ACQUIRE_TIMEOUT", default_value = "3s",
          value_parser = parse_duration)]
    database_acquire_timeout: Duration,
    /// PostgreSQL: the longest one statement may run (statement_timeout).
    #[arg(long, env = "LATCHKEY_DATABASE_STATEMENT_TIMEOUT", default_value = "10s",
          value_parser = parse_duration)]
    database_statement_timeout: Duration,
    /// File holding the master key (one line of base64). The key may instead
    /// come from LATCHKEY_MASTER_KEY; without either, DATA_DIR/master.key.
    #[arg(long)]
    master_key_file: Option<PathBuf>,
    /// Rotation across replicas, first round: the key the rotation moves
    /// to. The server opens rows under it too, but still seals under the
    /// master key. Or LATCHKEY_NEXT_MASTER_KEY (base64).
    #[arg(long, value_name = "FILE", conflicts_with = "previous_master_key_file")]
    next_master_key_file: Option<PathBuf>,
    /// Rotation across replicas, second round: the key the rotation moves
    /// from. The server opens rows under it too, seals under the master key,
    /// and `latchkey key rotate` against it rewraps what the previous key
    /// wrapped. Or LATCHKEY_PREVIOUS_MASTER_KEY (base64).
    #[arg(long, value_name = "FILE")]
    previous_master_key_file: Option<PathBuf>,
    /// How long anonymous secrets (from_dict, from_dotenv, from_local_environ) live, e.g. 30s, 10m, 24h.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    anonymous_ttl: Duration,
    /// How often expired anonymous secrets are removed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    sweep_interval: Duration,
    /// How many versions of each named secret are kept (at least 1); a
    /// change that makes one more destroys the oldest, with its data key.
    #[arg(long, env = "LATCHKEY_KEEP_VERSIONS",
          default_value_t = latchkey_server::DEFAULT_KEEP_VERSIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    keep_versions: u32,
    /// Record reads of metadata (listings, lookups, info) in the audit log
    /// too; reads of values are always recorded.
    #[arg(long, env = "LATCHKEY_AUDIT_METADATA_READS")]
    audit_metadata_reads: bool,
    /// How long audit events are kept (e.g. 400d); older ones are removed,
    /// after a checkpoint from which `latchkey audit verify` checks the
    /// chain. Default: kept for ever.
    #[arg(long, env = "LATCHKEY_AUDIT_RETENTION", value_parser = parse_duration)]
    audit_retention: Option<Duration>,
    /// Most client connections open at once; past it, new ones are closed on
    /// accept. Keep it below the descriptor limit (ulimit -n) less what the
    /// database and sandboxes use, so that accepting never fails.
    #[arg(long, env = "LATCHKEY_MAX_CONNECTIONS", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// How long an HTTP/1 client may take to send a request's headers.
    #[arg(long, env = "LATCHKEY_HEADER_READ_TIMEOUT", default_value = "30s",
          value_parser = parse_duration)]
    header_read_timeout: Duration,
    /// How long a new connection may go without sending a complete request
    /// before it is closed; a connection in use is never cut for idleness.
    #[arg(long, env = "LATCHKEY_IDLE_CONNECTION_TIMEOUT", default_value = "60s",
          value_parser = parse_duration)]
    idle_connection_timeout: Duration,
    /// Most MiB of request bodies read at once, across all requests; more
    /// waits. At least 17: one 16 MiB gRPC message must fit.
    #[arg(long, env = "LATCHKEY_MAX_BUFFERED_MIB", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(17..=65536))]
    max_buffered_mib: u32,
    /// Failed authentications allowed per client address (IPv6: per /64)
    /// before its attempts are refused (RESOURCE_EXHAUSTED / 429, naming
    /// the wait); the allowance refills over --auth-failure-period. While
    /// an address is refused, so are its valid tokens; other addresses are
    /// not affected. 0 turns the limit off.
    #[arg(long, env = "LATCHKEY_AUTH_FAILURE_LIMIT", default_value_t = 20)]
    auth_failure_limit: u32,
    /// How long an address's allowance of failed authentications takes to
    /// refill from empty (default: 20 a minute).
    #[arg(long, env = "LATCHKEY_AUTH_FAILURE_PERIOD", default_value = "1m",
          value_parser = parse_duration)]
    auth_failure_period: Duration,
    /// Serve over TLS with this certificate (PEM: the server's certificate,
    /// then any intermediates); needs --tls-key. Reloaded on SIGHUP.
    #[arg(
        long,
        env = "LATCHKEY_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1); needs
    /// --tls-cert. Reloaded on SIGHUP.
    #[arg(
        long,
        env = "LATCHKEY_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// A file holding a token (one line) that lets clients other than
    /// loopback ones read /metrics, sent as `Authorization: Bearer TOKEN`
    /// (Prometheus: `authorization: {credentials_file: FILE}`). Without it,
    /// /metrics answers loopback clients only.
    #[arg(long, env = "LATCHKEY_METRICS_TOKEN_FILE", value_name = "FILE")]
    metrics_token_file: Option<PathBuf>,
    /// How log lines are written to stderr: `text` for people, `json` (one
    /// object a line) for log collectors. What is logged: LATCHKEY_LOG, else
    /// RUST_LOG, else `info` (e.g. `warn`, `info,latchkey_store=debug`).
    #[arg(long, env = "LATCHKEY_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[command(flatten)]
    function: FunctionArgs,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr as `format` says, filtered by LATCHKEY_LOG, else
/// RUST_LOG, else `info`. A filter that does not parse is an error naming
/// its variable.
fn init_logging(format: LogFormat) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = ["LATCHKEY_LOG", "RUST_LOG"]
        .into_iter()
        .find_map(|var| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| (var, v))
        })
        .map(|(var, text)| {
            EnvFilter::try_new(&text)
                .with_context(|| format!("{var}={text:?} is not a log filter (e.g. info, warn, info,latchkey_store=debug)"))
        })
        .transpose()?
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => builder
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stderr())
                    && std::env::var_os("NO_COLOR").is_none(),
            )
            .init(),
    }
    Ok(())
}

pub(crate) fn run(args: ServeArgs) -> Result<()> {
    init_logging(args.log_format)?;
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
    if args.database_acquire_timeout.is_zero() || args.database_statement_timeout.is_zero() {
        anyhow::bail!(
            "--database-acquire-timeout and --database-statement-timeout must be greater than zero"
        );
    }
    if args.header_read_timeout.is_zero() || args.idle_connection_timeout.is_zero() {
        anyhow::bail!(
            "--header-read-timeout and --idle-connection-timeout must be greater than zero"
        );
    }
    if args.auth_failure_period.is_zero() {
        anyhow::bail!("--auth-failure-period must be greater than zero");
    }
    if args.sandbox.sandbox_isolation == IsolationArg::Process {
        anyhow::bail!(
            "--sandbox-isolation process is not offered: a sandbox run as a plain process with \
             the server's user can read the server's environment (/proc/$PPID/environ: its master \
             key, database password and tokens), its data dir and other sandboxes' variables. \
             Sandboxes run under bubblewrap (apt-get install bubblewrap); leave out \
             --sandbox-isolation or say bwrap"
        );
    }
    let metrics = match &args.metrics_token_file {
        None => MetricsAccess::loopback_only(),
        Some(file) => MetricsAccess::with_token(read_metrics_token(file)?),
    };
    let config = ServeConfig {
        listen: args.listen,
        data_dir,
        database: args.database,
        store: latchkey_store::Options {
            postgres: PgOptions {
                pool_size: args.database_pool_size,
                write_groups: args.database_write_groups,
                acquire_timeout: args.database_acquire_timeout,
                statement_timeout: args.database_statement_timeout,
            },
        },
        master_key: MasterKeySources {
            file: args.master_key_file,
            env: env_key,
            extra: extra_key(
                args.next_master_key_file.as_deref(),
                args.previous_master_key_file.as_deref(),
            )?,
        },
        anonymous_ttl: args.anonymous_ttl,
        keep_versions: args.keep_versions,
        audit_metadata_reads: args.audit_metadata_reads,
        audit_retention: args.audit_retention,
        sweep_interval: args.sweep_interval,
        sandboxes: args.sandbox.config(),
        functions: args.function.config(),
        limits: Limits {
            max_connections: args.max_connections as usize,
            header_read_timeout: args.header_read_timeout,
            idle_connection_timeout: args.idle_connection_timeout,
            max_buffered_bytes: args.max_buffered_mib as usize * 1024 * 1024,
        },
        auth_failures: latchkey_server::AuthFailureLimit {
            burst: args.auth_failure_limit,
            period: args.auth_failure_period,
        },
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| TlsFiles { cert, key }),
        metrics,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Install the handlers before serving, so that a signal arriving
        // right after start-up stops the server gracefully too.
        let stop = stop_signal()?;
        latchkey_server::serve(config, stop).await
    })
}

/// The token of `--metrics-token-file`: its one line, at least 16
/// characters, so that a guess is hopeless.
fn read_metrics_token(file: &std::path::Path) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(file)
            .with_context(|| format!("--metrics-token-file {}: cannot read it", file.display()))?,
    );
    let token = Zeroizing::new(text.trim().to_owned());
    if token.len() < 16 || token.contains(char::is_whitespace) {
        anyhow::bail!(
            "--metrics-token-file {}: expected one line of at least 16 characters without spaces \
             (e.g. from `openssl rand -hex 32`)",
            file.display()
        );
    }
    Ok(token)
}

/// A future that resolves on the first SIGINT or SIGTERM, with the handlers
/// installed now.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// A duration: bare seconds (`90`) or with units (`90s`, `10m`, `24h`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 30, 30s, 10m, 24h)"))
}

/// The options of Modal sandboxes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Modal sandboxes")]
pub(crate) struct SandboxArgs {
    /// Run Modal sandboxes (`modal.Sandbox.create(...)`) as processes on
    /// this host, with exactly their secrets in their environment. Only
    /// tokens of role developer or admin may create them. Off by default.
    #[arg(long)]
    sandboxes: bool,
    /// How sandboxes are isolated: bubblewrap (own PID namespace, read-only
    /// view of the host, data dir hidden), always; `auto` and `bwrap` both
    /// refuse to start sandboxes where bwrap does not work.
    #[arg(long, value_enum, default_value = "auto", requires = "sandboxes")]
    sandbox_isolation: IsolationArg,
    /// Most sandboxes held at once, running or finished (finished ones make
    /// room for new ones).
    #[arg(long, default_value_t = 16, requires = "sandboxes",
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    sandbox_max: u16,
    /// Most apps held at once; past it, the app looked up least recently
    /// that holds no sandbox makes room.
    #[arg(long, default_value_t = 10_000, requires = "sandboxes",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    sandbox_max_apps: u32,
    /// MiB kept of each sandbox's stdout and of its stderr: a reader that
    /// falls further behind loses the oldest output. Memory for output is
    /// bounded by sandbox-max × 2 × this.
    #[arg(long, default_value_t = 4, requires = "sandboxes",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    sandbox_output_mib: u16,
    /// How long a finished sandbox's exit code and output stay readable.
    #[arg(long, default_value = "15m", requires = "sandboxes", value_parser = parse_duration)]
    sandbox_keep_finished: Duration,
    /// URL at which clients reach this server's sandbox command router
    /// [default: the URL of each client's own request].
    #[arg(long, requires = "sandboxes")]
    sandbox_router_url: Option<String>,
}

/// The options of Modal functions.
#[derive(Debug, Args)]
#[command(next_help_heading = "Modal functions")]
pub(crate) struct FunctionArgs {
    /// Run Modal functions (`modal run`, `modal deploy`, `.remote()`,
    /// `.map()`) in containers on this host: processes under bubblewrap with
    /// exactly their secrets in their environment. Only tokens of role
    /// developer or admin may create and call them. Apps live in memory:
    /// deployed ones last until the server stops. Off by default.
    #[arg(long)]
    functions: bool,
    /// The Python interpreter that runs containers; it must import the same
    /// `modal` version as the clients (1.6.4).
    #[arg(long, default_value = "python3", requires = "functions")]
    function_python: std::path::PathBuf,
    /// How long a container waits for an input before it stops (a
    /// function's own scaledown_window wins).
    #[arg(long, default_value = "60s", requires = "functions", value_parser = parse_duration)]
    function_idle_timeout: Duration,
    /// URL at which clients and containers reach this server, for the
    /// signed URLs of large payloads [default: the address it listens on].
    #[arg(long, requires = "functions")]
    function_public_url: Option<String>,
    /// Most containers running at once, over all functions.
    #[arg(long, default_value_t = 8, requires = "functions",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    function_max_containers: u16,
}

impl FunctionArgs {
    fn config(&self) -> Option<latchkey_functions::FunctionsConfig> {
        self.functions.then(|| {
            let mut config = latchkey_functions::FunctionsConfig::new(self.function_python.clone());
            config.idle_timeout = self.function_idle_timeout;
            config.max_containers = usize::from(self.function_max_containers);
            if let Some(url) = &self.function_public_url {
                url.clone_into(&mut config.public_url);
            }
            config
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum IsolationArg {
    Auto,
    Bwrap,
    /// No longer offered; still parsed, to say why.
    #[value(hide = true)]
    Process,
}

impl SandboxArgs {
    fn config(&self) -> Option<SandboxConfig> {
        self.sandboxes.then(|| SandboxConfig {
            isolation: match self.sandbox_isolation {
                IsolationArg::Auto | IsolationArg::Process => Isolation::Auto,
                IsolationArg::Bwrap => Isolation::Bubblewrap,
            },
            output_buffer_bytes: usize::from(self.sandbox_output_mib) * 1024 * 1024,
            max_sandboxes: usize::from(self.sandbox_max),
            max_apps: usize::try_from(self.sandbox_max_apps).unwrap_or(usize::MAX),
            keep_finished: self.sandbox_keep_finished,
            router_url: self.sandbox_router_url.clone(),
            hidden_paths: Vec::new(),
        })
    }
}

/// The second key of a rotation across replicas, from its flag or variable;
/// refused when more than one is given.
fn extra_key(
    next_file: Option<&std::path::Path>,
    previous_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<latchkey_server::bootstrap::ExtraKey>> {
    use anyhow::Context as _;
    use latchkey_server::bootstrap::{ExtraKey, ExtraKeyRole};
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|k| !k.is_empty())
            .map(|k| (Zeroizing::new(k), name.to_owned()))
    };
    let file = |path: &std::path::Path| -> anyhow::Result<(Zeroizing<String>, String)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the master key file {}", path.display()))?;
        Ok((Zeroizing::new(text), path.display().to_string()))
    };
    let mut given = Vec::new();
    if let Some(path) = next_file {
        given.push((ExtraKeyRole::Next, file(path)?));
    }
    if let Some(k) = var("LATCHKEY_NEXT_MASTER_KEY") {
        given.push((ExtraKeyRole::Next, k));
    }
    if let Some(path) = previous_file {
        given.push((ExtraKeyRole::Previous, file(path)?));
    }
    if let Some(k) = var("LATCHKEY_PREVIOUS_MASTER_KEY") {
        given.push((ExtraKeyRole::Previous, k));
    }
    if given.len() > 1 {
        let names: Vec<&str> = given
            .iter()
            .map(|(_, (_, origin))| origin.as_str())
            .collect();
        anyhow::bail!(
            "a second master key is given more than once ({}); give one of --next-master-key-file, \
             --previous-master-key-file, LATCHKEY_NEXT_MASTER_KEY, LATCHKEY_PREVIOUS_MASTER_KEY",
            names.join(", ")
        );
    }
    Ok(given
        .pop()
        .map(|(role, (text, origin))| ExtraKey { role, text, origin }))
}
