//! The frame of every page, and the pages for errors.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use latchkey_core::{Error, ErrorKind};
use latchkey_service::Role;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::session::Auth;

/// Which part of the dashboard a page belongs to, for the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Secrets,
    Environments,
    Tokens,
    Audit,
    None,
}

/// A whole page: head, navigation (when signed in), the flash message, `body`.
pub(crate) fn page(title: &str, auth: Option<&Auth>, section: Section, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · latchkey" }
                link rel="stylesheet" href="/static/app.css";
                link rel="icon" href="/static/icon.svg" type="image/svg+xml";
                script src="/static/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { img src="/static/icon.svg" alt="" width="20" height="20"; " latchkey" }
                    @if let Some(auth) = auth {
                        nav aria-label="Main" {
                            a href="/" aria-current=[(section == Section::Secrets).then_some("page")] { "Secrets" }
                            a href="/environments" aria-current=[(section == Section::Environments).then_some("page")] { "Environments" }
                            @if auth.can(Role::Admin) {
                                a href="/tokens" aria-current=[(section == Section::Tokens).then_some("page")] { "Tokens" }
                                a href="/audit" aria-current=[(section == Section::Audit).then_some("page")] { "Audit" }
                            }
                        }
                        form.signout method="post" action="/signout" {
                            (csrf(auth))
                            span.who title="Signed in with this token" {
                                (auth.caller.token().name) " · " (auth.caller.token().role.as_str())
                            }
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main #main {
                    @if let Some(message) = auth.and_then(|a| a.flash.as_deref()) {
                        p.flash role="status" { (message) }
                    }
                    (PreEscaped(body.into_string()))
                }
            }
        }
    }
}

/// The session's CSRF token as a hidden field; every form that changes
/// something carries it.
pub(crate) fn csrf(auth: &Auth) -> Markup {
    html! { input type="hidden" name="csrf" value=(auth.csrf); }
}

/// A rendered page with a status.
pub(crate) fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, markup).into_response()
}

/// The status a service error maps to.
pub(crate) fn status_of(error: &Error) -> StatusCode {
    match error.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists => StatusCode::CONFLICT,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A page that shows a service error: its message names what was wrong
/// (internal details stay in the server's log).
pub(crate) fn error_page(auth: Option<&Auth>, error: &Error) -> Response {
    let status = status_of(error);
    if status.is_server_error() {
        tracing::warn!(error = %error, "dashboard: request failed");
    }
    let title = status.canonical_reason().unwrap_or("Error");
    respond(
        status,
        page(
            title,
            auth,
            Section::None,
            html! {
                h1 { (title) }
                p.error role="alert" { (error.message()) }
                p { a href="/" { "Back to the secrets" } }
            },
        ),
    )
}

/// A 403 page for a refused form.
pub(crate) fn forbidden(message: &str) -> Response {
    respond(
        StatusCode::FORBIDDEN,
        page(
            "Forbidden",
            None,
            Section::None,
            html! {
                h1 { "Forbidden" }
                p.error role="alert" { (message) }
                p { a href="/" { "Go to the dashboard" } }
            },
        ),
    )
}

/// A table's head: one column header per name.
pub(crate) fn columns(names: &[&str]) -> Markup {
    html! { thead { tr { @for name in names { th scope="col" { (name) } } } } }
}

/// An error message under a form field, referenced by the field's
/// `aria-describedby`.
pub(crate) fn field_error(id: &str, message: Option<&String>) -> Markup {
    html! {
        @if let Some(message) = message {
            p.field-error id=(id) { (message) }
        }
    }
}

/// A box of text with a copy button (the button appears only with
/// JavaScript).
pub(crate) fn copyable(id: &str, label: &str, text: &str) -> Markup {
    html! {
        div.snippet {
            div.snippet-head {
                span { (label) }
                button.small type="button" data-copy-target=(id) hidden { "Copy" }
            }
            pre { code id=(id) { (text) } }
        }
    }
}
