//! Modal functions (`latchkey serve --functions`): a `.remote()` round trip
//! on a warm container beside an empty RPC of the same client, and the first
//! input of a new app (a container's cold start) beside `python -c "import
//! modal"`, the floor of any container start. Driven by the real `modal`
//! client in `--function-python`, which is also the containers' interpreter.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use tokio::process::Command;

use crate::{server::Server, Figure};

/// The client side: runs one app, times the first call, then warm calls and
/// empty RPCs alternately; prints JSON.
const DRIVER: &str = r#"
import json, sys, time, statistics
import modal
from google.protobuf import empty_pb2
from modal._utils.async_utils import synchronizer
from modal.client import _Client

app = modal.App("latchkey-bench")

@app.function()
def f(x):
    return x

def hello():
    async def call():
        c = await _Client.from_env()
        await c._stub.ClientHello(empty_pb2.Empty())
    synchronizer.create_blocking(call, "hello")()

if __name__ == "__main__":
    n = int(sys.argv[1])
    with app.run():
        t = time.perf_counter()
        f.remote(0)
        cold = time.perf_counter() - t
        warm, empty = [], []
        for i in range(n):
            t = time.perf_counter()
            f.remote(i)
            warm.append(time.perf_counter() - t)
            t = time.perf_counter()
            hello()
            empty.append(time.perf_counter() - t)
    print(json.dumps({
        "cold_ms": cold * 1e3,
        "warm_ms": statistics.median(warm) * 1e3,
        "hello_ms": statistics.median(empty) * 1e3,
    }))
"#;

#[derive(serde::Deserialize)]
struct Timings {
    cold_ms: f64,
    warm_ms: f64,
    hello_ms: f64,
}

/// The function figures, on a server of their own.
pub(crate) async fn figures(bin: &Path, python: &Path, quick: bool) -> Result<Vec<Figure>> {
    let python_arg = python.to_string_lossy().into_owned();
    let server = Server::start(bin, &["--functions", "--function-python", &python_arg]).await?;
    let dir = server
        .data_dir()
        .parent()
        .unwrap_or(Path::new("/tmp"))
        .to_owned();
    let script = dir.join(format!("latchkey_bench_fn_{}.py", std::process::id()));
    std::fs::write(&script, DRIVER).context("cannot write the function driver")?;
    let (token_id, token_secret) = server.admin_token();
    let calls = if quick { 10 } else { 100 };
    eprintln!("function round trips ({calls} warm calls)");
    let output = Command::new(python)
        .arg(&script)
        .arg(calls.to_string())
        .env("MODAL_SERVER_URL", server.url())
        .env("MODAL_TOKEN_ID", token_id)
        .env("MODAL_TOKEN_SECRET", token_secret)
        .env("MODAL_CONFIG_PATH", dir.join("bench-modal.toml"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run the function driver")?;
    let _ = std::fs::remove_file(&script);
    server.stop().await?;
    if !output.status.success() {
        bail!(
            "the function driver failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let timings: Timings =
        serde_json::from_str(line).with_context(|| format!("the driver printed {line:?}"))?;
    let import = import_modal(python).await?;
    Ok(vec![
        Figure::new(
            ".remote() round trip, warm container (median)",
            (timings.warm_ms, "ms"),
            "empty RPC (ClientHello) of the same client",
            (timings.hello_ms, "ms"),
            "(reported)",
        ),
        Figure::new(
            "first .remote() of a new app (cold container)",
            (timings.cold_ms, "ms"),
            "python -c \"import modal\"",
            (import.as_secs_f64() * 1e3, "ms"),
            "(reported)",
        ),
    ])
}

/// Wall time of `python -c "import modal"` (the median of three).
async fn import_modal(python: &Path) -> Result<Duration> {
    let mut times = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let status = Command::new(python)
            .args(["-c", "import modal"])
            .stdin(Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(status.success(), "{} cannot import modal", python.display());
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[1])
}
