//! Tokens: list, create (the secret is shown once), and a token's page,
//! which shows the secrets it has read at their current version (what to
//! rotate) before offering to revoke it. Admin only, as the service decides.

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

/// A token just created, whose secret this page shows once.
struct Created<'a> {
    token: &'a Token,
    secret: &'a str,
}

fn page(
    auth: &Auth,
    tokens: &[Token],
    envs: &[Environment],
    created: Option<Created<'_>>,
    error: Option<&str>,
) -> Markup {
    let body = html! {
        h1 { "Tokens" }
        @if let Some(error) = error { p.error role="alert" #token-error { (error) } }
        @if let Some(c) = created {
            section.created aria-labelledby="created-h" {
                h2 #created-h { "Token " (c.token.name) " was created" }
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
                    th scope="col" { "Environments" } th scope="col" { "Created" } th scope="col" { "Status" }
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
                            td {
                                @if let Some(at) = t.revoked_at {
                                    "revoked " (format::time(at))
                                } @else {
                                    "active · "
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
    match app
        .service
        .create_token(&auth.caller, form.get("name").trim(), role, envs)
        .await
    {
        Ok((token, secret)) => {
            let created = Created {
                token: &token,
                secret: &secret,
            };
            render(&app, &auth, StatusCode::OK, Some(created), None).await
        }
        Err(e) => {
            let status = layout::status_of(&e);
            render(&app, &auth, status, None, Some(e.message())).await
        }
    }
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
