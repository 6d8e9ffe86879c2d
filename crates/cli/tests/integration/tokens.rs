//! Tokens that expire and rotate, through the real binary: the CLI, the
//! JSON API (through the CLI's SDK) and gRPC all refuse a token once it
//! stops being valid.

use std::time::{Duration, SystemTime};

use latchkey::Timestamp;
use serde_json::Value;
use tonic::Code;

use crate::harness::{Cli, Server};

/// A CLI using this token.
fn as_token(server: &Server, id: &str, secret: &str) -> Cli {
    Cli::bare()
        .var("LATCHKEY_SERVER_URL", server.url())
        .var("LATCHKEY_TOKEN_ID", id)
        .var("LATCHKEY_TOKEN_SECRET", secret)
}

fn id_and_secret(created: &Value) -> (String, String) {
    (
        created["token"]["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

fn instant(value: &Value) -> SystemTime {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not an instant: {value}"))
        .parse::<Timestamp>()
        .unwrap()
        .into()
}

/// Sleeps until `at` has passed (plus a margin for clocks' rounding).
fn sleep_past(at: SystemTime) {
    if let Ok(left) = at.duration_since(SystemTime::now()) {
        std::thread::sleep(left + Duration::from_millis(200));
    }
}

#[tokio::test]
async fn tokens_expire_and_rotate_with_a_grace_period() {
    let server = Server::start();
    let cli = Cli::admin(&server);

    // An expiring token, and one rotated with a grace period: both end
    // within the same few seconds, so the test waits once.
    let short = cli
        .run(&[
            "token", "create", "short", "--role", "reader", "--ttl", "3s", "--json",
        ])
        .ok()
        .json();
    let (short_id, short_secret) = id_and_secret(&short);
    let expires_at = instant(&short["token"]["expires_at"]);
    let (ci_id, old_secret) = id_and_secret(
        &cli.run(&["token", "create", "ci", "--role", "reader", "--json"])
            .ok()
            .json(),
    );
    let rotated = cli
        .run(&["token", "rotate", &ci_id, "--grace", "3s", "--json"])
        .ok()
        .json();
    let (rotated_id, new_secret) = id_and_secret(&rotated);
    assert_eq!(rotated_id, ci_id, "same token, new secret");
    assert_ne!(new_secret, old_secret);
    let grace_until = instant(&rotated["token"]["previous_secret_until"]);

    // Until then: everything works, with either secret of the rotated one.
    let short_cli = as_token(&server, &short_id, &short_secret);
    short_cli.run(&["whoami"]).ok();
    let mut short_grpc = server.client_with(&short_id, &short_secret).await;
    short_grpc.client_hello(()).await.unwrap();
    let old = as_token(&server, &ci_id, &old_secret);
    let new = as_token(&server, &ci_id, &new_secret);
    old.run(&["whoami"]).ok();
    new.run(&["whoami"]).ok();
    let mut old_grpc = server.client_with(&ci_id, &old_secret).await;
    old_grpc.client_hello(()).await.unwrap();

    // The list shows expiry and last use (kept to the minute), never a secret.
    let list = cli.run(&["token", "list", "--json"]).ok().json();
    let entry = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(instant(&entry(&short_id)["expires_at"]), expires_at);
    assert!(entry(&short_id)["last_used_at"].is_string(), "{list}");
    assert!(entry(&ci_id)["expires_at"].is_null(), "{list}");
    assert!(entry(&ci_id)["last_used_at"].is_string(), "{list}");
    let table = cli.run(&["token", "list"]).ok().stdout;
    assert!(
        table.contains("Expires at") && table.contains("Last used at"),
        "{table}"
    );
    assert!(!table.contains(&short_secret) && !table.contains(&new_secret));

    sleep_past(expires_at.max(grace_until));

    // The expired token: refused on every interface, saying when it expired.
    let shown = Timestamp::from(expires_at).to_string();
    let expected = format!("token {short_id} expired at {shown}");
    let out = short_cli.run(&["whoami"]).fails(1, &expected);
    assert!(!out.stderr.contains(&short_secret));
    let status = short_grpc.client_hello(()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains(&expected), "{status:?}");
    // The rotated-out secret is refused; the new one still works.
    old.run(&["whoami"]).fails(1, "not valid on this server");
    let status = old_grpc.client_hello(()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    new.run(&["whoami"]).ok();

    // Without --grace, the old secret is refused at once.
    let (_, newest) = id_and_secret(&cli.run(&["token", "rotate", &ci_id, "--json"]).ok().json());
    new.run(&["whoami"]).fails(1, "not valid on this server");
    as_token(&server, &ci_id, &newest).run(&["whoami"]).ok();
    // An expired token cannot be rotated back to life.
    cli.run(&["token", "rotate", &short_id])
        .fails(1, "expired at");
}

#[test]
fn bad_durations_are_refused_before_anything_is_created() {
    let server = Server::start();
    let cli = Cli::admin(&server);
    for (ttl, needle) in [
        ("0", "greater than zero"),
        ("-5m", "greater than zero"),
        ("soon", "Invalid --ttl 'soon'"),
    ] {
        cli.run(&["token", "create", "x", "--ttl", ttl])
            .fails(2, needle);
    }
    let list = cli.run(&["token", "list", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1, "only the admin: {list}");
    let admin = &list[0];
    assert!(
        admin["expires_at"].is_null(),
        "the admin token never expires"
    );
    cli.run(&[
        "token",
        "rotate",
        admin["id"].as_str().unwrap(),
        "--grace",
        "0",
    ])
    .fails(2, "--grace");
}
