//! The list of secrets, a secret's page, revealing one value, and deletion.

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use latchkey_core::{time::Micros, EnvDict, Error};
use latchkey_service::{log::VersionExposure, Environment, Role, Secret, SecretSummary};
use maud::{html, Markup};
use serde::Deserialize;

use crate::{
    form::Form,
    format,
    layout::{self, Section},
    session::Auth,
    App,
};

/// Secrets per page.
const PAGE: usize = 50;
/// While filtering by name, secrets are read from the store in batches of
/// this many, newest first...
const BATCH: u32 = 500;
/// ...and at most this many per request: a filter that matches rarely
/// answers with what it found so far and a link to search further back, so
/// a request stays cheap with any number of secrets.
const SCAN_BUDGET: usize = 5_000;

/// `?a=b&c=d`, encoded.
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    let s = s.finish();
    if s.is_empty() {
        s
    } else {
        format!("?{s}")
    }
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    env: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    before: Option<Micros>,
}

/// One page of a listing.
struct Listing {
    env: Environment,
    items: Vec<SecretSummary>,
    /// Where the next page starts (`created_before`), if there may be one.
    next: Option<Micros>,
    /// For a filter that ran out of budget: how far back it searched.
    searched_to: Option<Micros>,
}

/// A page of the environment's named secrets, newest first, keyset-paged by
/// creation time; with a filter, the matching ones (see [`SCAN_BUDGET`]).
async fn listing(
    app: &App,
    auth: &Auth,
    env_name: &str,
    filter: &str,
    before: Option<Micros>,
) -> Result<Listing, Error> {
    if filter.is_empty() {
        let limit = u32::try_from(PAGE + 1).unwrap_or(u32::MAX);
        let (env, mut items) = app
            .service
            .list_secrets(&auth.caller, env_name, before, Some(limit))
            .await?;
        let more = items.len() > PAGE;
        items.truncate(PAGE);
        let next = more.then(|| items.last().map(|s| s.created_at)).flatten();
        return Ok(Listing {
            env,
            items,
            next,
            searched_to: None,
        });
    }
    let needle = filter.to_ascii_lowercase();
    let mut cursor = before;
    let mut items = Vec::new();
    let mut scanned = 0;
    loop {
        let (env, batch) = app
            .service
            .list_secrets(&auth.caller, env_name, cursor, Some(BATCH))
            .await?;
        let exhausted = batch.len() < BATCH as usize;
        for summary in batch {
            cursor = Some(summary.created_at);
            scanned += 1;
            let hit = summary
                .name()
                .is_some_and(|n| n.to_ascii_lowercase().contains(&needle));
            if hit {
                items.push(summary);
                if items.len() == PAGE {
                    return Ok(Listing {
                        env,
                        items,
                        next: cursor,
                        searched_to: None,
                    });
                }
            }
        }
        if exhausted {
            return Ok(Listing {
                env,
                items,
                next: None,
                searched_to: None,
            });
        }
        if scanned >= SCAN_BUDGET {
            return Ok(Listing {
                env,
                items,
                next: cursor,
                searched_to: cursor,
            });
        }
    }
}

/// The environment picker and the name filter.
fn toolbar(envs: &[Environment], current: &Environment, filter: &str) -> Markup {
    html! {
        form.toolbar method="get" action="/" role="search" {
            div.field {
                label for="env" { "Environment" }
                select #env name="env" {
                    @for env in envs {
                        option value=(env.name) selected[env.id == current.id] {
                            (env.name) @if env.is_default { " (default)" }
                        }
                    }
                }
            }
            div.field.grow {
                label for="q" { "Filter by name" }
                input #q type="search" name="q" value=(filter) maxlength="64"
                    placeholder="part of a name" autocomplete="off" spellcheck="false";
            }
            button type="submit" { "Show" }
        }
    }
}

