//! A real latchkey server for tests (feature `testing`).
//!
//! [`start_server`] runs the `latchkey` binary on a free port of 127.0.0.1
//! with a fresh data dir, waits until it is ready, and stops it when the
//! returned [`TestServer`] is dropped. The binary is `LATCHKEY_BIN`, else the
//! `latchkey` next to the running test in Cargo's target directory, else
//! `target/debug/latchkey` of this workspace: build it first with
//! `cargo build -p latchkey-cli`.
//!
//! ```no_run
//! # fn main() -> latchkey::Result<()> {
//! let server = latchkey::testing::start_server()?;
//! let client = server.client()?;
//! # Ok(()) }
//! ```

use std::{
    io::Read,
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use latchkey_core::admin_token::{AdminTokenError, AdminTokenFile};

use crate::{Client, Config, Error, Result};

/// How long a server may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `latchkey serve`; stopped (and its data dir removed) on drop.
/// Its `Debug` shows the URL and token id, never the token's secret.
pub struct TestServer {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    token_id: String,
    token_secret: String,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("url", &self.url)
            .field("data_dir", &self.dir.path())
            .field("token_id", &self.token_id)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// The server's URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's data dir.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The admin token's configuration.
    pub fn config(&self) -> Config {
        Config::new(&self.url, &self.token_id, &self.token_secret)
    }

    /// A client with the admin token.
    pub fn client(&self) -> Result<Client> {
        Client::new(self.config())
    }

    /// Sets `LATCHKEY_SERVER_URL`, `LATCHKEY_TOKEN_ID` and
    /// `LATCHKEY_TOKEN_SECRET` in this process's environment, clears
    /// `LATCHKEY_ENVIRONMENT` and `LATCHKEY_PROFILE`, and points
    /// `LATCHKEY_CONFIG_PATH` at an empty place (so that the user's own
    /// profile file plays no part), so that [`Client::from_env`] and the
    /// shared client of Modal-style calls use this server. For
    /// single-threaded programs such as doc tests: the environment is
    /// process-wide.
    pub fn export_env(&self) {
        std::env::set_var("LATCHKEY_SERVER_URL", &self.url);
        std::env::set_var("LATCHKEY_TOKEN_ID", &self.token_id);
        std::env::set_var("LATCHKEY_TOKEN_SECRET", &self.token_secret);
        std::env::set_var(
            "LATCHKEY_CONFIG_PATH",
            self.dir.path().join("no-profiles.toml"),
        );
        std::env::remove_var("LATCHKEY_ENVIRONMENT");
        std::env::remove_var("LATCHKEY_PROFILE");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `latchkey` binary to run.
pub fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("LATCHKEY_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let name = format!("latchkey{}", std::env::consts::EXE_SUFFIX);
    // A test binary lives in target/<profile>/deps/.
    let beside_test = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .skip(1)
            .take(3)
            .map(|dir| dir.join(&name))
            .find(|candidate| candidate.is_file())
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    beside_test
        .or_else(|| Some(target.join("debug").join(&name)).filter(|p| p.is_file()))
        .ok_or_else(|| {
            Error::config(format!(
                "the latchkey binary is not built ({}); run `cargo build -p latchkey-cli` or set LATCHKEY_BIN",
                target.join("debug").join(&name).display()
            ))
        })
}

/// Starts a server and waits until it is ready.
pub fn start_server() -> Result<TestServer> {
    let bin = binary()?;
    let mut last = None;
    // A free port can be taken between the probe and the server's bind.
    for _ in 0..3 {
        match start_once(&bin) {
            Ok(server) => return Ok(server),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::config("cannot start the server")))
}

/// Starts a server and [exports](TestServer::export_env) its admin token:
/// what the crate's examples do in a hidden first line.
pub fn start_server_for_examples() -> Result<TestServer> {
    let server = start_server()?;
    server.export_env();
    Ok(server)
}

fn start_once(bin: &Path) -> Result<TestServer> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::io("127.0.0.1:0", e))?
        .port();
    let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let data = dir.path().join("data");
    let log = std::fs::File::create(dir.path().join("server.log"))
        .map_err(|e| Error::io(dir.path().join("server.log"), e))?;
    let mut command = Command::new(bin);
    // The server reads LATCHKEY_DATABASE_URL, LATCHKEY_MASTER_KEY...: a test
    // server must not pick up the settings of the developer's own.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LATCHKEY_") {
            command.env_remove(name);
        }
    }
    let child = command
        .args(["serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| Error::io(bin, e))?;
    let url = format!("http://127.0.0.1:{port}");
    let mut server = TestServer {
        child,
        dir,
        url,
        token_id: String::new(),
        token_secret: String::new(),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            let mut log = String::new();
            let _ = std::fs::File::open(server.dir.path().join("server.log"))
                .and_then(|mut f| f.read_to_string(&mut log));
            return Err(Error::config(format!(
                "latchkey serve exited with {status}: {}",
                log.trim()
            )));
        }
        if ready(port) {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::config(format!(
                "latchkey serve did not become ready on port {port} within {START_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let token_file = data.join(latchkey_core::paths::ADMIN_TOKEN_FILE);
    let file = AdminTokenFile::read(&token_file).map_err(|e| match e {
        AdminTokenError::Read(e) => Error::io(&token_file, e),
        e => Error::config(format!("{}: {e}", token_file.display())),
    })?;
    server.token_id = file.token_id.clone();
    server.token_secret = file.token_secret().to_owned();
    Ok(server)
}

/// Whether `/readyz` answers 200 (a plain HTTP/1.0 request, no runtime).
fn ready(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}
