//! End-to-end: the real `latchkey` binary, driven in a real headless
//! Chromium through chromedriver (WebDriver, via `fantoccini`).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/ensure-chromium`
//! installs them) and a built binary (`cargo build`, or `LATCHKEY_BIN`). It
//! fails, never skips, when any of them is missing. Screenshots of every page,
//! at 1280 px and at 360 px wide, go to `target/screenshots/`.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{elements::Element, Client, ClientBuilder, Locator};
use latchkey::testing::start_server;
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const DESKTOP: (u32, u32) = (1280, 1000);
const MOBILE: (u32, u32) = (360, 900);

const DOTENV: &str = "# pasted from a .env file\nexport DB_URL=postgres://db.internal/app\nAPI_KEY='k-12345-secret'\nDERIVED=${DB_URL}?sslmode=require\n";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that is killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP GET on loopback; the start of the answer, or nothing yet.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]).ok()? {
            0 => break,
            n => got += n,
        }
    }
    Some(String::from_utf8_lossy(&buf[..got]).into_owned())
}

fn wait_http(port: u16, path: &str, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http_get(port, path).is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not answer on port {port} within 30 s");
}

/// An "attacker" page on another origin: a form that posts to the
/// dashboard, as a cross-site request forgery would. `GET /st-…` gives a
/// form that deletes that secret (named `web-app`).
async fn serve_attacker(listener: tokio::net::TcpListener, base: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let base = base.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let id = request
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_owned();
            let body = format!(
                "<!doctype html><title>win a prize</title>\
                 <form method=post action=\"{base}/secrets/{id}/delete\">\
                 <input name=confirm value=web-app><button id=go>Claim your prize</button></form>"
            );
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
        });
    }
}

async fn browser(driver: &str, profile: &Path) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.display()),
                format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("chromedriver could not start chromium")
}

/// Screenshots of the current page at desktop and phone widths.
async fn shot(c: &Client, name: &str) {
    let dir = target_dir().join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    for (label, (w, h)) in [("desktop", DESKTOP), ("mobile", MOBILE)] {
        c.set_window_size(w, h).await.unwrap();
        let png = c.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}-{label}.png")), png).unwrap();
    }
    c.set_window_size(DESKTOP.0, DESKTOP.1).await.unwrap();
}

async fn css(c: &Client, selector: &str) -> Element {
    match c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(selector))
        .await
    {
        Ok(element) => element,
        Err(e) => {
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let source = c.source().await.unwrap_or_default();
            panic!("no `{selector}` on {url}: {e}\n{source}")
        }
    }
}

async fn text(c: &Client, selector: &str) -> String {
    css(c, selector).await.text().await.unwrap()
}

