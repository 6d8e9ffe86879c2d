//! The SDK against a server over TLS whose certificate a private CA signed:
//! trusted through `LATCHKEY_CA_CERT`, refused without it. One test, since
//! the variable is process-wide.

use latchkey::{
    testing::{TestCa, TestServer},
    Client, Error, Secret,
};

#[tokio::test]
async fn the_sdk_trusts_the_ca_of_latchkey_ca_cert() {
    let ca = TestCa::new().unwrap();
    let cert = ca.issue("server").unwrap();
    let server = TestServer::builder().tls(&cert).start().unwrap();
    assert!(server.url().starts_with("https://"), "{}", server.url());

    std::env::remove_var("LATCHKEY_CA_CERT");
    let untrusted = server.client().unwrap().whoami().await.unwrap_err();
    assert!(
        matches!(untrusted, Error::Transport { .. })
            && untrusted.to_string().contains("certificate"),
        "{untrusted}"
    );

    std::env::set_var("LATCHKEY_CA_CERT", ca.ca_cert());
    let client = server.client().unwrap();
    assert_eq!(client.whoami().await.unwrap().token.name, "admin");
    client
        .secrets()
        .create("sdk-over-tls", [("API_KEY", "abc123")])
        .await
        .unwrap();
    Client::set_shared(server.config()).unwrap();
    let values = Secret::from_name("sdk-over-tls")
        .required_keys(["API_KEY"])
        .resolve()
        .await
        .unwrap();
    assert_eq!(values.get("API_KEY").map(String::as_str), Some("abc123"));

    std::env::set_var(
        "LATCHKEY_CA_CERT",
        ca.ca_cert().with_file_name("missing.pem"),
    );
    let unreadable = server.client().unwrap_err();
    assert!(
        matches!(unreadable, Error::Config { .. })
            && unreadable
                .to_string()
                .contains("LATCHKEY_CA_CERT: cannot read"),
        "{unreadable}"
    );
}
