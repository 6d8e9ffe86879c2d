//! What clients can make the server hold (issue 16, findings 2 and 3):
//! memory before authentication, message sizes, the bytes of bodies read at
//! once, and connections that are idle, slow or too many. Timed limits are
//! configured short; the bounds the tests wait for only tell "closed" from
//! "never closed". Limits are set through the environment (`LATCHKEY_*`,
//! the flags' variables), which a binary without them ignores: run against
//! one, these tests fail on its behaviour, not on its command line.

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    time::Duration,
};

use latchkey_proto::api::{self, ObjectCreationType};
use tonic::Code;

use crate::harness::{Client, Server};

const MIB: usize = 1024 * 1024;

/// How long a test waits for the server to close a connection: far longer
/// than the configured timeouts, so it only catches "never".
const CLOSE_BOUND: Duration = Duration::from_secs(20);

/// A server on a new temp dir with `env` set; the dir lives as long as it.
fn start_with(env: &[(&str, &str)]) -> (tempfile::TempDir, Server) {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::try_start(&tmp.path().join("data"), &[], env).unwrap();
    (tmp, server)
}

fn addr(server: &Server) -> String {
    server.url().trim_start_matches("http://").to_owned()
}

/// The highest resident memory of process `pid` so far (VmHWM), in bytes.
fn peak_rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    let kib: usize = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// A secret creation whose one value is `bytes` long.
fn big_request(name: &str, bytes: usize) -> api::SecretGetOrCreateRequest {
    api::SecretGetOrCreateRequest {
        deployment_name: name.to_owned(),
        object_creation_type: ObjectCreationType::CreateIfMissing as i32,
        env_dict: [("BIG".to_owned(), "x".repeat(bytes))].into(),
        ..Default::default()
    }
}

/// Sends `count` requests of `bytes` each at once; their status codes.
async fn send_concurrently(client: &Client, count: usize, bytes: usize) -> Vec<(Code, String)> {
    let calls = (0..count).map(|i| {
        let mut client = client.clone();
        async move {
            let err = client
                .secret_get_or_create(big_request(&format!("big-{i}"), bytes))
                .await
                .expect_err("a value this large is never accepted");
            (err.code(), err.message().to_owned())
        }
    });
    futures::future::join_all(calls).await
}

#[tokio::test]
async fn large_messages_without_a_token_are_refused_before_they_are_read() {
    let server = Server::start();
    let before = peak_rss(server.pid());
    let anonymous = server.client_with("", "").await;
    let wrong = server.client_with("ak-nobody", "as-nothing").await;
    let mut answers = send_concurrently(&anonymous, 4, 20 * MIB).await;
    answers.extend(send_concurrently(&wrong, 4, 20 * MIB).await);
    for (code, message) in &answers {
        assert_eq!(*code, Code::Unauthenticated, "{message}");
    }
    // Eight 20 MiB messages read and decoded would add 160 MiB and more.
    let grown = peak_rss(server.pid()).saturating_sub(before);
    eprintln!("peak RSS grew by {} KiB", grown / 1024);
    assert!(
        grown < 32 * MIB,
        "unauthenticated requests grew the server's peak RSS by {} MiB",
        grown / MIB
    );
}

#[tokio::test]
async fn a_message_over_16_mib_is_invalid_and_names_the_limit() {
    let server = Server::start();
    let client = server.client().await;
    let answers = send_concurrently(&client, 1, 16 * MIB + 1024).await;
    let (code, message) = &answers[0];
    // Never a transient code: Modal's client would retry it.
    assert_eq!(*code, Code::InvalidArgument, "{message}");
    assert!(message.contains("16 MiB"), "{message}");
}

#[tokio::test]
async fn bodies_read_at_once_stay_within_the_budget() {
    let (_tmp, server) = start_with(&[("LATCHKEY_MAX_BUFFERED_MIB", "17")]);
    let client = server.client().await;
    let before = peak_rss(server.pid());
    // Each just fits the message limit; the budget holds one, so some are
    // refused while being read, as retryable, and one at least is read whole.
    let answers = send_concurrently(&client, 6, 16 * MIB - 1024).await;
    let mut read_whole = 0;
    for (code, message) in &answers {
        match code {
            // The service refuses the value's size, after reading it.
            Code::InvalidArgument => read_whole += 1,
            Code::Unavailable => assert!(message.contains("retry shortly"), "{message}"),
            _ => panic!("{code:?}: {message}"),
        }
    }
    assert!(read_whole >= 1, "{answers:?}");
    let grown = peak_rss(server.pid()).saturating_sub(before);
    eprintln!(
        "peak RSS grew by {} KiB; answers: {answers:?}",
        grown / 1024
    );
    assert!(
        grown < 64 * MIB,
        "six 16 MiB requests grew the server's peak RSS by {} MiB",
        grown / MIB
    );
}

