//! A secret's history: its kept versions with their key-level changes, one
//! old version with its values hidden (one can be revealed, as on the
//! secret's page), and rolling back to one.
//!
//! A rollback changes what every process that starts from then on gets, so
//! it has a page of its own first, like deletion: what the rollback would
//! add, remove and change (key names, never values). Its form carries the
//! version it was confirmed against, and the store makes the rollback only
//! if that is still the current version: a save landing after the page was
//! shown is not undone unseen; the page comes back with what it would now
//! do.

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use latchkey_core::{rules, Error, ErrorKind};
use latchkey_service::{KeyChanges, Role, Secret, SecretSummary, SecretVersion};
use maud::{html, Markup};
use serde::Deserialize;

use crate::{
    form::Form,
    format,
    layout::{self, Section},
    secrets::{self, named_secret, named_secret_values, query, ShowQuery, ValueQuery},
    session::Auth,
    App,
};

/// Versions per page of the history (a secret keeps up to 1,000).
const PAGE: usize = 50;

/// What the rollback needs that only a Developer has.
const ROLL_BACK: &str = "roll back secrets";

#[derive(Deserialize)]
pub(crate) struct HistoryQuery {
    /// Show the versions older than this one.
    #[serde(default)]
    before: Option<String>,
}

/// `/secrets/{id}/versions/{version}`.
fn version_path(secret_id: &str, version: i64) -> String {
    format!("/secrets/{secret_id}/versions/{version}")
}

