//! Environments: list, create, rename, delete.

use axum::{
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use latchkey_core::{rules, Error, ErrorKind};
use latchkey_service::{Environment, EnvironmentUpdate, Role};
use maud::{html, Markup};

use crate::{
    form::Form,
    format,
    layout::{self, Section},
    secrets::query,
    session::Auth,
    App,
};

/// The HTML `pattern` of an environment name (the `en-` prefix is left to
/// the server).
const ENV_PATTERN: &str = "[a-zA-Z0-9][a-zA-Z0-9_\\-]*";
const ENV_TITLE: &str = "Letters, digits, '_' and '-', starting with a letter or digit";

/// What to show besides the list: an error, and the environment whose
/// deletion needs confirming.
#[derive(Default)]
struct Notes {
    error: Option<String>,
    confirm_delete: Option<String>,
}

async fn render(app: &App, auth: &Auth, status: StatusCode, notes: &Notes) -> Response {
    let envs = match app.service.list_environments(&auth.caller).await {
        Ok(envs) => envs,
        Err(e) => return layout::error_page(Some(auth), &e),
    };
    // Whether each holds named secrets: one row read each.
    let mut holds = Vec::with_capacity(envs.len());
    for env in &envs {
        let any = app
            .service
            .list_secrets(&auth.caller, &env.name, None, Some(1))
            .await
            .map(|(_, items)| !items.is_empty())
            .unwrap_or(false);
        holds.push(any);
    }
    layout::respond(status, page(auth, &envs, &holds, notes))
}

fn page(auth: &Auth, envs: &[Environment], holds: &[bool], notes: &Notes) -> Markup {
    let admin = auth.can(Role::Admin);
    let body = html! {
        h1 { "Environments" }
        @if let Some(error) = &notes.error { p.error role="alert" #env-error { (error) } }
        div.table-wrap {
            table #environments {
                thead { tr {
                    th scope="col" { "Name" }
                    th scope="col" { "Created" }
                    th scope="col" { "Secrets" }
                    @if admin { th scope="col" { "Rename" } th scope="col" { "Delete" } }
                } }
                tbody {
                    @for (env, holds) in envs.iter().zip(holds) {
                        tr {
                            td { a href={ "/" (query(&[("env", &env.name)])) } { (env.name) }
                                 @if env.is_default { " " span.badge { "default" } } }
                            td { (format::time(env.created_at)) }
                            td { @if *holds { "yes" } @else { span.muted { "none" } } }
                            @if admin {
                                td {
                                    form.inline method="post" action="/environments/rename" {
                                        (layout::csrf(auth))
                                        input type="hidden" name="name" value=(env.name);
                                        label.sr for={ "rename-" (env.id) } { "New name for " (env.name) }
                                        input id={ "rename-" (env.id) } type="text" name="new_name" required
                                            pattern=(ENV_PATTERN) maxlength=(rules::MAX_ENVIRONMENT_NAME_LEN)
                                            title=(ENV_TITLE) placeholder="new name" autocomplete="off" spellcheck="false";
                                        button.small type="submit" { "Rename" }
                                    }
                                }
                                td {
                                    @if env.is_default {
                                        span.muted { "—" }
                                    } @else if notes.confirm_delete.as_deref() == Some(env.name.as_str()) {
                                        form.inline.confirm method="post" action="/environments/delete" {
                                            (layout::csrf(auth))
                                            input type="hidden" name="name" value=(env.name);
                                            input type="hidden" name="with_secrets" value="yes";
                                            label for="confirm-env" { "Type " code { (env.name) } " to delete it and all its secrets" }
                                            input #confirm-env type="text" name="confirm" required autocomplete="off" spellcheck="false";
                                            button.small.danger type="submit" { "Delete with its secrets" }
                                        }
                                    } @else {
                                        form.inline method="post" action="/environments/delete" {
                                            (layout::csrf(auth))
                                            input type="hidden" name="name" value=(env.name);
                                            button.small.danger type="submit" aria-label={ "Delete " (env.name) } { "Delete" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if admin {
            h2 { "New environment" }
            form.toolbar method="post" action="/environments" {
                (layout::csrf(auth))
                div.field.grow {
                    label for="new-env" { "Name" }
                    input #new-env type="text" name="name" required pattern=(ENV_PATTERN)
                        maxlength=(rules::MAX_ENVIRONMENT_NAME_LEN) title=(ENV_TITLE)
                        placeholder="dev" autocomplete="off" spellcheck="false";
                }
                button.primary type="submit" { "Create environment" }
            }
        } @else {
            p.muted { "Only an admin token can create, rename or delete environments." }
        }
    };
    layout::page("Environments", Some(auth), Section::Environments, body)
}

/// The environments of the workspace.
pub(crate) async fn list(auth: Auth, State(app): State<App>) -> Response {
    render(&app, &auth, StatusCode::OK, &Notes::default()).await
}

async fn done(app: &App, auth: &Auth, result: Result<String, Error>) -> Response {
    match result {
        Ok(message) => {
            auth.flash_next(message);
            Redirect::to("/environments").into_response()
        }
        Err(e) => {
            let notes = Notes {
                error: Some(e.message().to_owned()),
                confirm_delete: None,
            };
            render(app, auth, layout::status_of(&e), &notes).await
        }
    }
}

/// Creates an environment.
pub(crate) async fn create(auth: Auth, State(app): State<App>, body: Bytes) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = auth.csrf_refusal(&form) {
        return refused;
    }
    let name = form.get("name").trim();
    let result = app
        .service
        .create_environment(&auth.caller, name)
        .await
        .map(|env| format!("Environment '{}' was created.", env.name));
    done(&app, &auth, result).await
}

/// Renames an environment.
pub(crate) async fn rename(auth: Auth, State(app): State<App>, body: Bytes) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = auth.csrf_refusal(&form) {
        return refused;
    }
    let (from, to) = (form.get("name"), form.get("new_name").trim());
    let update = EnvironmentUpdate {
        name: Some(to.to_owned()),
        webhook_suffix: None,
    };
    let result = app
        .service
        .update_environment(&auth.caller, from, update)
        .await
        .map(|env| format!("Environment '{from}' is now '{}'.", env.name));
    done(&app, &auth, result).await
}

/// Deletes an environment. One that holds secrets is refused, and the page
/// then asks to confirm by typing its name; confirmed, its secrets go too.
pub(crate) async fn delete(auth: Auth, State(app): State<App>, body: Bytes) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = auth.csrf_refusal(&form) {
        return refused;
    }
    let name = form.get("name");
    let with_secrets = form.get("with_secrets") == "yes";
    if with_secrets && form.get("confirm").trim() != name {
        let notes = Notes {
            error: Some(format!(
                "That is not the environment's name; '{}' was not deleted.",
                rules::echo(name)
            )),
            confirm_delete: Some(name.to_owned()),
        };
        return render(&app, &auth, StatusCode::BAD_REQUEST, &notes).await;
    }
    match app
        .service
        .delete_environment(&auth.caller, name, with_secrets)
        .await
    {
        Ok(()) => {
            auth.flash_next(if with_secrets {
                format!("Environment '{name}' and its secrets were deleted.")
            } else {
                format!("Environment '{name}' was deleted.")
            });
            Redirect::to("/environments").into_response()
        }
        Err(e) if e.kind() == ErrorKind::FailedPrecondition && !with_secrets => {
            let notes = Notes {
                error: Some(format!(
                    "{} Deleting it deletes its secrets too, irreversibly: confirm below.",
                    e.message()
                )),
                confirm_delete: Some(name.to_owned()),
            };
            render(&app, &auth, StatusCode::CONFLICT, &notes).await
        }
        Err(e) => done(&app, &auth, Err(e)).await,
    }
}
