//! Server-side sessions.
//!
//! Signing in authenticates the pasted token once, through
//! [`Service::authenticate`](latchkey_service::Service::authenticate), and
//! keeps the resulting [`Caller`] in memory under a random id; the browser
//! gets only that id, in an `HttpOnly; SameSite=Strict; Path=/` cookie. The
//! token secret is dropped as soon as it has been checked.
//!
//! A session ends after [`IDLE`] without a request, [`ABSOLUTE`] after sign
//! in, on sign out, and as soon as its token is revoked or expires, or the
//! secret it signed in with is rotated out (past the rotation's grace
//! period): every request looks the token up again (one indexed read,
//! [`Service::recheck`](latchkey_service::Service::recheck)), so the change
//! is noticed on the next page.
//!
//! Sessions live in this process. Several replicas behind a load balancer need
//! sticky sessions (or the user signs in again on each replica); a restart
//! signs everyone out, which for a secrets dashboard is a feature.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    http::{header, request::Parts, HeaderMap},
    response::{IntoResponse, Redirect, Response},
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use latchkey_service::{Caller, Role};
use rand::{rngs::OsRng, RngCore};
use subtle::ConstantTimeEq;

use crate::{form::Form, layout, App};

/// Name of the session cookie.
pub(crate) const COOKIE: &str = "latchkey_session";
/// A session unused this long ends.
pub(crate) const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign in, however busy.
pub(crate) const ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);
/// Most sessions kept at once; past it the least recently used one ends.
const MAX_SESSIONS: usize = 10_000;

struct Entry {
    caller: Caller,
    csrf: String,
    created: Instant,
    seen: Instant,
    flash: Option<String>,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.seen) > IDLE || now.duration_since(self.created) > ABSOLUTE
    }
}

/// The sessions of this process.
#[derive(Default)]
pub(crate) struct Sessions {
    entries: Mutex<HashMap<String, Entry>>,
}

/// 32 random bytes from the OS, URL-safe base64.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves the map consistent (every
        // operation is a single insert or remove), so poisoning is ignored.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session for `caller`; returns its id.
    pub(crate) fn create(&self, caller: Caller) -> String {
        let now = Instant::now();
        let id = random_token();
        let mut entries = self.lock();
        entries.retain(|_, e| !e.expired(now));
        if entries.len() >= MAX_SESSIONS {
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.seen)
                .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            id.clone(),
            Entry {
                caller,
                csrf: random_token(),
                created: now,
                seen: now,
                flash: None,
            },
        );
        id
    }

    /// The live session `id`: its caller and CSRF token, and its flash
    /// message (taken, so that it shows once). Touches the session.
    fn get(&self, id: &str) -> Option<(Caller, String, Option<String>)> {
        let now = Instant::now();
        let mut entries = self.lock();
        let entry = entries.get_mut(id)?;
        if entry.expired(now) {
            entries.remove(id);
            return None;
        }
        entry.seen = now;
        Some((entry.caller.clone(), entry.csrf.clone(), entry.flash.take()))
    }

    /// Ends session `id`.
    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// A message for the next page the session sees.
    fn set_flash(&self, id: &str, message: String) {
        if let Some(entry) = self.lock().get_mut(id) {
            entry.flash = Some(message);
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value that stores session `id`.
pub(crate) fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        ABSOLUTE.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// A signed-in request: the caller, the session's CSRF token, and the flash
/// message to show. Handlers that take it are only reached when signed in;
/// others are redirected to the sign-in page.
pub(crate) struct Auth {
    pub(crate) caller: Caller,
    pub(crate) csrf: String,
    pub(crate) flash: Option<String>,
    session: String,
    sessions: Arc<Sessions>,
}

impl Auth {
    /// The 403 page for a form whose CSRF token is not the session's, if
    /// it is not.
    pub(crate) fn csrf_refusal(&self, form: &Form) -> Option<Response> {
        let sent = form.get("csrf");
        if bool::from(sent.as_bytes().ct_eq(self.csrf.as_bytes())) {
            return None;
        }
        tracing::warn!("dashboard: form without a valid CSRF token refused");
        Some(layout::forbidden(
            "This form is out of date or was not sent from this dashboard. \
             Reload the page and try again.",
        ))
    }

    /// Shows `message` on the next page of this session.
    pub(crate) fn flash_next(&self, message: impl Into<String>) {
        self.sessions.set_flash(&self.session, message.into());
    }

    /// Ends this session.
    pub(crate) fn end(&self) {
        self.sessions.remove(&self.session);
    }

    /// Whether the caller's role is at least `role`.
    pub(crate) fn can(&self, role: Role) -> bool {
        self.caller.require(role, "").is_ok()
    }
}

fn to_signin(ended: bool) -> Response {
    let mut response =
        Redirect::to(if ended { "/signin?ended=1" } else { "/signin" }).into_response();
    if ended {
        if let Ok(v) = clear_cookie().parse() {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    response
}

/// Where a dashboard request came from.
pub(crate) fn origin(client: Option<latchkey_service::ClientAddr>) -> latchkey_service::Origin {
    latchkey_service::Origin::new(latchkey_service::log::Interface::Dashboard, client)
}

impl FromRequestParts<App> for Auth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        let Some(id) = cookie(&parts.headers, COOKIE) else {
            return Err(to_signin(false));
        };
        let Some((caller, csrf, flash)) = app.sessions.get(id) else {
            return Err(to_signin(true));
        };
        // The token may have been revoked, may have expired, or its secret
        // may have been rotated out since sign in.
        let caller = match app.service.recheck(&caller).await {
            Ok(Some(caller)) => caller,
            Ok(None) => {
                app.sessions.remove(id);
                return Err(to_signin(true));
            }
            Err(e) => return Err(layout::error_page(None, &e)),
        };
        let client = parts
            .extensions
            .get::<latchkey_service::ClientAddr>()
            .copied();
        Ok(Auth {
            caller: caller.with_origin(origin(client)),
            csrf,
            flash,
            session: id.to_owned(),
            sessions: app.sessions.clone(),
        })
    }
}

/// A signed-in request, if there is one (for the sign-in page itself).
impl OptionalFromRequestParts<App> for Auth {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &App,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <Auth as FromRequestParts<App>>::from_request_parts(parts, app)
                .await
                .ok(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; latchkey_session=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn session_cookie_is_strict_and_http_only() {
        let c = set_cookie("abc", false);
        for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
            assert!(c.contains(part), "{c}");
        }
        assert!(set_cookie("abc", true).ends_with("; Secure"));
    }

    #[test]
    fn random_tokens_are_long_and_differ() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }
}
