//! Handler tests: the whole router driven with `oneshot` (no socket) over a
//! real SQLite store in a temp dir.

use std::collections::BTreeSet;

use axum::{
    body::Body,
    http::{header, Method, Request, StatusCode},
    Router,
};
use latchkey_service::{testing::TestService, Role};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Harness {
    service: TestService,
    app: Router,
    admin: String,
}

impl Harness {
    async fn new() -> Self {
        let service = TestService::start().await;
        let admin = format!(
            "{}:{}",
            service.admin_token_id(),
            service.admin_token_secret()
        );
        let app = crate::http::app(service.service().clone());
        Self {
            service,
            app,
            admin,
        }
    }

    /// A new token with `role` (and optionally limited to environments).
    async fn token(&self, name: &str, role: Role, envs: Option<Vec<String>>) -> String {
        let (token, secret) = self.service.token(name, role, envs).await;
        format!("{}:{}", token.id, *secret)
    }

    async fn raw(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, body.to_vec())
    }

    /// Sends a request as `token` with an optional JSON body.
    async fn call_as(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("/api/v1{uri}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let (status, _, bytes) = self.raw(builder.body(body).unwrap()).await;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(&self.admin, method, uri, body).await
    }

    async fn create(&self, name: &str, values: Value) {
        let (status, body) = self
            .call(
                Method::POST,
                "/secrets",
                Some(json!({"name": name, "values": values})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

#[track_caller]
fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str, needle: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

// ---- OpenAPI and routing ------------------------------------------------

/// Every route the API serves, as `METHOD /path`.
const ROUTES: &[&str] = &[
    "GET /openapi.json",
    "GET /whoami",
    "GET /environments",
    "POST /environments",
    "PATCH /environments/{name}",
    "DELETE /environments/{name}",
    "GET /secrets",
    "POST /secrets",
    "GET /secrets/{name}",
    "PATCH /secrets/{name}",
    "DELETE /secrets/{name}",
    "POST /secrets/{name}/resolve",
    "GET /secrets/{name}/versions",
    "POST /secrets/{name}/rollback",
    "GET /tokens",
    "POST /tokens",
    "DELETE /tokens/{id}",
    "GET /audit",
    "GET /audit/head",
    "POST /audit/verify",
    "GET /secrets/{name}/exposure",
    "GET /tokens/{id}/exposure",
    "POST /tokens/{id}/rotate",
    "GET /backup",
    "POST /key/rotate",
];

#[tokio::test]
async fn openapi_document_lists_exactly_the_routes_served() {
    let h = Harness::new().await;
    let (status, headers, bytes) = h
        .raw(
            Request::get("/api/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if method != "parameters" {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let expected: BTreeSet<String> = ROUTES.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(documented, expected);

    // Each documented route is served: the router answers from a handler
    // (here: authentication or the document), not from its fallbacks.
    for route in ROUTES {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path.replace("{name}", "x").replace("{id}", "ak-x");
        let request = Request::builder()
            .method(method)
            .uri(format!("/api/v1{path}"))
            .body(Body::empty())
            .unwrap();
        let (status, _, _) = h.raw(request).await;
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::OK,
            "{route}: {status}"
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_json() {
    let h = Harness::new().await;
    let got = h.call(Method::GET, "/nope", None).await;
    assert_error(
        &got,
        StatusCode::NOT_FOUND,
        "not_found",
        "No route GET /api/v1/nope",
    );
    let got = h.call(Method::PUT, "/secrets", None).await;
    assert_error(
        &got,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "PUT",
    );
}

// ---- Authentication ---------------------------------------------------------

#[tokio::test]
async fn requests_without_a_valid_token_are_unauthenticated() {
    let h = Harness::new().await;
    let (status, headers, bytes) = h
        .raw(Request::get("/api/v1/whoami").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("No token was sent"));

    for bad in ["Basic abc", "Bearer no-colon", "Bearer "] {
        let (status, _, bytes) = h
            .raw(
                Request::get("/api/v1/whoami")
                    .header(header::AUTHORIZATION, bad)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        assert!(String::from_utf8_lossy(&bytes).contains("Bearer <token_id>:<token_secret>"));
    }

    let (id, _) = h.admin.split_once(':').unwrap();
    let wrong = format!("{id}:as-wrongsecretwrongsecretwrongsecre");
    let got = h.call_as(&wrong, Method::GET, "/whoami", None).await;
    assert_error(
        &got,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "not valid",
    );
    assert!(!got.1.to_string().contains("as-wrongsecret"));
}

#[tokio::test]
async fn whoami_names_the_token_and_workspace() {
    let h = Harness::new().await;
    let (status, body) = h.call(Method::GET, "/whoami", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["workspace_name"], "default");
    assert_eq!(body["token"]["name"], "admin");
    assert_eq!(body["token"]["role"], "admin");
    assert_eq!(body["token"]["environments"], Value::Null);
    assert!(body["token"]["id"].as_str().unwrap().starts_with("ak-"));
}

// ---- Secrets ---------------------------------------------------------------

#[tokio::test]
async fn create_get_resolve_update_delete_a_secret() {
    let h = Harness::new().await;
    let (status, body) = h
        .call(
            Method::POST,
            "/secrets",
            Some(json!({"name": "my-secret", "values": {"B": "2", "A": "1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["created"], true);
    assert_eq!(body["secret"]["name"], "my-secret");
    assert_eq!(body["secret"]["environment"], "main");
    assert_eq!(body["secret"]["created_by"], "admin");
    assert_eq!(body["secret"]["keys"], json!(["A", "B"]));
    assert_eq!(body["secret"]["last_used_at"], Value::Null);
    let created_at = body["secret"]["created_at"].as_str().unwrap();
    assert_eq!(
        created_at.len(),
        "2025-01-01T00:00:00.000000Z".len(),
        "{created_at}"
    );
    assert!(
        !body.to_string().contains("\"1\""),
        "values never in metadata"
    );

    let (status, body) = h.call(Method::GET, "/secrets/my-secret", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["keys"], json!(["A", "B"]));

    let (status, body) = h
        .call(Method::GET, "/secrets/my-secret?required_keys=A,B", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Resolve with no body, then with required keys.
    let (status, body) = h
        .call(Method::POST, "/secrets/my-secret/resolve", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["values"], json!({"A": "1", "B": "2"}));
    let (status, body) = h
        .call(
            Method::POST,
            "/secrets/my-secret/resolve",
            Some(json!({"required_keys": ["A"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, info) = h.call(Method::GET, "/secrets/my-secret", None).await;
    assert!(info["last_used_at"].is_string(), "{info}");

    // Merge: set C, change A, remove B.
    let (status, body) = h
        .call(
            Method::PATCH,
            "/secrets/my-secret",
            Some(json!({"values": {"C": "3", "A": "one", "B": null}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keys"], json!(["A", "C"]));
    let (_, body) = h
        .call(Method::POST, "/secrets/my-secret/resolve", None)
        .await;
    assert_eq!(body["values"], json!({"A": "one", "C": "3"}));

    let (status, _) = h.call(Method::DELETE, "/secrets/my-secret", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let got = h.call(Method::GET, "/secrets/my-secret", None).await;
    assert_error(
        &got,
        StatusCode::NOT_FOUND,
        "not_found",
        "Secret 'my-secret' not found",
    );
    let got = h.call(Method::DELETE, "/secrets/my-secret", None).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", "my-secret");
}

#[tokio::test]
async fn create_respects_if_exists() {
    let h = Harness::new().await;
    h.create("s", json!({"A": "1"})).await;
    let got = h
        .call(
            Method::POST,
            "/secrets",
            Some(json!({"name": "s", "values": {"A": "2"}})),
        )
        .await;
    assert_error(&got, StatusCode::CONFLICT, "already_exists", "s");

    let (status, body) = h
        .call(
            Method::POST,
            "/secrets",
            Some(json!({"name": "s", "values": {"A": "2"}, "if_exists": "keep"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["created"], false);
    let (_, body) = h.call(Method::POST, "/secrets/s/resolve", None).await;
    assert_eq!(body["values"], json!({"A": "1"}));

    let (status, body) = h
        .call(
            Method::POST,
            "/secrets",
            Some(json!({"name": "s", "values": {"B": "2"}, "if_exists": "overwrite"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = h.call(Method::POST, "/secrets/s/resolve", None).await;
    assert_eq!(body["values"], json!({"B": "2"}));

    let got = h
        .call(
            Method::POST,
            "/secrets",
            Some(json!({"name": "s", "values": {}, "if_exists": "sometimes"})),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid", "unknown variant");
}

#[tokio::test]
async fn create_refuses_bad_input_and_never_echoes_values() {
    let h = Harness::new().await;
    let cases = [
        (
            json!({"name": "bad name", "values": {}}),
            "Invalid Secret name",
        ),
        (json!({"name": "s", "values": {"1A": "x"}}), "1A"),
        (json!({"name": "s", "values": {"A": "a\u{0}b"}}), "A"),
        (
            json!({"name": "s", "values": {"A": 1234567}}),
            "The value of key 'A' must be a string",
        ),
        (
            json!({"name": "s", "values": ["hunter2"]}),
            "'values' must be an object",
        ),
        (json!({"name": "s"}), "missing field `values`"),
        (
            json!({"name": "s", "values": {}, "allow_existing": true}),
            "unknown field `allow_existing`",
        ),
        (json!({"name": 5, "values": {}}), "expected a string"),
    ];
    for (body, needle) in cases {
        let got = h.call(Method::POST, "/secrets", Some(body.clone())).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid", needle);
        let text = got.1.to_string();
        assert!(
            !text.contains("1234567") && !text.contains("hunter2"),
            "{text}"
        );
    }
    let too_big = "x".repeat(32_769);
    let got = h
        .call(
            Method::POST,
            "/secrets",
            Some(json!({"name": "s", "values": {"A": too_big}})),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid", "A");

    // Malformed JSON, and JSON without its content type.
    let (status, _, bytes) = h
        .raw(
            Request::post("/api/v1/secrets")
                .header(header::AUTHORIZATION, format!("Bearer {}", h.admin))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    "{\"name\": \"s\", \"values\": {\"A\": \"hunter2\"",
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("is not valid JSON (line 1"), "{text}");
    assert!(!text.contains("hunter2"));
    let (status, _, bytes) = h
        .raw(
            Request::post("/api/v1/secrets")
                .header(header::AUTHORIZATION, format!("Bearer {}", h.admin))
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&bytes).contains("Content-Type: application/json"));
    let got = h.call(Method::POST, "/secrets", None).await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid",
        "needs a JSON body",
    );

    // Nothing was written.
    let (_, body) = h.call(Method::GET, "/secrets", None).await;
    assert_eq!(body["items"], json!([]));
}

#[tokio::test]
async fn missing_required_keys_are_named() {
    let h = Harness::new().await;
    h.create("s", json!({"A": "1"})).await;
    let got = h
        .call(Method::GET, "/secrets/s?required_keys=C,A,B", None)
        .await;
    assert_error(
        &got,
        StatusCode::PRECONDITION_FAILED,
        "missing_keys",
        "Secret is missing key(s): C, B",
    );
    assert_eq!(got.1["error"]["missing_keys"], json!(["C", "B"]));
    let got = h
        .call(
            Method::POST,
            "/secrets/s/resolve",
            Some(json!({"required_keys": ["Z"]})),
        )
        .await;
    assert_error(&got, StatusCode::PRECONDITION_FAILED, "missing_keys", "Z");
    let (_, info) = h.call(Method::GET, "/secrets/s", None).await;
    assert_eq!(
        info["last_used_at"],
        Value::Null,
        "a refused resolve is no use"
    );
    let got = h
        .call(
            Method::POST,
            "/secrets",
            Some(json!({"name": "t", "values": {"A": "1"}, "required_keys": ["B"]})),
        )
        .await;
    assert_error(&got, StatusCode::PRECONDITION_FAILED, "missing_keys", "B");
    let got = h.call(Method::GET, "/secrets/t", None).await;
    assert_eq!(
        got.0,
        StatusCode::NOT_FOUND,
        "a refused create writes nothing"
    );
    // `keep` is satisfied by an existing secret that holds the keys.
    let (status, body) = h
        .call(
            Method::POST,
            "/secrets",
            Some(json!({"name": "s", "values": {}, "if_exists": "keep", "required_keys": ["A"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["created"], false);
    let got = h
        .call(
            Method::POST,
            "/secrets",
            Some(json!({"name": "u", "values": {}, "if_exists": "keep", "required_keys": ["A"]})),
        )
        .await;
    assert_error(&got, StatusCode::PRECONDITION_FAILED, "missing_keys", "A");
    assert_eq!(
        h.call(Method::GET, "/secrets/u", None).await.0,
        StatusCode::NOT_FOUND
    );
    let got = h
        .call(
            Method::POST,
            "/secrets/s/resolve",
            Some(json!({"required": ["Z"]})),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid",
        "unknown field `required`",
    );
}

#[tokio::test]
async fn update_refuses_bad_changes() {
    let h = Harness::new().await;
    h.create("s", json!({"A": "1"})).await;
    let cases = [
        (json!({"values": {"A": 5}}), "must be a string, or null"),
        (json!({"values": "A"}), "'values' must be an object"),
        (json!({"values": {"bad key": "x"}}), "bad key"),
        (json!({}), "missing field `values`"),
    ];
    for (body, needle) in cases {
        let got = h.call(Method::PATCH, "/secrets/s", Some(body)).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid", needle);
    }
    let got = h
        .call(
            Method::PATCH,
            "/secrets/nope",
            Some(json!({"values": {"A": "1"}})),
        )
        .await;
    assert_error(
        &got,
        StatusCode::NOT_FOUND,
        "not_found",
        "Secret 'nope' not found",
    );
    let (_, body) = h.call(Method::POST, "/secrets/s/resolve", None).await;
    assert_eq!(body["values"], json!({"A": "1"}));
}

#[tokio::test]
async fn secrets_live_in_their_environment() {
    let h = Harness::new().await;
    let (status, _) = h
        .call(Method::POST, "/environments", Some(json!({"name": "dev"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = h
        .call(
            Method::POST,
            "/secrets?environment=dev",
            Some(json!({"name": "s", "values": {"A": "dev"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["secret"]["environment"], "dev");
    let got = h.call(Method::GET, "/secrets/s", None).await;
    assert_eq!(got.0, StatusCode::NOT_FOUND);
    let (_, body) = h
        .call(Method::POST, "/secrets/s/resolve?environment=dev", None)
        .await;
    assert_eq!(body["values"], json!({"A": "dev"}));
    let (_, body) = h.call(Method::GET, "/secrets?environment=dev", None).await;
    assert_eq!(body["environment"], "dev");
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    let got = h.call(Method::GET, "/secrets?environment=nope", None).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", "nope");
    // An environment is named by its id too: `en-x` is an unknown id, and
    // `en-` alone neither a name nor an id.
    let got = h.call(Method::GET, "/secrets?environment=en-x", None).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", "en-x");
    let got = h.call(Method::GET, "/secrets?environment=en-", None).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid", "en-");
    let got = h.call(Method::GET, "/secrets?enviroment=dev", None).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid", "enviroment");
}

#[tokio::test]
async fn list_pages_newest_first_without_loss() {
    let h = Harness::new().await;
    let names: Vec<String> = (0..7).map(|i| format!("s{i}")).collect();
    for name in &names {
        h.create(name, json!({"K": "v"})).await;
    }
    let (_, body) = h.call(Method::GET, "/secrets", None).await;
    let all: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = names.iter().rev().map(String::as_str).collect();
    assert_eq!(all, newest_first);
    assert_eq!(body["next_created_before"], Value::Null);

    let mut seen = Vec::new();
    let mut uri = "/secrets?limit=3".to_owned();
    loop {
        let (status, body) = h.call(Method::GET, &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for item in body["items"].as_array().unwrap() {
            seen.push(item["name"].as_str().unwrap().to_owned());
        }
        match body["next_created_before"].as_str() {
            Some(next) => uri = format!("/secrets?limit=3&created_before={next}"),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);

    let (_, body) = h
        .call(Method::GET, "/secrets?created_before=2000-01-01", None)
        .await;
    assert_eq!(body["items"], json!([]));
    let got = h.call(Method::GET, "/secrets?limit=0", None).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid", "limit");
    let got = h.call(Method::GET, "/secrets?limit=many", None).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid", "limit");
    let got = h
        .call(Method::GET, "/secrets?created_before=yesterday", None)
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid",
        "Invalid created_before: 'yesterday'",
    );
}

#[tokio::test]
async fn roles_and_environment_limits_apply() {
    let h = Harness::new().await;
    h.create("s", json!({"A": "1"})).await;
    let reader = h.token("reader", Role::Reader, None).await;
    // A reader reads metadata and values...
    let (status, _) = h.call_as(&reader, Method::GET, "/secrets/s", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h
        .call_as(&reader, Method::POST, "/secrets/s/resolve", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["values"], json!({"A": "1"}));
    // ...and changes nothing.
    let got = h
        .call_as(
            &reader,
            Method::POST,
            "/secrets",
            Some(json!({"name": "t", "values": {}})),
        )
        .await;
    assert_error(
        &got,
        StatusCode::FORBIDDEN,
        "permission_denied",
        "may not create secrets",
    );
    let got = h
        .call_as(
            &reader,
            Method::PATCH,
            "/secrets/s",
            Some(json!({"values": {"A": "2"}})),
        )
        .await;
    assert_error(
        &got,
        StatusCode::FORBIDDEN,
        "permission_denied",
        "may not update",
    );
    let got = h.call_as(&reader, Method::DELETE, "/secrets/s", None).await;
    assert_error(
        &got,
        StatusCode::FORBIDDEN,
        "permission_denied",
        "may not delete",
    );

    let developer = h.token("dev", Role::Developer, None).await;
    let got = h
        .call_as(
            &developer,
            Method::POST,
            "/environments",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_error(
        &got,
        StatusCode::FORBIDDEN,
        "permission_denied",
        "environments",
    );
    let got = h.call_as(&developer, Method::GET, "/tokens", None).await;
    assert_error(&got, StatusCode::FORBIDDEN, "permission_denied", "tokens");

    h.call(Method::POST, "/environments", Some(json!({"name": "dev"})))
        .await;
    let limited = h
        .token("limited", Role::Developer, Some(vec!["dev".to_owned()]))
        .await;
    let got = h.call_as(&limited, Method::GET, "/secrets/s", None).await;
    assert_error(
        &got,
        StatusCode::FORBIDDEN,
        "permission_denied",
        "environment 'main'",
    );
    let (_, body) = h
        .call_as(&limited, Method::GET, "/environments", None)
        .await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    assert_eq!(body["items"][0]["name"], "dev");
}

// ---- Environments ----------------------------------------------------------

#[tokio::test]
async fn environments_are_listed_created_renamed_and_deleted() {
    let h = Harness::new().await;
    let (status, body) = h.call(Method::GET, "/environments", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"][0]["name"], "main");
    assert_eq!(body["items"][0]["is_default"], true);

    let (status, body) = h
        .call(Method::POST, "/environments", Some(json!({"name": "dev"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["name"], "dev");
    assert_eq!(body["is_default"], false);
    let got = h
        .call(Method::POST, "/environments", Some(json!({"name": "dev"})))
        .await;
    assert_error(&got, StatusCode::CONFLICT, "already_exists", "dev");
    let got = h
        .call(Method::POST, "/environments", Some(json!({"name": "-x"})))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid", "-x");
    let got = h.call(Method::POST, "/environments", Some(json!({}))).await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid",
        "missing field `name`",
    );

    let (status, body) = h
        .call(
            Method::PATCH,
            "/environments/dev",
            Some(json!({"name": "staging", "webhook_suffix": "stg"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "staging");
    assert_eq!(body["webhook_suffix"], "stg");
    let got = h
        .call(Method::PATCH, "/environments/staging", Some(json!({})))
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid",
        "Nothing to change",
    );
    let got = h
        .call(
            Method::PATCH,
            "/environments/nope",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", "nope");

    // An environment holding secrets goes only with `with_secrets`.
    let (status, _) = h
        .call(
            Method::POST,
            "/secrets?environment=staging",
            Some(json!({"name": "s", "values": {"A": "1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = h.call(Method::DELETE, "/environments/staging", None).await;
    assert!(status.is_client_error(), "{status} {body}");
    let (status, _) = h
        .call(
            Method::DELETE,
            "/environments/staging?with_secrets=true",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let got = h.call(Method::DELETE, "/environments/staging", None).await;
    assert_eq!(got.0, StatusCode::NOT_FOUND);
    let (status, body) = h.call(Method::DELETE, "/environments/main", None).await;
    assert!(status.is_client_error(), "{status} {body}");
    let got = h
        .call(Method::DELETE, "/environments/x?with_secrets=maybe", None)
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid", "with_secrets");
}

// ---- Tokens ------------------------------------------------------------------

#[tokio::test]
async fn tokens_are_created_listed_and_revoked() {
    let h = Harness::new().await;
    let (status, body) = h
        .call(
            Method::POST,
            "/tokens",
            Some(json!({"name": "ci", "role": "developer", "environments": ["main"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["token"]["id"].as_str().unwrap().to_owned();
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("as-"));
    assert_eq!(body["token"]["role"], "developer");
    assert_eq!(body["token"]["environments"], json!(["main"]));

    let ci = format!("{id}:{secret}");
    let (status, body) = h.call_as(&ci, Method::GET, "/whoami", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token"]["name"], "ci");

    let (_, body) = h.call(Method::GET, "/tokens", None).await;
    let listed = body.to_string();
    assert!(listed.contains(&id) && !listed.contains(&secret));
    assert_eq!(body["items"].as_array().unwrap().len(), 2);

    let got = h
        .call(
            Method::POST,
            "/tokens",
            Some(json!({"name": "x", "role": "root"})),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid",
        "unknown variant `root`",
    );
    let got = h
        .call(
            Method::POST,
            "/tokens",
            Some(json!({"name": "has space", "role": "reader"})),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid",
        "Invalid token name",
    );
    let got = h
        .call(
            Method::POST,
            "/tokens",
            Some(json!({"name": "x", "role": "reader", "environments": ["nope"]})),
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", "nope");

    let (status, _) = h.call(Method::DELETE, &format!("/tokens/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let got = h.call_as(&ci, Method::GET, "/whoami", None).await;
    assert_eq!(got.0, StatusCode::UNAUTHORIZED);
    let got = h.call(Method::DELETE, &format!("/tokens/{id}"), None).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", &id);
    let (admin_id, _) = h.admin.split_once(':').unwrap();
    let got = h
        .call(Method::DELETE, &format!("/tokens/{admin_id}"), None)
        .await;
    assert_error(
        &got,
        StatusCode::PRECONDITION_FAILED,
        "failed_precondition",
        "last admin token",
    );
}

#[tokio::test]
async fn tokens_expire_and_rotate() {
    let h = Harness::new().await;
    for (ttl, needle) in [
        (json!("0"), "greater than zero"),
        (json!("-1h"), "greater than zero"),
        (json!("soon"), "Invalid ttl 'soon'"),
        (json!(30), "expected a string"),
    ] {
        let got = h
            .call(
                Method::POST,
                "/tokens",
                Some(json!({"name": "x", "role": "reader", "ttl": ttl})),
            )
            .await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid", needle);
    }
    let (status, body) = h
        .call(
            Method::POST,
            "/tokens",
            Some(json!({"name": "ci", "role": "reader", "ttl": "1h"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["token"]["id"].as_str().unwrap().to_owned();
    let old = body["secret"].as_str().unwrap().to_owned();
    let created: latchkey_core::time::Timestamp =
        serde_json::from_value(body["token"]["created_at"].clone()).unwrap();
    let expires: latchkey_core::time::Timestamp =
        serde_json::from_value(body["token"]["expires_at"].clone()).unwrap();
    let ttl = expires.as_micros() - created.as_micros();
    assert!((ttl - 3_600_000_000).abs() < 5_000_000, "{ttl}");
    assert_eq!(body["token"]["last_used_at"], Value::Null);

    // Rotation: no body means no grace; a bad grace changes nothing.
    let got = h
        .call(
            Method::POST,
            &format!("/tokens/{id}/rotate"),
            Some(json!({"grace": "0"})),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid", "grace");
    let (status, _) = h
        .call_as(&format!("{id}:{old}"), Method::GET, "/whoami", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h
        .call(Method::POST, &format!("/tokens/{id}/rotate"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token"]["id"], id.as_str());
    assert_eq!(body["token"]["expires_at"], json!(expires));
    assert_eq!(body["token"]["previous_secret_until"], Value::Null);
    let new = body["secret"].as_str().unwrap().to_owned();
    let got = h
        .call_as(&format!("{id}:{old}"), Method::GET, "/whoami", None)
        .await;
    assert_eq!(got.0, StatusCode::UNAUTHORIZED);
    let (status, body) = h
        .call_as(&format!("{id}:{new}"), Method::GET, "/whoami", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["token"]["last_used_at"].is_string(), "{body}");
    let (status, body) = h
        .call(
            Method::POST,
            &format!("/tokens/{id}/rotate"),
            Some(json!({"grace": "10m"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["token"]["previous_secret_until"].is_string(), "{body}");
    let newest = body["secret"].as_str().unwrap().to_owned();
    for secret in [&new, &newest] {
        let (status, _) = h
            .call_as(&format!("{id}:{secret}"), Method::GET, "/whoami", None)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let got = h.call(Method::POST, "/tokens/ak-nope/rotate", None).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", "ak-nope");
    let reader = h.token("reader", Role::Reader, None).await;
    let got = h
        .call_as(&reader, Method::POST, &format!("/tokens/{id}/rotate"), None)
        .await;
    assert_eq!(got.0, StatusCode::FORBIDDEN);
}

// ---- Found by the fuzz targets ---------------------------------------------

/// An environment named by its id is the same environment: a rename that
/// would lock a token out of it is refused however it is named.
#[tokio::test]
async fn a_rename_by_id_is_refused_while_tokens_are_limited_to_the_environment() {
    let h = Harness::new().await;
    h.token("limited", Role::Developer, Some(vec!["main".to_owned()]))
        .await;
    let (_, body) = h.call(Method::GET, "/environments", None).await;
    let main_id = body["items"][0]["id"].as_str().unwrap().to_owned();
    for current in ["main", main_id.as_str()] {
        let got = h
            .call(
                Method::PATCH,
                &format!("/environments/{current}"),
                Some(json!({"name": "renamed"})),
            )
            .await;
        assert_error(
            &got,
            StatusCode::PRECONDITION_FAILED,
            "failed_precondition",
            "Environment 'main' cannot be renamed to 'renamed' while tokens are limited",
        );
    }
    let (_, body) = h.call(Method::GET, "/environments", None).await;
    assert_eq!(body["items"][0]["name"], "main", "nothing was renamed");
}

/// A rejected request names what was wrong without quoting the caller's
/// input whole: an unknown field or parameter of any length makes a short
/// message, with control characters escaped.
#[tokio::test]
async fn unknown_fields_are_named_shortened() {
    let h = Harness::new().await;
    let long = format!("{}\u{1}", "a".repeat(1_100));
    let query = format!("/secrets?{}=1", "a".repeat(1_100));
    let body = json!({"name": "dev", long.clone(): 1});
    let answers = [
        h.call(Method::GET, &query, None).await,
        h.call(Method::POST, "/environments", Some(body)).await,
        h.call(
            Method::POST,
            "/tokens",
            Some(json!({"name": "t", "role": "a".repeat(1_100)})),
        )
        .await,
    ];
    for got in answers {
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.1);
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(
            message.len() < 400,
            "a message of {} bytes: {message}",
            message.len()
        );
        assert!(!message.contains('\u{1}'), "{message:?}");
    }
}

/// Issue 14: changes, reads of values, refusals and failed authentications
/// are in the audit log with their actor and outcome, never a value;
/// readers may not read it; whoami shows the head; exposure names who read
/// which version.
#[tokio::test]
async fn the_audit_log_records_who_did_what() {
    let h = Harness::new().await;
    let admin_id = h.service.admin_token_id().to_owned();
    h.create("db", json!({"PASSWORD": "s3cret-value-1"})).await;
    let (status, _) = h
        .call(Method::POST, "/secrets/db/resolve", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let reader = h.token("auditor-reader", Role::Reader, None).await;
    let (status, _) = h
        .call_as(&reader, Method::DELETE, "/secrets/db", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let wrong = format!("{admin_id}:as-wrongwrongwrongwrongwrongwrongwr");
    let (status, _) = h.call_as(&wrong, Method::GET, "/whoami", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, log) = h.call(Method::GET, "/audit", None).await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let events = log["items"].as_array().unwrap();
    let find = |action: &str| {
        events
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} event in {log}"))
    };
    let created = find("secret.create");
    assert_eq!(created["actor"]["id"], admin_id.as_str());
    assert_eq!(created["interface"], "api");
    assert_eq!(created["secret"], "db");
    assert_eq!(created["version"], 1);
    let read = find("secret.read");
    assert_eq!(read["outcome"], "ok");
    assert_eq!(read["version"], 1);
    let denied = find("permission.denied");
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["actor"]["name"], "auditor-reader");
    assert_eq!(denied["detail"], "secret.delete");
    // Requests with no credential at all guess nothing: they are no event,
    // so that nobody without a token can grow the log.
    for _ in 0..20 {
        let request = Request::get("/api/v1/whoami").body(Body::empty()).unwrap();
        let (status, _, _) = h.raw(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (_, again) = h
        .call(Method::GET, "/audit?action=auth.failure", None)
        .await;
    assert_eq!(again["items"].as_array().unwrap().len(), 1, "{again}");
    let failed = find("auth.failure");
    assert!(failed["actor"].is_null());
    assert!(failed["detail"].as_str().unwrap().contains(&admin_id));
    find("token.create");
    let text = log.to_string();
    assert!(!text.contains("s3cret"), "a value in the log: {text}");
    assert!(!text.contains("wrongwrong"), "a token secret in the log");
    assert!(!text.contains(h.service.admin_token_secret()));

    let (status, body) = h.call_as(&reader, Method::GET, "/audit", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, filtered) = h.call(Method::GET, "/audit?action=secret.read", None).await;
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1);
    let got = h
        .call(Method::GET, "/audit?action=secret.steal", None)
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid",
        "Unknown audit action 'secret.steal'",
    );
    let got = h
        .call(
            Method::GET,
            "/audit?since=2026-02-01&until=2026-01-01",
            None,
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid",
        "'since' is later than 'until'",
    );

    let (_, who) = h.call(Method::GET, "/whoami", None).await;
    let (_, head) = h.call(Method::GET, "/audit/head", None).await;
    assert!(who["audit_head"]["seq"].as_i64().unwrap() >= 5);
    assert_eq!(head["mac"].as_str().unwrap().len(), 64);
    let (_, verdict) = h.call(Method::POST, "/audit/verify", None).await;
    assert_eq!(verdict["intact"], true, "{verdict}");

    let (_, exposure) = h.call(Method::GET, "/secrets/db/exposure", None).await;
    assert_eq!(exposure["items"][0]["version"], 1, "{exposure}");
    assert_eq!(exposure["items"][0]["token_id"], admin_id.as_str());
    assert_eq!(exposure["items"][0]["interfaces"], json!(["api"]));
    let (_, rotate) = h
        .call(Method::GET, &format!("/tokens/{admin_id}/exposure"), None)
        .await;
    assert_eq!(rotate["items"][0]["secret"], "db", "{rotate}");

    // The rest of the changes, each with its event.
    let (status, _) = h
        .call(
            Method::POST,
            "/environments",
            Some(json!({"name": "staging"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = h
        .call(
            Method::PATCH,
            "/environments/staging",
            Some(json!({"name": "stage"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h.call(Method::DELETE, "/environments/stage", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = h
        .call(
            Method::PATCH,
            "/secrets/db",
            Some(json!({"values": {"PASSWORD": "s3cret-value-2"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h
        .call(Method::POST, "/secrets/db/rollback", Some(json!({"to": 1})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h.call(Method::DELETE, "/secrets/db", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let reader_id = reader.split(':').next().unwrap().to_owned();
    let (status, _) = h
        .call(Method::DELETE, &format!("/tokens/{reader_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, log) = h.call(Method::GET, "/audit", None).await;
    let seen: Vec<(String, String, String)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or("-").to_owned();
            (
                text("action"),
                e["version"].to_string(),
                text("environment"),
            )
        })
        .collect();
    for want in [
        ("environment.create", "null", "staging"),
        ("environment.update", "null", "stage"),
        ("environment.delete", "null", "stage"),
        ("secret.update", "2", "main"),
        ("secret.rollback", "3", "main"),
        ("secret.delete", "3", "main"),
        ("token.revoke", "null", "-"),
    ] {
        let want = (want.0.to_owned(), want.1.to_owned(), want.2.to_owned());
        assert!(seen.contains(&want), "{want:?} not in {seen:?}");
    }
    assert!(!log.to_string().contains("s3cret"), "a value in the log");
}
