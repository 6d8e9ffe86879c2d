//! The audit log (admins only): its events, filtered and paged, and the
//! verification of its chain.
//!
//! Events are listed oldest first within the window, as the CLI and the
//! JSON API list them, and paged by sequence number (`after`): the service
//! reads them in that order, so a page is one indexed read however long the
//! log. (Newest first would need the service to page backwards.) Events
//! hold no value, token secret or request body, so neither does this page.

use axum::{
    body::Bytes,
    extract::{Query, State},
    http::StatusCode,
    response::Response,
};
use latchkey_core::{
    time::{Micros, Timestamp},
    Error, ErrorKind,
};
use latchkey_service::log::{AuditEvent, AuditFilter, Verdict, ACTIONS};
use maud::{html, Markup};
use serde::Deserialize;

use crate::{
    form::Form,
    format,
    layout::{self, Section},
    secrets::query,
    session::Auth,
    App,
};

/// Events per page.
const PAGE: u32 = 100;

/// One day, for a window that ends with a date: the whole of that day.
const DAY: Micros = 24 * 60 * 60 * 1_000_000;

/// The filters, as typed (kept as text, to be shown back as they were).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    env: String,
    #[serde(default)]
    after: String,
}

impl AuditQuery {
    /// The filters' query string, with `after` (for the pager's links).
    fn link(&self, after: Option<i64>) -> String {
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        format!(
            "/audit{}",
            query(&[
                ("since", self.since.trim()),
                ("until", self.until.trim()),
                ("secret", self.secret.trim()),
                ("token", self.token.trim()),
                ("action", self.action.trim()),
                ("env", self.env.trim()),
                ("after", &after),
            ])
        )
    }

    /// The service's filter: `since` from the start of its date, `until`
    /// to the end of its date (a date-time is taken as it is). Errors name
    /// the field; the service checks the rest (known action, token id,
    /// a window that does not end before it starts).
    fn filter(&self) -> Result<AuditFilter, Error> {
        let since = instant("since", &self.since)?;
        let until = match instant("until", &self.until)? {
            // A date means the whole day, unless that would hide a window
            // that ends before it starts from the service's check.
            Some(at) if is_date(&self.until) && since.is_none_or(|s| s < at + DAY) => {
                Some(at + DAY)
            }
            other => other,
        };
        let after = match self.after.trim() {
            "" => None,
            text => Some(text.parse::<i64>().map_err(|_| {
                Error::invalid(format!(
                    "Invalid page: '{}' is not an event number",
                    latchkey_core::rules::echo(text)
                ))
            })?),
        };
        let text = |t: &str| Some(t.trim().to_owned()).filter(|t| !t.is_empty());
        Ok(AuditFilter {
            since,
            until,
            secret: text(&self.secret),
            token: text(&self.token),
            action: text(&self.action),
            environment: text(&self.env),
            after,
        })
    }
}

/// Whether `text` is a bare date (`2025-01-31`), not a date-time.
fn is_date(text: &str) -> bool {
    !text.trim().contains(['T', 't', ' '])
}

/// The instant typed in field `field`, if any.
fn instant(field: &str, text: &str) -> Result<Option<Micros>, Error> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match Timestamp::parse_date_time(text) {
        Some(t) => Ok(Some(t.as_micros())),
        None => Err(Error::invalid(format!(
            "Invalid {field}: '{}': expected a date such as 2025-01-31 or a date-time \
             such as 2025-01-31T12:00:00Z",
            latchkey_core::rules::echo(text)
        ))),
    }
}

/// What the page shows besides the events.
#[derive(Default)]
struct Extras<'a> {
    /// Why the filter was refused.
    error: Option<&'a str>,
    /// What verifying the chain found.
    verdict: Option<&'a Verdict>,
}

/// The filter form.
fn filters(q: &AuditQuery) -> Markup {
    html! {
        form.toolbar #audit-filters method="get" action="/audit" role="search" {
            div.field {
                label for="since" { "Since" }
                input #since type="date" name="since" value=(q.since);
            }
            div.field {
                label for="until" { "Until (inclusive)" }
                input #until type="date" name="until" value=(q.until);
            }
            div.field {
                label for="f-secret" { "Secret" }
                input #f-secret type="text" name="secret" value=(q.secret) maxlength="64"
                    autocomplete="off" spellcheck="false" placeholder="name";
            }
            div.field {
                label for="f-token" { "Token id" }
                input #f-token type="text" name="token" value=(q.token)
                    autocomplete="off" spellcheck="false" placeholder="ak-…";
            }
            div.field {
                label for="f-action" { "Action" }
                select #f-action name="action" {
                    option value="" { "any" }
                    @for action in ACTIONS {
                        option value=(action) selected[q.action == *action] { (action) }
                    }
                }
            }
            div.field {
                label for="f-env" { "Environment" }
                input #f-env type="text" name="env" value=(q.env) maxlength="64"
                    autocomplete="off" spellcheck="false" placeholder="name";
            }
            button type="submit" { "Show" }
            a href="/audit" { "Clear" }
        }
    }
}

/// What verifying the chain found.
fn verdict(verdict: &Verdict) -> Markup {
    html! {
        @match verdict {
            Verdict::Intact { count: 0, .. } => {
                p.flash #verdict role="status" { "The audit log is empty: there is nothing to verify." }
            }
            Verdict::Intact { count, first, last } => {
                p.flash #verdict role="status" {
                    strong { "The chain is intact." } " "
                    (format::plural(usize::try_from(*count).unwrap_or(usize::MAX), "event", "events"))
                    " checked, numbers " (first) " to " (last) ", and the last is the head."
                }
            }
            Verdict::Broken { seq, reason } => {
                div.error #verdict role="alert" {
                    p { strong { "The chain is broken at event " (seq) "." } " " (reason) }
                    p { "Events from there on may have been altered, removed or reordered." }
                }
            }
        }
    }
}