/// The secrets of an environment.
pub(crate) async fn list(
    auth: Auth,
    State(app): State<App>,
    Query(q): Query<ListQuery>,
) -> Response {
    let filter = q.q.trim();
    let envs = match app.service.list_environments(&auth.caller).await {
        Ok(envs) => envs,
        Err(e) => return layout::error_page(Some(&auth), &e),
    };
    let page = match listing(&app, &auth, &q.env, filter, q.before).await {
        Ok(page) => page,
        Err(e) => return layout::error_page(Some(&auth), &e),
    };
    let env_q = if page.env.is_default {
        ""
    } else {
        page.env.name.as_str()
    };
    let body = html! {
        div.heading {
            h1 { "Secrets" }
            @if auth.can(Role::Developer) {
                a.button.primary href={ "/secrets/new" (query(&[("env", env_q)])) } { "New secret" }
            }
        }
        (toolbar(&envs, &page.env, filter))
        @if page.items.is_empty() {
            p.empty #no-secrets {
                @if !filter.is_empty() {
                    "No secret whose name contains “" (filter) "”"
                    @if page.searched_to.is_some() || q.before.is_some() { " on this page" }
                    "."
                } @else if q.before.is_some() {
                    "No older secrets."
                } @else {
                    "No secrets in " strong { (page.env.name) } " yet."
                }
            }
        } @else {
            div.table-wrap {
                table #secrets {
                    caption.sr { "Secrets in " (page.env.name) ", newest first" }
                    thead { tr {
                        th scope="col" { "Name" }
                        th scope="col" { "Keys" }
                        th scope="col" { "Created" }
                        th scope="col" { "Created by" }
                        th scope="col" { "Last used" }
                    } }
                    tbody {
                        @for s in &page.items {
                            tr {
                                td { a href={ "/secrets/" (s.id) } { (s.name().unwrap_or(&s.id)) } }
                                td.num { (s.keys.len()) }
                                td { (format::time(s.created_at)) }
                                td { (s.created_by) }
                                td { (format::maybe_time(s.last_used_at)) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(to) = page.searched_to {
            p.muted {
                "Searched the secrets created since " (format::time(to))
                "; older ones may match too."
            }
        }
        nav.pager aria-label="Pages" {
            @if q.before.is_some() {
                a href={ "/" (query(&[("env", env_q), ("q", filter)])) } { "← Newest" }
            }
            @if let Some(next) = page.next {
                a href={ "/" (query(&[("env", env_q), ("q", filter), ("before", &next.to_string())])) } rel="next" {
                    @if page.searched_to.is_some() { "Search older →" } @else { "Older →" }
                }
            }
        }
    };
    layout::respond(
        StatusCode::OK,
        layout::page("Secrets", Some(&auth), Section::Secrets, body),
    )
}

/// The metadata of a named secret of the caller's workspace (its keys, never
/// its values: nothing is recorded as read), or a 404 page.
pub(crate) async fn named_secret(
    app: &App,
    auth: &Auth,
    id: &str,
) -> Result<SecretSummary, Response> {
    match app.service.secret_metadata(&auth.caller, id).await {
        Ok(summary) if summary.name().is_some() => Ok(summary),
        Ok(_) => Err(layout::error_page(
            Some(auth),
            &Error::not_found(format!(
                "Secret '{}' not found",
                latchkey_core::rules::echo(id)
            )),
        )),
        Err(e) => Err(layout::error_page(Some(auth), &e)),
    }
}

/// A named secret with its values, or a 404 page. The audit log records a
/// read of its values (`secret.read`): only for pages that need them.
pub(crate) async fn named_secret_values(
    app: &App,
    auth: &Auth,
    id: &str,
) -> Result<Secret, Response> {
    named_secret(app, auth, id).await?;
    app.service
        .secret(&auth.caller, id)
        .await
        .map_err(|e| layout::error_page(Some(auth), &e))
}

#[derive(Deserialize)]
pub(crate) struct ShowQuery {
    #[serde(default)]
    pub(crate) reveal: Option<String>,
}

/// Code that uses the secret.
fn usage(name: &str, env: &Environment, first_key: &str) -> Markup {
    let env_arg = if env.is_default {
        String::new()
    } else {
        format!(", environment_name=\"{}\"", env.name)
    };
    let env_flag = if env.is_default {
        String::new()
    } else {
        format!(" --env {}", env.name)
    };
    let python = format!(
        "import os\nimport modal\n\napp = modal.App()\n\n\
         @app.function(secrets=[modal.Secret.from_name(\"{name}\"{env_arg})])\n\
         def main():\n    print(os.environ[\"{first_key}\"])\n"
    );
    let run = format!("latchkey run --secret {name}{env_flag} -- ./your-command\n");
    let rust = format!("use latchkey::Secret;\n\nlet secret = Secret::from_name(\"{name}\");\n");
    html! {
        section.usage aria-labelledby="usage-h" {
            h2 #usage-h { "Use it" }
            (layout::copyable("snippet-python", "Modal (Python)", &python))
            (layout::copyable("snippet-run", "latchkey run", &run))
            (layout::copyable("snippet-rust", "Rust SDK", &rust))
        }
    }
}

/// A secret: its metadata, its keys with values hidden (one can be revealed),
/// how to use it, and, for admins, who read it. Only a reveal reads values
/// (and is recorded as a read).
pub(crate) async fn show(
    auth: Auth,
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Response {
    let summary = match named_secret(&app, &auth, &id).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let (s, shown) = match revealed(&summary.keys, q.reveal.as_deref()) {
        Some(key) => match named_secret_values(&app, &auth, &id).await {
            Ok(secret) => {
                let shown = secret.contents.get(key).map(|v| (key, v.clone()));
                (secret.summary, shown)
            }
            Err(page) => return page,
        },
        None => (summary, None),
    };
    let name = s.name().unwrap_or_default();
    let env = app
        .service
        .environment(&auth.caller, &s.environment_name)
        .await;
    let readers = if auth.can(Role::Admin) {
        Some(
            app.service
                .secret_exposure(&auth.caller, &s.environment_name, name)
                .await
                .map(|(_, readers)| readers),
        )
    } else {
        None
    };
    let back = query(&[("env", &s.environment_name)]);
    let body = html! {
        p.crumbs { a href={ "/" (back) } { "Secrets" } " / " (s.environment_name) }
        div.heading {
            h1 { (name) }
            div.actions {
                a.button href={ "/secrets/" (s.id) "/history" } { "History" }
                @if auth.can(Role::Developer) {
                    a.button href={ "/secrets/" (s.id) "/edit" } { "Edit" }
                    a.button.danger href={ "/secrets/" (s.id) "/delete" } { "Delete" }
                }
            }
        }
        dl.meta {
            dt { "Environment" } dd { (s.environment_name) }
            dt { "Created" } dd { (format::time(s.created_at)) " by " (s.created_by) }
            dt { "Last used" } dd { (format::maybe_time(s.last_used_at)) }
            dt { "Version" } dd { (s.version) }
            dt { "Id" } dd { code { (s.id) } }
        }
        h2 { (format::plural(s.keys.len(), "key", "keys")) }
        (keys_table(name, &format!("/secrets/{}", s.id), &s.keys, shown.as_ref().map(|(k, v)| (*k, v.as_str()))))
        @if let Some(readers) = &readers {
            (who_read(s.version, readers))
        }
        @if let Ok(env) = &env {
            (usage(name, env, s.keys.first().map_or("KEY", String::as_str)))
        }
    };
    layout::respond(
        StatusCode::OK,
        layout::page(name, Some(&auth), Section::Secrets, body),
    )
}

/// Who read the values of each version of a secret whose current version
/// is `current` (for admins), or why that is not known.
fn who_read(current: i64, readers: &Result<Vec<VersionExposure>, Error>) -> Markup {
    html! {
        section.exposure aria-labelledby="who-read-h" {
            h2 #who-read-h { "Who read it" }
            @match readers {
                Err(e) => p.error role="alert" { (e.message()) },
                Ok(readers) if readers.is_empty() => p.empty #no-readers { "No token has read its values." },
                Ok(readers) => div.table-wrap {
                    table #readers {
                        caption.sr { "Tokens that read each version's values, newest version first" }
                        (layout::columns(&["Version", "Token", "Reads", "First", "Last", "Through"]))
                        tbody {
                            @for r in readers {
                                tr {
                                    td.num {
                                        (r.version)
                                        @if r.version == current { " " span.badge { "current" } }
                                    }
                                    td { (r.token_name) " " code { (r.token_id) } }
                                    td.num { (r.count) }
                                    td { (format::time(r.first_at)) }
                                    td { (format::time(r.last_at)) }
                                    td { (r.interfaces.join(", ")) }
                                }
                            }
                        }
                    }
                },
            }
        }
    }
}

/// The keys of a secret (or of one of its versions) with their values
/// hidden but for `shown` (a key and its value). `page` is the path of the
/// page that shows them: a value is revealed by that page with
/// `?reveal=KEY`, and fetched alone for the copy button from
/// `{page}/value?key=KEY`.
pub(crate) fn keys_table(
    name: &str,
    page: &str,
    keys: &[String],
    shown: Option<(&str, &str)>,
) -> Markup {
    html! {
        @if keys.is_empty() {
            p.empty { "This secret has no keys." }
        } @else {
            div.table-wrap {
                table #keys {
                    caption.sr { "Keys of " (name) "; values are hidden until revealed" }
                    thead { tr { th scope="col" { "Key" } th scope="col" { "Value" } th scope="col" { span.sr { "Actions" } } } }
                    tbody {
                        @for key in keys {
                            @let value = shown.filter(|(k, _)| k == key).map(|(_, v)| v);
                            tr id={ "key-" (key) } {
                                td { code { (key) } }
                                td.value {
                                    @if let Some(value) = value {
                                        code.revealed { (value) }
                                    } @else {
                                        span.hidden-value aria-label="hidden" { "••••••••" }
                                    }
                                }
                                td.row-actions {
                                    @if value.is_some() {
                                        a href={ (page) "#key-" (key) } { "Hide" }
                                    } @else {
                                        a href={ (page) (query(&[("reveal", key)])) "#key-" (key) }
                                            aria-label={ "Reveal " (key) } { "Reveal" }
                                    }
                                    " "
                                    button.small type="button" hidden
                                        data-copy-url={ (page) "/value" (query(&[("key", key)])) }
                                        aria-label={ "Copy the value of " (key) } { "Copy" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The key to reveal on a page of a secret with `keys`: the one asked for,
/// if there is such a key.
pub(crate) fn revealed<'a>(keys: &[String], asked: Option<&'a str>) -> Option<&'a str> {
    asked.filter(|k| keys.iter().any(|key| key == k))
}

#[derive(Deserialize)]
pub(crate) struct ValueQuery {
    pub(crate) key: String,
}

/// One value, alone, as text (for the copy button). Never cached.
pub(crate) async fn value(
    auth: Auth,
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<ValueQuery>,
) -> Response {
    let secret = match named_secret_values(&app, &auth, &id).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    value_of(&auth, &secret.contents, &q.key)
}

/// One value of `contents`, alone, as text: for the copy buttons. Never
/// cached.
pub(crate) fn value_of(auth: &Auth, contents: &EnvDict, key: &str) -> Response {
    match contents.get(key) {
        Some(value) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            value.clone(),
        )
            .into_response(),
        None => layout::error_page(
            Some(auth),
            &Error::not_found(format!(
                "Secret has no key '{}'",
                latchkey_core::rules::echo(key)
            )),
        ),
    }
}

fn delete_page(auth: &Auth, s: &SecretSummary, error: Option<&str>) -> Markup {
    let name = s.name().unwrap_or_default();
    layout::page(
        &format!("Delete {name}"),
        Some(auth),
        Section::Secrets,
        html! {
            p.crumbs { a href={ "/secrets/" (s.id) } { (name) } " / delete" }
            h1 { "Delete " (name) }
            div.warning role="note" {
                p { strong { "Deletion is irreversible." } " The secret's values and key material are destroyed." }
                p { "Every app, function and " code { "latchkey run" } " that uses "
                    code { (name) } " in " strong { (s.environment_name) }
                    " will fail to start until a secret of that name is created again." }
            }
            form.stack method="post" action={ "/secrets/" (s.id) "/delete" } {
                (layout::csrf(auth))
                label for="confirm" { "Type " code { (name) } " to confirm" }
                input #confirm type="text" name="confirm" required autocomplete="off"
                    spellcheck="false" autocapitalize="off"
                    aria-invalid=[error.map(|_| "true")]
                    aria-describedby=[error.map(|_| "confirm-error")];
                @if let Some(error) = error { p.field-error #confirm-error { (error) } }
                div.actions {
                    button.danger type="submit" { "Delete forever" }
                    a href={ "/secrets/" (s.id) } { "Cancel" }
                }
            }
        },
    )
}

/// The deletion page: what deletion means, and a box for the name.
pub(crate) async fn delete_form(
    auth: Auth,
    State(app): State<App>,
    Path(id): Path<String>,
) -> Response {
    match named_secret(&app, &auth, &id).await {
        Ok(secret) => layout::respond(StatusCode::OK, delete_page(&auth, &secret, None)),
        Err(page) => page,
    }
}

/// Deletes the secret when the typed name matches.
pub(crate) async fn delete(
    auth: Auth,
    State(app): State<App>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = auth.csrf_refusal(&form) {
        return refused;
    }
    let secret = match named_secret(&app, &auth, &id).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let name = secret.name().unwrap_or_default();
    if form.get("confirm").trim() != name {
        return layout::respond(
            StatusCode::BAD_REQUEST,
            delete_page(
                &auth,
                &secret,
                Some("That is not the secret's name; nothing was deleted."),
            ),
        );
    }
    if let Err(e) = app.service.delete_secret(&auth.caller, &id).await {
        return layout::error_page(Some(&auth), &e);
    }
    auth.flash_next(format!(
        "Secret '{name}' was deleted from {}.",
        secret.environment_name
    ));
    Redirect::to(&format!("/{}", query(&[("env", &secret.environment_name)]))).into_response()
}
