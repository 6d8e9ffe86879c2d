//! `latchkey serve --log-format json|text`, and the filter from
//! LATCHKEY_LOG or RUST_LOG.

use latchkey::testing::TestServer;
use serde_json::Value;

use crate::harness::binary;

/// The log lines of a server started with these variables and flags; its
/// first request is a lookup without a token, so that it logs at debug.
fn log_of(envs: &[(&str, &str)], args: &[&str]) -> String {
    let builder = envs.iter().fold(
        TestServer::builder().binary(binary()).args(args),
        |b, (k, v)| b.env(k, v),
    );
    let server = builder.start().unwrap();
    let _ = crate::harness::http_get(server.url(), "/api/v1/whoami");
    let url = server.url().to_owned();
    let log = server.log();
    assert!(server.stop().unwrap().success(), "{url}");
    log
}

#[test]
fn json_logs_are_one_object_a_line() {
    let log = log_of(&[("LATCHKEY_LOG", "info")], &["--log-format", "json"]);
    let lines: Vec<Value> = log
        .lines()
        // The start-up line for people and test harnesses is not a log line.
        .filter(|l| !l.starts_with("latchkey serving on "))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let serving = lines
        .iter()
        .find(|l| l["fields"]["message"] == "latchkey is serving")
        .unwrap_or_else(|| panic!("no 'latchkey is serving' in {log}"));
    assert_eq!(serving["level"], "INFO");
    assert!(serving["fields"]["url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert!(serving["timestamp"].is_string());

    let text = log_of(&[("LATCHKEY_LOG", "info")], &["--log-format", "text"]);
    assert!(
        text.contains(" INFO ") && text.contains("latchkey is serving"),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with('{')), "{text}");
}

#[test]
fn rust_log_is_honoured_and_latchkey_log_wins() {
    let debug = log_of(&[("RUST_LOG", "debug")], &[]);
    assert!(
        debug.contains("DEBUG"),
        "RUST_LOG=debug shows debug lines:\n{debug}"
    );
    let warn_only = log_of(&[("RUST_LOG", "debug"), ("LATCHKEY_LOG", "warn")], &[]);
    assert!(
        !warn_only.contains("DEBUG") && !warn_only.contains(" INFO "),
        "LATCHKEY_LOG=warn beats RUST_LOG=debug:\n{warn_only}"
    );
    let neither = log_of(&[("RUST_LOG", "")], &[]);
    assert!(
        neither.contains(" INFO ") && !neither.contains("DEBUG"),
        "{neither}"
    );

    let refused = TestServer::builder()
        .binary(binary())
        .env("RUST_LOG", "info,=[")
        .start()
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("RUST_LOG=") && refused.contains("is not a log filter"),
        "{refused}"
    );
}