/// The key names of a version's changes; `None`: the version before it was
/// not kept, so they are not known.
fn changes(changes: Option<&KeyChanges>) -> Markup {
    let Some(c) = changes else {
        return html! { span.muted { "not known (the version before was not kept)" } };
    };
    let parts = [
        ("added", &c.added),
        ("removed", &c.removed),
        ("changed", &c.changed),
    ];
    html! {
        @if parts.iter().all(|(_, keys)| keys.is_empty()) {
            span.muted { "no key changed" }
        } @else {
            ul.changes {
                @for (what, keys) in parts {
                    @if !keys.is_empty() {
                        li class=(what) {
                            (what) " "
                            @for (i, key) in keys.iter().enumerate() {
                                @if i > 0 { ", " }
                                code { (key) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Who made a version (unknown for versions carried over from a store that
/// kept no history).
fn author(version: &SecretVersion) -> Markup {
    html! {
        @if version.created_by.is_empty() {
            span.muted { "unknown" }
        } @else {
            (version.created_by)
        }
    }
}

/// Links back to the secret, and to its history.
fn crumbs(s: &SecretSummary, tail: &Markup) -> Markup {
    html! {
        p.crumbs {
            a href={ "/" (query(&[("env", &s.environment_name)])) } { "Secrets" }
            " / " (s.environment_name) " / "
            a href={ "/secrets/" (s.id) } { (s.name().unwrap_or_default()) }
            " / " (tail)
        }
    }
}

/// One page of the history, newest first.
struct Page {
    versions: Vec<SecretVersion>,
    /// Where the next page starts (`before`), if there is one.
    next: Option<i64>,
}

async fn history_page(
    app: &App,
    auth: &Auth,
    secret_id: &str,
    before: Option<i64>,
) -> Result<Page, Error> {
    let limit = u32::try_from(PAGE + 1).unwrap_or(u32::MAX);
    let mut versions = app
        .service
        .secret_history(&auth.caller, secret_id, before, Some(limit))
        .await?;
    let more = versions.len() > PAGE;
    versions.truncate(PAGE);
    let next = more.then(|| versions.last().map(|v| v.version)).flatten();
    Ok(Page { versions, next })
}

/// The history page; `error` is a refused rollback's message.
fn history_markup(
    auth: &Auth,
    s: &SecretSummary,
    page: &Page,
    before: Option<i64>,
    error: Option<&str>,
) -> Markup {
    let name = s.name().unwrap_or_default();
    // A version made after `secret` was read is newer still: the newest
    // listed is the current one then.
    let current = page
        .versions
        .first()
        .map_or(s.version, |v| v.version.max(s.version));
    let may_roll_back = auth.can(Role::Developer);
    let body = html! {
        (crumbs(s, &html! { "history" }))
        h1 { "History of " (name) }
        @if let Some(error) = error {
            p.error role="alert" #rollback-error { (error) }
        }
        p.hint {
            "Every change makes a new version. Values stay hidden: open a version to reveal one. "
            "Versions beyond the number the server keeps are destroyed with their keys."
        }
        @if page.versions.is_empty() {
            p.empty #no-versions { "No older versions are kept." }
        } @else {
            div.table-wrap {
                table #history {
                    caption.sr { "Versions of " (name) ", newest first" }
                    thead { tr {
                        th scope="col" { "Version" }
                        th scope="col" { "Made" }
                        th scope="col" { "By" }
                        th scope="col" { "How" }
                        th scope="col" { "Keys" }
                        th scope="col" { span.sr { "Actions" } }
                    } }
                    tbody {
                        @for v in &page.versions {
                            @let is_current = v.version == current;
                            tr id={ "v-" (v.version) } class=[is_current.then_some("current")] {
                                td.version {
                                    a href=(version_path(&s.id, v.version)) { (v.version) }
                                    @if is_current { " " span.badge { "current" } }
                                }
                                td { (format::time(v.created_at)) }
                                td { (author(v)) }
                                td.action { (v.action) }
                                td.changes { (changes(v.changes.as_ref())) }
                                td.row-actions {
                                    a href=(version_path(&s.id, v.version))
                                        aria-label={ "View version " (v.version) } { "View" }
                                    @if may_roll_back && !is_current {
                                        " "
                                        a href={ (version_path(&s.id, v.version)) "/rollback" }
                                            aria-label={ "Roll back to version " (v.version) } { "Roll back" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if before.is_some() {
                a href={ "/secrets/" (s.id) "/history" } { "← Newest" }
            }
            @if let Some(next) = page.next {
                a href={ "/secrets/" (s.id) "/history" (query(&[("before", &next.to_string())])) } rel="next" { "Older →" }
            }
        }
    };
    layout::page(
        &format!("History of {name}"),
        Some(auth),
        Section::Secrets,
        body,
    )
}

/// The kept versions of a secret, newest first, a page at a time.
pub(crate) async fn list(
    auth: Auth,
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let before = match q.before.as_deref().map(rules::parse_version).transpose() {
        Ok(before) => before,
        Err(e) => return layout::error_page(Some(&auth), &e),
    };
    let s = match named_secret(&app, &auth, &id).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    match history_page(&app, &auth, &id, before).await {
        Ok(page) => layout::respond(
            StatusCode::OK,
            history_markup(&auth, &s, &page, before, None),
        ),
        Err(e) => layout::error_page(Some(&auth), &e),
    }
}

/// The record of kept version `version` of a secret (its keys, never its
/// values: nothing is recorded as read), or the page that says why not.
async fn version_record(
    app: &App,
    auth: &Auth,
    id: &str,
    version: i64,
) -> Result<SecretVersion, Response> {
    let found = app
        .service
        .secret_history(&auth.caller, id, version.checked_add(1), Some(1))
        .await
        .map_err(|e| layout::error_page(Some(auth), &e))?;
    match found.into_iter().next() {
        Some(record) if record.version == version => Ok(record),
        // Not kept: the service says which versions are (a version made
        // meanwhile is found, and its values read but not shown).
        _ => app
            .service
            .secret_version(&auth.caller, id, version)
            .await
            .map(|(_, record)| record)
            .map_err(|e| layout::error_page(Some(auth), &e)),
    }
}

/// The current state of a secret and its kept version `version`, both with
/// their values (each recorded as a read), and the version's record; or the
/// page that says why not.
async fn load_version(
    app: &App,
    auth: &Auth,
    id: &str,
    version: &str,
) -> Result<(Secret, Secret, SecretVersion), Response> {
    let version = rules::parse_version(version).map_err(|e| layout::error_page(Some(auth), &e))?;
    let current = named_secret_values(app, auth, id).await?;
    let (old, record) = old_version(app, auth, id, version).await?;
    Ok((current, old, record))
}

/// Kept version `version` of a secret with its values (recorded as a read).
async fn old_version(
    app: &App,
    auth: &Auth,
    id: &str,
    version: i64,
) -> Result<(Secret, SecretVersion), Response> {
    app.service
        .secret_version(&auth.caller, id, version)
        .await
        .map_err(|e| layout::error_page(Some(auth), &e))
}

/// One version: its record and its keys, values hidden but for one (whose
/// reveal is recorded as a read of that version).
pub(crate) async fn show(
    auth: Auth,
    State(app): State<App>,
    Path((id, version)): Path<(String, String)>,
    Query(q): Query<ShowQuery>,
) -> Response {
    let n = match rules::parse_version(&version) {
        Ok(n) => n,
        Err(e) => return layout::error_page(Some(&auth), &e),
    };
    let s = match named_secret(&app, &auth, &id).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let record = match version_record(&app, &auth, &id, n).await {
        Ok(record) => record,
        Err(page) => return page,
    };
    let shown = match secrets::revealed(&record.keys, q.reveal.as_deref()) {
        Some(key) => match old_version(&app, &auth, &id, n).await {
            Ok((old, _)) => old.contents.get(key).map(|v| (key, v.clone())),
            Err(page) => return page,
        },
        None => None,
    };
    let name = s.name().unwrap_or_default();
    let is_current = n == s.version;
    let path = version_path(&s.id, n);
    let body = html! {
        (crumbs(&s, &html! {
            a href={ "/secrets/" (s.id) "/history" } { "history" } " / version " (n)
        }))
        div.heading {
            h1 { (name) " · version " (n) }
            @if auth.can(Role::Developer) && !is_current {
                div.actions {
                    a.button href={ (path) "/rollback" } { "Roll back to version " (n) }
                }
            }
        }
        p.note #version-note {
            @if is_current {
                "This is the current version."
            } @else {
                "This is an old version: processes get version "
                a href={ "/secrets/" (s.id) } { (s.version) } "."
            }
        }
        dl.meta {
            dt { "Made" } dd { (format::time(record.created_at)) " by " (author(&record)) }
            dt { "How" } dd { (record.action) }
            dt { "Keys" } dd { (changes(record.changes.as_ref())) }
        }
        h2 { (format::plural(record.keys.len(), "key", "keys")) }
        (secrets::keys_table(name, &path, &record.keys, shown.as_ref().map(|(k, v)| (*k, v.as_str()))))
    };
    layout::respond(
        StatusCode::OK,
        layout::page(
            &format!("{name} version {n}"),
            Some(&auth),
            Section::Secrets,
            body,
        ),
    )
}

/// One value of a version, alone, as text (for the copy button): recorded
/// as a read of that version.
pub(crate) async fn value(
    auth: Auth,
    State(app): State<App>,
    Path((id, version)): Path<(String, String)>,
    Query(q): Query<ValueQuery>,
) -> Response {
    let n = match rules::parse_version(&version) {
        Ok(n) => n,
        Err(e) => return layout::error_page(Some(&auth), &e),
    };
    if let Err(page) = named_secret(&app, &auth, &id).await {
        return page;
    }
    match old_version(&app, &auth, &id, n).await {
        Ok((old, _)) => secrets::value_of(&auth, &old.contents, &q.key),
        Err(page) => page,
    }
}

/// The confirmation of a rollback of `current` to `old`: what it would
/// change, and the form that does it; `error` is why the last try was
/// refused.
fn rollback_markup(
    auth: &Auth,
    current: &Secret,
    old: &Secret,
    n: i64,
    error: Option<&str>,
) -> Markup {
    let s = &current.summary;
    let name = s.name().unwrap_or_default();
    let path = version_path(&s.id, n);
    let would = KeyChanges::between(&current.contents, &old.contents);
    let body = html! {
        (crumbs(&current.summary, &html! {
            a href={ "/secrets/" (s.id) "/history" } { "history" } " / "
            a href=(path) { "version " (n) } " / roll back"
        }))
        h1 { "Roll back " (name) " to version " (n) }
        @if let Some(error) = error {
            p.error role="alert" #rollback-error { (error) }
        }
        div.warning role="note" {
            p { "This makes " strong { "version " (s.version + 1) } " with the keys and values of version " (n) ". "
                "Every app, function and " code { "latchkey run" } " that starts after this gets them." }
            p { "Version " (s.version) ", the current one, stays in the history as long as the server keeps it: "
                "rolling back to it undoes this." }
        }
        h2 { "Compared with version " (s.version) }
        div #rollback-changes { (changes(Some(&would))) }
        form.stack method="post" action={ (path) "/rollback" } {
            (layout::csrf(auth))
            input type="hidden" name="expected" value=(s.version);
            div.actions {
                button.primary type="submit" { "Roll back to version " (n) }
                a href={ "/secrets/" (s.id) "/history" } { "Cancel" }
            }
        }
    };
    layout::page(
        &format!("Roll back {name}"),
        Some(auth),
        Section::Secrets,
        body,
    )
}

/// The history with why a rollback was refused on top.
async fn refused(app: &App, auth: &Auth, id: &str, error: &Error) -> Response {
    let page = match named_secret(app, auth, id).await {
        Ok(s) => history_page(app, auth, id, None)
            .await
            .map(|page| history_markup(auth, &s, &page, None, Some(error.message()))),
        Err(page) => return page,
    };
    match page {
        Ok(markup) => layout::respond(layout::status_of(error), markup),
        Err(_) => layout::error_page(Some(auth), error),
    }
}

/// The rollback's confirmation page.
pub(crate) async fn rollback_form(
    auth: Auth,
    State(app): State<App>,
    Path((id, version)): Path<(String, String)>,
) -> Response {
    if let Err(e) = auth.caller.require(Role::Developer, ROLL_BACK) {
        return layout::error_page(Some(&auth), &e);
    }
    let (current, old, record) = match load_version(&app, &auth, &id, &version).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    if record.version == current.summary.version {
        let e = Error::failed_precondition(format!(
            "Version {} is the current version of '{}'; there is nothing to roll back",
            record.version,
            current.summary.name().unwrap_or_default()
        ));
        return refused(&app, &auth, &id, &e).await;
    }
    layout::respond(
        StatusCode::OK,
        rollback_markup(&auth, &current, &old, record.version, None),
    )
}

/// Rolls back, if the secret is still at the version the confirmation was
/// made against; otherwise shows the confirmation again, as it now is.
pub(crate) async fn rollback(
    auth: Auth,
    State(app): State<App>,
    Path((id, version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(refusal) = auth.csrf_refusal(&form) {
        return refusal;
    }
    let n = match rules::parse_version(&version) {
        Ok(n) => n,
        Err(e) => return layout::error_page(Some(&auth), &e),
    };
    let Ok(expected) = form.get("expected").parse::<i64>() else {
        return layout::error_page(
            Some(&auth),
            &Error::invalid("The rollback form was incomplete; open it again."),
        );
    };
    if let Err(page) = named_secret(&app, &auth, &id).await {
        return page;
    }
    let error = match app
        .service
        .rollback_secret(&auth.caller, &id, n, Some(expected))
        .await
    {
        Ok(secret) => {
            auth.flash_next(format!(
                "Rolled back {} to version {n}: version {} now holds its keys and values.",
                secret.summary.name().unwrap_or_default(),
                secret.summary.version
            ));
            return Redirect::to(&format!("/secrets/{id}/history")).into_response();
        }
        Err(e) => e,
    };
    // Refusals of the caller, and failures of the server (logged there),
    // have nothing to do with the history.
    if matches!(
        error.kind(),
        ErrorKind::PermissionDenied | ErrorKind::Unauthenticated
    ) || layout::status_of(&error).is_server_error()
    {
        return layout::error_page(Some(&auth), &error);
    }
    // Someone saved since the confirmation was shown: show it again, as it
    // now is, with the service's message.
    if error.kind() == ErrorKind::FailedPrecondition {
        if let Ok((current, old, _)) = load_version(&app, &auth, &id, &version).await {
            if current.summary.version != expected && current.summary.version != n {
                return layout::respond(
                    layout::status_of(&error),
                    rollback_markup(&auth, &current, &old, n, Some(error.message())),
                );
            }
        }
    }
    refused(&app, &auth, &id, &error).await
}
