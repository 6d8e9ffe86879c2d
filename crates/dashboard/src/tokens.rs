//! Tokens: list, create (optionally expiring; the secret is shown once),
//! rotate (the new secret is shown once), and a token's page, which shows
//! the secrets it has read at their current version (what to rotate) before
//! offering to revoke it. Admin only, as the service decides.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use latchkey_core::Error;
use latchkey_service::{log::TokenExposure, Environment, Role, Token};
use maud::{html, Markup};

use crate::{
    form::Form,
    format,
    layout::{self, Section},
    session::Auth,
    App,
};

/// A token just created or rotated, whose secret this page shows once.
struct Created<'a> {
    token: &'a Token,
    secret: &'a str,
    rotated: bool,
}

fn page(
    auth: &Auth,
    tokens: &[Token],
    envs: &[Environment],
    created: Option<Created<'_>>,
    error: Option<&str>,
) -> Markup {
    let now = latchkey_core::time::now_micros();
    let body = html! {
        h1 { "Tokens" }
        @if let Some(error) = error { p.error role="alert" #token-error { (error) } }
        @if let Some(c) = created {
            section.created aria-labelledby="created-h" {
                h2 #created-h { "Token " (c.token.name) @if c.rotated { " has a new secret" } @else { " was created" } }
                @if let Some(until) = c.token.previous_secret_until.filter(|_| c.rotated) {
                    p { "Its previous secret is accepted until " (format::time(until)) "." }
                }
                p { strong { "Copy its secret now: it is shown only this once" }
                    " and latchkey keeps only a hash of it." }
                (layout::copyable("new-token", "Environment variables",
                    &format!("LATCHKEY_TOKEN_ID={}\nLATCHKEY_TOKEN_SECRET={}\n", c.token.id, c.secret)))
                (layout::copyable("new-token-modal", "For the Modal client",
                    &format!("MODAL_TOKEN_ID={}\nMODAL_TOKEN_SECRET={}\n", c.token.id, c.secret)))
            }
        }
        div.table-wrap {
            table #tokens {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Id" } th scope="col" { "Role" }
                    th scope="col" { "Environments" } th scope="col" { "Created" }
                    th scope="col" { "Expires" } th scope="col" { "Last used" } th scope="col" { "Status" }
                } }
                tbody {
                    @for t in tokens {
                        tr {
                            td {
                                a href={ "/tokens/" (t.id) } { (t.name) }
                                @if t.id == auth.caller.token().id { " " span.badge { "you" } }
                            }
                            td { code { (t.id) } }
                            td { (t.role.as_str()) }
                            td { @match &t.environments { Some(e) => (e.join(", ")), None => span.muted { "all" } } }
                            td { (format::time(t.created_at)) }
                            td { @match t.expires_at { Some(at) => (format::time(at)), None => span.muted { "never" } } }
                            td { @match t.last_used_at { Some(at) => (format::time(at)), None => span.muted { "never" } } }
                            td {
                                @if let Some(at) = t.revoked_at {
                                    "revoked " (format::time(at))
                                } @else if t.expired_at(now) {
                                    "expired"
                                } @else {
                                    "active · "
                                    form.inline method="post" action="/tokens/rotate" {
                                        (layout::csrf(auth))
                                        input type="hidden" name="id" value=(t.id);
                                        input type="text" name="grace" size="4" placeholder="grace"
                                            title="How long its current secret stays accepted (e.g. 10m); empty: not at all"
                                            aria-label={ "Grace period for " (t.name) };
                                        button.small type="submit" aria-label={ "Rotate " (t.name) } { "Rotate" }
                                    }
                                    " "
                                    a href={ "/tokens/" (t.id) } aria-label={ "Revoke " (t.name) "…" } { "Revoke…" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "New token" }
        form.stack method="post" action="/tokens" {
            (layout::csrf(auth))
            div.row2 {
                div.field.grow {
                    label for="token-name" { "Name" }
                    input #token-name type="text" name="name" required maxlength="64"
                        pattern="[A-Za-z0-9._@\\-]+" title="1 to 64 letters, digits, '.', '_', '@' and '-'"
                        placeholder="ci-deploy" autocomplete="off" spellcheck="false";
                }
                div.field {
                    label for="token-ttl" { "Expires after" }
                    input #token-ttl type="text" name="ttl" placeholder="never (or 30d, 12h…)"
                        autocomplete="off" spellcheck="false";
                }
                div.field {
                    label for="token-role" { "Role" }
                    select #token-role name="role" {
                        option value="reader" { "reader: read secrets" }
                        option value="developer" selected { "developer: read and write secrets" }
                        option value="admin" { "admin: everything, tokens too" }
                    }
                }
            }
            fieldset {
                legend { "Limit to environments (none ticked: all)" }
                @for env in envs {
                    label.check { input type="checkbox" name="env" value=(env.name); " " (env.name) }
                }
            }
            div.actions { button.primary type="submit" { "Create token" } }
        }
    };
    layout::page("Tokens", Some(auth), Section::Tokens, body)
}

async fn render(
    app: &App,
    auth: &Auth,
    status: StatusCode,
    created: Option<Created<'_>>,
    error: Option<&str>,
) -> Response {
    let listed = async {
        let tokens = app.service.list_tokens(&auth.caller).await?;
        let envs = app.service.list_environments(&auth.caller).await?;
        Ok::<_, latchkey_core::Error>((tokens, envs))
    };
    match listed.await {
        Ok((tokens, envs)) => layout::respond(status, page(auth, &tokens, &envs, created, error)),
        Err(e) => layout::error_page(Some(auth), &e),
    }
}

/// The workspace's tokens.
pub(crate) async fn list(auth: Auth, State(app): State<App>) -> Response {
    render(&app, &auth, StatusCode::OK, None, None).await
}

/// Creates a token and shows its secret, once.
pub(crate) async fn create(auth: Auth, State(app): State<App>, body: Bytes) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = auth.csrf_refusal(&form) {
        return refused;
    }
    let Some(role) = Role::parse(form.get("role")) else {
        return render(
            &app,
            &auth,
            StatusCode::BAD_REQUEST,
            None,
            Some("Choose a role"),
        )
        .await;
    };
    let envs: Vec<String> = form.all("env").into_iter().map(str::to_owned).collect();
    let envs = (!envs.is_empty()).then_some(envs);
    let created = match duration_field(&form, "ttl", "Expires after") {
        Ok(ttl) => {
            app.service
                .create_token(&auth.caller, form.get("name").trim(), role, envs, ttl)
                .await
        }
        Err(e) => Err(e),
    };
    show_secret(&app, &auth, created, false).await
}

/// The tokens page showing a new or rotated token's secret, once, or the
/// error that prevented it.
async fn show_secret(
    app: &App,
    auth: &Auth,
    result: Result<(Token, zeroize::Zeroizing<String>), latchkey_core::Error>,
    rotated: bool,
) -> Response {
    match result {
        Ok((token, secret)) => {
            let created = Created {
                token: &token,
                secret: &secret,
                rotated,
            };
            render(app, auth, StatusCode::OK, Some(created), None).await
        }
        Err(e) => {
            let status = layout::status_of(&e);
            render(app, auth, status, None, Some(e.message())).await
        }
    }
}

/// An optional duration field (empty: `None`), named `label` in errors.
fn duration_field(
    form: &Form,
    field: &str,
    label: &str,
) -> Result<Option<std::time::Duration>, latchkey_core::Error> {
    let text = form.get(field).trim();
    if text.is_empty() {
        return Ok(None);
    }
    latchkey_core::time::parse_duration(&format!("'{label}'"), text).map(Some)
}

/// Gives a token a new secret and shows it, once; the old one stays
/// accepted for the grace period given. A session signed in with the old
/// secret ends once it is no longer accepted.
pub(crate) async fn rotate(auth: Auth, State(app): State<App>, body: Bytes) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = auth.csrf_refusal(&form) {
        return refused;
    }
    let rotated = match duration_field(&form, "grace", "grace period") {
        Ok(grace) => {
            app.service
                .rotate_token(&auth.caller, form.get("id"), grace)
                .await
        }
        Err(e) => Err(e),
    };
    show_secret(&app, &auth, rotated, true).await
}

/// Revokes a token; a session signed in with it ends on its next request.
pub(crate) async fn revoke(auth: Auth, State(app): State<App>, body: Bytes) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = auth.csrf_refusal(&form) {
        return refused;
    }
    let id = form.get("id");
    match app.service.revoke_token(&auth.caller, id).await {
        Ok(()) => {
            auth.flash_next(format!("Token {id} was revoked."));
            Redirect::to("/tokens").into_response()
        }
        Err(e) => {
            let status = layout::status_of(&e);
            render(&app, &auth, status, None, Some(e.message())).await
        }
    }
}

/// A token's page: who it is, the secrets whose current version it has
/// read (rotate these when revoking it), and the revoke button.
pub(crate) async fn show(auth: Auth, State(app): State<App>, Path(id): Path<String>) -> Response {
    let found = async {
        let read = app.service.token_exposure(&auth.caller, &id).await?;
        let token = app
            .service
            .list_tokens(&auth.caller)
            .await?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| {
                Error::not_found(format!(
                    "Token '{}' not found",
                    latchkey_core::rules::echo(&id)
                ))
            })?;
        Ok::<_, Error>((token, read))
    };
    match found.await {
        Ok((token, read)) => layout::respond(StatusCode::OK, token_page(&auth, &token, &read)),
        Err(e) => layout::error_page(Some(&auth), &e),
    }
}

