//! `latchkey serve --tls-cert --tls-key`: the CLI over https with a private
//! CA (`LATCHKEY_CA_CERT`), bad TLS input, the warning on a public address.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use latchkey::testing::TestCa;

use crate::harness::{binary, Cli, Server};

#[test]
fn the_cli_works_over_tls_with_the_ca_of_latchkey_ca_cert() {
    let ca = TestCa::new().unwrap();
    let cert = ca.issue("server").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::try_start(
        &dir,
        &[
            "--tls-cert",
            cert.cert.to_str().unwrap(),
            "--tls-key",
            cert.key.to_str().unwrap(),
        ],
        &[],
    )
    .unwrap();
    assert!(
        server.url().starts_with("https://127.0.0.1:"),
        "{}",
        server.url()
    );
    let token = std::fs::read_to_string(dir.join("admin-token")).unwrap();
    assert!(
        token.starts_with(&format!("LATCHKEY_SERVER_URL={}\n", server.url())),
        "the admin-token file names the https URL: {token}"
    );
    let ca_path = ca.ca_cert();
    let cli = Cli::admin(&server).var("LATCHKEY_CA_CERT", ca_path.to_str().unwrap());
    cli.run(&["secret", "create", "over-tls", "API_KEY=abc123"])
        .ok();
    let listed = cli.run(&["secret", "list", "--json"]).ok().json();
    assert_eq!(listed[0]["name"], "over-tls", "{listed}");

    // The system roots alone do not know the test CA: the handshake fails,
    // and says so.
    Cli::admin(&server)
        .run(&["secret", "list"])
        .fails(1, "certificate");
    // An unreadable LATCHKEY_CA_CERT is named, not skipped.
    let missing = tmp.path().join("no-such-ca.pem");
    Cli::admin(&server)
        .var("LATCHKEY_CA_CERT", missing.to_str().unwrap())
        .run(&["secret", "list"])
        .fails(1, "LATCHKEY_CA_CERT: cannot read");
    let not_pem = tmp.path().join("not-pem.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    Cli::admin(&server)
        .var("LATCHKEY_CA_CERT", not_pem.to_str().unwrap())
        .run(&["secret", "list"])
        .fails(1, "holds no certificate");
    assert!(server.stop().success());
}

#[test]
fn bad_tls_input_is_refused_before_anything_is_served() {
    let ca = TestCa::new().unwrap();
    let cert = ca.issue("server").unwrap();
    let other = ca.issue("other").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let not_pem = tmp.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let missing = tmp.path().join("missing.pem");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let key_pem = std::fs::read_to_string(&cert.key).unwrap();
    let key_body = key_pem.lines().nth(1).unwrap().to_owned();
    let cases: [(&str, Vec<String>, &str); 6] = [
        (
            "another certificate's key",
            vec![
                "--tls-cert".into(),
                path(&cert.cert),
                "--tls-key".into(),
                path(&other.key),
            ],
            "does not match --tls-cert",
        ),
        (
            "an unreadable certificate",
            vec![
                "--tls-cert".into(),
                path(&missing),
                "--tls-key".into(),
                path(&cert.key),
            ],
            "cannot read the file",
        ),
        (
            "a certificate file without PEM",
            vec![
                "--tls-cert".into(),
                path(&not_pem),
                "--tls-key".into(),
                path(&cert.key),
            ],
            "no certificate in it",
        ),
        (
            "a certificate given as the key",
            vec![
                "--tls-cert".into(),
                path(&cert.cert),
                "--tls-key".into(),
                path(&cert.cert),
            ],
            "no private key in it",
        ),
        (
            "only --tls-cert",
            vec!["--tls-cert".into(), path(&cert.cert)],
            "--tls-key",
        ),
        (
            "only --tls-key",
            vec!["--tls-key".into(), path(&cert.key)],
            "--tls-cert",
        ),
    ];
    for (i, (what, args, needle)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("data-{i}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = match Server::try_start(&dir, &args, &[]) {
            Ok(_) => panic!("{what}: the server started"),
            Err(log) => log,
        };
        assert!(log.contains(needle), "{what}: {needle:?} not in:\n{log}");
        assert!(!log.contains("serving on"), "{what}: {log}");
        assert!(
            !dir.exists(),
            "{what}: nothing is created before the TLS files are checked"
        );
        assert!(
            !log.contains(&key_body),
            "{what}: no key material in the error: {log}"
        );
    }
}

#[test]
fn serving_a_public_address_without_tls_warns_and_names_the_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env_remove("LATCHKEY_LISTEN")
        .env("LATCHKEY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut before_serving = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("latchkey serving on ") {
            break;
        }
        before_serving.push_str(&line);
        before_serving.push('\n');
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        before_serving.contains("without TLS")
            && before_serving.contains("--tls-cert PEM --tls-key PEM"),
        "{before_serving}"
    );

    // On loopback, no warning.
    let server = Server::start();
    assert!(!server.log().contains("without TLS"), "{}", server.log());
}
