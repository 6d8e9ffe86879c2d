//! The JSON API: requests built from the input go through the real router
//! (`latchkey_server::api::router`, in-process with `oneshot`) to a real
//! service over SQLite in a temp dir, started once per process and put
//! back as it was after each input (see `support.rs`).
//!
//! Invariants, for every answer:
//! - no panic, and never a 5xx: storage cannot fail here, so a 500 is an
//!   error that nothing mapped;
//! - an error is the documented JSON, `{"error": {"code", "message"
//!   [, "missing_keys"]}}`, its code matches its status, and its message is
//!   under 1 KiB; a 2xx body is JSON (or empty for 204; one JSON document
//!   a line for the backup);
//! - no answer shows a token secret (nor 12 characters of one), except
//!   `POST /tokens`' answer its own new one;
//! - an error never shows a value the request set (checked by sending it
//!   again with the values disguised: see `support::disguise`);
//! - a 2xx write leaves the store readable: the secret it made or changed
//!   reads back and resolves (its keys and, where the request decides
//!   them, its values), what it deleted is gone, a new environment lists
//!   secrets, a new token authenticates, a revoked one no longer does;
//! - `main`, to which a token is limited, is never renamed (checked when
//!   the store is put back).
//!
//! Input: up to 4 requests separated by `\n--\n`. Each is
//! `route auth format param \n query \n body`: `route` (a byte) picks one
//! of [`ROUTES`]; `auth` (low 3 bits: 0-3 admin, 4 reader, 5 a developer
//! limited to `main`, 6 the last token this input made (else none), 7 the
//! admin's credentials mangled the way the high bits say); `format` (bits
//! 0-1: content type; bit 2: the parameter goes into the path unescaped;
//! bits 4-6: the method of the raw route); then the path parameter, the
//! query string and the body. In the parameter, query and body `$E` is
//! the id of `main`, `$T` the id of the last token this input made, and
//! `$L` grows into 40,000 characters.

use std::collections::BTreeMap;

use crate::support::{disguise, expand, worth_checking, Credentials, World};
use axum::{
    body::Body,
    http::{header, HeaderValue, Request, StatusCode},
    Router,
};
use serde_json::Value;
use tower::ServiceExt;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    Whoami,
    EnvList,
    EnvCreate,
    EnvUpdate,
    EnvDelete,
    SecretList,
    SecretCreate,
    SecretGet,
    SecretUpdate,
    SecretDelete,
    SecretResolve,
    SecretVersions,
    SecretRollback,
    TokenList,
    TokenCreate,
    TokenRevoke,
    OpenApi,
    /// Any method on `/{param}`: unknown routes and methods.
    Raw,
}

/// Every route of the API (`crates/server/src/api/mod.rs`), with `{}` for
/// the path parameter.
const ROUTES: &[(Route, &str, &str)] = &[
    (Route::Whoami, "GET", "/whoami"),
    (Route::EnvList, "GET", "/environments"),
    (Route::EnvCreate, "POST", "/environments"),
    (Route::EnvUpdate, "PATCH", "/environments/{}"),
    (Route::EnvDelete, "DELETE", "/environments/{}"),
    (Route::SecretList, "GET", "/secrets"),
    (Route::SecretCreate, "POST", "/secrets"),
    (Route::SecretGet, "GET", "/secrets/{}"),
    (Route::SecretUpdate, "PATCH", "/secrets/{}"),
    (Route::SecretDelete, "DELETE", "/secrets/{}"),
    (Route::SecretResolve, "POST", "/secrets/{}/resolve"),
    (Route::SecretVersions, "GET", "/secrets/{}/versions"),
    (Route::SecretRollback, "POST", "/secrets/{}/rollback"),
    (Route::TokenList, "GET", "/tokens"),
    (Route::TokenCreate, "POST", "/tokens"),
    (Route::TokenRevoke, "DELETE", "/tokens/{}"),
    (Route::OpenApi, "GET", "/openapi.json"),
    (Route::Raw, "", "/{}"),
];

const RAW_METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "FUZZ",
];

const SEPARATOR: &[u8] = b"\n--\n";

