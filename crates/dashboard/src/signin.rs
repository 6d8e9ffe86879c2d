//! Signing in with a pasted token, and signing out.

use axum::{
    body::Bytes,
    extract::{Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use latchkey_core::ids;
use maud::{html, Markup};
use serde::Deserialize;

use crate::{
    form::Form,
    layout::{self, Section},
    session::{self, Auth},
    App,
};

/// The audit log's action of a sign-in...
const SIGNIN: &str = "dashboard.signin";
/// ...and of a sign-out.
const SIGNOUT: &str = "dashboard.signout";

/// A pasted token secret, held only while sign-in checks it; `Debug` does
/// not show it.
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Deserialize)]
pub(crate) struct SigninQuery {
    #[serde(default)]
    ended: Option<String>,
}

/// The sign-in page; the signed-in are sent to their secrets.
pub(crate) async fn form(auth: Option<Auth>, Query(q): Query<SigninQuery>) -> Response {
    if auth.is_some() {
        return Redirect::to("/").into_response();
    }
    let note = q
        .ended
        .is_some()
        .then_some("Your session has ended. Sign in again.");
    layout::respond(StatusCode::OK, signin_page(note, None))
}

fn signin_page(note: Option<&str>, error: Option<&str>) -> Markup {
    layout::page(
        "Sign in",
        None,
        Section::None,
        html! {
            div.narrow {
                h1 { "Sign in" }
                @if let Some(note) = note { p.flash role="status" { (note) } }
                @if let Some(error) = error { p.error role="alert" #signin-error { (error) } }
                p {
                    "Paste a token of this server. The admin token is in the "
                    code { "admin-token" } " file of the server's data dir ("
                    code { "~/.local/share/latchkey/admin-token" } " by default)."
                }
                form method="post" action="/signin" autocomplete="off" {
                    label for="token_id" { "Token id" }
                    input #token_id type="text" name="token_id" placeholder="ak-…"
                        autocomplete="off" spellcheck="false" autocapitalize="off"
                        aria-describedby=[error.map(|_| "signin-error")];
                    label for="token_secret" { "Token secret" }
                    input #token_secret type="password" name="token_secret" placeholder="as-…"
                        autocomplete="off" spellcheck="false";
                    details {
                        summary { "Or paste the admin-token file" }
                        label for="token_file" { "Contents of " code { "admin-token" } }
                        textarea #token_file name="token_file" rows="4" spellcheck="false"
                            placeholder="LATCHKEY_TOKEN_ID=ak-…\nLATCHKEY_TOKEN_SECRET=as-…" {}
                    }
                    button.primary type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// The first word of `texts` that starts with `prefix`, cut to the length of
/// a token part (a pasted file can run lines together in a one-line field).
fn find_part(texts: &[&str], prefix: &str, len: usize) -> Option<String> {
    texts.iter().find_map(|text| {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .find_map(|word| {
                let at = word.find(prefix)?;
                let part = &word[at..];
                let end = (prefix.len() + len).min(part.len());
                Some(part[..end].to_owned())
            })
    })
}

/// The token id and secret in the submitted form: two fields, or either
/// field or the file box holding both (`ak-… as-…`, or the `admin-token`
/// file's `LATCHKEY_TOKEN_ID=`/`LATCHKEY_TOKEN_SECRET=` lines).
fn credentials(form: &Form) -> (String, Secret) {
    let (id, secret, file) = (
        form.get("token_id").trim(),
        form.get("token_secret").trim(),
        form.get("token_file"),
    );
    let token_id = find_part(&[id, file, secret], ids::TOKEN_ID, ids::ID_RANDOM_LEN)
        .unwrap_or_else(|| id.to_owned());
    let token_secret = find_part(
        &[secret, id, file],
        ids::TOKEN_SECRET,
        ids::TOKEN_SECRET_RANDOM_LEN,
    )
    .unwrap_or_else(|| secret.to_owned());
    (token_id, Secret(token_secret))
}

/// Checks the token, records the sign-in in the audit log (a failed one is
/// recorded by the service), starts a session, and sets its cookie.
pub(crate) async fn submit(
    State(app): State<App>,
    client: Option<axum::Extension<latchkey_service::ClientAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let (token_id, token_secret) = credentials(&form);
    drop(form);
    let origin = crate::session::origin(client.map(|axum::Extension(c)| c));
    let authenticated = app
        .service
        .authenticate(&token_id, &token_secret.0, &origin)
        .await;
    let caller = match authenticated {
        Ok(caller) => caller,
        Err(e) if e.kind() == latchkey_core::ErrorKind::ResourceExhausted => {
            let mut page = layout::respond(
                StatusCode::TOO_MANY_REQUESTS,
                signin_page(None, Some(e.message())),
            );
            if let Some(wait) = e.retry_after() {
                page.headers_mut()
                    .insert(header::RETRY_AFTER, wait.as_secs().max(1).into());
            }
            return page;
        }
        Err(e) if e.kind() == latchkey_core::ErrorKind::Unauthenticated => {
            let message = if token_id.is_empty() || token_secret.0.is_empty() {
                "Give both the token id (ak-…) and its secret (as-…)."
            } else if e.message().contains(" expired at ") {
                // Said only to a caller who holds the token's secret.
                e.message()
            } else {
                "That token was not accepted: it is unknown, revoked, or its secret is wrong."
            };
            return layout::respond(StatusCode::UNAUTHORIZED, signin_page(None, Some(message)));
        }
        Err(e) => return layout::error_page(None, &e),
    };
    drop(token_secret);
    // Fail closed: a sign-in the audit log cannot record does not happen.
    if let Err(e) = app.service.record(caller.audit(SIGNIN)).await {
        return layout::error_page(None, &e);
    }
    if let Some(old) = session::cookie(&headers, session::COOKIE) {
        app.sessions.remove(old);
    }
    tracing::info!(token_id = %caller.token().id, "dashboard: signed in");
    let id = app.sessions.create(caller);
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    (
        [(header::SET_COOKIE, session::set_cookie(&id, secure))],
        Redirect::to("/"),
    )
        .into_response()
}

/// Ends the session on the server and removes the cookie. Signing out is
/// never refused: if the audit log cannot record it, that is logged and the
/// session ends all the same (a session kept alive would be worse).
pub(crate) async fn signout(auth: Auth, State(app): State<App>, body: Bytes) -> Response {
    if let Some(refused) = auth.csrf_refusal(&Form::parse(&body)) {
        return refused;
    }
    auth.end();
    if let Err(e) = app.service.record(auth.caller.audit(SIGNOUT)).await {
        tracing::error!(error = %e, "dashboard: cannot record a sign-out in the audit log");
    }
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/signin"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ak-abcdefghijklmnopqrstuv";
    const SECRET: &str = "as-abcdefghijklmnopqrstuvwxyz012345";

    fn creds(body: &str) -> (String, String) {
        let (id, secret) = credentials(&Form::parse(body.as_bytes()));
        (id, secret.0)
    }

    #[test]
    fn two_fields() {
        let body = format!("token_id={ID}&token_secret={SECRET}");
        assert_eq!(creds(&body), (ID.to_owned(), SECRET.to_owned()));
    }

    #[test]
    fn the_admin_token_file_in_the_box_or_run_together_in_one_line() {
        let file = latchkey_core::admin_token::AdminTokenFile::new(
            Some("http://127.0.0.1:7420".to_owned()),
            ID,
            SECRET,
        )
        .render();
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("token_file", &file)
            .finish();
        assert_eq!(creds(&body), (ID.to_owned(), SECRET.to_owned()));
        let one_line = file.replace('\n', "");
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("token_id", &one_line)
            .finish();
        assert_eq!(creds(&body), (ID.to_owned(), SECRET.to_owned()));
    }

    #[test]
    fn secret_is_not_debug_printed() {
        assert_eq!(format!("{:?}", Secret(SECRET.into())), "Secret(..)");
    }
}
