//! The real `latchkey` binary, the one Cargo built for this package, run
//! through the SDK's [`TestServer`] like every other layer's tests; what is
//! the CLI tests' own is a gRPC client and a raw HTTP GET.

use std::{
    io::Write,
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use latchkey::testing::{Builder, TestServer};
use latchkey_proto::api::modal_client_client::ModalClientClient;
use serde_json::Value;
use tonic::{
    metadata::MetadataValue, service::interceptor::InterceptedService, transport::Channel, Request,
    Status,
};

pub(crate) fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_latchkey"))
}

/// A running server. Killed on drop if still running.
pub(crate) struct Server(TestServer);

impl Deref for Server {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.0
    }
}

impl DerefMut for Server {
    fn deref_mut(&mut self) -> &mut TestServer {
        &mut self.0
    }
}

pub(crate) type Client = ModalClientClient<InterceptedService<Channel, Auth>>;

#[derive(Clone)]
pub(crate) struct Auth {
    id: String,
    secret: String,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let md = request.metadata_mut();
        if !self.id.is_empty() {
            md.insert(
                "x-modal-token-id",
                MetadataValue::try_from(&self.id).unwrap(),
            );
        }
        if !self.secret.is_empty() {
            md.insert(
                "x-modal-token-secret",
                MetadataValue::try_from(&self.secret).unwrap(),
            );
        }
        Ok(request)
    }
}

/// This package's binary, logging at `info` (the tests read its log).
fn builder() -> Builder {
    TestServer::builder()
        .binary(binary())
        .env("LATCHKEY_LOG", "info")
}

impl Server {
    /// A server on a new temp data dir.
    pub(crate) fn start() -> Server {
        builder()
            .start()
            .map(Server)
            .unwrap_or_else(|e| panic!("server did not start:\n{e}"))
    }

    /// A server on a new temp data dir, started with these flags.
    pub(crate) fn start_with(args: &[&str]) -> Server {
        builder()
            .args(args)
            .start()
            .map(Server)
            .unwrap_or_else(|e| panic!("server did not start:\n{e}"))
    }

    /// Starts a server on `dir`; `Err` carries its output when it exits instead.
    pub(crate) fn try_start(
        dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Server, String> {
        envs.iter()
            .fold(builder().data_dir(dir).args(args), |b, (k, v)| b.env(k, v))
            .start()
            .map(Server)
            .map_err(|e| e.to_string())
    }

    /// The admin token's id and secret.
    pub(crate) fn admin_token(&self) -> (String, String) {
        (self.token_id().to_owned(), self.token_secret().to_owned())
    }

    /// A gRPC client with the admin token.
    pub(crate) async fn client(&self) -> Client {
        self.client_with(self.token_id(), self.token_secret()).await
    }

    /// A gRPC client sending these credentials.
    pub(crate) async fn client_with(&self, id: &str, secret: &str) -> Client {
        let channel = Channel::from_shared(self.url().to_owned())
            .unwrap()
            .connect()
            .await
            .expect("connect");
        ModalClientClient::with_interceptor(
            channel,
            Auth {
                id: id.to_owned(),
                secret: secret.to_owned(),
            },
        )
    }

    pub(crate) async fn stop_async(self) -> ExitStatus {
        self.0.stop_async().await.unwrap()
    }

    pub(crate) fn stop(self) -> ExitStatus {
        self.0.stop().unwrap()
    }
}

/// A plain HTTP/1.1 GET; returns the status code and the body.
pub(crate) fn http_get(url: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// What a run of `latchkey` gave.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Out {
    #[track_caller]
    pub(crate) fn ok(self) -> Out {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    #[track_caller]
    pub(crate) fn fails(self, code: i32, needle: &str) -> Out {
        assert_eq!(self.code, code, "expected exit {code}: {self:#?}");
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self:#?}"
        );
        self
    }

    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// A `latchkey` to run with a clean environment: PATH, a temp HOME, a temp
/// profile file, and the variables given.
pub(crate) struct Cli {
    pub(crate) home: tempfile::TempDir,
    pub(crate) vars: Vec<(String, String)>,
}

impl Cli {
    /// No token configured (only HOME and LATCHKEY_CONFIG_PATH).
    pub(crate) fn bare() -> Cli {
        let home = tempfile::tempdir().unwrap();
        let config = home.path().join("latchkey.toml").display().to_string();
        Cli {
            home,
            vars: vec![("LATCHKEY_CONFIG_PATH".into(), config)],
        }
    }

    /// The server's admin token in LATCHKEY_* variables.
    pub(crate) fn admin(server: &Server) -> Cli {
        let (id, secret) = server.admin_token();
        Cli::bare()
            .var("LATCHKEY_SERVER_URL", server.url())
            .var("LATCHKEY_TOKEN_ID", &id)
            .var("LATCHKEY_TOKEN_SECRET", &secret)
    }

    pub(crate) fn var(mut self, key: &str, value: &str) -> Cli {
        self.vars.push((key.into(), value.into()));
        self
    }

    pub(crate) fn config_path(&self) -> PathBuf {
        self.home.path().join("latchkey.toml")
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Out {
        self.run_stdin(args, "")
    }

    pub(crate) fn run_stdin(&self, args: &[&str], stdin: &str) -> Out {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        // A command that does not need its stdin may exit before reading it.
        match input.write_all(stdin.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.unwrap(),
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }
}