/// One event's row.
fn row(e: &AuditEvent) -> Markup {
    let entry = &e.entry;
    let dash = || html! { span.muted { "—" } };
    html! {
        tr id={ "event-" (e.seq) } {
            td.num { (e.seq) }
            td { (format::time_to_second(e.at)) }
            td {
                @if let Some(actor) = &entry.actor {
                    (actor.name) " " span.muted { "(" (actor.role) ")" } br; code { (actor.token_id) }
                } @else { (dash()) }
            }
            td { @if let Some(client) = &entry.client { code { (client) } } @else { (dash()) } }
            td { (entry.interface) }
            td { code { (entry.action) } }
            td { @if let Some(env) = &entry.environment { (env) } @else { (dash()) } }
            td {
                @if let Some(name) = &entry.secret_name {
                    span title=[entry.secret_id.as_deref()] { (name) }
                } @else if let Some(id) = &entry.secret_id {
                    code { (id) }
                } @else { (dash()) }
            }
            td.num { @if let Some(v) = entry.version { (v) } @else { (dash()) } }
            td class={ "outcome outcome-" (entry.outcome) } { (entry.outcome) }
            td.detail { @if let Some(detail) = &entry.detail { (detail) } }
        }
    }
}

/// The page: filters, the verify button, and a page of events.
fn page(auth: &Auth, q: &AuditQuery, events: &[AuditEvent], extras: &Extras<'_>) -> Markup {
    let full = events.len() >= PAGE as usize;
    let next = events.last().filter(|_| full).map(|e| e.seq);
    let body = html! {
        div.heading {
            h1 { "Audit log" }
            form.inline #verify method="post" action="/audit/verify" {
                (layout::csrf(auth))
                button type="submit" { "Verify chain" }
            }
        }
        @if let Some(v) = extras.verdict { (verdict(v)) }
        p.hint {
            "Every change, read of values, failed sign-in and refusal, oldest first. "
            "Events never hold a value or a token secret."
        }
        (filters(q))
        @if let Some(error) = extras.error {
            p.error #audit-error role="alert" { (error) }
        } @else if events.is_empty() {
            p.empty #no-events { "No event matches." }
        } @else {
            div.table-wrap {
                table #events {
                    caption.sr { "Audit events, oldest first" }
                    (layout::columns(&[
                        "#", "Time", "Actor", "Client", "Interface", "Action",
                        "Environment", "Secret", "Version", "Outcome", "Detail",
                    ]))
                    tbody { @for e in events { (row(e)) } }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if !q.after.trim().is_empty() {
                a href=(q.link(None)) { "← First" }
            }
            @if let Some(next) = next {
                a href=(q.link(Some(next))) rel="next" { "Next →" }
            }
        }
    };
    layout::page("Audit log", Some(auth), Section::Audit, body)
}

/// A page of events; a refused filter is shown with the form, as 400. The
/// service decides who may read the log, even when the filter is refused
/// here first (it is then asked for nothing in particular).
async fn render(app: &App, auth: &Auth, q: &AuditQuery, verdict: Option<&Verdict>) -> Response {
    let (filter, refused) = match q.filter() {
        Ok(filter) => (filter, None),
        Err(e) => (AuditFilter::default(), Some(e)),
    };
    let (status, events, refused) = match (
        app.service.audit_events(&auth.caller, &filter, PAGE).await,
        refused,
    ) {
        (Ok(events), None) => (StatusCode::OK, events, None),
        (Ok(_), Some(e)) => (StatusCode::BAD_REQUEST, Vec::new(), Some(e)),
        (Err(e), _) if e.kind() == ErrorKind::Invalid => {
            (StatusCode::BAD_REQUEST, Vec::new(), Some(e))
        }
        (Err(e), _) => return layout::error_page(Some(auth), &e),
    };
    let extras = Extras {
        error: refused.as_ref().map(Error::message),
        verdict,
    };
    layout::respond(status, page(auth, q, &events, &extras))
}

/// The audit log, filtered.
pub(crate) async fn list(
    auth: Auth,
    State(app): State<App>,
    Query(q): Query<AuditQuery>,
) -> Response {
    render(&app, &auth, &q, None).await
}

/// Verifies the whole chain, and shows the verdict above the first page.
pub(crate) async fn verify(auth: Auth, State(app): State<App>, body: Bytes) -> Response {
    if let Some(refused) = auth.csrf_refusal(&Form::parse(&body)) {
        return refused;
    }
    match app.service.audit_verify(&auth.caller).await {
        Ok(v) => render(&app, &auth, &AuditQuery::default(), Some(&v)).await,
        Err(e) => layout::error_page(Some(&auth), &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(since: &str, until: &str) -> AuditQuery {
        AuditQuery {
            since: since.to_owned(),
            until: until.to_owned(),
            ..AuditQuery::default()
        }
    }

    #[test]
    fn a_date_until_takes_in_its_whole_day() {
        let jan1 = 1_735_689_600_000_000;
        let f = q("2025-01-01", "2025-01-01").filter().unwrap();
        assert_eq!((f.since, f.until), (Some(jan1), Some(jan1 + DAY)));
        let f = q("", "2025-01-01T12:00:00Z").filter().unwrap();
        assert_eq!(f.until, Some(jan1 + DAY / 2), "a date-time as it is");
        // A window that ends before it starts stays so, for the service to
        // refuse.
        let f = q("2025-01-02", "2025-01-01").filter().unwrap();
        assert!(f.since > f.until);
        let e = q("yesterday", "").filter().unwrap_err();
        assert!(e.message().contains("Invalid since"), "{e}");
    }
}
