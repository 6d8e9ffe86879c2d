//! `latchkey-bench`: starts a real latchkey server on a temp data dir, loads
//! it from this separate process, and prints each figure beside its baseline
//! measured in the same run. Nothing here asserts a figure: the numbers are
//! for people (and the README's table), not for pass/fail.
//!
//! Run: `cargo build --release && target/release/latchkey-bench` (add
//! `--quick` for a short run, `--json` for scripts).

mod functions;
mod load;
mod server;
mod soak;

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;

use crate::{
    load::{Load, Op},
    server::Server,
};

/// Benchmarks of a real latchkey server.
#[derive(Debug, Parser)]
#[command(name = "latchkey-bench")]
struct Args {
    /// The `latchkey` binary to start [default: beside this executable].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// A short run (CI checks that it completes): fewer secrets, shorter loads.
    #[arg(long)]
    quick: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds each load runs.
    #[arg(long)]
    seconds: Option<f64>,
    /// Concurrent streams for the lookup figure.
    #[arg(long, default_value_t = 64)]
    streams: usize,
    /// HTTP/2 connections the streams share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Secrets in the large environment of the list figure.
    #[arg(long)]
    large: Option<usize>,
    /// A PostgreSQL URL for the PostgreSQL figures (each run uses a fresh
    /// database it creates there); without it they are skipped.
    #[arg(long, env = "LATCHKEY_BENCH_DATABASE_URL")]
    postgres: Option<String>,
    /// Only the PostgreSQL figures (with --postgres), each beside its
    /// pgbench or ClientHello baseline: a shorter run while tuning.
    #[arg(long, requires = "postgres")]
    postgres_only: bool,
    /// An argument added to the PostgreSQL server's command line (e.g.
    /// `--postgres-server-arg=--database-write-groups=2`); repeat for more.
    /// The server is started without the caller's `LATCHKEY_*` variables,
    /// so its settings go here.
    #[arg(long, requires = "postgres", allow_hyphen_values = true)]
    postgres_server_arg: Vec<String>,
    /// Instead of the figures: a mixed load (lookups, resolves, creates,
    /// updates, lists, deletes) for this long (e.g. 10m), reporting errors,
    /// RSS and open descriptors; on PostgreSQL with --postgres.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    soak: Option<Duration>,
    /// A Python with `modal` installed: adds the function figures
    /// (`.remote()` round trips, cold start); without it they are skipped.
    #[arg(long, env = "LATCHKEY_BENCH_PYTHON")]
    function_python: Option<PathBuf>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 30s, 10m, 1h)"))
}

/// One figure beside its baseline.
#[derive(Debug, Serialize)]
struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    baseline_name: String,
    baseline: f64,
    baseline_unit: &'static str,
    /// value / baseline.
    ratio: f64,
    target: String,
}

