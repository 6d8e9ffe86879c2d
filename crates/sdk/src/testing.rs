//! A real latchkey server for tests (feature `testing`).
//!
//! Every layer that runs the real binary starts it here: this crate's doc
//! tests and examples, the CLI's integration tests, the dashboard's browser
//! test and the benchmark. How a test server is isolated from the
//! developer's own settings, how its readiness is known and how it is
//! stopped is then decided once, and a fix reaches all of them.
//!
//! [`start_server`] runs `latchkey serve` on a port the kernel picks, with a
//! fresh data dir, returns once it serves, and kills it when the returned
//! [`TestServer`] is dropped; [`TestServer::builder`] does the same with
//! another binary, data dir, flags or variables. The binary is
//! `LATCHKEY_BIN`, else the `latchkey` next to the running test in Cargo's
//! target directory, else `target/debug/latchkey` of this workspace: build it
//! first with `cargo build -p latchkey-cli`.
//!
//! ```no_run
//! # fn main() -> latchkey::Result<()> {
//! let server = latchkey::testing::start_server()?;
//! let client = server.client()?;
//! # Ok(()) }
//! ```

use std::{
    ffi::OsString,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex, PoisonError},
    thread::JoinHandle,
    time::Duration,
};

use latchkey_core::{
    admin_token::{AdminTokenError, AdminTokenFile},
    paths,
};

use crate::{Client, Config, Error, Result};

/// How long a server may take to serve.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What `latchkey serve` prints once its store is open, bootstrapped (the
/// admin-token file written) and its port bound: from then on requests are
/// answered (they wait in the listen backlog for the accept loop), so the
/// line says as much as a `/readyz` poll would, and it names the port that
/// `--listen 127.0.0.1:0` got, so that no port has to be guessed free.
const SERVING: &str = "latchkey serving on ";

/// A running `latchkey serve`; killed on drop (and its data dir removed,
/// unless the caller gave it or [kept](Self::keep_dir) it).
/// Its `Debug` shows the URL and token id, never the token's secret.
pub struct TestServer {
    /// `None` only while [`stop`](Self::stop) consumes the server.
    child: Option<Child>,
    binary: PathBuf,
    url: String,
    data_dir: PathBuf,
    token: AdminTokenFile,
    /// The server's stderr so far; kept in memory rather than in a file so
    /// that the data dir holds only what the server wrote.
    log: Arc<Mutex<String>>,
    tmp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("url", &self.url)
            .field("data_dir", &self.data_dir)
            .field("token_id", &self.token.token_id)
            .finish_non_exhaustive()
    }
}

/// How to start a [`TestServer`]: by default [`binary`], a new temp data
/// dir, no extra flags, and no `LATCHKEY_*` variable of this process.
#[derive(Clone, Default)]
#[must_use]
pub struct Builder {
    binary: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

/// Names the variables but never shows their values: one may be a master key.
impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("binary", &self.binary)
            .field("data_dir", &self.data_dir)
            .field("args", &self.args)
            .field(
                "envs",
                &self.envs.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Builder {
    /// Runs this binary instead of [`binary`]'s choice (a test's own build
    /// of it, or a benchmark's release build).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Serves this data dir, which the caller owns and which outlives the
    /// server: for restarts, and for what a server leaves behind.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Adds flags after `serve --listen 127.0.0.1:0 --data-dir DIR`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Serves over TLS with this certificate and key (see [`TestCa`]).
    pub fn tls(self, cert: &TestCert) -> Self {
        self.args([
            OsString::from("--tls-cert"),
            cert.cert.clone().into_os_string(),
            OsString::from("--tls-key"),
            cert.key.clone().into_os_string(),
        ])
    }

    /// Sets a variable in the server's environment (`LATCHKEY_LOG`, a
    /// master key...).
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((name.into(), value.into()));
        self
    }

    /// Starts the server and waits until it serves.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] with everything the server printed when it exits
    /// or does not serve within 30 s, or when it left no usable admin-token
    /// file (a store bootstrapped from another data dir); [`Error::Io`] when
    /// it cannot be spawned.
    pub fn start(self) -> Result<TestServer> {
        let binary = match self.binary {
            Some(path) => path,
            None => binary()?,
        };
        let (tmp, data_dir) = match self.data_dir {
            Some(dir) => (None, dir),
            None => {
                let tmp = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
                // A subdirectory, so that the server creates it (with its
                // own mode) as on a first start.
                let dir = tmp.path().join("data");
                (Some(tmp), dir)
            }
        };
        let mut command = Command::new(&binary);
        // The server reads LATCHKEY_DATABASE_URL, LATCHKEY_MASTER_KEY...: a test
        // server must not pick up the settings of the developer's own.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LATCHKEY_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(&self.args)
            .envs(self.envs)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(&binary, e))?;
        let Some(stderr) = child.stderr.take() else {
            unreachable!("stderr is piped")
        };
        let (log, serving, reader) = follow(stderr);
        let url = match serving.recv_timeout(START_TIMEOUT) {
            Ok(url) => url,
            Err(why) => {
                let status =
                    kill(&mut child).map_or_else(|| "no status".to_owned(), |s| s.to_string());
                // The child is gone, so its stderr is closed: the log is whole.
                let _ = reader.join();
                let why = match why {
                    mpsc::RecvTimeoutError::Timeout => {
                        format!("did not serve within {START_TIMEOUT:?}")
                    }
                    mpsc::RecvTimeoutError::Disconnected => "exited".to_owned(),
                };
                let log = log.lock().unwrap_or_else(PoisonError::into_inner);
                return Err(Error::config(format!(
                    "latchkey serve {why} ({status}):\n{log}"
                )));
            }
        };
        let token_file = data_dir.join(paths::ADMIN_TOKEN_FILE);
        let token = AdminTokenFile::read(&token_file).map_err(|e| {
            let _ = kill(&mut child);
            match e {
                AdminTokenError::Read(e) => Error::io(&token_file, e),
                e => Error::config(format!("{}: {e}", token_file.display())),
            }
        })?;
        Ok(TestServer {
            child: Some(child),
            binary,
            url,
            data_dir,
            token,
            log,
            tmp,
        })
    }
}

