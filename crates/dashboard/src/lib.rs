//! The dashboard served at `/`: sign in with a token, manage secrets (and
//! their versions), environments and tokens, and read the audit log. It
//! calls the service layer directly, so every rule and permission is the
//! same as on the APIs.
//!
//! Pages are rendered on the server with [`maud`] (templates compiled into
//! the binary) and work without JavaScript; one small script, served from
//! the binary, only adds copy buttons. Nothing is fetched from elsewhere.
//!
//! Security, in one place each:
//! - `session`: server-side sessions behind an HttpOnly, SameSite=Strict
//!   cookie; a session holds the authenticated caller, never the token
//!   secret, and the token is re-checked on every request so that revoking
//!   it ends the session.
//! - `security`: the response headers of every page (a strict
//!   Content-Security-Policy, no framing, no referrer, no caching) and the
//!   refusal of cross-site form posts; every state-changing form also carries
//!   the session's CSRF token.
//!
//! ```no_run
//! # async fn f(service: latchkey_service::Service) {
//! let app = axum::Router::new().merge(latchkey_dashboard::router(service));
//! # let _ = app; }
//! ```

mod assets;
mod audit;
mod create;
mod edit;
mod environments;
mod form;
mod format;
mod history;
mod layout;
mod paste;
mod rows;
mod secrets;
mod security;
mod session;
mod signin;
mod tokens;

use std::sync::Arc;

use axum::{
    extract::DefaultBodyLimit,
    middleware,
    routing::{get, post},
    Router,
};
use latchkey_service::Service;

/// Largest form the dashboard accepts: room for a secret of several hundred
/// large values; the service's own limits still apply.
const MAX_FORM_BYTES: usize = 16 * 1024 * 1024;

/// Largest sign-in form: a token id and secret and a CSRF field fit many
/// times over. Anyone may post it, before any credential is checked, so it
/// must not let strangers make the server buffer megabytes.
const MAX_SIGNIN_FORM_BYTES: usize = 16 * 1024;

/// What every handler shares.
#[derive(Clone)]
struct App {
    service: Service,
    sessions: Arc<session::Sessions>,
    fingerprints: Arc<edit::Fingerprints>,
    #[cfg(test)]
    interleave: Arc<edit::Interleave>,
}

/// The dashboard's routes.
pub fn router(service: Service) -> Router {
    routes(App {
        service,
        sessions: Arc::new(session::Sessions::default()),
        fingerprints: Arc::new(edit::Fingerprints::random()),
        #[cfg(test)]
        interleave: Arc::default(),
    })
}

/// The routes over `app`.
fn routes(app: App) -> Router {
    Router::new()
        .route("/", get(secrets::list))
        .route(
            "/signin",
            get(signin::form)
                .post(signin::submit)
                .layer(DefaultBodyLimit::max(MAX_SIGNIN_FORM_BYTES)),
        )
        .route("/signout", post(signin::signout))
        .route("/secrets/new", get(create::form).post(create::submit))
        .route("/secrets/{id}", get(secrets::show))
        .route("/secrets/{id}/value", get(secrets::value))
        .route("/secrets/{id}/edit", get(edit::form).post(edit::save))
        .route("/secrets/{id}/history", get(history::list))
        .route("/secrets/{id}/versions/{version}", get(history::show))
        .route(
            "/secrets/{id}/versions/{version}/value",
            get(history::value),
        )
        .route(
            "/secrets/{id}/versions/{version}/rollback",
            get(history::rollback_form).post(history::rollback),
        )
        .route(
            "/secrets/{id}/delete",
            get(secrets::delete_form).post(secrets::delete),
        )
        .route(
            "/environments",
            get(environments::list).post(environments::create),
        )
        .route("/environments/rename", post(environments::rename))
        .route("/environments/delete", post(environments::delete))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/revoke", post(tokens::revoke))
        .route("/tokens/{id}", get(tokens::show))
        .route("/audit", get(audit::list))
        .route("/audit/verify", post(audit::verify))
        .route("/tokens/rotate", post(tokens::rotate))
        .route("/static/app.css", get(assets::css))
        .route("/static/app.js", get(assets::js))
        .route("/static/icon.svg", get(assets::icon))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(middleware::from_fn(security::reject_cross_site))
        .layer(middleware::from_fn(security::headers))
        .with_state(app)
}