/// Sends `request` on a new connection; the response's status code.
fn raw_status(server: &Server, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr(server)).unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"))
}

#[test]
fn a_large_signin_form_is_refused() {
    let server = Server::start();
    let form = format!("token={}", "x".repeat(64 * 1024));
    let request = format!(
        "POST /signin HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
        addr(&server),
        form.len()
    );
    assert_eq!(raw_status(&server, request.as_bytes()), 413);
}

/// Whether the server closes `stream` (end of file or reset) within
/// [`CLOSE_BOUND`], reading and discarding what it sends first.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(CLOSE_BOUND)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// A GET of /healthz on `stream`, kept alive; whether it was answered 200.
fn healthz_on(stream: &mut TcpStream) -> bool {
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: latchkey\r\n\r\n")
        .is_err()
    {
        return false;
    }
    stream.set_read_timeout(Some(CLOSE_BOUND)).unwrap();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while !got.ends_with(b"ok\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.starts_with(b"HTTP/1.1 200")
}

#[test]
fn unfinished_headers_are_cut_after_the_header_timeout() {
    // The idle timeout is long: the header timeout alone must close these.
    let (_tmp, server) = start_with(&[
        ("LATCHKEY_HEADER_READ_TIMEOUT", "1s"),
        ("LATCHKEY_IDLE_CONNECTION_TIMEOUT", "1h"),
    ]);
    let mut first = TcpStream::connect(addr(&server)).unwrap();
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: latchkey\r\nX-Slow: ")
        .unwrap();
    assert!(
        closed_by_server(&mut first),
        "a slowloris first request stayed open"
    );
    // The same after a complete request on a kept-alive connection.
    let mut kept = TcpStream::connect(addr(&server)).unwrap();
    assert!(healthz_on(&mut kept));
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    assert!(
        closed_by_server(&mut kept),
        "a slowloris second request stayed open"
    );
}

#[test]
fn a_connection_that_never_sends_a_request_is_closed() {
    let (_tmp, server) = start_with(&[
        ("LATCHKEY_IDLE_CONNECTION_TIMEOUT", "1s"),
        ("LATCHKEY_HEADER_READ_TIMEOUT", "1h"),
    ]);
    let mut idle = TcpStream::connect(addr(&server)).unwrap();
    assert!(
        closed_by_server(&mut idle),
        "an idle connection stayed open"
    );
}

#[test]
fn past_the_connection_cap_new_connections_are_closed_until_others_leave() {
    let (_tmp, server) = start_with(&[("LATCHKEY_MAX_CONNECTIONS", "3")]);
    // Three connections in use (retried: the harness's own readiness probe
    // may hold a slot for a moment).
    let mut held = Vec::new();
    for _ in 0..100 {
        if held.len() == 3 {
            break;
        }
        let mut stream = TcpStream::connect(addr(&server)).unwrap();
        if healthz_on(&mut stream) {
            held.push(stream);
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(held.len(), 3, "three connections were never served");
    let mut extra = TcpStream::connect(addr(&server)).unwrap();
    assert!(
        !healthz_on(&mut extra),
        "a connection past the cap was served"
    );
    // Those held still work, and once one leaves /healthz answers again.
    assert!(healthz_on(&mut held[0]));
    drop(held.pop());
    let answered = (0..200).any(|_| {
        let mut stream = TcpStream::connect(addr(&server)).unwrap();
        healthz_on(&mut stream) || {
            std::thread::sleep(Duration::from_millis(100));
            false
        }
    });
    assert!(
        answered,
        "/healthz was not answered after a connection left"
    );
}

#[tokio::test]
async fn connections_in_use_outlive_the_timeouts() {
    let (_tmp, server) = start_with(&[
        ("LATCHKEY_IDLE_CONNECTION_TIMEOUT", "1s"),
        ("LATCHKEY_HEADER_READ_TIMEOUT", "1s"),
    ]);
    // An HTTP/2 connection, as Modal's client keeps one: requests after
    // pauses longer than both timeouts go over the same connection.
    let tcp = tokio::net::TcpStream::connect(addr(&server)).await.unwrap();
    let (mut send, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    for _ in 0..2 {
        let request = http::Request::get(format!("{}/healthz", server.url()))
            .body(String::new())
            .unwrap();
        let response = send
            .send_request(request)
            .await
            .expect("the connection stayed open");
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // A request whose body arrives slowly, over longer than both timeouts,
    // is answered: only connections that never complete a request are cut.
    let (id, secret) = server.admin_token();
    let body = br#"{"name": "slow", "values": {"A": "1"}}"#;
    let mut stream = TcpStream::connect(addr(&server)).unwrap();
    write!(
        stream,
        "POST /api/v1/secrets HTTP/1.1\r\nHost: latchkey\r\nAuthorization: Bearer {id}:{secret}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    for chunk in body.chunks(body.len() / 3 + 1) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stream.write_all(chunk).unwrap();
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 2"), "{response}");
}