/// Reads the server's stderr until it closes, into a log, sending the URL
/// of its "serving" line; the pipe is drained for the server's whole life,
/// so that it never blocks on a full pipe.
fn follow(stderr: ChildStderr) -> (Arc<Mutex<String>>, mpsc::Receiver<String>, JoinHandle<()>) {
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr)
                .lines()
                .map_while(std::io::Result::ok)
            {
                if let Some(rest) = line.strip_prefix(SERVING) {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(url.to_owned());
                }
                let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    (log, rx, reader)
}

/// Kills and reaps the process; its exit status when it could be waited for.
fn kill(child: &mut Child) -> Option<ExitStatus> {
    let _ = child.kill();
    child.wait().ok()
}

impl TestServer {
    /// How to start one other than [`start_server`]'s.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The server's URL (`http://127.0.0.1:PORT`, `https://` over TLS).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The admin token's id, from the data dir's `admin-token`.
    pub fn token_id(&self) -> &str {
        &self.token.token_id
    }

    /// The admin token's secret, from the data dir's `admin-token`.
    pub fn token_secret(&self) -> &str {
        self.token.token_secret()
    }

    /// The admin token's configuration.
    pub fn config(&self) -> Config {
        Config::new(&self.url, self.token_id(), self.token_secret())
    }

    /// A client with the admin token.
    pub fn client(&self) -> Result<Client> {
        Client::new(self.config())
    }

    /// What the server printed on stderr so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The server's process id, to signal it.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Takes the temp dir that holds the data dir, so that it outlives the
    /// server (to start another on it); `None` for a data dir the caller gave.
    pub fn keep_dir(&mut self) -> Option<tempfile::TempDir> {
        self.tmp.take()
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
        std::env::set_var("LATCHKEY_TOKEN_ID", self.token_id());
        std::env::set_var("LATCHKEY_TOKEN_SECRET", self.token_secret());
        std::env::set_var(
            "LATCHKEY_CONFIG_PATH",
            self.data_dir.join("no-profiles.toml"),
        );
        std::env::remove_var("LATCHKEY_ENVIRONMENT");
        std::env::remove_var("LATCHKEY_PROFILE");
    }

    /// Stops the server as an operator would (SIGTERM, so that it finishes
    /// in-flight requests and closes its store) and waits for its exit.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be waited for.
    pub fn stop(mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            unreachable!("a server has its process until stopped")
        };
        // It may already be stopping: a failed kill is fine, the wait tells.
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        child.wait().map_err(|e| Error::io(&self.binary, e))
    }

    /// [`stop`](Self::stop) from async code: the runtime keeps serving the
    /// clients' connections (which must see the server's GOAWAY) meanwhile.
    ///
    /// # Errors
    ///
    /// As [`stop`](Self::stop).
    pub async fn stop_async(self) -> Result<ExitStatus> {
        match tokio::task::spawn_blocking(move || self.stop()).await {
            Ok(status) => status,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = kill(child);
        }
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

/// A certificate authority for servers over TLS in tests: its certificate
/// (`ca.pem`) and the certificates it [issues](Self::issue) are PEM files
/// in a temp dir that lives as long as it does.
pub struct TestCa {
    dir: tempfile::TempDir,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// A server certificate and its key, as PEM files: what `latchkey serve
/// --tls-cert --tls-key` reads.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// The certificate, DER: what a server that serves it shows.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A new CA (ECDSA P-256), written to `ca.pem` in a new temp dir.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the files cannot be written.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let key = rcgen::KeyPair::generate().map_err(cert_error)?;
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "latchkey test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).map_err(cert_error)?;
        let ca = Self { dir, cert, key };
        write(&ca.ca_cert(), ca.cert.pem().as_bytes())?;
        Ok(ca)
    }

    /// The CA's certificate (PEM): what `LATCHKEY_CA_CERT` names.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a server certificate for `localhost` and `127.0.0.1`, written
    /// to `NAME.pem` and `NAME.key` (replacing earlier ones of that name).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the files cannot be written.
    pub fn issue(&self, name: &str) -> Result<TestCert> {
        let key = rcgen::KeyPair::generate().map_err(cert_error)?;
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(cert_error)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("latchkey test {name}"));
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(cert_error)?;
        let issued = TestCert {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}.key")),
            der: cert.der().to_vec(),
        };
        write(&issued.cert, cert.pem().as_bytes())?;
        write(&issued.key, key.serialize_pem().as_bytes())?;
        Ok(issued)
    }
}

#[allow(clippy::needless_pass_by_value)] // the shape map_err wants
fn cert_error(e: rcgen::Error) -> Error {
    Error::config(format!("cannot make a test certificate: {e}"))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Starts a server and waits until it serves.
///
/// # Errors
///
/// As [`Builder::start`].
pub fn start_server() -> Result<TestServer> {
    TestServer::builder().start()
}

/// Starts a server and [exports](TestServer::export_env) its admin token:
/// what the crate's examples do in a hidden first line.
///
/// # Errors
///
/// As [`Builder::start`].
pub fn start_server_for_examples() -> Result<TestServer> {
    let server = start_server()?;
    server.export_env();
    Ok(server)
}