/// The codes each error status may carry (`crates/server/src/api/error.rs`).
fn codes_of(status: StatusCode) -> &'static [&'static str] {
    match status.as_u16() {
        400 => &["invalid"],
        401 => &["unauthenticated"],
        403 => &["permission_denied"],
        404 => &["not_found"],
        405 => &["method_not_allowed"],
        409 => &["already_exists"],
        412 => &["missing_keys", "failed_precondition"],
        429 => &["resource_exhausted"],
        _ => &[],
    }
}

/// A token this input made.
#[derive(Clone)]
struct Made {
    id: String,
    secret: String,
}

struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// One request as the input describes it, before placeholders are filled.
struct Spec<'a> {
    route: Route,
    auth: u8,
    format: u8,
    param: &'a [u8],
    query: &'a [u8],
    body: &'a [u8],
}

fn parse(chunk: &[u8]) -> Option<Spec<'_>> {
    let (&[route, auth, format], rest) = chunk.split_first_chunk::<3>()?;
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    Some(Spec {
        route: ROUTES[usize::from(route) % ROUTES.len()].0,
        auth,
        format,
        param: parts.next().unwrap_or_default(),
        query: parts.next().unwrap_or_default(),
        body: parts.next().unwrap_or_default(),
    })
}

/// Percent-encodes what is not unreserved (and `/` too unless `keep_slash`).
fn escape(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string: printable ASCII stays as it is (so `&`, `=` and `%`
/// sequences, valid or not, reach the parser), the rest is escaped.
fn query_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'#' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let [b'%', hi, lo, ..] = bytes[i..] {
            if let (Some(hi), Some(lo)) = (hex(hi), hex(lo)) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// What one input does: its requests, in order, against the world.
struct Run<'w> {
    world: &'w mut World,
    /// The whole input: what the caller sent (before placeholders, which
    /// only add ids).
    input: Vec<u8>,
    app: Router,
    made: Option<Made>,
    wrote: bool,
}

impl Run<'_> {
    fn fill(&self, bytes: &[u8]) -> Vec<u8> {
        let token = self.made.as_ref().map_or("$T", |m| m.id.as_str());
        let bytes = expand(bytes);
        let mut out = Vec::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        while let Some((&first, tail)) = rest.split_first() {
            match (first, tail.first()) {
                (b'$', Some(b'E')) => out.extend_from_slice(self.world.main_id.as_bytes()),
                (b'$', Some(b'T')) => out.extend_from_slice(token.as_bytes()),
                _ => {
                    out.push(first);
                    rest = tail;
                    continue;
                }
            }
            rest = &tail[1..];
        }
        out
    }

    fn authorization(&self, auth: u8) -> Option<String> {
        let bearer = |c: &Credentials| format!("Bearer {}:{}", c.id, c.secret);
        let admin = &self.world.admin;
        match auth & 7 {
            0..=3 => Some(bearer(admin)),
            4 => Some(bearer(&self.world.reader)),
            5 => Some(bearer(&self.world.limited)),
            6 => self
                .made
                .as_ref()
                .map(|m| format!("Bearer {}:{}", m.id, m.secret)),
            _ => Some(match auth >> 3 & 7 {
                0 => format!("Bearer {}:{}x", admin.id, admin.secret),
                1 => format!("Basic {}:{}", admin.id, admin.secret),
                2 => format!("Bearer {}", admin.secret),
                3 => format!("Bearer {}:{}", admin.secret, admin.id),
                4 => format!("{}:{}", admin.id, admin.secret),
                5 => format!("Bearer  {} : {} ", admin.id, admin.secret),
                6 => format!("Bearer {}:{}", admin.id, &admin.secret[..20]),
                _ => format!("bearer {}:{}", admin.secret, admin.secret),
            }),
        }
    }

    /// Sends a request and checks what holds for every answer.
    async fn send(
        &mut self,
        method: &str,
        uri: &str,
        authorization: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Option<Answer> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, HeaderValue::from_str(value).ok()?);
        }
        if let Some(value) = content_type {
            request = request.header(header::CONTENT_TYPE, value);
        }
        let request = request.body(Body::from(body)).ok()?;
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body in memory")
            .to_vec();
        let answer = Answer { status, body };
        let text = String::from_utf8_lossy(&answer.body);
        assert!(
            !status.is_server_error(),
            "{method} {uri}: {status}: {text}"
        );
        // The answer of `POST /tokens` shows its new token's secret, which
        // is added to the list only once that answer has been read.
        assert!(
            self.world.shown_secret(&answer.body, &self.input).is_none(),
            "{method} {uri}: the answer shows a token secret: {text}"
        );
        if method == "HEAD" {
            return Some(answer);
        }
        if status.is_success() {
            // JSON, or (`GET /backup`, reached through the raw route) one
            // JSON document a line.
            let ndjson = || {
                answer.body.ends_with(b"\n")
                    && answer
                        .body
                        .split(|&b| b == b'\n')
                        .filter(|line| !line.is_empty())
                        .all(|line| serde_json::from_slice::<Value>(line).is_ok())
            };
            assert!(
                (status == StatusCode::NO_CONTENT && answer.body.is_empty())
                    || serde_json::from_slice::<Value>(&answer.body).is_ok()
                    || ndjson(),
                "{method} {uri}: {status} with a body that is not JSON: {text}"
            );
        } else {
            check_error(method, uri, &answer);
        }
        Some(answer)
    }

    /// Sends `spec`, then checks what its answer says was written.
    async fn request(&mut self, spec: &Spec<'_>) {
        let (route, method, template) = ROUTES
            .iter()
            .find(|(r, ..)| *r == spec.route)
            .copied()
            .expect("listed");
        let param = self.fill(spec.param);
        let raw_param = spec.format & 4 != 0 && route != Route::Raw;
        let param_text = if raw_param {
            String::from_utf8_lossy(&param).into_owned()
        } else {
            escape(&param, route == Route::Raw)
        };
        let method = if route == Route::Raw {
            RAW_METHODS[usize::from(spec.format >> 4 & 7)]
        } else {
            method
        };
        let mut uri = template.replace("{}", &param_text);
        let query = self.fill(spec.query);
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(&query_string(&query));
        }
        if uri.parse::<axum::http::Uri>().is_err() {
            // An unescaped parameter that is no path: escape it.
            uri = template.replace("{}", &escape(&param, false));
            if !query.is_empty() {
                uri.push('?');
                uri.push_str(&query_string(&query));
            }
        }
        let content_type = match spec.format & 3 {
            0 | 1 => Some("application/json"),
            2 => None,
            _ if spec.format & 8 != 0 => Some("text/plain"),
            _ => Some("application/merge-patch+json; charset=utf-8"),
        };
        let body = self.fill(spec.body);
        let authorization = self.authorization(spec.auth);
        let Some(answer) = self
            .send(
                method,
                &uri,
                authorization.as_deref(),
                content_type,
                body.clone(),
            )
            .await
        else {
            return;
        };

        if !answer.status.is_success() {
            self.no_value_shown(
                method,
                &uri,
                authorization.as_deref(),
                content_type,
                &body,
                &answer,
            )
            .await;
            return;
        }
        if method != "GET" && method != "HEAD" {
            self.wrote = true;
        }
        let json = answer.json();
        let request_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match route {
            Route::SecretCreate => {
                let created = answer.status == StatusCode::CREATED;
                let overwrite = request_json["if_exists"] == "overwrite";
                let values = (created || overwrite).then(|| string_map(&request_json["values"]));
                self.secret_reads_back(&json["secret"], values).await;
            }
            Route::SecretUpdate => {
                self.secret_reads_back(&json, None).await;
                let env = json["environment"].as_str().unwrap_or_default().to_owned();
                let name = json["name"].as_str().unwrap_or_default().to_owned();
                let resolved = self.resolve(&name, &env).await;
                if let Value::Object(changes) = &request_json["values"] {
                    for (key, value) in changes {
                        assert_eq!(
                            resolved.get(key).map(String::as_str),
                            value.as_str(),
                            "PATCH {uri}: key {key:?} after the update"
                        );
                    }
                }
            }
            Route::SecretRollback => self.secret_reads_back(&json, None).await,
            Route::SecretResolve => {
                let keys: Vec<&String> = json["values"]
                    .as_object()
                    .map(|m| m.keys().collect())
                    .unwrap_or_default();
                let listed: Vec<&str> = keys_of(&json["secret"]);
                assert_eq!(
                    keys.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                    listed,
                    "{uri}: resolved keys and listed keys differ"
                );
            }
            Route::SecretDelete => {
                // The same path and query: GET takes every parameter DELETE does.
                let answer = self.admin_get(&uri).await;
                assert_eq!(
                    answer.status,
                    StatusCode::NOT_FOUND,
                    "GET {uri} after DELETE"
                );
            }
            Route::EnvCreate | Route::EnvUpdate => {
                let name = json["name"].as_str().expect("an environment's name");
                let list = self
                    .admin_get(&format!(
                        "/secrets?environment={}",
                        escape(name.as_bytes(), false)
                    ))
                    .await;
                assert_eq!(list.status, StatusCode::OK, "secrets of a new environment");
                assert_eq!(list.json()["environment"], name);
            }
            Route::EnvDelete => {
                let name = String::from_utf8_lossy(&percent_decode(
                    uri.trim_start_matches("/environments/")
                        .split('?')
                        .next()
                        .unwrap_or_default(),
                ))
                .into_owned();
                let envs = self.admin_get("/environments").await.json();
                for env in envs["items"].as_array().expect("items") {
                    assert!(
                        env["name"] != name.as_str() && env["id"] != name.as_str(),
                        "environment {name:?} is still listed after DELETE"
                    );
                }
            }
            Route::TokenCreate => {
                let id = json["token"]["id"].as_str().expect("a token id").to_owned();
                let secret = json["secret"].as_str().expect("a token secret").to_owned();
                let made = Made { id, secret };
                let who = self.whoami(&made).await;
                assert_eq!(who.status, StatusCode::OK, "a new token authenticates");
                assert_eq!(who.json()["token"]["id"], made.id.as_str());
                self.world.never_show(made.secret.clone());
                self.made = Some(made);
            }
            Route::TokenRevoke => {
                if let Some(made) = self.made.clone() {
                    if uri.ends_with(&made.id) {
                        let who = self.whoami(&made).await;
                        assert_eq!(who.status, StatusCode::UNAUTHORIZED, "a revoked token");
                    }
                }
            }
            _ => {}
        }
    }

    /// `GET /whoami` with a token this input made.
    async fn whoami(&mut self, made: &Made) -> Answer {
        let authorization = format!("Bearer {}:{}", made.id, made.secret);
        self.send("GET", "/whoami", Some(&authorization), None, Vec::new())
            .await
            .expect("a request")
    }

    async fn admin_get(&mut self, uri: &str) -> Answer {
        let admin = self.world.admin.clone();
        self.send(
            "GET",
            uri,
            Some(&format!("Bearer {}:{}", admin.id, admin.secret)),
            None,
            Vec::new(),
        )
        .await
        .expect("a request")
    }

    /// The values of the secret `name` in `env`, resolved by the admin.
    async fn resolve(&mut self, name: &str, env: &str) -> BTreeMap<String, String> {
        let admin = self.world.admin.clone();
        let uri = format!(
            "/secrets/{}/resolve?environment={}",
            escape(name.as_bytes(), false),
            escape(env.as_bytes(), false)
        );
        let answer = self
            .send(
                "POST",
                &uri,
                Some(&format!("Bearer {}:{}", admin.id, admin.secret)),
                None,
                Vec::new(),
            )
            .await
            .expect("a request");
        assert_eq!(answer.status, StatusCode::OK, "{uri} after a write");
        string_map(&answer.json()["values"]).expect("values are strings")
    }

    /// The secret an answer describes (`info`) reads back as it says, and
    /// resolves to `values` when given.
    async fn secret_reads_back(
        &mut self,
        info: &Value,
        values: Option<Option<BTreeMap<String, String>>>,
    ) {
        let name = info["name"].as_str().expect("a secret's name").to_owned();
        let env = info["environment"]
            .as_str()
            .expect("its environment")
            .to_owned();
        let uri = format!(
            "/secrets/{}?environment={}",
            escape(name.as_bytes(), false),
            escape(env.as_bytes(), false)
        );
        let got = self.admin_get(&uri).await;
        assert_eq!(got.status, StatusCode::OK, "{uri} after a write");
        let got = got.json();
        assert_eq!(got["version"], info["version"], "{uri}: version");
        assert_eq!(got["keys"], info["keys"], "{uri}: keys");
        let resolved = self.resolve(&name, &env).await;
        assert_eq!(
            resolved.keys().map(String::as_str).collect::<Vec<_>>(),
            keys_of(info),
            "{uri}: resolved keys"
        );
        if let Some(Some(values)) = values {
            assert!(
                resolved == values,
                "{uri}: the values read back differ from those written"
            );
        }
    }

    /// An error answer must not show a value the request set: if it shows
    /// one, the same request with its values disguised must not show the
    /// disguised ones.
    async fn no_value_shown(
        &mut self,
        method: &str,
        uri: &str,
        authorization: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
        answer: &Answer,
    ) {
        let message = answer.message();
        let Ok(mut request_json) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let Some(Value::Object(values)) = request_json.get_mut("values") else {
            return;
        };
        let shown: Vec<String> = values
            .values()
            .filter_map(Value::as_str)
            .filter(|v| worth_checking(v, &message))
            .map(str::to_owned)
            .collect();
        if shown.is_empty() {
            return;
        }
        for value in values.values_mut() {
            if let Value::String(s) = value {
                *s = disguise(s);
            }
        }
        let again = serde_json::to_vec(&request_json).expect("JSON");
        let Some(second) = self
            .send(method, uri, authorization, content_type, again)
            .await
        else {
            return;
        };
        if second.status.is_success() {
            // Not the same request any more (e.g. a key the first one lacked
            // after all): nothing to compare, and it wrote.
            self.wrote = true;
            return;
        }
        let message = second.message();
        for value in shown {
            assert!(
                !message.contains(&disguise(&value)),
                "{method} {uri}: the error shows a value: {message:?}"
            );
        }
    }
}

