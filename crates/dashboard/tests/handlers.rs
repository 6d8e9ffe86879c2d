//! The dashboard's handlers, driven with `oneshot` over a real SQLite store
//! in a temporary directory: no socket, no browser.

use axum::{
    body::{to_bytes, Body},
    http::{header, HeaderMap, Request, StatusCode},
    Router,
};
use latchkey_core::admin_token::AdminTokenFile;
use latchkey_service::{
    log::{AuditEvent, AuditFilter},
    testing::{TestService, ANONYMOUS_TTL},
    Caller, ClientAddr, CreateMode, Role, Service, ServiceConfig,
};
use tower::ServiceExt;

const HOST: &str = "dash.test";
/// The address the test browser's requests come from.
const CLIENT: &str = "203.0.113.7";

struct Harness {
    router: Router,
    service: Service,
    token_id: String,
    token_secret: String,
    test: TestService,
}

async fn harness() -> Harness {
    let test = TestService::start().await;
    Harness {
        router: latchkey_dashboard::router(test.service().clone()),
        service: test.service().clone(),
        token_id: test.admin_token_id().to_owned(),
        token_secret: test.admin_token_secret().to_owned(),
        test,
    }
}

/// A harness whose server keeps `keep` versions of each secret.
async fn harness_keeping(keep: u32) -> Harness {
    let test = TestService::start().await;
    let service = Service::new(
        test.service().store().clone(),
        ServiceConfig {
            anonymous_ttl: ANONYMOUS_TTL,
            keep_versions: keep,
            audit_metadata_reads: false,
            auth_failures: latchkey_service::AuthFailureLimit::default(),
        },
    );
    Harness {
        router: latchkey_dashboard::router(service.clone()),
        service,
        token_id: test.admin_token_id().to_owned(),
        token_secret: test.admin_token_secret().to_owned(),
        test,
    }
}

impl Harness {
    async fn admin(&self) -> Caller {
        self.service
            .authenticate(
                &self.token_id,
                &self.token_secret,
                &latchkey_service::Origin::server(),
            )
            .await
            .unwrap()
    }

    /// A new token made by the admin, valid for `ttl` if given, and its secret.
    async fn token(
        &self,
        name: &str,
        role: Role,
        ttl: Option<std::time::Duration>,
    ) -> (latchkey_service::Token, String) {
        let (token, secret) = self
            .service
            .create_token(&self.admin().await, name, role, None, ttl)
            .await
            .unwrap();
        (token, secret.to_string())
    }

    /// Someone else's change of secret `id`, made through the service.
    async fn update(&self, id: &str, changes: &[(&str, Option<&str>)]) {
        let changes: Vec<(String, Option<String>)> = changes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect();
        self.service
            .update_secret(&self.admin().await, id, &changes, None)
            .await
            .unwrap();
    }

    /// A new token of `role` named `name`, made by the admin: its id and
    /// secret.
    async fn token_pair(&self, name: &str, role: Role) -> (String, String) {
        let (token, secret) = self.token(name, role, None).await;
        (token.id, secret)
    }

    /// The audit log's events that `filter` selects, oldest first.
    async fn events(&self, filter: AuditFilter) -> Vec<AuditEvent> {
        self.service
            .audit_events(&self.admin().await, &filter, 1000)
            .await
            .unwrap()
    }

    /// The audit log's events of `action`, oldest first.
    async fn events_of(&self, action: &str) -> Vec<AuditEvent> {
        self.events(AuditFilter {
            action: Some(action.to_owned()),
            ..AuditFilter::default()
        })
        .await
    }

    /// Runs `sql` on the store's database, behind the service's back.
    async fn sql(&self, sql: &str) {
        let url = format!(
            "sqlite://{}",
            self.test.data_dir().join("latchkey.db").display()
        );
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    }

    /// Secret `id`'s current version and contents.
    async fn now(&self, id: &str) -> (i64, Vec<(String, String)>) {
        let s = self.service.secret(&self.admin().await, id).await.unwrap();
        (s.summary.version, s.contents.into_iter().collect())
    }
}

/// Owned pairs, for comparing contents.
fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .map_or("", |v| v.to_str().unwrap())
    }

    /// The CSRF token of the first form on the page.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token")
            + "name=\"csrf\" value=\"".len();
        self.body[at..].split('"').next().unwrap().to_owned()
    }

    /// The value of the first hidden input `name`.
    fn hidden(&self, name: &str) -> String {
        let needle = format!("name=\"{name}\" value=\"");
        let at = self
            .body
            .find(&needle)
            .unwrap_or_else(|| panic!("no {name} in {}", self.body))
            + needle.len();
        self.body[at..].split('"').next().unwrap().to_owned()
    }
}

/// A browser: a cookie jar and same-origin headers on posts.
struct Browser<'a> {
    h: &'a Harness,
    cookie: Option<String>,
}

impl<'a> Browser<'a> {
    fn new(h: &'a Harness) -> Self {
        Self { h, cookie: None }
    }

    async fn send(&mut self, mut request: Request<Body>) -> Reply {
        // As the server puts it there for every connection.
        request
            .extensions_mut()
            .insert(ClientAddr(CLIENT.parse().unwrap()));
        let response = self.h.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        if let Some(set) = headers.get(header::SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = (!pair.ends_with('=')).then_some(pair);
        }
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    fn request(&self, method: &str, path: &str) -> axum::http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, HOST);
        if let Some(c) = &self.cookie {
            b = b.header(header::COOKIE, c);
        }
        b
    }

    async fn get(&mut self, path: &str) -> Reply {
        let r = self.request("GET", path).body(Body::empty()).unwrap();
        self.send(r).await
    }

    async fn post_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        origin: &str,
        site: &str,
    ) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let r = self
            .request("POST", path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, origin)
            .header("sec-fetch-site", site)
            .body(Body::from(body))
            .unwrap();
        self.send(r).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        self.post_with(path, fields, &format!("http://{HOST}"), "same-origin")
            .await
    }

    /// Signs in with the admin token.
    async fn sign_in(&mut self) {
        let (id, secret) = (self.h.token_id.clone(), self.h.token_secret.clone());
        self.sign_in_as(&id, &secret).await;
    }

    /// Signs in with the token `id`.
    async fn sign_in_as(&mut self, id: &str, secret: &str) {
        let r = self
            .post("/signin", &[("token_id", id), ("token_secret", secret)])
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    }

    /// A page's CSRF token.
    async fn csrf(&mut self) -> String {
        self.get("/").await.csrf()
    }

    /// Creates a secret through the form; returns its id.
    async fn create(&mut self, name: &str, rows: &[(&str, &str)]) -> String {
        let csrf = self.csrf().await;
        let mut fields = vec![
            ("csrf", csrf.as_str()),
            ("name", name),
            ("action", "create"),
        ];
        for (k, v) in rows {
            fields.push(("k", k));
            fields.push(("v", v));
        }
        let r = self.post("/secrets/new", &fields).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        r.location().trim_start_matches("/secrets/").to_owned()
    }
}

#[tokio::test]
async fn signed_out_pages_lead_to_sign_in() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    for path in [
        "/",
        "/secrets/new",
        "/environments",
        "/tokens",
        "/tokens/ak-x",
        "/audit",
        "/secrets/st-x",
    ] {
        let r = b.get(path).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert!(r.location().starts_with("/signin"), "{path}");
    }
    let r = b.get("/signin").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("type=\"password\""));
}