fn token_page(auth: &Auth, t: &Token, read: &[TokenExposure]) -> Markup {
    let body = html! {
        p.crumbs { a href="/tokens" { "Tokens" } " / " (t.name) }
        h1 { "Token " (t.name) }
        dl.meta {
            dt { "Id" } dd { code { (t.id) } }
            dt { "Role" } dd { (t.role.as_str()) }
            dt { "Environments" } dd { @match &t.environments { Some(e) => (e.join(", ")), None => span.muted { "all" } } }
            dt { "Created" } dd { (format::time(t.created_at)) }
            dt { "Status" } dd { @if let Some(at) = t.revoked_at { "revoked " (format::time(at)) } @else { "active" } }
        }
        section aria-labelledby="exposure-h" {
            h2 #exposure-h { "Secrets it has read" }
            @if read.is_empty() {
                p.empty #no-exposure { "This token has read no secret's current values." }
            } @else {
                p { strong { "Rotate these" } ": this token has read their current version's values, "
                    "so whoever holds it may still know them after it is revoked." }
                div.table-wrap {
                    table #exposure {
                        (layout::columns(&["Secret", "Environment", "Version", "Reads", "Last read"]))
                        tbody {
                            @for r in read {
                                tr {
                                    td { a href={ "/secrets/" (r.secret_id) } { (r.secret_name) } }
                                    td { (r.environment) }
                                    td.num { (r.version) }
                                    td.num { (r.count) }
                                    td { (format::time(r.last_at)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if t.revoked_at.is_none() {
            form.stack #revoke method="post" action="/tokens/revoke" {
                (layout::csrf(auth))
                input type="hidden" name="id" value=(t.id);
                div.actions {
                    button.danger type="submit" { "Revoke " (t.name) }
                    a href="/tokens" { "Cancel" }
                }
            }
        }
    };
    layout::page(
        &format!("Token {}", t.name),
        Some(auth),
        Section::Tokens,
        body,
    )
}
