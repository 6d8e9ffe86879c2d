//! Tokens: list, create (the secret is shown once), revoke. Admin only, as
//! the service decides.

use axum::{
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use latchkey_service::{Environment, Role, Token};
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
                            td { (t.name) @if t.id == auth.caller.token().id { " " span.badge { "you" } } }
                            td { code { (t.id) } }
                            td { (t.role.as_str()) }
                            td { @match &t.environments { Some(e) => (e.join(", ")), None => span.muted { "all" } } }
                            td { (format::time(t.created_at)) }
                            td {
                                @if let Some(at) = t.revoked_at {
                                    "revoked " (format::time(at))
                                } @else {
                                    form.inline method="post" action="/tokens/revoke" {
                                        (layout::csrf(auth))
                                        input type="hidden" name="id" value=(t.id);
                                        button.small.danger type="submit" aria-label={ "Revoke " (t.name) } { "Revoke" }
                                    }
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