impl Figure {
    fn new(
        name: impl Into<String>,
        (value, unit): (f64, &'static str),
        baseline_name: impl Into<String>,
        (baseline, baseline_unit): (f64, &'static str),
        target: impl Into<String>,
    ) -> Self {
        Figure {
            name: name.into(),
            value,
            unit,
            baseline_name: baseline_name.into(),
            baseline,
            baseline_unit,
            ratio: if baseline == 0.0 {
                0.0
            } else {
                value / baseline
            },
            target: target.into(),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("latchkey-bench: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latchkey-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn server_bin(args: &Args) -> Result<PathBuf> {
    if let Some(bin) = &args.server_bin {
        return Ok(bin.clone());
    }
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("latchkey");
    anyhow::ensure!(
        bin.is_file(),
        "no latchkey binary beside {} (build it: cargo build --release), or pass --server-bin",
        exe.display()
    );
    Ok(bin)
}

async fn run(args: Args) -> Result<()> {
    let bin = server_bin(&args)?;
    if let Some(duration) = args.soak {
        let database = match &args.postgres {
            Some(url) => Some(server::fresh_postgres_database(url).await?),
            None => None,
        };
        let extra: Vec<&str> = database
            .iter()
            .flat_map(|db| ["--database", db.as_str()])
            .collect();
        let server = Server::start(&bin, &extra).await?;
        let result = soak::soak(&server, duration).await;
        server.stop().await?;
        if let Some(url) = &args.postgres {
            server::drop_postgres_database(url).await?;
        }
        return result;
    }
    let seconds =
        Duration::from_secs_f64(args.seconds.unwrap_or(if args.quick { 1.0 } else { 5.0 }));
    let large = args
        .large
        .unwrap_or(if args.quick { 5_000 } else { 1_000_000 });
    let mut figures = Vec::new();
    if let (true, Some(url)) = (args.postgres_only, &args.postgres) {
        figures.extend(postgres_figures(&args, &bin, url, seconds, None).await?);
        return print_figures(&args, &figures);
    }

    // Versions are kept up to 1,000 for the history figure; nothing else
    // makes more than 20.
    let server = Server::start(&bin, &["--keep-versions", "1000"]).await?;
    let load = Load::new(&server, args.connections).await?;
    load.create_named("bench", 10).await?;

    eprintln!(
        "lookup throughput ({} streams over {} connections, {seconds:?} each)",
        args.streams, args.connections
    );
    let (hello, lookup) = lookups_beside_hello(
        &mut figures,
        (&load, &server),
        args.streams,
        seconds,
        [
            "lookup rate (SecretGetOrCreate type 0)",
            "server CPU per lookup",
        ],
    )
    .await?;
    figures.push(Figure::new(
        format!("lookup p99, {} streams flat out", args.streams),
        (lookup.p99_ms(), "ms"),
        "ClientHello p99, same",
        (hello.p99_ms(), "ms"),
        "≤ 2 ms",
    ));
    eprintln!("lookups over TLS beside plain HTTP/2 (another server, same binary)");
    let ca = latchkey::testing::TestCa::new()?;
    let cert = ca.issue("bench")?;
    let (cert_path, key_path) = (
        cert.cert.display().to_string(),
        cert.key.display().to_string(),
    );
    let tls_server =
        Server::start(&bin, &["--tls-cert", &cert_path, "--tls-key", &key_path]).await?;
    let tls_load = Load::with_ca(&tls_server, args.connections, Some(&ca.ca_cert())).await?;
    tls_load.create_named("bench", 10).await?;
    let [(plain, _), (tls, _)] = paired_on(
        [
            (&load, &server, Op::Lookup("bench".into())),
            (&tls_load, &tls_server, Op::Lookup("bench".into())),
        ],
        Pace::FlatOut,
        args.streams,
        seconds,
    )
    .await?;
    figures.push(Figure::new(
        "lookup rate over TLS (rustls, h2)",
        (tls.rate(), "req/s"),
        "same, plain HTTP/2",
        (plain.rate(), "req/s"),
        "(reported)",
    ));
    drop(tls_load);
    tls_server.stop().await?;

    // Flat out, every stream waits its turn: mean latency is streams / rate
    // (Little's law), so the figure above measures the queue as much as the
    // server. The same streams at fixed rates the server keeps up with (a
    // half and a quarter of the empty RPC's peak) show a lookup's latency.
    for share in [2.0, 4.0] {
        let fixed = (hello.rate() / share).floor().max(100.0);
        let [(hello_at, _), (lookup_at, _)] = paired(
            &load,
            &server,
            lookup_vs_hello(),
            Pace::Rate(fixed),
            args.streams,
            seconds,
        )
        .await?;
        figures.push(Figure::new(
            format!(
                "lookup p99 at {fixed:.0} req/s (1/{share} of peak, {} streams)",
                args.streams
            ),
            (lookup_at.p99_ms(), "ms"),
            "ClientHello p99, same rate",
            (hello_at.p99_ms(), "ms"),
            "≤ 2 ms",
        ));
    }

    eprintln!("versions: lookups of a secret with 20 versions, and a history of 1,000");
    load.create_named("bench20", 10).await?;
    load.add_versions("bench20", 19).await?;
    let [(one, _), (twenty, _)] = paired(
        &load,
        &server,
        [Op::Lookup("bench".into()), Op::Lookup("bench20".into())],
        Pace::FlatOut,
        args.streams,
        seconds,
    )
    .await?;
    figures.push(Figure::new(
        "lookup rate, secret with 20 versions",
        (twenty.rate(), "req/s"),
        "same, secret with 1 version",
        (one.rate(), "req/s"),
        "≥ 0.95 × baseline",
    ));
    load.create_named("hist", 10).await?;
    load.add_versions("hist", 999).await?;
    let [history, info] = server::time_cli_pair(
        &bin,
        &server,
        [&["secret", "history", "hist"], &["secret", "info", "hist"]],
        if args.quick { 5 } else { 20 },
    )
    .await?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    figures.push(Figure::new(
        "latchkey secret history, 1,000 versions (median)",
        (ms(history), "ms"),
        "latchkey secret info, same secret (median)",
        (ms(info), "ms"),
        "(reported)",
    ));

    eprintln!("resolve for a start (latchkey run --secret bench -- true)");
    let runs = if args.quick { 5 } else { 30 };
    let starts = server::time_run(&bin, &server, runs).await?;
    figures.push(Figure::new(
        "latchkey run --secret bench -- true (median)",
        (ms(starts.latchkey), "ms"),
        "true alone (median)",
        (ms(starts.bare), "ms"),
        "≤ baseline + 10 ms",
    ));
    match starts.dotenvx {
        Some(dotenvx) => figures.push(Figure::new(
            "latchkey run --secret bench -- true (median)",
            (ms(starts.latchkey), "ms"),
            "dotenvx run -f .env -- true, same 10 variables (median)",
            (ms(dotenvx), "ms"),
            "(comparison)",
        )),
        None => eprintln!(
            "  dotenvx is not on PATH: its comparison is left out (npm i -g @dotenvx/dotenvx)"
        ),
    }

    eprintln!("audited reads of values (16 clients, {seconds:?}; each read is an audit event committed before the answer)");
    let [(hello_16, _), (resolves, _)] = paired(
        &load,
        &server,
        [Op::Hello, Op::Resolve("bench".into())],
        Pace::FlatOut,
        16,
        seconds,
    )
    .await?;
    figures.push(Figure::new(
        "value reads (JSON resolve) at 16 clients, audited",
        (resolves.rate(), "reads/s"),
        "ClientHello at 16 clients",
        (hello_16.rate(), "req/s"),
        "≥ 2,000 reads/s (SQLite)",
    ));
    {
        let metadata = Server::start(&bin, &["--audit-metadata-reads"]).await?;
        let load = Load::new(&metadata, args.connections).await?;
        load.create_named("bench", 10).await?;
        let with_metadata = load.run(Op::Resolve("bench".into()), 16, seconds).await?;
        figures.push(Figure::new(
            "value reads at 16 clients, --audit-metadata-reads",
            (with_metadata.rate(), "reads/s"),
            "value reads, audit default",
            (resolves.rate(), "reads/s"),
            "(reported)",
        ));
        let lookups = load
            .run(Op::Lookup("bench".into()), args.streams, seconds)
            .await?;
        figures.push(Figure::new(
            "lookup rate, --audit-metadata-reads (each lookup an event)",
            (lookups.rate(), "req/s"),
            "lookup rate, audit default (no event)",
            (lookup.rate(), "req/s"),
            "(reported)",
        ));
        metadata.stop().await?;
    }

    eprintln!("durable writes (16 clients, {seconds:?})");
    let writes = load.run(Op::Create("w".into()), 16, seconds).await?;
    let sqlite_writes = writes.rate();
    let hello16 = load.run(Op::Hello, 16, seconds).await?;
    figures.push(Figure::new(
        "creates at 16 clients (durable)",
        (writes.rate(), "creates/s"),
        "ClientHello at 16 clients",
        (hello16.rate(), "req/s"),
        "≥ 2,000 creates/s",
    ));

    eprintln!("list at scale and memory (1,000 and {large} secrets)");
    load.create_environment("small").await?;
    load.create_environment("large").await?;
    load.fill("small", 0..1_000).await?;
    // Memory is read at 100,000 secrets (the target's size), and again at
    // the end when the large environment holds more.
    let checkpoint = large.min(100_000);
    load.fill("large", 0..checkpoint).await?;
    let held = |large: usize| 1 + writes.count() + 1_000 + large;
    let mut memory = vec![(held(checkpoint), server.idle_rss_kib().await?)];
    if large > checkpoint {
        load.fill("large", checkpoint..large).await?;
    }
    let small_page = load.run(Op::ListNewest("small".into()), 8, seconds).await?;
    let large_page = load.run(Op::ListNewest("large".into()), 8, seconds).await?;
    figures.push(Figure::new(
        format!("newest page of 100, {large} secrets (median)"),
        (large_page.p50_ms(), "ms"),
        "same, 1,000 secrets",
        (small_page.p50_ms(), "ms"),
        "≤ 1.5 × baseline",
    ));
    drop(load);
    if large > checkpoint {
        memory.push((held(large), server.idle_rss_kib().await?));
    }

    eprintln!("memory and start");
    let data_dir = server.data_dir().to_path_buf();
    server.stop().await?;
    let empty = Server::start(&bin, &[]).await?;
    let empty_rss = empty.idle_rss_kib().await?;
    empty.stop().await?;
    for (secrets, rss) in memory {
        figures.push(Figure::new(
            format!("server RSS idle, {secrets} secrets"),
            (rss as f64 / 1024.0, "MiB"),
            "server RSS idle, empty store",
            (empty_rss as f64 / 1024.0, "MiB"),
            "≤ 64 MB",
        ));
    }
    let (start, spawn) =
        server::time_to_ready(&bin, &data_dir, if args.quick { 3 } else { 10 }).await?;
    figures.push(Figure::new(
        "serve → /readyz, existing data dir (median)",
        (start.as_secs_f64() * 1000.0, "ms"),
        "latchkey --version (process start, median)",
        (spawn.as_secs_f64() * 1000.0, "ms"),
        "≤ 100 ms",
    ));

    let rotated = if args.quick { 5_000 } else { 100_000 };
    eprintln!("master-key rotation ({rotated} secrets)");
    let server = Server::start(&bin, &[]).await?;
    let load = Load::new(&server, args.connections).await?;
    let started = std::time::Instant::now();
    load.make_secrets("r", rotated).await?;
    let created = started.elapsed();
    let rotation = server::time_key_rotate(&bin, &server).await?;
    drop(load);
    server.stop().await?;
    figures.push(Figure::new(
        format!("master-key rotation, {rotated} secrets (SQLite, `key rotate`)"),
        (rotation.as_secs_f64(), "s"),
        format!("creating those {rotated} secrets (128 clients)"),
        (created.as_secs_f64(), "s"),
        "(reported)",
    ));

    if let Some(url) = &args.postgres {
        let sqlite = Sqlite {
            resolves: resolves.rate(),
            creates: sqlite_writes,
        };
        figures.extend(postgres_figures(&args, &bin, url, seconds, Some(sqlite)).await?);
    }

    if let Some(python) = &args.function_python {
        figures.extend(functions::figures(&bin, python, args.quick).await?);
    }

    print_figures(&args, &figures)
}

/// Prints `figures` as `args` asks: a table, or JSON.
fn print_figures(args: &Args, figures: &[Figure]) -> Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(figures).context("json")?);
    } else {
        print_table(figures);
    }
    Ok(())
}

/// The figures the SQLite run measured that the PostgreSQL ones are put
/// beside.
#[derive(Debug, Clone, Copy)]
struct Sqlite {
    resolves: f64,
    creates: f64,
}

/// The PostgreSQL figures, each beside its baseline from the same run: the
/// ClientHello rate, pgbench's one-row INSERT transactions, and SQLite's
/// (when that part ran).
async fn postgres_figures(
    args: &Args,
    bin: &std::path::Path,
    url: &str,
    seconds: Duration,
    sqlite: Option<Sqlite>,
) -> Result<Vec<Figure>> {
    eprintln!("PostgreSQL");
    let db = server::fresh_postgres_database(url).await?;
    // The database goes whether the figures came or not.
    let figures = postgres_figures_in(args, bin, &db, seconds, sqlite).await;
    server::drop_postgres_database(url).await?;
    figures
}

/// [`postgres_figures`], on the fresh database `db`.
async fn postgres_figures_in(
    args: &Args,
    bin: &std::path::Path,
    db: &str,
    seconds: Duration,
    sqlite: Option<Sqlite>,
) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let mut server_args = vec!["--database", db];
    server_args.extend(args.postgres_server_arg.iter().map(String::as_str));
    let pg = Server::start(bin, &server_args).await?;
    let load = Load::new(&pg, args.connections).await?;
    load.create_named("bench", 10).await?;
    lookups_beside_hello(
        &mut figures,
        (&load, &pg),
        args.streams,
        seconds,
        [
            "PostgreSQL lookup rate",
            "PostgreSQL: server CPU per lookup",
        ],
    )
    .await?;
    // pgbench needs whole seconds.
    let pgbench_seconds = seconds.max(Duration::from_secs(1));
    let (baseline, baseline_cpu) =
        machine_cpu(server::pgbench_inserts(db, 16, pgbench_seconds)).await?;
    // What one transaction cost the machine: its busy time over the
    // transactions committed in it.
    let baseline_cpu =
        baseline_cpu.as_secs_f64() * 1e6 / (baseline * pgbench_seconds.as_secs_f64()).max(1.0);
    let pgbench = "pgbench: one-row INSERT transactions, 16 clients";
    let server_before = pg.cpu_time()?;
    let (writes, writes_cpu) = machine_cpu(load.run(Op::Create("w".into()), 16, seconds)).await?;
    let writes_server_cpu = pg.cpu_time()? - server_before;
    figures.push(Figure::new(
        "PostgreSQL creates at 16 clients",
        (writes.rate(), "creates/s"),
        pgbench,
        (baseline, "tx/s"),
        "≥ 0.5 × baseline",
    ));
    let ids = Arc::new(load.make_secrets("u", 256).await?);
    let (updates, updates_cpu) = machine_cpu(load.run(Op::Update(ids), 16, seconds)).await?;
    figures.push(Figure::new(
        "PostgreSQL updates at 16 clients (256 secrets)",
        (updates.rate(), "updates/s"),
        pgbench,
        (baseline, "tx/s"),
        "≥ 0.5 × baseline",
    ));
    // A fixed number: the run ends when they are gone, and the rate
    // counts the time it took.
    let doomed = load
        .make_secrets("d", if args.quick { 300 } else { 3000 })
        .await?;
    let doomed = Arc::new((doomed, AtomicU64::new(0)));
    let (deletes, deletes_cpu) = machine_cpu(load.run(Op::Delete(doomed), 16, seconds)).await?;
    figures.push(Figure::new(
        "PostgreSQL deletes at 16 clients",
        (deletes.rate(), "deletes/s"),
        pgbench,
        (baseline, "tx/s"),
        "≥ 0.5 × baseline",
    ));
    let per_pgbench = "machine CPU per pgbench transaction (all processes)";
    for (name, stats, cpu) in [
        ("PostgreSQL: machine CPU per create", &writes, writes_cpu),
        ("PostgreSQL: machine CPU per update", &updates, updates_cpu),
        ("PostgreSQL: machine CPU per delete", &deletes, deletes_cpu),
    ] {
        figures.push(Figure::new(
            name,
            (cpu.as_secs_f64() * 1e6 / stats.count().max(1) as f64, "µs"),
            per_pgbench,
            (baseline_cpu, "µs"),
            "(reported: ≤ 2 × baseline for 0.5 × its rate)",
        ));
    }
    let per_create = |cpu: Duration| cpu.as_secs_f64() * 1e6 / writes.count().max(1) as f64;
    figures.push(Figure::new(
        "PostgreSQL: server CPU per create",
        (per_create(writes_server_cpu), "µs"),
        "machine CPU per create",
        (per_create(writes_cpu), "µs"),
        "(reported)",
    ));
    let reads = load.run(Op::Resolve("bench".into()), 16, seconds).await?;
    let audited = "PostgreSQL value reads (JSON resolve) at 16 clients, audited";
    match sqlite {
        Some(sqlite) => {
            figures.push(Figure::new(
                audited,
                (reads.rate(), "reads/s"),
                "SQLite, same",
                (sqlite.resolves, "reads/s"),
                "(reported)",
            ));
            figures.push(Figure::new(
                "PostgreSQL creates at 16 clients",
                (writes.rate(), "creates/s"),
                "SQLite creates at 16 clients",
                (sqlite.creates, "creates/s"),
                "(reported)",
            ));
        }
        None => figures.push(Figure::new(
            audited,
            (reads.rate(), "reads/s"),
            pgbench,
            (baseline, "tx/s"),
            "(reported)",
        )),
    }
    drop(load);
    pg.stop().await?;
    Ok(figures)
}

/// Runs `work`; answers what it answers and the busy CPU time the whole
/// machine spent meanwhile ([`server::machine_busy`]).
async fn machine_cpu<T>(
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<(T, Duration)> {
    let before = server::machine_busy()?;
    let answer = work.await?;
    Ok((answer, server::machine_busy()? - before))
}

/// How requests are sent: flat out, or at a fixed total rate.
#[derive(Debug, Clone, Copy)]
enum Pace {
    FlatOut,
    Rate(f64),
}

/// Lookups and ClientHello taking turns, flat out ([`paired`]): pushes the
/// lookup rate beside ClientHello's and the server's CPU time per lookup
/// beside that per ClientHello, under `labels`; answers both runs
/// (ClientHello's first).
async fn lookups_beside_hello(
    figures: &mut Vec<Figure>,
    (load, server): (&Load, &Server),
    streams: usize,
    seconds: Duration,
    [rate, cpu]: [&str; 2],
) -> Result<(load::Stats, load::Stats)> {
    let [(hello, hello_cpu), (lookup, lookup_cpu)] = paired(
        load,
        server,
        lookup_vs_hello(),
        Pace::FlatOut,
        streams,
        seconds,
    )
    .await?;
    figures.push(Figure::new(
        rate,
        (lookup.rate(), "req/s"),
        "ClientHello rate",
        (hello.rate(), "req/s"),
        "≥ 0.8 × baseline",
    ));
    let per_request =
        |stats: &load::Stats, cpu: Duration| cpu.as_secs_f64() * 1e6 / stats.count().max(1) as f64;
    figures.push(Figure::new(
        format!("{cpu} (user + system, all threads)"),
        (per_request(&lookup, lookup_cpu), "µs"),
        "per ClientHello",
        (per_request(&hello, hello_cpu), "µs"),
        "(reported)",
    ));
    Ok((hello, lookup))
}

/// The pair most figures compare: ClientHello (the baseline) and the lookup
/// of the secret `bench`.
fn lookup_vs_hello() -> [Op; 2] {
    [Op::Hello, Op::Lookup("bench".into())]
}

/// Two operations, each for `duration` in all, taking turns in short rounds
/// so that whatever else the machine does (and where the runtime happens to
/// place the connections) falls on both alike. Each with the server CPU
/// time it used.
async fn paired(
    load: &Load,
    server: &Server,
    ops: [Op; 2],
    pace: Pace,
    streams: usize,
    duration: Duration,
) -> Result<[(load::Stats, Duration); 2]> {
    let [a, b] = ops;
    paired_on(
        [(load, server, a), (load, server, b)],
        pace,
        streams,
        duration,
    )
    .await
}

/// [`paired`], each operation with its own load and server.
async fn paired_on(
    sides: [(&Load, &Server, Op); 2],
    pace: Pace,
    streams: usize,
    duration: Duration,
) -> Result<[(load::Stats, Duration); 2]> {
    const ROUNDS: u32 = 5;
    let mut results = [
        (load::Stats::empty(), Duration::ZERO),
        (load::Stats::empty(), Duration::ZERO),
    ];
    for _ in 0..ROUNDS {
        for ((load, server, op), (stats, cpu)) in sides.iter().cloned().zip(results.iter_mut()) {
            let before = server.cpu_time()?;
            let run = match pace {
                Pace::FlatOut => load.run(op, streams, duration / ROUNDS).await?,
                Pace::Rate(rate) => {
                    load.run_at_rate(op, streams, rate, duration / ROUNDS)
                        .await?
                }
            };
            stats.add(run);
            *cpu += server.cpu_time()? - before;
        }
    }
    Ok(results)
}

fn print_table(figures: &[Figure]) {
    println!("| figure | value | baseline | ratio | target |\n| --- | ---: | --- | ---: | --- |");
    for f in figures {
        println!(
            "| {} | {:.2} {} | {}: {:.2} {} | {:.2} | {} |",
            f.name,
            f.value,
            f.unit,
            f.baseline_name,
            f.baseline,
            f.baseline_unit,
            f.ratio,
            f.target
        );
    }
}