/// Sign-in, sign-out and a refused sign-in are recorded, as the
/// dashboard, from the browser's address.
#[tokio::test]
async fn sign_in_sets_a_strict_cookie_and_sign_out_ends_the_session() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    let wrong = b
        .post(
            "/signin",
            &[("token_id", &h.token_id), ("token_secret", "as-wrong")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("not accepted"));
    assert!(b.cookie.is_none());
    assert!(h.events_of("dashboard.signin").await.is_empty());
    let failures = h.events_of("auth.failure").await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].entry.interface, "dashboard");
    assert_eq!(failures[0].entry.client.as_deref(), Some(CLIENT));

    let r = b
        .post(
            "/signin",
            &[("token_id", &h.token_id), ("token_secret", &h.token_secret)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/");
    let set = r.headers[header::SET_COOKIE].to_str().unwrap();
    for part in [
        "latchkey_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=",
    ] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains(&h.token_secret));
    let old_cookie = b.cookie.clone().unwrap();
    let signins = h.events_of("dashboard.signin").await;
    assert_eq!(signins.len(), 1, "{signins:?}");
    let e = &signins[0].entry;
    assert_eq!(e.actor.as_ref().unwrap().token_id, h.token_id);
    assert_eq!(e.actor.as_ref().unwrap().role, "admin");
    assert_eq!(
        (
            e.interface.as_str(),
            e.client.as_deref(),
            e.outcome.as_str()
        ),
        ("dashboard", Some(CLIENT), "ok")
    );
    assert!(h.events_of("dashboard.signout").await.is_empty());

    let page = b.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Secrets") && page.body.contains("admin"));
    assert!(
        !page.body.contains(&h.token_secret),
        "the token secret is never in a page"
    );
    // Signed in, the sign-in page sends you on.
    assert_eq!(b.get("/signin").await.status, StatusCode::SEE_OTHER);

    let csrf = page.csrf();
    let out = b.post("/signout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let signouts = h.events_of("dashboard.signout").await;
    assert_eq!(signouts.len(), 1, "{signouts:?}");
    let e = &signouts[0].entry;
    assert_eq!(e.actor.as_ref().unwrap().token_id, h.token_id);
    assert_eq!(e.client.as_deref(), Some(CLIENT));
    // The old cookie no longer works: the session is gone on the server.
    b.cookie = Some(old_cookie);
    let r = b.get("/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.location().starts_with("/signin"));
}

#[tokio::test]
async fn the_admin_token_file_can_be_pasted() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    let file = AdminTokenFile::new(
        Some("http://127.0.0.1:7420".to_owned()),
        &h.token_id,
        &h.token_secret,
    )
    .render();
    let r = b
        .post(
            "/signin",
            &[
                ("token_id", ""),
                ("token_secret", ""),
                ("token_file", &file),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(b.get("/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_revoked_token_ends_its_sessions() {
    let h = harness().await;
    let admin = h
        .service
        .authenticate(
            &h.token_id,
            &h.token_secret,
            &latchkey_service::Origin::server(),
        )
        .await
        .unwrap();
    let (token, secret) = h
        .service
        .create_token(&admin, "dev", Role::Developer, None, None)
        .await
        .unwrap();
    let mut b = Browser::new(&h);
    let r = b
        .post(
            "/signin",
            &[("token_id", &token.id), ("token_secret", &secret)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = b.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains("href=\"/tokens\""),
        "no tokens link for a developer"
    );
    h.service.revoke_token(&admin, &token.id).await.unwrap();
    let r = b.get("/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/signin?ended=1");
}

#[tokio::test]
async fn an_expired_or_rotated_out_token_ends_its_sessions() {
    let h = harness().await;
    let ttl = std::time::Duration::from_millis(600);
    let (short, short_secret) = h.token("short", Role::Developer, Some(ttl)).await;
    let (ci, ci_secret) = h.token("ci", Role::Developer, None).await;
    let mut expiring = Browser::new(&h);
    let mut rotated = Browser::new(&h);
    expiring.sign_in_as(&short.id, &short_secret).await;
    rotated.sign_in_as(&ci.id, &ci_secret).await;
    for b in [&mut expiring, &mut rotated] {
        assert_eq!(b.get("/").await.status, StatusCode::OK);
    }
    // A rotation with a grace period keeps the session until it ends.
    h.service
        .rotate_token(&h.admin().await, &ci.id, Some(ttl))
        .await
        .unwrap();
    assert_eq!(rotated.get("/").await.status, StatusCode::OK);
    tokio::time::sleep(ttl + std::time::Duration::from_millis(100)).await;
    for b in [&mut expiring, &mut rotated] {
        let r = b.get("/").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(r.location(), "/signin?ended=1");
    }
    // Signing in again with the expired token says when it expired.
    let r = expiring
        .post(
            "/signin",
            &[("token_id", &short.id), ("token_secret", &short_secret)],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.body.contains(&format!("token {} expired at", short.id)),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn every_page_has_the_security_headers() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    let mut replies = vec![b.get("/signin").await, b.get("/static/app.css").await];
    b.sign_in().await;
    let id = b.create("hdr", &[("A", "1")]).await;
    replies.push(b.get("/").await);
    replies.push(b.get("/audit").await);
    replies.push(b.get(&format!("/tokens/{}", h.token_id)).await);
    replies.push(b.get(&format!("/secrets/{id}")).await);
    replies.push(b.get(&format!("/secrets/{id}/value?key=A")).await);
    replies.push(b.get(&format!("/secrets/{id}/history")).await);
    replies.push(b.get(&format!("/secrets/{id}/versions/1?reveal=A")).await);
    replies.push(
        b.get(&format!("/secrets/{id}/versions/1/value?key=A"))
            .await,
    );
    replies.push(
        b.post_with("/signout", &[], "http://evil.test", "cross-site")
            .await,
    );
    for r in &replies {
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{csp}");
        }
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert_eq!(r.headers["referrer-policy"], "same-origin");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
    }
    // Pages that show names or values are never cached.
    for r in &replies[2..] {
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    }
}

#[tokio::test]
async fn cross_site_and_tokenless_posts_are_refused() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let id = b.create("keep-me", &[("A", "1")]).await;
    let csrf = b.csrf().await;
    let path = format!("/secrets/{id}/delete");
    let fields = [("csrf", csrf.as_str()), ("confirm", "keep-me")];

    let r = b
        .post_with(&path, &fields, "http://evil.test", "cross-site")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("another site"));
    let r = b
        .post_with(&path, &fields, "http://evil.test", "same-origin")
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "Origin alone is checked too"
    );
    let r = b
        .post_with(&path, &fields, &format!("http://{HOST}"), "same-site")
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "a sibling site is not this origin"
    );
    // Same origin, but no or a wrong CSRF token.
    let r = b.post(&path, &[("confirm", "keep-me")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = b
        .post(&path, &[("csrf", "forged"), ("confirm", "keep-me")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Sign-in itself is protected from login CSRF.
    let r = b
        .post_with(
            "/signin",
            &[("token_id", &h.token_id), ("token_secret", &h.token_secret)],
            "http://evil.test",
            "cross-site",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    assert_eq!(
        b.get(&format!("/secrets/{id}")).await.status,
        StatusCode::OK,
        "nothing was deleted"
    );
    let r = b.post(&path, &fields).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "the real form works");
}

#[tokio::test]
async fn create_from_a_pasted_dotenv_then_reveal_one_value_at_a_time() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let csrf = b.csrf().await;
    std::env::set_var("DASHBOARD_TEST_OUTER", "server-env");
    let paste = "# creds\nexport DB_URL=postgres://db/x\nAPI_KEY='s3cr3t-value'\nDERIVED=${DB_URL}/y\nLEAK=${DASHBOARD_TEST_OUTER}\n";
    // Loading fills the rows without creating anything.
    let r = b
        .post(
            "/secrets/new",
            &[
                ("csrf", &csrf),
                ("name", "app-creds"),
                ("paste", paste),
                ("action", "load"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("value=\"DB_URL\"") && r.body.contains(">postgres://db/x</textarea>"));
    assert!(
        !r.body.contains("server-env"),
        "the server's environment is never read"
    );
    assert!(b.get("/").await.body.contains("No secrets in"));

    let r = b
        .post(
            "/secrets/new",
            &[
                ("csrf", &csrf),
                ("name", "app-creds"),
                ("paste", paste),
                ("action", "create"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page_url = r.location().to_owned();
    let page = b.get(&page_url).await;
    assert!(page.body.contains("was created"));
    for key in ["API_KEY", "DB_URL", "DERIVED", "LEAK"] {
        assert!(page.body.contains(key));
    }
    assert!(
        !page.body.contains("s3cr3t-value") && !page.body.contains("postgres://db"),
        "values are hidden"
    );
    assert!(page
        .body
        .contains("modal.Secret.from_name(&quot;app-creds&quot;)"));
    assert!(page.body.contains("latchkey run --secret app-creds"));
    assert!(page
        .body
        .contains("Secret::from_name(&quot;app-creds&quot;)"));

    let revealed = b.get(&format!("{page_url}?reveal=API_KEY")).await;
    assert!(revealed.body.contains("s3cr3t-value"));
    assert!(
        !revealed.body.contains("postgres://db"),
        "only one value at a time"
    );
    assert_eq!(revealed.headers[header::CACHE_CONTROL], "no-store");

    let value = b.get(&format!("{page_url}/value?key=DERIVED")).await;
    assert_eq!(value.status, StatusCode::OK);
    assert_eq!(value.body, "postgres://db/x/y");
    assert_eq!(value.headers[header::CACHE_CONTROL], "no-store");
    assert!(value.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(b.get(&format!("{page_url}/value?key=LEAK")).await.body, "");
    assert_eq!(
        b.get(&format!("{page_url}/value?key=NOPE")).await.status,
        StatusCode::NOT_FOUND
    );

    // The service sees it like any other secret.
    let admin = h
        .service
        .authenticate(
            &h.token_id,
            &h.token_secret,
            &latchkey_service::Origin::server(),
        )
        .await
        .unwrap();
    let s = h
        .service
        .resolve_secret(&admin, "", "app-creds", &["API_KEY".into()])
        .await
        .unwrap();
    assert_eq!(s.contents["API_KEY"], "s3cr3t-value");
    assert_eq!(s.summary.created_by, "admin");
}

#[tokio::test]
async fn bad_inputs_are_shown_inline_and_nothing_is_created() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let csrf = b.csrf().await;
    let r = b
        .post(
            "/secrets/new",
            &[
                ("csrf", &csrf),
                ("name", "bad name!"),
                ("action", "create"),
                ("k", "1BAD"),
                ("v", "x"),
                ("k", "NUL"),
                ("v", "a\0b"),
                ("k", "DUP"),
                ("v", "1"),
                ("k", "DUP"),
                ("v", "2"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    for reason in [
        "Invalid Secret name: &#39;bad name!&#39;",
        "Invalid key &#39;1BAD&#39;: a key must match",
        "contains a NUL character",
        "Key &#39;DUP&#39; is given more than once",
        "aria-invalid=\"true\"",
    ] {
        assert!(
            r.body.contains(reason) || r.body.contains(&reason.replace("&#39;", "'")),
            "{reason} in {}",
            r.body
        );
    }
    // The client-side rules are on the fields.
    let form = b.get("/secrets/new").await;
    assert!(form.body.contains("pattern=\"[A-Za-z_][A-Za-z0-9_]*\""));
    assert!(form.body.contains("maxlength=\"64\""));

    let big = "v".repeat(32_769);
    let r = b
        .post(
            "/secrets/new",
            &[
                ("csrf", &csrf),
                ("name", "big"),
                ("action", "create"),
                ("k", "K"),
                ("v", &big),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r
        .body
        .contains("32769 characters; the limit is 32768 characters"));

    let r = b
        .post(
            "/secrets/new",
            &[
                ("csrf", &csrf),
                ("name", "js"),
                ("action", "load"),
                ("paste", "{\"A\": 1}"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("Non-string value for key"));
    let r = b
        .post(
            "/secrets/new",
            &[
                ("csrf", &csrf),
                ("name", "env"),
                ("action", "create"),
                ("paste", "A=1\nB=\"unterminated\n"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("line 2"));
    let r = b
        .post(
            "/secrets/new",
            &[("csrf", &csrf), ("name", "empty"), ("action", "create")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("Add at least one key"));
    let r = b
        .post(
            "/secrets/new",
            &[
                ("csrf", &csrf),
                ("name", "x"),
                ("env", "nope"),
                ("action", "create"),
                ("k", "A"),
                ("v", "1"),
            ],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "the service's answer is shown"
    );
    assert!(r.body.contains("nope"));

    assert!(
        b.get("/").await.body.contains("No secrets in"),
        "nothing was created"
    );

    // A name that exists: the service refuses, and says so next to the name.
    b.create("taken", &[("A", "1")]).await;
    let r = b
        .post(
            "/secrets/new",
            &[
                ("csrf", &csrf),
                ("name", "taken"),
                ("action", "create"),
                ("k", "A"),
                ("v", "2"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("already exists"), "{}", r.body);
}

/// The fields of an edit form as the browser would send them, with `set`
/// typed into existing keys' value boxes and `remove` ticked.
fn edit_fields(
    form: &Reply,
    set: &[(&str, &str)],
    remove: &[&str],
    add: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut fields = vec![
        ("csrf".to_owned(), form.csrf()),
        ("base".to_owned(), form.hidden("base")),
        ("action".to_owned(), "save".to_owned()),
    ];
    let mut rest = form.body.as_str();
    while let Some(at) = rest.find("name=\"ek\" value=\"") {
        rest = &rest[at + 17..];
        let key = rest.split('"').next().unwrap().to_owned();
        let at = rest.find("name=\"ef\" value=\"").unwrap() + 17;
        let fp = rest[at..].split('"').next().unwrap().to_owned();
        let typed = set.iter().find(|(k, _)| *k == key).map_or("", |(_, v)| v);
        fields.push(("ek".into(), key.clone()));
        fields.push(("ef".into(), fp));
        fields.push(("ev".into(), typed.to_owned()));
        if remove.contains(&key.as_str()) {
            fields.push(("rm".into(), key));
        }
    }
    for (k, v) in add {
        fields.push(("nk".into(), (*k).to_owned()));
        fields.push(("nv".into(), (*v).to_owned()));
    }
    fields
}

async fn post_owned(b: &mut Browser<'_>, path: &str, fields: &[(String, String)]) -> Reply {
    let borrowed: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    b.post(path, &borrowed).await
}

#[tokio::test]
async fn edits_merge_and_concurrent_edits_of_one_key_conflict() {
    let h = harness().await;
    let mut alice = Browser::new(&h);
    let mut bob = Browser::new(&h);
    alice.sign_in().await;
    bob.sign_in().await;
    let id = alice
        .create("shared", &[("A", "1"), ("B", "2"), ("C", "3")])
        .await;
    let edit = format!("/secrets/{id}/edit");
    let admin = h
        .service
        .authenticate(
            &h.token_id,
            &h.token_secret,
            &latchkey_service::Origin::server(),
        )
        .await
        .unwrap();
    let contents = || async { h.service.secret(&admin, &id).await.unwrap().contents };

    // The editor shows keys, not values.
    let form_a = alice.get(&edit).await;
    assert!(form_a.body.contains("value=\"A\"") && !form_a.body.contains(">1</textarea>"));
    let form_b = bob.get(&edit).await;

    // Different keys: both survive.
    let r = post_owned(
        &mut alice,
        &edit,
        &edit_fields(&form_a, &[("A", "alice")], &["C"], &[("D", "new")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let r = post_owned(
        &mut bob,
        &edit,
        &edit_fields(&form_b, &[("B", "bob")], &[], &[]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(bob
        .get(&format!("/secrets/{id}"))
        .await
        .body
        .contains("their changes were kept"));
    let now = contents().await;
    assert_eq!(now.get("A").map(String::as_str), Some("alice"));
    assert_eq!(now.get("B").map(String::as_str), Some("bob"));
    assert_eq!(now.get("C"), None);
    assert_eq!(now.get("D").map(String::as_str), Some("new"));

    // The same key: the second save is a conflict and saves nothing.
    let form_a = alice.get(&edit).await;
    let form_b = bob.get(&edit).await;
    let r = post_owned(
        &mut alice,
        &edit,
        &edit_fields(&form_a, &[("A", "alice-2")], &[], &[]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let conflict = post_owned(
        &mut bob,
        &edit,
        &edit_fields(&form_b, &[("A", "bob-2"), ("B", "bob-2")], &[], &[]),
    )
    .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    assert!(
        conflict.body.contains("Someone else changed A"),
        "{}",
        conflict.body
    );
    assert!(
        conflict.body.contains(">bob-2</textarea>"),
        "what Bob typed is kept"
    );
    assert!(
        !conflict.body.contains("alice-2"),
        "the other person's value is not shown"
    );
    assert_eq!(contents().await["A"], "alice-2");
    assert_eq!(contents().await["B"], "bob", "nothing was half-saved");

    // Saving the rebased form again overwrites knowingly.
    let again = edit_fields(&conflict, &[("A", "bob-2"), ("B", "bob-2")], &[], &[]);
    let r = post_owned(&mut bob, &edit, &again).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(contents().await["A"], "bob-2");

    // Removing a key the other person changed is a conflict too.
    let form_a = alice.get(&edit).await;
    let form_b = bob.get(&edit).await;
    post_owned(
        &mut alice,
        &edit,
        &edit_fields(&form_a, &[("D", "changed")], &[], &[]),
    )
    .await;
    let r = post_owned(&mut bob, &edit, &edit_fields(&form_b, &[], &["D"], &[])).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(contents().await["D"], "changed");
}

#[tokio::test]
async fn edit_refuses_bad_keys_and_values_inline() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let id = b.create("e", &[("A", "1")]).await;
    let edit = format!("/secrets/{id}/edit");
    let form = b.get(&edit).await;
    let fields = edit_fields(
        &form,
        &[("A", "x\0y")],
        &[],
        &[("bad-key", "v"), ("A", "dup")],
    );
    let r = post_owned(&mut b, &edit, &fields).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("NUL"));
    assert!(
        r.body.contains("Invalid key &#39;bad-key&#39;")
            || r.body.contains("Invalid key 'bad-key'")
    );
    assert!(r.body.contains("more than once"));
    let admin = h
        .service
        .authenticate(
            &h.token_id,
            &h.token_secret,
            &latchkey_service::Origin::server(),
        )
        .await
        .unwrap();
    assert_eq!(
        h.service.secret(&admin, &id).await.unwrap().contents["A"],
        "1"
    );
    // A new row naming an existing key sets it, even to empty.
    let form = b.get(&edit).await;
    let r = post_owned(&mut b, &edit, &edit_fields(&form, &[], &[], &[("A", "")])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        h.service.secret(&admin, &id).await.unwrap().contents["A"],
        ""
    );
}

#[tokio::test]
async fn delete_needs_the_typed_name() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let id = b.create("doomed", &[("A", "1")]).await;
    let page = b.get(&format!("/secrets/{id}/delete")).await;
    assert!(page.body.contains("irreversible") && page.body.contains("Every app"));
    let csrf = page.csrf();
    let r = b
        .post(
            &format!("/secrets/{id}/delete"),
            &[("csrf", &csrf), ("confirm", "doome")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("nothing was deleted"));
    let r = b
        .post(
            &format!("/secrets/{id}/delete"),
            &[("csrf", &csrf), ("confirm", "doomed")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(b.get("/").await.body.contains("was deleted"));
    assert_eq!(
        b.get(&format!("/secrets/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_list_pages_newest_first_and_filters_by_name() {
    let h = harness().await;
    let admin = h
        .service
        .authenticate(
            &h.token_id,
            &h.token_secret,
            &latchkey_service::Origin::server(),
        )
        .await
        .unwrap();
    for i in 0..120 {
        let name = format!("{}-{i:03}", if i % 10 == 0 { "db" } else { "app" });
        let contents = [("K".to_owned(), "v".to_owned())].into();
        h.service
            .create_secret(&admin, "", &name, contents, CreateMode::Fail, &[])
            .await
            .unwrap();
    }
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let first = b.get("/").await;
    assert!(first.body.contains("app-119"));
    assert!(
        first.body.find("app-119").unwrap() < first.body.find("app-118").unwrap(),
        "newest first"
    );
    assert!(!first.body.contains("app-069"), "50 a page");
    let next = first.body.split("rel=\"next\"").next().unwrap();
    let href = next
        .rsplit("href=\"")
        .next()
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let second = b.get(&href).await;
    assert!(second.body.contains("app-069") && !second.body.contains("app-119"));
    assert!(second.body.contains("Newest"));

    let filtered = b.get("/?q=DB-").await;
    let hits = filtered.body.matches("href=\"/secrets/").count();
    assert_eq!(
        hits,
        12 + 1,
        "case-insensitive substring (and the New secret link)"
    );
    assert!(!filtered.body.contains("rel=\"next\""));
    let none = b.get("/?q=zzz").await;
    assert!(none.body.contains("No secret whose name contains"));
    assert_eq!(b.get("/?env=nope").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn environments_are_created_renamed_and_deleted_with_confirmation() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let csrf = b.csrf().await;
    let r = b
        .post("/environments", &[("csrf", &csrf), ("name", "dev")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = b
        .post("/environments", &[("csrf", &csrf), ("name", "en-bad")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("Invalid environment name"));
    let r = b
        .post(
            "/environments/rename",
            &[("csrf", &csrf), ("name", "dev"), ("new_name", "staging")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = b.get("/environments").await;
    assert!(page.body.contains("staging") && page.body.contains("is now"));

    let fields = [
        ("csrf", csrf.as_str()),
        ("env", "staging"),
        ("name", "in-staging"),
        ("action", "create"),
        ("k", "A"),
        ("v", "1"),
    ];
    assert_eq!(
        b.post("/secrets/new", &fields).await.status,
        StatusCode::SEE_OTHER
    );
    let r = b
        .post(
            "/environments/delete",
            &[("csrf", &csrf), ("name", "staging")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("holds 1 secret") && r.body.contains("confirm-env"));
    let r = b
        .post(
            "/environments/delete",
            &[
                ("csrf", &csrf),
                ("name", "staging"),
                ("with_secrets", "yes"),
                ("confirm", "wrong"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = b
        .post(
            "/environments/delete",
            &[
                ("csrf", &csrf),
                ("name", "staging"),
                ("with_secrets", "yes"),
                ("confirm", "staging"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(!b.get("/environments").await.body.contains("staging<"));
}

#[tokio::test]
async fn tokens_are_created_once_listed_and_revoked() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let csrf = b.csrf().await;
    let r = b
        .post(
            "/tokens",
            &[
                ("csrf", &csrf),
                ("name", "ci"),
                ("role", "reader"),
                ("env", "main"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let at = r.body.find("LATCHKEY_TOKEN_SECRET=").unwrap() + 22;
    let secret = r.body[at..at + 35].to_owned();
    assert!(secret.starts_with("as-"));
    let list = b.get("/tokens").await;
    assert!(
        list.body.contains(">ci") && !list.body.contains(&secret),
        "shown once"
    );

    let admin = h
        .service
        .authenticate(
            &h.token_id,
            &h.token_secret,
            &latchkey_service::Origin::server(),
        )
        .await
        .unwrap();
    let token = h
        .service
        .list_tokens(&admin)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == "ci")
        .unwrap();
    assert_eq!(token.environments, Some(vec!["main".to_owned()]));
    assert!(h
        .service
        .authenticate(&token.id, &secret, &latchkey_service::Origin::server())
        .await
        .is_ok());
    let r = b
        .post("/tokens/revoke", &[("csrf", &csrf), ("id", &token.id)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(h
        .service
        .authenticate(&token.id, &secret, &latchkey_service::Origin::server())
        .await
        .is_err());
    // The last admin token cannot be revoked; the service says why.
    let r = b
        .post("/tokens/revoke", &[("csrf", &csrf), ("id", &h.token_id)])
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert!(r.body.contains("last admin token"));
}

#[tokio::test]
async fn tokens_get_an_expiry_and_are_rotated_from_the_form() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let csrf = b.csrf().await;
    let fields = |ttl| {
        [
            ("csrf", csrf.as_str()),
            ("name", "ci"),
            ("role", "reader"),
            ("ttl", ttl),
        ]
    };
    let r = b.post("/tokens", &fields("0")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("greater than zero"), "{}", r.body);
    let r = b.post("/tokens", &fields("30d")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let tokens = h.service.list_tokens(&h.admin().await).await.unwrap();
    assert_eq!(tokens.len(), 2, "the refused form created nothing");
    let ci = tokens.iter().find(|t| t.name == "ci").unwrap();
    let expires = ci.expires_at.expect("an expiry") - ci.created_at;
    assert!(
        (expires - 30 * 86_400_000_000).abs() < 5_000_000,
        "{expires}"
    );

    let r = b
        .post(
            "/tokens/rotate",
            &[("csrf", &csrf), ("id", &ci.id), ("grace", "10m")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("has a new secret"), "{}", r.body);
    assert!(
        r.body.contains("previous secret is accepted until"),
        "{}",
        r.body
    );
    let at = r.body.find("LATCHKEY_TOKEN_SECRET=").unwrap() + 22;
    let secret = r.body[at..at + 35].to_owned();
    assert!(h
        .service
        .authenticate(&ci.id, &secret, &latchkey_service::Origin::server())
        .await
        .is_ok());
    let r = b
        .post(
            "/tokens/rotate",
            &[("csrf", &csrf), ("id", &ci.id), ("grace", "later")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        h.service
            .authenticate(&ci.id, &secret, &latchkey_service::Origin::server())
            .await
            .is_ok(),
        "unchanged"
    );
}

#[tokio::test]
async fn a_reader_sees_but_cannot_change() {
    let h = harness().await;
    let (token, secret) = h.token_pair("viewer", Role::Reader).await;
    let mut b = Browser::new(&h);
    b.sign_in_as(&token, &secret).await;
    let page = b.get("/").await;
    assert!(!page.body.contains("New secret"));
    let csrf = page.csrf();
    let r = b
        .post(
            "/secrets/new",
            &[
                ("csrf", &csrf),
                ("name", "x"),
                ("action", "create"),
                ("k", "A"),
                ("v", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("may not create secrets"));
}

/// The row of version `n` on a history page.
fn history_row(page: &Reply, n: i64) -> &str {
    let start = page
        .body
        .find(&format!("id=\"v-{n}\""))
        .unwrap_or_else(|| panic!("no version {n} in {}", page.body));
    let end = page.body[start..].find("</tr>").unwrap();
    // From the row's own opening tag.
    let open = page.body[..start].rfind("<tr").unwrap();
    &page.body[open..start + end]
}

#[tokio::test]
async fn history_lists_versions_and_key_changes_and_reveals_old_values_one_at_a_time() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let id = b
        .create("hist", &[("A", "val-a-1"), ("B", "val-b-1")])
        .await;
    h.update(
        &id,
        &[("A", Some("val-a-2")), ("B", None), ("C", Some("val-c-2"))],
    )
    .await;

    let page = b.get(&format!("/secrets/{id}")).await;
    assert!(page
        .body
        .contains(&format!("href=\"/secrets/{id}/history\"")));

    let history = b.get(&format!("/secrets/{id}/history")).await;
    assert_eq!(history.status, StatusCode::OK);
    assert_eq!(history.headers[header::CACHE_CONTROL], "no-store");
    let v2 = history_row(&history, 2);
    assert!(
        v2.contains("class=\"current\"") && v2.contains(">current<"),
        "{v2}"
    );
    for part in [
        "updated",
        "admin",
        "added <code>C</code>",
        "removed <code>B</code>",
        "changed <code>A</code>",
    ] {
        assert!(v2.contains(part), "{part} in {v2}");
    }
    assert!(
        !v2.contains("Roll back"),
        "the current version is not offered"
    );
    let v1 = history_row(&history, 1);
    assert!(!v1.contains(">current<"), "{v1}");
    for part in [
        "created",
        "added <code>A</code>, <code>B</code>",
        "Roll back to version 1",
    ] {
        assert!(v1.contains(part), "{part} in {v1}");
    }
    assert!(
        history.body.find("id=\"v-2\"").unwrap() < history.body.find("id=\"v-1\"").unwrap(),
        "newest first"
    );
    assert!(!history.body.contains("val-"), "never a value");

    // An old version: keys, values hidden until one is revealed.
    let old = b.get(&format!("/secrets/{id}/versions/1")).await;
    assert_eq!(old.status, StatusCode::OK);
    assert!(old.body.contains("<code>A</code>") && old.body.contains("<code>B</code>"));
    assert!(old.body.contains("This is an old version"));
    assert!(!old.body.contains("val-"), "values hidden until revealed");
    let revealed = b.get(&format!("/secrets/{id}/versions/1?reveal=B")).await;
    assert_eq!(revealed.headers[header::CACHE_CONTROL], "no-store");
    assert!(revealed
        .body
        .contains("<code class=\"revealed\">val-b-1</code>"));
    assert_eq!(
        revealed.body.matches("val-").count(),
        1,
        "one value at a time"
    );
    let value = b
        .get(&format!("/secrets/{id}/versions/1/value?key=A"))
        .await;
    assert_eq!(value.body, "val-a-1", "the old value, not the current one");
    assert_eq!(value.headers[header::CACHE_CONTROL], "no-store");
    assert!(value.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(
        b.get(&format!("/secrets/{id}/versions/1/value?key=C"))
            .await
            .status,
        StatusCode::NOT_FOUND,
        "C came later"
    );
    let current = b.get(&format!("/secrets/{id}/versions/2")).await;
    assert!(current.body.contains("This is the current version"));
    assert!(!current.body.contains("/rollback"));

    let missing = b.get(&format!("/secrets/{id}/versions/9")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing.body.contains("has no version 9"),
        "{}",
        missing.body
    );
    let bad = b.get(&format!("/secrets/{id}/versions/x1")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("Invalid version"), "{}", bad.body);
    let bad = b.get(&format!("/secrets/{id}/history?before=0")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        b.get("/secrets/st-nope/history").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_long_history_is_paged() {
    let h = harness_keeping(1000).await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let id = b.create("busy", &[("N", "0")]).await;
    for i in 1..60 {
        h.update(&id, &[("N", Some(&i.to_string()))]).await;
    }
    let first = b.get(&format!("/secrets/{id}/history")).await;
    assert_eq!(first.body.matches("id=\"v-").count(), 50);
    assert!(history_row(&first, 60).contains(">current<"));
    assert!(first.body.contains("id=\"v-11\"") && !first.body.contains("id=\"v-10\""));
    let next = format!("/secrets/{id}/history?before=11");
    assert!(
        first
            .body
            .contains(&format!("href=\"{next}\" rel=\"next\"")),
        "{}",
        first.body
    );
    let second = b.get(&next).await;
    assert_eq!(second.body.matches("id=\"v-").count(), 10);
    assert!(second.body.contains("id=\"v-10\"") && second.body.contains("id=\"v-1\""));
    assert!(
        !second.body.contains(">current<"),
        "the current version is on the first page"
    );
    assert!(history_row(&second, 10).contains("Roll back to version 10"));
    assert!(!second.body.contains("rel=\"next\"") && second.body.contains("Newest"));
}

#[tokio::test]
async fn rollback_is_confirmed_then_makes_a_new_version_with_the_old_contents() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let id = b
        .create("rb", &[("A", "alpha-one-v"), ("B", "beta-one-v")])
        .await;
    h.update(&id, &[("A", Some("alpha-two-v"))]).await;
    h.update(&id, &[("B", None), ("C", Some("gamma-three-v"))])
        .await;
    let v1 = pairs(&[("A", "alpha-one-v"), ("B", "beta-one-v")]);
    let v3 = pairs(&[("A", "alpha-two-v"), ("C", "gamma-three-v")]);
    let rollback = format!("/secrets/{id}/versions/1/rollback");

    let confirm = b.get(&rollback).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm
            .body
            .contains("This makes <strong>version 4</strong>"),
        "{}",
        confirm.body
    );
    for part in [
        "added <code>B</code>",
        "removed <code>C</code>",
        "changed <code>A</code>",
    ] {
        assert!(confirm.body.contains(part), "{part} in {}", confirm.body);
    }
    assert!(
        !confirm.body.contains("alpha-one-v") && !confirm.body.contains("alpha-two-v"),
        "never a value"
    );
    assert_eq!(confirm.hidden("expected"), "3");
    assert_eq!(
        h.now(&id).await,
        (3, v3.clone()),
        "showing it changed nothing"
    );

    // Without the session's CSRF token, or from another site: refused.
    let r = b.post(&rollback, &[("expected", "3")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let fields = [("csrf", confirm.csrf()), ("expected", "3".to_owned())];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = b
        .post_with(&rollback, &fields, "http://evil.test", "cross-site")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(h.now(&id).await, (3, v3.clone()));

    let r = b.post(&rollback, &fields).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), format!("/secrets/{id}/history"));
    assert_eq!(
        h.now(&id).await,
        (4, v1.clone()),
        "version 4 holds version 1's contents"
    );
    let history = b.get(r.location()).await;
    assert!(
        history
            .body
            .contains("Rolled back rb to version 1: version 4 now holds its keys and values."),
        "{}",
        history.body
    );
    let v4 = history_row(&history, 4);
    assert!(
        v4.contains("rolled back to 1") && v4.contains(">current<"),
        "{v4}"
    );
    assert!(
        history_row(&history, 3).contains("Roll back to version 3"),
        "undo is one more rollback"
    );

    // Posting the same confirmation again: the secret moved on since, so
    // the store refuses and the page comes back as it now is.
    let again = b.post(&rollback, &fields).await;
    assert_eq!(again.status, StatusCode::PRECONDITION_FAILED);
    assert!(
        again
            .body
            .contains("was changed by someone else: it is at version 4, not 3"),
        "{}",
        again.body
    );
    assert_eq!(again.hidden("expected"), "4");
    assert!(
        again.body.contains("no key changed"),
        "version 1 is what 4 holds"
    );
    assert_eq!(h.now(&id).await.0, 4, "nothing was rolled back");
}

#[tokio::test]
async fn a_rollback_confirmed_before_another_save_is_not_made_unseen() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let id = b.create("raced", &[("A", "a1")]).await;
    h.update(&id, &[("A", Some("a2"))]).await;
    let rollback = format!("/secrets/{id}/versions/1/rollback");
    let confirm = b.get(&rollback).await;
    assert_eq!(confirm.hidden("expected"), "2");
    // Someone saves after the confirmation was shown.
    h.update(&id, &[("B", Some("b3"))]).await;
    let fields = [
        ("csrf", confirm.csrf()),
        ("expected", confirm.hidden("expected")),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = b.post(&rollback, &fields).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.body);
    assert!(r.body.contains("was changed by someone else"), "{}", r.body);
    assert_eq!(
        h.now(&id).await,
        (3, pairs(&[("A", "a2"), ("B", "b3")])),
        "their save was not undone"
    );
    // The confirmation, shown again, now says it removes B too.
    assert!(r.body.contains("This makes <strong>version 4</strong>"));
    assert!(r.body.contains("removed <code>B</code>"), "{}", r.body);
    let fields = [("csrf", r.csrf()), ("expected", r.hidden("expected"))];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = b.post(&rollback, &fields).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(h.now(&id).await, (4, pairs(&[("A", "a1")])));
}

#[tokio::test]
async fn rollback_to_the_current_or_a_destroyed_version_is_refused_with_the_reason() {
    let h = harness_keeping(3).await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let id = b.create("kept", &[("N", "1")]).await;
    for n in 2..=5 {
        h.update(&id, &[("N", Some(&n.to_string()))]).await;
    }
    let csrf = b.csrf().await;
    let post = |to: i64| format!("/secrets/{id}/versions/{to}/rollback");

    // The current version: nothing to roll back.
    let r = b.get(&post(5)).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert!(
        r.body.contains("nothing to roll back")
            && !r.body.contains("method=\"post\" action=\"/secrets"),
        "{}",
        r.body
    );
    let r = b
        .post(&post(5), &[("csrf", &csrf), ("expected", "5")])
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert!(
        r.body
            .contains("Secret &#39;kept&#39; is at version 5 already; nothing was rolled back")
            || r.body
                .contains("Secret 'kept' is at version 5 already; nothing was rolled back"),
        "the service's message: {}",
        r.body
    );
    assert!(r.body.contains("id=\"history\""), "shown over the history");

    // A destroyed version: the history shows only the kept ones, and a
    // rollback to another says which are kept.
    let history = b.get(&format!("/secrets/{id}/history")).await;
    assert_eq!(history.body.matches("id=\"v-").count(), 3);
    assert!(!history.body.contains("id=\"v-2\""));
    let r = b.get(&post(1)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("versions 3 to 5 are kept"), "{}", r.body);
    let r = b
        .post(&post(1), &[("csrf", &csrf), ("expected", "5")])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.body.contains("has no version 1") && r.body.contains("versions 3 to 5 are kept"),
        "{}",
        r.body
    );
    assert!(r.body.contains("id=\"history\""), "shown over the history");
    let r = b
        .post(&post(0), &[("csrf", &csrf), ("expected", "5")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = b.post(&post(3), &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "no expected version");
    assert_eq!(
        h.now(&id).await,
        (5, pairs(&[("N", "5")])),
        "nothing was rolled back"
    );
}

#[tokio::test]
async fn a_reader_sees_the_history_but_cannot_roll_back() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let id = b.create("ro", &[("A", "a1")]).await;
    h.update(&id, &[("A", Some("a2"))]).await;
    let (token, secret) = h.token_pair("viewer", Role::Reader).await;
    let mut r = Browser::new(&h);
    r.sign_in_as(&token, &secret).await;
    let history = r.get(&format!("/secrets/{id}/history")).await;
    assert_eq!(history.status, StatusCode::OK);
    assert!(history_row(&history, 1).contains("View version 1"));
    assert!(
        !history.body.contains("/rollback"),
        "no rollback for a reader"
    );
    let old = r.get(&format!("/secrets/{id}/versions/1?reveal=A")).await;
    assert!(
        old.body.contains(">a1<"),
        "a reader may reveal, as on the secret's page"
    );
    assert!(!old.body.contains("/rollback"));

    let rollback = format!("/secrets/{id}/versions/1/rollback");
    let page = r.get(&rollback).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body.contains("may not roll back secrets"),
        "{}",
        page.body
    );
    let csrf = history.csrf();
    let post = r
        .post(&rollback, &[("csrf", &csrf), ("expected", "2")])
        .await;
    assert_eq!(post.status, StatusCode::FORBIDDEN);
    assert!(
        post.body.contains("may not roll back secrets"),
        "{}",
        post.body
    );
    assert_eq!(h.now(&id).await, (2, pairs(&[("A", "a2")])));
}

/// The events a page lists, by number.
fn listed(r: &Reply) -> Vec<i64> {
    r.body
        .split("<tr id=\"event-")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
        .collect()
}

/// Their numbers.
fn seqs(events: &[AuditEvent]) -> Vec<i64> {
    events.iter().map(|e| e.seq).collect()
}

#[tokio::test]
async fn only_pages_that_show_values_record_a_read() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let id = b
        .create("audited", &[("A", "val-a-1"), ("B", "val-b-1")])
        .await;
    h.update(&id, &[("A", Some("val-a-2"))]).await;
    for path in [
        format!("/secrets/{id}"),
        format!("/secrets/{id}?reveal=NOPE"),
        format!("/secrets/{id}/history"),
        format!("/secrets/{id}/delete"),
        format!("/secrets/{id}/versions/1"),
        format!("/secrets/{id}/versions/2"),
        format!("/secrets/{id}/versions/1?reveal=NOPE"),
        "/".to_owned(),
        "/audit".to_owned(),
    ] {
        let r = b.get(&path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(!r.body.contains("val-"), "{path} shows no value");
    }
    assert!(h.events_of("secret.read").await.is_empty());

    // A reveal reads, once, as the dashboard, from the browser's address.
    let r = b.get(&format!("/secrets/{id}?reveal=A")).await;
    assert!(r.body.contains("<code class=\"revealed\">val-a-2</code>"));
    let reads = h.events_of("secret.read").await;
    assert_eq!(reads.len(), 1, "{reads:?}");
    let e = &reads[0].entry;
    assert_eq!(e.interface, "dashboard");
    assert_eq!(e.client.as_deref(), Some(CLIENT));
    assert_eq!(e.actor.as_ref().unwrap().token_id, h.token_id);
    assert_eq!(
        (e.secret_id.as_deref(), e.secret_name.as_deref(), e.version),
        (Some(id.as_str()), Some("audited"), Some(2))
    );
    assert_eq!(e.outcome, "ok");

    // An old version's reveal reads that version; the copy buttons read too.
    let r = b.get(&format!("/secrets/{id}/versions/1?reveal=B")).await;
    assert!(r.body.contains("<code class=\"revealed\">val-b-1</code>"));
    assert_eq!(
        b.get(&format!("/secrets/{id}/value?key=B")).await.body,
        "val-b-1"
    );
    assert_eq!(
        b.get(&format!("/secrets/{id}/versions/1/value?key=A"))
            .await
            .body,
        "val-a-1"
    );
    let versions: Vec<_> = h
        .events_of("secret.read")
        .await
        .iter()
        .map(|e| (e.entry.interface.clone(), e.entry.version))
        .collect();
    let dashboard = || "dashboard".to_owned();
    assert_eq!(
        versions,
        [
            (dashboard(), Some(2)),
            (dashboard(), Some(1)),
            (dashboard(), Some(2)),
            (dashboard(), Some(1))
        ]
    );
    // A version that is not kept is still named as such.
    let r = b.get(&format!("/secrets/{id}/versions/9")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("has no version 9"), "{}", r.body);
}

#[tokio::test]
async fn a_sign_in_the_audit_log_cannot_record_does_not_happen() {
    let h = harness().await;
    h.sql(
        "CREATE TRIGGER signin_down BEFORE INSERT ON audit_events \
         WHEN NEW.action = 'dashboard.signin' \
         BEGIN SELECT RAISE(ABORT, 'audit device down'); END",
    )
    .await;
    let mut b = Browser::new(&h);
    let r = b
        .post(
            "/signin",
            &[("token_id", &h.token_id), ("token_secret", &h.token_secret)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(!r.headers.contains_key(header::SET_COOKIE));
    assert!(b.cookie.is_none());
    assert!(r.body.contains("role=\"alert\""));
    assert!(!r.body.contains(&h.token_secret));

    h.sql("DROP TRIGGER signin_down").await;
    b.sign_in().await;
    assert_eq!(b.get("/").await.status, StatusCode::OK);
    assert_eq!(h.events_of("dashboard.signin").await.len(), 1);
}

#[tokio::test]
async fn the_audit_page_lists_and_filters_events_and_never_a_value() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let id = b.create("pg", &[("PASSWORD", "val-hunter2")]).await;
    b.get(&format!("/secrets/{id}?reveal=PASSWORD")).await;
    let (ci, ci_secret) = h.token_pair("ci", Role::Reader).await;

    let all = b.get("/audit").await;
    assert_eq!(all.status, StatusCode::OK);
    assert!(all.body.contains("aria-current=\"page\">Audit</a>"));
    let everything = h.events(AuditFilter::default()).await;
    assert_eq!(listed(&all), seqs(&everything), "oldest first, all of them");
    for part in [
        "dashboard.signin",
        "secret.create",
        "secret.read",
        "token.create",
        h.token_id.as_str(),
        CLIENT,
        ">pg<",
    ] {
        assert!(all.body.contains(part), "{part}");
    }
    for secret in ["val-hunter2", &h.token_secret, &ci_secret] {
        assert!(!all.body.contains(secret), "no value or token secret");
    }

    // Each filter selects what the service selects.
    let filters: [(&str, AuditFilter); 5] = [
        (
            "action=secret.read",
            AuditFilter {
                action: Some("secret.read".into()),
                ..AuditFilter::default()
            },
        ),
        (
            "secret=pg&env=main",
            AuditFilter {
                secret: Some("pg".into()),
                environment: Some("main".into()),
                ..AuditFilter::default()
            },
        ),
        (
            &format!("token={}", ci),
            AuditFilter {
                token: Some(ci.clone()),
                ..AuditFilter::default()
            },
        ),
        (
            "since=2000-01-01&until=2000-01-01",
            AuditFilter {
                until: Some(946_771_200_000_000),
                ..AuditFilter::default()
            },
        ),
        ("since=2000-01-01", AuditFilter::default()),
    ];
    for (q, filter) in &filters {
        let r = b.get(&format!("/audit?{q}")).await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.body);
        let expected = seqs(&h.events(filter.clone()).await);
        assert_eq!(listed(&r), expected, "{q}");
    }
    let reads = b.get("/audit?action=secret.read").await;
    assert_eq!(listed(&reads).len(), 1);
    assert!(reads
        .body
        .contains("<option value=\"secret.read\" selected>secret.read</option>"));
    let none = b.get("/audit?since=2000-01-01&until=2000-01-01").await;
    assert!(none.body.contains("id=\"no-events\""));
    assert!(
        none.body.contains("value=\"2000-01-01\""),
        "the filter stays"
    );
    // Today's events are in a window that ends today.
    let today = latchkey_core::time::Timestamp::from_micros(everything[0].at).strftime("%Y-%m-%d");
    let r = b.get(&format!("/audit?since={today}&until={today}")).await;
    assert_eq!(listed(&r), seqs(&everything));

    // Bad filters: the reason, on the page, as 400.
    for (q, reason) in [
        ("action=secret.steal", "Unknown audit action 'secret.steal'"),
        (
            "since=2025-01-02&until=2025-01-01",
            "'since' is later than 'until'",
        ),
        ("token=xyz", "token ids start with ak-"),
        ("since=yesterday", "Invalid since"),
        ("after=x", "Invalid page"),
    ] {
        let r = b.get(&format!("/audit?{q}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(r.body.contains("id=\"audit-error\""), "{q}: {}", r.body);
        assert!(r.body.contains(reason), "{q}: {}", r.body);
        assert!(listed(&r).is_empty());
    }
    // What was typed is shown back, escaped.
    let r = b.get("/audit?secret=%3Cscript%3Ex").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("value=\"&lt;script&gt;x\""));
    assert!(!r.body.contains("<script>x"));
}

#[tokio::test]
async fn the_audit_page_pages_by_event_number() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let id = b.create("busy", &[("A", "1")]).await;
    let admin = h.admin().await;
    for _ in 0..130 {
        h.service.secret(&admin, &id).await.unwrap();
    }
    let expected = seqs(&h.events_of("secret.read").await);
    assert_eq!(expected.len(), 130);
    let first = b.get("/audit?action=secret.read").await;
    assert_eq!(listed(&first), expected[..100]);
    assert!(!first.body.contains("← First"));
    let next = format!("/audit?action=secret.read&amp;after={}", expected[99]);
    assert!(first.body.contains(&next), "{}", first.body);
    let second = b.get(&next.replace("&amp;", "&")).await;
    assert_eq!(listed(&second), expected[100..]);
    assert!(second.body.contains("← First"));
    assert!(!second.body.contains("rel=\"next\""), "the last page");
}

#[tokio::test]
async fn verifying_the_chain_needs_the_csrf_token_and_finds_an_edited_event() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    b.create("chained", &[("A", "1")]).await;
    let page = b.get("/audit").await;
    let csrf = page.csrf();
    assert!(page.body.contains("action=\"/audit/verify\""));

    let r = b.post("/audit/verify", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.body.contains("id=\"verdict\""));
    let r = b
        .post_with(
            "/audit/verify",
            &[("csrf", &csrf)],
            "http://evil.test",
            "cross-site",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = b.post("/audit/verify", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::OK);
    let n = h.events(AuditFilter::default()).await.len();
    assert!(r.body.contains("The chain is intact."), "{}", r.body);
    assert!(
        r.body.contains(&format!("{n} events checked")),
        "{}",
        r.body
    );

    h.sql("UPDATE audit_events SET outcome = 'denied' WHERE seq = 2")
        .await;
    let r = b.post("/audit/verify", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("The chain is broken at event 2."),
        "{}",
        r.body
    );
    assert!(!r.body.contains("The chain is intact."));
}

#[tokio::test]
async fn a_reader_may_not_read_the_audit_log_nor_who_read_a_secret() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let id = b.create("guarded", &[("A", "1")]).await;
    let (reader, secret) = h.token_pair("viewer", Role::Reader).await;
    let mut r = Browser::new(&h);
    r.sign_in_as(&reader, &secret).await;
    let home = r.get("/").await;
    assert!(!home.body.contains("href=\"/audit\""), "no audit link");
    let csrf = home.csrf();
    for path in [
        "/audit",
        "/audit?action=nope",
        "/audit?since=garbage",
        &format!("/tokens/{}", h.token_id),
    ] {
        let page = r.get(path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(listed(&page).is_empty());
    }
    let verify = r.post("/audit/verify", &[("csrf", &csrf)]).await;
    assert_eq!(verify.status, StatusCode::FORBIDDEN);
    assert!(!verify.body.contains("id=\"verdict\""));
    let denied = h.events_of("permission.denied").await;
    assert_eq!(denied.len(), 5, "{denied:?}");
    // The secret's page, without who read it.
    let page = r.get(&format!("/secrets/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("Who read it"));
    assert!(b
        .get(&format!("/secrets/{id}"))
        .await
        .body
        .contains("Who read it"));
}

#[tokio::test]
async fn a_tokens_page_says_what_to_rotate_and_a_secrets_page_who_read_it() {
    let h = harness().await;
    let mut b = Browser::new(&h);
    b.sign_in().await;
    let id = b.create("db", &[("PASSWORD", "val-s3cret")]).await;
    let (ci, ci_secret) = h.token_pair("ci-runner", Role::Reader).await;
    let ci_caller = h
        .service
        .authenticate(&ci, &ci_secret, &latchkey_service::Origin::server())
        .await
        .unwrap();

    // Nothing read yet.
    let tokens = b.get("/tokens").await;
    let page_path = format!("/tokens/{ci}");
    assert!(tokens.body.contains(&format!("href=\"{page_path}\"")));
    assert!(
        !tokens.body.contains("action=\"/tokens/revoke\""),
        "revoking goes through the token's page"
    );
    let page = b.get(&page_path).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("id=\"no-exposure\""), "{}", page.body);
    let secret_page = b.get(&format!("/secrets/{id}")).await;
    assert!(secret_page.body.contains("id=\"no-readers\""));

    // The token reads the secret's values: rotate it if the token goes.
    h.service.secret(&ci_caller, &id).await.unwrap();
    h.service.secret(&ci_caller, &id).await.unwrap();
    let page = b.get(&page_path).await;
    assert!(page.body.contains("Rotate these"), "{}", page.body);
    let table = &page.body[page.body.find("id=\"exposure\"").unwrap()..];
    assert!(table.contains(&format!("<a href=\"/secrets/{id}\">db</a>")));
    assert!(table.contains("<td class=\"num\">2</td>"), "two reads");
    assert!(!page.body.contains("val-s3cret") && !page.body.contains(&ci_secret));
    assert!(page.body.contains("action=\"/tokens/revoke\""));

    // Who read it, on the secret's page.
    let secret_page = b.get(&format!("/secrets/{id}")).await;
    let readers = &secret_page.body[secret_page.body.find("id=\"readers\"").unwrap()..];
    assert!(readers.contains("ci-runner"), "{readers}");
    assert!(readers.contains(&ci));
    assert!(readers.contains("current"));

    // Once the secret changes, there is nothing of it left to rotate.
    h.update(&id, &[("PASSWORD", Some("val-rotated"))]).await;
    let page = b.get(&page_path).await;
    assert!(page.body.contains("id=\"no-exposure\""), "{}", page.body);

    // Revoking from that page.
    let csrf = page.hidden("csrf");
    let r = b
        .post("/tokens/revoke", &[("csrf", &csrf), ("id", &ci)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = b.get(&page_path).await;
    assert!(page.body.contains("revoked"));
    assert!(!page.body.contains("action=\"/tokens/revoke\""));
    assert_eq!(b.get("/tokens/ak-nope").await.status, StatusCode::NOT_FOUND);
}
