//! Failed authentication is throttled per client address, through the real
//! binary: past the limit an address gets RESOURCE_EXHAUSTED / 429 naming
//! the wait (on gRPC, the JSON API and the dashboard's sign-in), while
//! another address is served as usual.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpSocket,
};
use tonic::Code;

use crate::harness::Server;

/// One HTTP/1.1 request sent from the local address `from`; the status, the
/// head and the body of the answer.
async fn request_from(
    from: &str,
    server: &Server,
    head: &str,
    body: &str,
) -> (u16, String, String) {
    let addr: std::net::SocketAddr = server.url().trim_start_matches("http://").parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!(
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (
        head[9..12].parse().unwrap(),
        head.to_owned(),
        body.to_owned(),
    )
}

async fn whoami_from(from: &str, server: &Server, credentials: &str) -> (u16, String, String) {
    request_from(
        from,
        server,
        &format!("GET /api/v1/whoami HTTP/1.1\r\nAuthorization: Bearer {credentials}"),
        "",
    )
    .await
}

#[tokio::test]
async fn one_address_is_throttled_and_another_is_not() {
    let server = Server::start_with(&["--auth-failure-limit", "3", "--auth-failure-period", "1m"]);
    let (id, secret) = server.admin_token();
    let good = format!("{id}:{secret}");
    let bad = format!("{id}:as-guess");

    // Successes cost nothing; three failures are allowed...
    for _ in 0..5 {
        assert_eq!(whoami_from("127.0.0.1", &server, &good).await.0, 200);
    }
    for _ in 0..3 {
        let (status, _, body) = whoami_from("127.0.0.1", &server, &bad).await;
        assert_eq!(status, 401, "{body}");
    }
    // ...then the address is refused, naming the wait, whatever it sends.
    for credentials in [&bad, &good] {
        let (status, head, body) = whoami_from("127.0.0.1", &server, credentials).await;
        assert_eq!(status, 429, "{head}\n{body}");
        assert!(body.contains("resource_exhausted"), "{body}");
        // 3 a minute: one every 20 s (less what refilled while the test ran).
        let wait: u64 = body
            .split("try again in ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((10..=20).contains(&wait), "{body}");
        let header = format!("retry-after: {wait}");
        assert!(
            head.lines().any(|l| l.trim().eq_ignore_ascii_case(&header)),
            "{head}"
        );
        assert!(!body.contains(&secret));
    }
    let mut grpc = server.client().await;
    let status = grpc.client_hello(()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("try again in"), "{status:?}");
    let (status, head, body) = request_from(
        "127.0.0.1",
        &server,
        "POST /signin HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
        &format!("token_id={id}&token_secret={secret}"),
    )
    .await;
    assert_eq!(status, 429, "{head}\n{body}");
    assert!(body.contains("try again in"), "{body}");

    // Another address is served as usual, and has its own allowance.
    assert_eq!(whoami_from("127.0.0.2", &server, &good).await.0, 200);
    assert_eq!(whoami_from("127.0.0.2", &server, &bad).await.0, 401);
    assert_eq!(whoami_from("127.0.0.2", &server, &good).await.0, 200);
    // Without credentials nothing is guessed: 401, never counted.
    let (status, _, _) =
        request_from("127.0.0.3", &server, "GET /api/v1/whoami HTTP/1.1", "").await;
    assert_eq!(status, 401);
    assert!(server.log().contains("too many failures from this address"));
}
