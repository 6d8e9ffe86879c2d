//! The real `latchkey` binary, the one Cargo built for this package, run
//! through the SDK's [`TestServer`] like every other layer's tests; what is
//! the CLI tests' own is a gRPC client and a raw HTTP GET.

use std::{
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
    process::ExitStatus,
};

use latchkey::testing::{Builder, TestServer};
use latchkey_proto::api::modal_client_client::ModalClientClient;
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
