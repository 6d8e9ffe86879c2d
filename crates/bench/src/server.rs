//! The server under test: the real binary on a temp data dir, started and
//! stopped by the SDK's [`TestServer`] as every test's server is; what is the
//! benchmark's own is measuring the process.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use latchkey::testing::TestServer;
use tokio::process::Command;

pub(crate) struct Server(TestServer);

impl Server {
    /// Starts `bin serve` on a new temp data dir and port 0.
    pub(crate) async fn start(bin: &Path, extra: &[&str]) -> Result<Server> {
        let builder = TestServer::builder()
            .binary(bin)
            .args(extra)
            .env("LATCHKEY_LOG", "warn");
        let server = tokio::task::spawn_blocking(move || builder.start()).await??;
        Ok(Server(server))
    }

    pub(crate) fn url(&self) -> &str {
        self.0.url()
    }

    pub(crate) fn data_dir(&self) -> &Path {
        self.0.data_dir()
    }

    /// The admin token's id and secret.
    pub(crate) fn admin_token(&self) -> (String, String) {
        (
            self.0.token_id().to_owned(),
            self.0.token_secret().to_owned(),
        )
    }

    /// Resident memory of the server process, in KiB, once it has been
    /// idle for a second (background work such as WAL checkpoints settled).
    pub(crate) async fn idle_rss_kib(&self) -> Result<u64> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.rss_kib()
    }

    /// CPU time the server process has used so far (user + system, every
    /// thread), in clock ticks of 10 ms: Linux reports USER_HZ = 100 to
    /// user space on every architecture.
    pub(crate) fn cpu_time(&self) -> Result<Duration> {
        let pid = self.0.pid();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) in ")".
        let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line; the list here
        // starts at field 3.
        let ticks = |i: usize| -> Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .context("utime/stime in /proc/PID/stat")
        };
        Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
    }

    /// A client of the SDK for the server, with its admin token.
    pub(crate) fn sdk_client(&self) -> Result<latchkey::Client> {
        Ok(self.0.client()?)
    }

    /// How many descriptors the server process has open.
    pub(crate) fn open_descriptors(&self) -> Result<usize> {
        let pid = self.0.pid();
        Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
    }

    /// Resident memory of the server process, in KiB.
    pub(crate) fn rss_kib(&self) -> Result<u64> {
        let pid = self.0.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS")
    }

    /// SIGTERM and wait: a benchmark whose server does not stop cleanly
    /// measured something broken.
    pub(crate) async fn stop(self) -> Result<()> {
        let status = self.0.stop_async().await?;
        anyhow::ensure!(status.success(), "server exited with {status}");
        Ok(())
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Median time from spawning `latchkey serve` on an existing data dir to a
/// 200 from `/readyz`, and (the baseline) of `latchkey --version` to exit.
pub(crate) async fn time_to_ready(
    bin: &Path,
    dir: &Path,
    runs: usize,
) -> Result<(Duration, Duration)> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let mut ready = Vec::new();
    let mut spawned = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            .env("LATCHKEY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        loop {
            if readyz(port).await {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the server did not become ready within 30 s");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        ready.push(started.elapsed());
        let pid = child.id().context("exited")?;
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        child.wait().await?;

        let started = Instant::now();
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .await?;
        spawned.push(started.elapsed());
    }
    Ok((median(ready), median(spawned)))
}

async fn readyz(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request = "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.is_ok() && &head[9..12] == b"200"
}

/// The name of this run's database on the PostgreSQL server.
fn bench_database() -> String {
    format!("latchkey_bench_{}", std::process::id())
}

/// Drops this run's database ([`fresh_postgres_database`]) once the server
/// that used it has stopped, through `url` (the server's URL as given).
pub(crate) async fn drop_postgres_database(url: &str) -> Result<()> {
    let status = Command::new("psql")
        .args([
            url,
            "-q",
            "-c",
            &format!("DROP DATABASE IF EXISTS {}", bench_database()),
        ])
        .status()
        .await
        .context("psql (Debian's postgresql-client) is needed for the PostgreSQL figures")?;
    anyhow::ensure!(
        status.success(),
        "psql could not drop the benchmark database"
    );
    Ok(())
}

/// A new, empty database on the PostgreSQL server of `url` (via `psql`), and its URL.
pub(crate) async fn fresh_postgres_database(url: &str) -> Result<String> {
    let name = bench_database();
    let status = Command::new("psql")
        .args([
            url,
            "-q",
            "-c",
            &format!("DROP DATABASE IF EXISTS {name}"),
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .status()
        .await
        .context("psql (Debian's postgresql-client) is needed for the PostgreSQL figures")?;
    anyhow::ensure!(
        status.success(),
        "psql could not create the benchmark database"
    );
    // The same server and settings (`?sslmode=...`), another database.
    let (address, query) = url
        .split_once('?')
        .map_or((url, None), |(a, q)| (a, Some(q)));
    let base = address.rsplit_once('/').map_or(address, |(base, _)| base);
    Ok(match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    })
}

/// Median wall time of `latchkey run --secret bench -- true` against
/// `server` (named secret resolved, last_used_at recorded, child started and
/// waited for), and of `true` alone.
/// Medians of starting `true` through `latchkey run`, alone, and through
/// `dotenvx` when it is installed.
pub(crate) struct Starts {
    pub(crate) latchkey: Duration,
    pub(crate) bare: Duration,
    pub(crate) dotenvx: Option<Duration>,
}

/// Times `runs` starts of `true` each way, interleaved so that a busy moment
/// of the machine falls on all of them alike.
pub(crate) async fn time_run(bin: &Path, server: &Server, runs: usize) -> Result<Starts> {
    let truth = which("true").context("`true` is not on PATH")?;
    // The same ten variables the secret `bench` holds, as a .env file.
    let dotenvx = match which("dotenvx") {
        Some(dotenvx) => {
            let env_file = server.data_dir().join("bench.env");
            let lines: String = (0..10)
                .map(|i| format!("KEY_{i}=value-{i}-0123456789abcdef\n"))
                .collect();
            std::fs::write(&env_file, lines)?;
            Some((dotenvx, env_file))
        }
        None => None,
    };
    let (mut with_secret, mut bare, mut with_dotenvx) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut run = cli(bin, server, &["run", "--secret", "bench", "--"]);
        run.arg(&truth);
        with_secret.push(timed(run).await?);
        bare.push(timed(Command::new(&truth)).await?);
        if let Some((dotenvx, env_file)) = &dotenvx {
            let mut run = Command::new(dotenvx);
            run.args(["run", "-q", "-f"])
                .arg(env_file)
                .arg("--")
                .arg(&truth);
            with_dotenvx.push(timed(run).await?);
        }
    }
    Ok(Starts {
        latchkey: median(with_secret),
        bare: median(bare),
        dotenvx: dotenvx.map(|_| median(with_dotenvx)),
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// `bin ARGS` as a client of `server`, with its admin token.
fn cli(bin: &Path, server: &Server, args: &[&str]) -> Command {
    let (id, secret) = server.admin_token();
    let mut command = Command::new(bin);
    command
        .args(args)
        .env("LATCHKEY_SERVER_URL", server.url())
        .env("LATCHKEY_TOKEN_ID", id)
        .env("LATCHKEY_TOKEN_SECRET", secret);
    command
}

/// The wall time of `command` to its exit, which must be a success.
async fn timed(mut command: Command) -> Result<Duration> {
    let started = Instant::now();
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .await?;
    anyhow::ensure!(status.success(), "{command:?} failed: {status}");
    Ok(started.elapsed())
}

/// The wall time of `latchkey key rotate` against `server` (whose key is
/// its data dir's `master.key`): a new key made, every data key rewrapped
/// in batches, the key replaced.
pub(crate) async fn time_key_rotate(bin: &Path, server: &Server) -> Result<Duration> {
    timed(cli(bin, server, &["key", "rotate", "--quiet"])).await
}

/// Medians of `runs` runs of two client commands against `server`,
/// interleaved so that a busy moment falls on both alike.
pub(crate) async fn time_cli_pair(
    bin: &Path,
    server: &Server,
    [first, second]: [&[&str]; 2],
    runs: usize,
) -> Result<[Duration; 2]> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(timed(cli(bin, server, first)).await?);
        b.push(timed(cli(bin, server, second)).await?);
    }
    Ok([median(a), median(b)])
}

/// PostgreSQL's own rate of independent one-row INSERT transactions from
/// `clients` clients for `duration` (pgbench, against the database at
/// `db_url`): what the database commits when nothing is serialised.
pub(crate) async fn pgbench_inserts(
    db_url: &str,
    clients: usize,
    duration: Duration,
) -> Result<f64> {
    let psql = Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", db_url, "-c"])
        .arg(
            "CREATE TABLE IF NOT EXISTS bench_baseline (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)",
        )
        .stdout(Stdio::null())
        .status()
        .await
        .context("psql (Debian's postgresql-client) is needed for the PostgreSQL figures")?;
    anyhow::ensure!(psql.success(), "psql could not create the baseline table");
    let script = tempfile_path("latchkey-bench-pgbench.sql");
    std::fs::write(
        &script,
        "INSERT INTO bench_baseline (v) VALUES ('value-0123456789abcdef');\n",
    )?;
    let seconds = duration.as_secs().max(1).to_string();
    let clients = clients.to_string();
    let output = Command::new("pgbench")
        .args(["-n", "-c", &clients, "-j", "2", "-T", &seconds, "-f"])
        .arg(&script)
        .arg(db_url)
        .output()
        .await
        .context(
            "pgbench is needed for the PostgreSQL baseline (it ships with PostgreSQL: \
             Debian's postgresql-contrib or postgresql-client)",
        )?;
    std::fs::remove_file(&script).ok();
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .with_context(|| format!("no tps in pgbench's output: {stdout}"))
}

/// A path in the temp dir unique to this process.
fn tempfile_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}-{name}", std::process::id()))
}

/// CPU time the whole machine has spent busy so far, over all its CPUs
/// (user, nice, system, irq and softirq time; not idle, I/O wait or time
/// stolen by the host), from `/proc/stat`, in USER_HZ ticks of 10 ms. It
/// counts the server, the database and the load alike, so a figure per
/// request is what the request costs the machine whatever else the host
/// runs: steadier than a rate on a shared host.
pub(crate) fn machine_busy() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .context("no cpu line in /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().context("a number in /proc/stat's cpu line"))
        .collect::<Result<_>>()?;
    // user, nice, system, idle, iowait, irq, softirq, steal, ...
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| {
            ticks
                .get(i)
                .copied()
                .context("/proc/stat's cpu line is short")
        })
        .sum::<Result<u64>>()?;
    Ok(Duration::from_millis(busy * 10))
}