/// An object of strings as a map (`None` if anything is not a string).
fn string_map(value: &Value) -> Option<BTreeMap<String, String>> {
    value
        .as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

fn keys_of(info: &Value) -> Vec<&str> {
    info["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().expect("a key"))
        .collect()
}

fn check_error(method: &str, uri: &str, answer: &Answer) {
    let text = String::from_utf8_lossy(&answer.body);
    let json: Value = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|_| panic!("{method} {uri}: {}: not JSON: {text}", answer.status));
    let outer = json.as_object().expect("an object");
    assert!(
        outer.len() == 1 && outer.contains_key("error"),
        "{method} {uri}: not the error shape: {text}"
    );
    let error = json["error"].as_object().expect("error is an object");
    assert!(
        error
            .keys()
            .all(|k| ["code", "message", "missing_keys"].contains(&k.as_str())),
        "{method} {uri}: unknown field in {text}"
    );
    let code = error["code"].as_str().expect("a code");
    assert!(
        codes_of(answer.status).contains(&code),
        "{method} {uri}: code {code} with status {}",
        answer.status
    );
    let message = error["message"].as_str().expect("a message");
    assert!(!message.is_empty(), "{method} {uri}: empty message");
    assert!(
        message.len() < 1024,
        "{method} {uri}: a message of {} bytes: {}…",
        message.len(),
        &message[..message
            .char_indices()
            .nth(200)
            .map_or(message.len(), |(i, _)| i)]
    );
    if let Some(keys) = error.get("missing_keys") {
        assert_eq!(code, "missing_keys");
        assert!(keys
            .as_array()
            .is_some_and(|k| k.iter().all(Value::is_string)));
    }
}

/// Runs one input, panicking when an invariant does not hold.
// The world's lock is held through the input on purpose: inputs run one
// at a time, on a one-thread runtime.
#[allow(clippy::await_holding_lock)]
pub fn check(data: &[u8]) {
    crate::support::runtime().block_on(async {
        let mut world = crate::support::world().await;
        let app = router(&world);
        let mut run = Run {
            world: &mut world,
            input: data.to_vec(),
            app,
            made: None,
            wrote: false,
        };
        for chunk in split(data, SEPARATOR).into_iter().take(4) {
            if let Some(spec) = parse(chunk) {
                run.request(&spec).await;
            }
        }
        if run.wrote {
            world.reset().await;
        }
    });
}

/// The router over the world's service, built once per service: building
/// it (and its OpenAPI document) costs more than most inputs.
fn router(world: &World) -> Router {
    static ROUTER: std::sync::Mutex<Option<(u64, Router)>> = std::sync::Mutex::new(None);
    let mut cached = ROUTER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match &*cached {
        Some((generation, router)) if *generation == world.generation => router.clone(),
        _ => {
            let router = latchkey_server::api::router(world.service().clone());
            *cached = Some((world.generation, router.clone()));
            router
        }
    }
}

fn split<'a>(mut data: &'a [u8], separator: &'a [u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(at) = data.windows(separator.len()).position(|w| w == separator) {
        parts.push(&data[..at]);
        data = &data[at + separator.len()..];
    }
    parts.push(data);
    parts
}
