//! Starts the real `latchkey` binary on a free port with a temp data dir.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use latchkey_core::{admin_token::AdminTokenFile, paths};
use latchkey_proto::api::modal_client_client::ModalClientClient;
use tonic::{
    metadata::MetadataValue, service::interceptor::InterceptedService, transport::Channel, Request,
    Status,
};

pub(crate) fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_latchkey"))
}

/// A running server. Killed on drop if still running.
pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) url: String,
    pub(crate) data_dir: PathBuf,
    log: Arc<Mutex<String>>,
    _tmp: Option<tempfile::TempDir>,
}

/// The token id and secret of `DIR/admin-token`.
pub(crate) fn admin_token(dir: &Path) -> (String, String) {
    let file = AdminTokenFile::read(&dir.join(paths::ADMIN_TOKEN_FILE))
        .unwrap_or_else(|e| panic!("cannot read the admin-token in {}: {e}", dir.display()));
    (file.token_id.clone(), file.token_secret().to_owned())
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

impl Server {
    /// A server on a new temp data dir.
    pub(crate) fn start() -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut server = Server::try_start(&dir, &[], &[])
            .unwrap_or_else(|log| panic!("server did not start:\n{log}"));
        server._tmp = Some(tmp);
        server
    }

    /// Starts a server on `dir`; `Err` carries its output when it exits instead.
    pub(crate) fn try_start(
        dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Server, String> {
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(args)
            .env_remove("LATCHKEY_MASTER_KEY")
            .env("LATCHKEY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn latchkey");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.strip_prefix("latchkey serving on ") {
                        let url = rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                        let _ = tx.send(url);
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => Ok(Server {
                child: Some(child),
                url,
                data_dir: dir.to_path_buf(),
                log,
                _tmp: None,
            }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                std::thread::sleep(Duration::from_millis(100));
                Err(format!("{status}\n{}", log.lock().unwrap()))
            }
        }
    }

    /// Takes ownership of the temp data dir, so that it outlives the server.
    pub(crate) fn keep_dir(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().unwrap().id()).unwrap()
    }

    /// A gRPC client with the admin token.
    pub(crate) async fn client(&self) -> Client {
        let (id, secret) = admin_token(&self.data_dir);
        self.client_with(&id, &secret).await
    }

    /// A gRPC client sending these credentials.
    pub(crate) async fn client_with(&self, id: &str, secret: &str) -> Client {
        let channel = Channel::from_shared(self.url.clone())
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

    /// [`stop`](Self::stop) from async code: the runtime keeps serving the
    /// clients' connections (which must see the server's GOAWAY) meanwhile.
    pub(crate) async fn stop_async(self) -> ExitStatus {
        tokio::task::spawn_blocking(move || self.stop())
            .await
            .unwrap()
    }

    /// Sends SIGTERM and waits for the exit.
    pub(crate) fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        // It may already be stopping: a failed kill is fine, the wait tells.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        );
        child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