async fn path(c: &Client) -> String {
    let url = c.current_url().await.unwrap();
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

async fn sign_in(c: &Client, base: &str, id: &str, secret: &str) {
    c.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(path(c).await, "/signin", "signed out, / leads to sign in");
    css(c, "#token_id").await.send_keys(id).await.unwrap();
    css(c, "#token_secret")
        .await
        .send_keys(secret)
        .await
        .unwrap();
    css(c, "form[action='/signin'] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    css(c, "form.signout").await;
    assert_eq!(path(c).await, "/");
}

async fn open_editor(c: &Client, base: &str, id: &str) {
    c.goto(&format!("{base}/secrets/{id}/edit")).await.unwrap();
    css(c, "form[action$='/edit']").await;
}

/// The value box of existing key `key` in the editor.
async fn value_box(c: &Client, key: &str) -> Element {
    css(
        c,
        &format!("div.kv-row.existing:has(input[name=ek][value={key}]) textarea"),
    )
    .await
}

/// The text of every element matching `selector`.
async fn texts(c: &Client, selector: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in c.find_all(Locator::Css(selector)).await.unwrap() {
        out.push(e.text().await.unwrap());
    }
    out
}

/// A value fetched as the copy button fetches it.
async fn fetch_value(c: &Client, url: &str) -> serde_json::Value {
    c.execute(
        "return fetch(arguments[0]).then(r => r.text())",
        vec![json!(url)],
    )
    .await
    .unwrap()
}

/// The secret's history at this point of `run`: version 1 as created from
/// the pasted file, 2 Alice's edit (API_KEY changed, DERIVED removed,
/// NEW_FLAG added), 3 her DB_URL (Bob's conflicting save made none). An old
/// value is revealed, then the secret rolled back to version 1.
async fn history_and_rollback(a: &Client, base: &str, secret_id: &str) {
    a.goto(&format!("{base}/secrets/{secret_id}"))
        .await
        .unwrap();
    css(a, "a.button[href$='/history']")
        .await
        .click()
        .await
        .unwrap();
    css(a, "table#history").await;
    assert_eq!(path(a).await, format!("/secrets/{secret_id}/history"));
    let rows = texts(a, "table#history tbody tr").await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    let v3 = text(a, "tr#v-3").await;
    assert!(
        v3.contains("current") && v3.contains("changed DB_URL"),
        "{v3}"
    );
    let v2 = text(a, "tr#v-2").await;
    for part in [
        "added NEW_FLAG",
        "removed DERIVED",
        "changed API_KEY",
        "admin",
    ] {
        assert!(v2.contains(part), "{part} in {v2}");
    }
    assert!(!v2.contains("current"), "{v2}");
    assert!(text(a, "tr#v-1").await.contains("created"));
    let source = a.source().await.unwrap();
    assert!(
        !source.contains("k-12345-secret") && !source.contains("postgres://"),
        "never a value"
    );
    shot(a, "08a-history").await;

    // Version 1, one value revealed.
    css(a, "a[aria-label='View version 1']")
        .await
        .click()
        .await
        .unwrap();
    assert!(text(a, "#version-note").await.contains("old version"));
    assert!(!a.source().await.unwrap().contains("k-12345-secret"));
    css(a, "a[aria-label='Reveal API_KEY']")
        .await
        .click()
        .await
        .unwrap();
    assert_eq!(text(a, "code.revealed").await, "k-12345-secret");
    assert_eq!(texts(a, "code.revealed").await.len(), 1);
    assert!(
        !a.source().await.unwrap().contains("postgres://db.internal"),
        "one at a time"
    );
    assert_eq!(
        fetch_value(
            a,
            &format!("/secrets/{secret_id}/versions/1/value?key=DB_URL")
        )
        .await,
        json!("postgres://db.internal/app"),
        "the old value, for the copy button"
    );
    shot(a, "08b-version-revealed").await;

    // Roll back to it, after the confirmation.
    css(a, "a.button[href$='/versions/1/rollback']")
        .await
        .click()
        .await
        .unwrap();
    assert!(text(a, ".warning").await.contains("version 4"));
    let would = text(a, "#rollback-changes").await;
    for part in [
        "added DERIVED",
        "removed NEW_FLAG",
        "changed API_KEY, DB_URL",
    ] {
        assert!(would.contains(part), "{part} in {would}");
    }
    assert!(!a.source().await.unwrap().contains("k-12345-secret"));
    shot(a, "08c-rollback-confirm").await;
    css(a, "form[action$='/rollback'] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    assert!(
        text(a, ".flash").await.contains("version 4 now holds"),
        "the new version is named"
    );
    let v4 = text(a, "tr#v-4").await;
    assert!(
        v4.contains("rolled back to 1") && v4.contains("current"),
        "{v4}"
    );
    assert_eq!(texts(a, "table#history tbody tr").await.len(), 4);
    shot(a, "08d-rolled-back").await;
    for (key, value) in [
        ("API_KEY", "k-12345-secret"),
        ("DB_URL", "postgres://db.internal/app"),
        ("DERIVED", "postgres://db.internal/app?sslmode=require"),
    ] {
        assert_eq!(
            fetch_value(a, &format!("/secrets/{secret_id}/value?key={key}")).await,
            json!(value),
            "{key} is version 1's again"
        );
    }
    a.goto(&format!("{base}/secrets/{secret_id}"))
        .await
        .unwrap();
    let keys = text(a, "table#keys").await;
    assert!(
        !keys.contains("NEW_FLAG") && keys.contains("DERIVED"),
        "{keys}"
    );
}

async fn run(
    base: String,
    evil_port: u16,
    token_id: String,
    token_secret: String,
    a: Client,
    b: Client,
) {
    // Sign in (Alice), with the admin token's two parts.
    a.goto(&format!("{base}/")).await.unwrap();
    css(&a, "#token_id").await;
    shot(&a, "01-signin").await;
    sign_in(&a, &base, &token_id, &token_secret).await;
    assert!(text(&a, "#no-secrets").await.contains("No secrets in main"));
    let source = a.source().await.unwrap();
    assert!(
        !source.contains(&token_secret),
        "the token secret is not in the page"
    );
    let storage = a.execute("return JSON.stringify(window.localStorage) + JSON.stringify(window.sessionStorage) + document.cookie;", vec![]).await.unwrap();
    assert!(
        !storage.to_string().contains("as-"),
        "nothing in storage, and the cookie is HttpOnly: {storage}"
    );
    shot(&a, "02-secrets-empty").await;

    // Create from a pasted .env file.
    css(&a, "a.button.primary[href^='/secrets/new']")
        .await
        .click()
        .await
        .unwrap();
    css(&a, "#name").await.send_keys("web-app").await.unwrap();
    css(&a, "details summary").await.click().await.unwrap();
    css(&a, "#paste").await.send_keys(DOTENV).await.unwrap();
    shot(&a, "03-create-paste").await;
    css(&a, "button[value=load]").await.click().await.unwrap();
    css(&a, "input[name=k][value=DB_URL]").await;
    assert_eq!(
        css(&a, "#name")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("web-app")
    );
    // An invalid key is caught in the browser before anything is sent.
    let blank = css(&a, "#k-3").await;
    blank.send_keys("bad-key").await.unwrap();
    css(&a, "#v-3").await.send_keys("x").await.unwrap();
    css(&a, "button[value=create]").await.click().await.unwrap();
    assert_eq!(
        path(&a).await,
        "/secrets/new",
        "the browser refused to send the form"
    );
    let invalid = a
        .execute(
            "return document.querySelector('#k-3').validity.patternMismatch",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(invalid, json!(true));
    shot(&a, "04-create-invalid-key").await;
    blank.clear().await.unwrap();
    css(&a, "#v-3").await.clear().await.unwrap();
    css(&a, "button[value=create]").await.click().await.unwrap();
    css(&a, "table#keys").await;
    let secret_path = path(&a).await;
    assert!(secret_path.starts_with("/secrets/st-"), "{secret_path}");
    let secret_id = secret_path.trim_start_matches("/secrets/").to_owned();
    assert!(text(&a, ".flash").await.contains("web-app"));
    let page = a.source().await.unwrap();
    assert!(
        !page.contains("k-12345-secret"),
        "values hidden until revealed"
    );
    assert!(page.contains("modal.Secret.from_name(\"web-app\")"));
    assert!(
        css(&a, "button[data-copy-url]")
            .await
            .is_displayed()
            .await
            .unwrap(),
        "the script ran under the CSP"
    );
    shot(&a, "05-secret").await;

    // Reveal one value.
    css(&a, "a[aria-label='Reveal API_KEY']")
        .await
        .click()
        .await
        .unwrap();
    assert_eq!(text(&a, "code.revealed").await, "k-12345-secret");
    assert_eq!(
        a.find_all(Locator::Css("code.revealed"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        !a.source().await.unwrap().contains("postgres://db.internal"),
        "one at a time"
    );
    shot(&a, "06-secret-revealed").await;

    // Edit: change one key, remove one, add one.
    open_editor(&a, &base, &secret_id).await;
    value_box(&a, "API_KEY")
        .await
        .send_keys("k-rotated")
        .await
        .unwrap();
    css(&a, "input[name=rm][value=DERIVED]")
        .await
        .click()
        .await
        .unwrap();
    css(&a, "#nk-0").await.send_keys("NEW_FLAG").await.unwrap();
    css(&a, "#nv-0").await.send_keys("on").await.unwrap();
    shot(&a, "07-edit").await;
    css(&a, "button[value=save]").await.click().await.unwrap();
    assert!(text(&a, ".flash").await.contains("Saved 3 keys"));
    let keys = text(&a, "table#keys").await;
    assert!(
        keys.contains("NEW_FLAG") && !keys.contains("DERIVED"),
        "{keys}"
    );

    // Conflict: Bob, in his own browser, edits the same key at the same time.
    sign_in(&b, &base, &token_id, &token_secret).await;
    open_editor(&a, &base, &secret_id).await;
    open_editor(&b, &base, &secret_id).await;
    value_box(&a, "DB_URL")
        .await
        .send_keys("postgres://alice")
        .await
        .unwrap();
    css(&a, "button[value=save]").await.click().await.unwrap();
    css(&a, ".flash").await;
    value_box(&b, "DB_URL")
        .await
        .send_keys("postgres://bob")
        .await
        .unwrap();
    css(&b, "button[value=save]").await.click().await.unwrap();
    let conflict = text(&b, "#conflict").await;
    assert!(
        conflict.contains("Someone else changed DB_URL"),
        "{conflict}"
    );
    assert_eq!(
        value_box(&b, "DB_URL")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("postgres://bob")
    );
    shot(&b, "08-edit-conflict").await;
    let value = a
        .execute(
            "return fetch(arguments[0]).then(r => r.text())",
            vec![json!(format!("/secrets/{secret_id}/value?key=DB_URL"))],
        )
        .await
        .unwrap();
    assert_eq!(
        value,
        json!("postgres://alice"),
        "Bob's stale save did not overwrite Alice's"
    );

    history_and_rollback(&a, &base, &secret_id).await;

    // A cross-site form post is refused: from another port of this host
    // (same site, so the SameSite cookie is sent; the Origin check and the
    // missing CSRF token stop it) and from another site (no cookie either).
    for (i, origin) in [
        format!("http://127.0.0.1:{evil_port}"),
        format!("http://localhost:{evil_port}"),
    ]
    .iter()
    .enumerate()
    {
        a.goto(&format!("{origin}/{secret_id}")).await.unwrap();
        css(&a, "#go").await.click().await.unwrap();
        let body = text(&a, "main").await;
        assert!(body.contains("another site"), "{origin}: {body}");
        if i == 0 {
            shot(&a, "09-cross-site-refused").await;
        }
    }
    a.goto(&format!("{base}{secret_path}")).await.unwrap();
    assert!(
        text(&a, "h1").await.contains("web-app"),
        "the secret survived"
    );

    // Environments and tokens.
    a.goto(&format!("{base}/environments")).await.unwrap();
    css(&a, "#new-env")
        .await
        .send_keys("staging")
        .await
        .unwrap();
    css(&a, "form[action='/environments'] button")
        .await
        .click()
        .await
        .unwrap();
    assert!(text(&a, ".flash").await.contains("staging"));
    shot(&a, "10-environments").await;
    a.goto(&format!("{base}/tokens")).await.unwrap();
    css(&a, "#token-name")
        .await
        .send_keys("ci-deploy")
        .await
        .unwrap();
    css(&a, "form[action='/tokens'] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    assert!(text(&a, "section.created")
        .await
        .contains("LATCHKEY_TOKEN_SECRET=as-"));
    shot(&a, "11-token-created").await;

    // The audit log: what happened so far, never a value; the chain checks.
    a.goto(&format!("{base}/audit")).await.unwrap();
    let events = text(&a, "table#events").await;
    for action in [
        "dashboard.signin",
        "secret.create",
        "secret.read",
        "token.create",
    ] {
        assert!(events.contains(action), "{action} in {events}");
    }
    let source = a.source().await.unwrap();
    for secret in ["k-12345-secret", "db.internal", token_secret.as_str()] {
        assert!(!source.contains(secret), "no value or token secret");
    }
    css(&a, "form#verify button").await.click().await.unwrap();
    assert!(text(&a, "#verdict").await.contains("The chain is intact."));
    shot(&a, "11b-audit").await;

    // The list, with the secret in it.
    a.goto(&format!("{base}/")).await.unwrap();
    assert!(text(&a, "table#secrets").await.contains("web-app"));
    shot(&a, "12-secrets-list").await;

    // Delete after typing the name.
    a.goto(&format!("{base}/secrets/{secret_id}"))
        .await
        .unwrap();
    css(&a, "a.button.danger").await.click().await.unwrap();
    assert!(text(&a, ".warning").await.contains("irreversible"));
    css(&a, "#confirm")
        .await
        .send_keys("web-app")
        .await
        .unwrap();
    shot(&a, "13-delete").await;
    css(&a, "button.danger[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    assert!(text(&a, ".flash").await.contains("'web-app' was deleted"));
    assert!(text(&a, "#no-secrets").await.contains("No secrets"));
    shot(&a, "14-secrets-after-delete").await;

    // Sign out ends the session.
    css(&a, "form.signout button").await.click().await.unwrap();
    css(&a, "#token_id").await;
    assert_eq!(path(&a).await, "/signin");
    a.goto(&format!("{base}/tokens")).await.unwrap();
    assert!(path(&a).await.starts_with("/signin"));
    shot(&a, "15-signed-out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: the browser tests need Debian's chromium and chromium-driver \
             (run scripts/ensure-chromium, or apt-get install chromium chromium-driver)"
        );
    }
    let server = start_server().unwrap_or_else(|e| panic!("cannot start latchkey: {e}"));
    let tmp = tempfile::tempdir().unwrap();

    let driver_port = free_port();
    let mut driver = Proc(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromedriver"),
    );
    wait_http(driver_port, "/status", "chromedriver", &mut driver.0);

    let (token_id, token_secret) = (
        server.token_id().to_owned(),
        server.token_secret().to_owned(),
    );

    let base = server.url().to_owned();
    let evil = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_port = evil.local_addr().unwrap().port();
    let attacker = tokio::spawn(serve_attacker(evil, base.clone()));

    let driver_url = format!("http://127.0.0.1:{driver_port}");
    let a = browser(&driver_url, &tmp.path().join("profile-a")).await;
    let b = browser(&driver_url, &tmp.path().join("profile-b")).await;
    let outcome = tokio::spawn(run(
        base,
        evil_port,
        token_id,
        token_secret,
        a.clone(),
        b.clone(),
    ))
    .await;
    // Close the browsers whatever happened, then report.
    let _ = a.close().await;
    let _ = b.close().await;
    attacker.abort();
    drop(driver);
    drop(server);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
