//! Editing a secret: add, change and remove keys, merged like `update()`.
//!
//! Two people may edit the same secret at once. The form sends only the keys
//! it changes (a blank value means "keep"), so saving is a merge: keys the
//! other person changed are never overwritten by stale copies. For the keys
//! this form does change, it carries the secret's version and, per key, a
//! fingerprint of the value it was based on (an HMAC under a key that never
//! leaves this process, so the page reveals nothing about the values). When
//! the version has moved on by the time of saving, the keys whose current
//! value no longer matches their fingerprint were changed by both people:
//! nothing is saved and the editor comes back, rebased on the current
//! version, naming those keys and keeping what was typed; saving again then
//! overwrites knowingly. When no changed key was touched by the other person,
//! the save merges and both people's changes survive.
//!
//! The check reads the current version and the write names it: the store
//! writes only if that is still the current version (a compare-and-swap).
//! A save landing between the check and the write therefore makes the write
//! fail instead of being overwritten; the check is then made again against
//! the newer version, and the write retried, a few times at most
//! ([`SAVE_ATTEMPTS`]) before the person is asked to save again.
//!
//! A form from before a restart of the server (a new HMAC key) finds every
//! fingerprint changed, so it errs towards a conflict, never towards losing a
//! key.
//!
//! Opening the editor and saving read the secret's values on the server (for
//! the fingerprints and the conflict check), so the audit log records each
//! as a `secret.read` by the editor's token: more than the browser gets, never
//! less.

use std::collections::{HashMap, HashSet};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use hmac::{Hmac, Mac};
use latchkey_core::{rules, Error, ErrorKind};
use latchkey_service::Secret;
use maud::{html, Markup};
use rand::{rngs::OsRng, RngCore};
use sha2::Sha256;

use crate::{
    form::Form,
    layout::{self, Section},
    rows,
    secrets::named_secret_values,
    session::Auth,
    App,
};

/// The fingerprint of a key that does not exist.
const ABSENT: &str = "-";
/// Blank rows for new keys.
const BLANK_ROWS: usize = 2;
/// Writes a save tries at most; each that finds another save landed first
/// is followed by a new conflict check against that save.
const SAVE_ATTEMPTS: usize = 3;

/// What a save changes, in order: a value sets a key, `None` removes it.
type Changes = Vec<(String, Option<String>)>;

/// Keyed fingerprints of values, for conflict detection.
pub(crate) struct Fingerprints {
    key: [u8; 32],
}

impl Fingerprints {
    /// Fingerprints under a fresh random key.
    pub(crate) fn random() -> Self {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Self { key }
    }

    /// The fingerprint of `key`'s value (`None`: the key is absent) in
    /// secret `secret_id`.
    pub(crate) fn of(&self, secret_id: &str, key: &str, value: Option<&str>) -> String {
        let Some(value) = value else {
            return ABSENT.to_owned();
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return ABSENT.to_owned();
        };
        for part in [secret_id, key, value] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..16])
    }
}

/// A failpoint for tests: saves to make as someone else right before the
/// editor's own write, between its conflict check and its compare-and-swap,
/// where no request from outside can be timed to land.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Interleave(std::sync::Mutex<Vec<Changes>>);

#[cfg(test)]
impl Interleave {
    /// Saves `changes` before the next write that finds none queued before.
    fn push(&self, changes: &[(&str, Option<&str>)]) {
        let changes = changes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect();
        self.0.lock().unwrap().insert(0, changes);
    }

    /// How many queued saves have not been made yet.
    fn pending(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    async fn before_write(&self, app: &App, auth: &Auth, id: &str) {
        let next = self.0.lock().unwrap().pop();
        if let Some(changes) = next {
            app.service
                .update_secret(&auth.caller, id, &changes, None)
                .await
                .expect("the interleaved save");
        }
    }
}

/// The editor's state: what it is based on and what has been typed.
#[derive(Default)]
struct Editor {
    base_version: i64,
    /// Existing keys with the fingerprints of their base values.
    existing: Vec<(String, String)>,
    typed: HashMap<String, String>,
    removed: HashSet<String>,
    new_rows: Vec<(String, String)>,
    blank_rows: usize,
    existing_errors: HashMap<String, String>,
    new_errors: HashMap<usize, String>,
    general: Option<String>,
    conflicts: Vec<String>,
}

impl Editor {
    /// A fresh editor on `secret`.
    fn on(app: &App, secret: &Secret) -> Self {
        Self {
            base_version: secret.summary.version,
            existing: secret
                .contents
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        app.fingerprints.of(&secret.summary.id, k, Some(v)),
                    )
                })
                .collect(),
            blank_rows: BLANK_ROWS,
            ..Self::default()
        }
    }

    /// Puts `changes` back into the fields of this editor.
    fn refill(&mut self, changes: Changes) {
        let existing: HashSet<String> = self.existing.iter().map(|(k, _)| k.clone()).collect();
        for (key, value) in changes {
            match value {
                None if existing.contains(&key) => {
                    self.removed.insert(key);
                }
                None => {}
                Some(v) if existing.contains(&key) && !v.is_empty() => {
                    self.typed.insert(key, v);
                }
                Some(v) => self.new_rows.push((key, v)),
            }
        }
    }
}

fn page(auth: &Auth, secret: &Secret, ed: &Editor) -> Markup {
    let s = &secret.summary;
    let name = s.name().unwrap_or_default();
    let body = html! {
        p.crumbs { a href={ "/secrets/" (s.id) } { (name) } " / edit" }
        h1 { "Edit " (name) }
        @if !ed.conflicts.is_empty() {
            div.conflict role="alert" #conflict {
                p { strong { "Someone else changed " (ed.conflicts.join(", ")) } " since you opened this editor, so nothing was saved." }
                p { "Their values are now the current ones (reveal them on the "
                    a href={ "/secrets/" (s.id) } { "secret's page" } "). Your changes are kept below: "
                    "save again to replace theirs with yours, or cancel to keep theirs." }
            }
        }
        @if let Some(general) = &ed.general {
            p.error role="alert" #edit-error { (general) }
        }
        form.stack method="post" action={ "/secrets/" (s.id) "/edit" } {
            (layout::csrf(auth))
            input type="hidden" name="base" value=(ed.base_version);
            @if !ed.existing.is_empty() {
                fieldset {
                    legend { "Keys" }
                    p.hint { "Values stay hidden: type a new value to replace one, leave it blank to keep it." }
                    @for (i, (key, fp)) in ed.existing.iter().enumerate() {
                        @let error = ed.existing_errors.get(key);
                        @let error_id = format!("ev-error-{i}");
                        div.kv-row.existing.invalid[error.is_some()].conflicted[ed.conflicts.contains(key)] {
                            input type="hidden" name="ek" value=(key);
                            input type="hidden" name="ef" value=(fp);
                            div.kv-key { label for={ "ev-" (i) } { code { (key) } } }
                            div.kv-value {
                                textarea id={ "ev-" (i) } name="ev" rows="1" placeholder="unchanged"
                                    autocomplete="off" spellcheck="false" autocapitalize="off"
                                    aria-invalid=[error.map(|_| "true")]
                                    aria-describedby=[error.map(|_| error_id.as_str())] {
                                    (ed.typed.get(key).map_or("", String::as_str))
                                }
                            }
                            label.remove {
                                input type="checkbox" name="rm" value=(key) checked[ed.removed.contains(key)];
                                " Remove"
                                span.sr { " " (key) }
                            }
                            (layout::field_error(&error_id, error))
                        }
                    }
                }
            }
            fieldset {
                legend { "Add keys" }
                p.hint { "A new row may also name an existing key, to set it (even to an empty value)." }
                @for (i, (key, value)) in ed.new_rows.iter().enumerate() {
                    (rows::row(("nk", "nv"), i, key, value, ed.new_errors.get(&i)))
                }
                @for i in ed.new_rows.len()..ed.new_rows.len() + ed.blank_rows {
                    (rows::row(("nk", "nv"), i, "", "", None))
                }
                button type="submit" name="action" value="more" formnovalidate { "More rows" }
            }
            div.actions {
                button.primary type="submit" name="action" value="save" { "Save" }
                a href={ "/secrets/" (s.id) } { "Cancel" }
            }
        }
    };
    layout::page(&format!("Edit {name}"), Some(auth), Section::Secrets, body)
}

/// The editor on the secret's current version. Its values are read (and
/// recorded as read in the audit log) for the fingerprints, though none
/// reaches the page.
pub(crate) async fn form(auth: Auth, State(app): State<App>, Path(id): Path<String>) -> Response {
    match named_secret_values(&app, &auth, &id).await {
        Ok(secret) => {
            let ed = Editor::on(&app, &secret);
            layout::respond(StatusCode::OK, page(&auth, &secret, &ed))
        }
        Err(page) => page,
    }
}

/// Saves the changed keys, or shows a conflict (see the module docs).
pub(crate) async fn save(
    auth: Auth,
    State(app): State<App>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = auth.csrf_refusal(&form) {
        return refused;
    }
    let current = match named_secret_values(&app, &auth, &id).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let more_rows = form.get("action") == "more";
    let (ek, ef, ev) = (form.all("ek"), form.all("ef"), form.all("ev"));
    let base_version = form.get("base").parse::<i64>();
    let Ok(base_version) = base_version.map_err(|_| ()).and_then(|v| {
        (ek.len() == ef.len() && ek.len() == ev.len())
            .then_some(v)
            .ok_or(())
    }) else {
        return layout::error_page(
            Some(&auth),
            &Error::invalid("The edit form was incomplete; open the editor again."),
        );
    };
    let removed: HashSet<&str> = form.all("rm").into_iter().collect();
    let mut ed = Editor {
        base_version,
        existing: ek
            .iter()
            .zip(&ef)
            .map(|(k, f)| ((*k).to_owned(), (*f).to_owned()))
            .collect(),
        new_rows: rows::pair(&form.all("nk"), &form.all("nv")),
        blank_rows: BLANK_ROWS,
        ..Editor::default()
    };
    let base_fp: HashMap<&str, &str> = ek.iter().copied().zip(ef.iter().copied()).collect();

    // What this form changes, in order: existing keys, then new rows.
    let mut changes: Changes = Vec::new();
    for (key, value) in ek.iter().zip(&ev) {
        if removed.contains(key) {
            ed.removed.insert((*key).to_owned());
            changes.push(((*key).to_owned(), None));
        } else if !value.is_empty() {
            if let Err(e) = rules::check_value(key, value) {
                ed.existing_errors
                    .insert((*key).to_owned(), e.message().to_owned());
            }
            ed.typed.insert((*key).to_owned(), (*value).to_owned());
            changes.push(((*key).to_owned(), Some((*value).to_owned())));
        }
    }
    let taken: HashSet<&str> = changes.iter().map(|(k, _)| k.as_str()).collect();
    ed.new_errors = rows::check(&ed.new_rows, &taken);
    changes.extend(
        ed.new_rows
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone()))),
    );
    let base_fp: HashMap<String, String> = changes
        .iter()
        .map(|(k, _)| {
            let fp = base_fp.get(k.as_str()).copied().unwrap_or(ABSENT);
            (k.clone(), fp.to_owned())
        })
        .collect();
    drop(form);

    if more_rows || !ed.existing_errors.is_empty() || !ed.new_errors.is_empty() {
        let status = if ed.existing_errors.is_empty() && ed.new_errors.is_empty() {
            StatusCode::OK
        } else {
            ed.general = Some("Nothing was saved: fix the fields marked below.".to_owned());
            StatusCode::BAD_REQUEST
        };
        if status == StatusCode::OK {
            ed.blank_rows += 5;
        }
        return layout::respond(status, page(&auth, &current, &ed));
    }
    if changes.is_empty() {
        auth.flash_next("Nothing to save: no key was changed.");
        return Redirect::to(&format!("/secrets/{id}")).into_response();
    }

    let mut current = current;
    for _ in 0..SAVE_ATTEMPTS {
        let moved = current.summary.version != base_version;
        if moved {
            let conflicts = conflicts(&app, &current, &changes, &base_fp);
            if !conflicts.is_empty() {
                let mut rebased = Editor::on(&app, &current);
                rebased.conflicts = conflicts;
                rebased.refill(changes);
                return layout::respond(StatusCode::CONFLICT, page(&auth, &current, &rebased));
            }
        }
        #[cfg(test)]
        app.interleave.before_write(&app, &auth, &id).await;
        // Written only if `current` is still the current version.
        let expected = Some(current.summary.version);
        let refusal = match app
            .service
            .update_secret(&auth.caller, &id, &changes, expected)
            .await
        {
            Ok(_) => {
                let n = changes.len();
                let what = crate::format::plural(n, "key", "keys");
                auth.flash_next(if moved {
                    format!("Saved {what}. Someone else changed other keys meanwhile; their changes were kept too.")
                } else {
                    format!("Saved {what}.")
                });
                return Redirect::to(&format!("/secrets/{id}")).into_response();
            }
            Err(e) => e,
        };
        // Refused because another save landed since `current` was read:
        // check again against that save. Any other refusal is shown.
        if refusal.kind() == ErrorKind::FailedPrecondition {
            let latest = match named_secret_values(&app, &auth, &id).await {
                Ok(s) => s,
                Err(page) => return page,
            };
            if latest.summary.version != current.summary.version {
                current = latest;
                continue;
            }
        }
        ed.general = Some(refusal.message().to_owned());
        return layout::respond(layout::status_of(&refusal), page(&auth, &current, &ed));
    }
    // Others kept saving in between. The form stays based on what its
    // person saw, so saving it again checks for conflicts with all of them.
    ed.general = Some(format!(
        "Others saved this secret {SAVE_ATTEMPTS} times while yours was being saved, so \
         nothing was saved. Your changes are kept below: save again."
    ));
    layout::respond(StatusCode::CONFLICT, page(&auth, &current, &ed))
}

/// The keys that `changes` change and someone else changed too since the
/// editor's base (whose fingerprints are `base_fp`): unless both arrived at
/// the same result, saving them would overwrite the other person's value.
fn conflicts(
    app: &App,
    current: &Secret,
    changes: &[(String, Option<String>)],
    base_fp: &HashMap<String, String>,
) -> Vec<String> {
    let id = &current.summary.id;
    changes
        .iter()
        .filter(|(key, mine)| {
            let now = current.contents.get(key).map(String::as_str);
            let same_result = mine.as_deref() == now;
            !same_result && app.fingerprints.of(id, key, now) != base_fp[key]
        })
        .map(|(k, _)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_depend_on_secret_key_and_value_and_hide_the_value() {
        let f = Fingerprints::random();
        let a = f.of("st-1", "K", Some("v"));
        assert_eq!(a, f.of("st-1", "K", Some("v")));
        assert_ne!(a, f.of("st-2", "K", Some("v")));
        assert_ne!(a, f.of("st-1", "K2", Some("v")));
        assert_ne!(a, f.of("st-1", "K", Some("w")));
        assert_ne!(a, Fingerprints::random().of("st-1", "K", Some("v")));
        assert_eq!(f.of("st-1", "K", None), ABSENT);
        assert_eq!(a.len(), 22);
    }

    /// Saves racing the editor's write, landed through [`Interleave`]
    /// between its conflict check and its compare-and-swap: the real router,
    /// service and SQLite store, driven with `oneshot`.
    mod race {
        use std::sync::Arc;

        use axum::{
            body::{to_bytes, Body},
            http::{header, Request, StatusCode},
            Router,
        };
        use latchkey_core::EnvDict;
        use latchkey_service::{testing::TestService, CreateMode};
        use tower::ServiceExt;

        use crate::{edit::Fingerprints, session, App};

        struct Race {
            test: TestService,
            app: App,
            router: Router,
            cookie: String,
            id: String,
        }

        /// A signed-in admin and a secret holding `contents`.
        async fn start(contents: &[(&str, &str)]) -> Race {
            let test = TestService::start().await;
            let app = App {
                service: test.service().clone(),
                sessions: Arc::default(),
                fingerprints: Arc::new(Fingerprints::random()),
                interleave: Arc::default(),
            };
            let router = crate::routes(app.clone());
            let session = app.sessions.create(test.admin().clone());
            let contents: EnvDict = contents
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let (secret, _) = test
                .service()
                .create_secret(test.admin(), "", "raced", contents, CreateMode::Fail, &[])
                .await
                .unwrap();
            Race {
                cookie: format!("{}={session}", session::COOKIE),
                id: secret.summary.id,
                test,
                app,
                router,
            }
        }

        impl Race {
            async fn send(
                &self,
                request: axum::http::request::Builder,
                body: String,
            ) -> (StatusCode, String) {
                let request = request
                    .header(header::HOST, "dash.test")
                    .header(header::COOKIE, &self.cookie)
                    .body(Body::from(body))
                    .unwrap();
                let response = self.router.clone().oneshot(request).await.unwrap();
                let status = response.status();
                let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
                (status, String::from_utf8_lossy(&body).into_owned())
            }

            async fn get(&self, path: &str) -> (StatusCode, String) {
                self.send(Request::get(path), String::new()).await
            }

            /// The editor as it is now.
            async fn open_editor(&self) -> String {
                let (status, page) = self.get(&format!("/secrets/{}/edit", self.id)).await;
                assert_eq!(status, StatusCode::OK);
                page
            }

            /// A save of the editor `page` with `set` typed into existing
            /// keys' boxes, as the browser sends it.
            async fn save(&self, page: &str, set: &[(&str, &str)]) -> (StatusCode, String) {
                let mut fields = vec![("action".to_owned(), "save".to_owned())];
                let marker = "<input type=\"hidden\" name=\"";
                for chunk in page.split(marker).skip(1) {
                    let (name, rest) = chunk.split_once('"').unwrap();
                    let value = rest.split('"').nth(1).unwrap();
                    let seen = fields.iter().any(|(n, _)| n == "csrf");
                    if name != "csrf" || !seen {
                        fields.push((name.to_owned(), value.to_owned()));
                    }
                }
                let keys: Vec<String> = fields
                    .iter()
                    .filter(|(n, _)| n == "ek")
                    .map(|(_, v)| v.clone())
                    .collect();
                for key in keys {
                    let typed = set.iter().find(|(k, _)| *k == key).map_or("", |(_, v)| *v);
                    fields.push(("ev".to_owned(), typed.to_owned()));
                }
                let body = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&fields)
                    .finish();
                let request = Request::post(format!("/secrets/{}/edit", self.id))
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                self.send(request, body).await
            }

            /// Someone else's save, made now.
            async fn other_save(&self, changes: &[(&str, Option<&str>)]) {
                let changes: Vec<(String, Option<String>)> = changes
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                    .collect();
                self.test
                    .service()
                    .update_secret(self.test.admin(), &self.id, &changes, None)
                    .await
                    .unwrap();
            }

            async fn now(&self) -> (i64, EnvDict) {
                let s = self
                    .test
                    .service()
                    .secret(self.test.admin(), &self.id)
                    .await
                    .unwrap();
                (s.summary.version, s.contents)
            }
        }

        fn dict(pairs: &[(&str, &str)]) -> EnvDict {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        }

        #[tokio::test]
        async fn a_save_landing_between_check_and_write_on_other_keys_is_kept_and_ours_retried() {
            let r = start(&[("A", "1"), ("B", "2"), ("C", "3")]).await;
            let form = r.open_editor().await;
            // One save before ours is checked, one between the check and
            // the write.
            r.other_save(&[("C", Some("early"))]).await;
            r.app.interleave.push(&[("B", Some("theirs"))]);
            let (status, body) = r.save(&form, &[("A", "mine")]).await;
            assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
            assert_eq!(r.app.interleave.pending(), 0, "the racing save was made");
            let (version, contents) = r.now().await;
            assert_eq!(
                contents,
                dict(&[("A", "mine"), ("B", "theirs"), ("C", "early")])
            );
            assert_eq!(version, 4, "created, early, theirs, then ours");
            let (_, page) = r.get(&format!("/secrets/{}", r.id)).await;
            assert!(page.contains("their changes were kept too"), "{page}");
        }

        #[tokio::test]
        async fn a_save_landing_between_check_and_write_on_the_same_key_is_a_conflict() {
            let r = start(&[("A", "1"), ("B", "2")]).await;
            let form = r.open_editor().await;
            r.app.interleave.push(&[("A", Some("their-value"))]);
            let (status, body) = r.save(&form, &[("A", "mine"), ("B", "mine")]).await;
            assert_eq!(status, StatusCode::CONFLICT, "{body}");
            assert_eq!(r.app.interleave.pending(), 0, "the racing save was made");
            assert!(body.contains("Someone else changed A"), "{body}");
            assert!(body.contains(">mine</textarea>"), "what was typed is kept");
            assert!(!body.contains("their-value"), "their value is not shown");
            assert_eq!(
                r.now().await,
                (2, dict(&[("A", "their-value"), ("B", "2")])),
                "theirs is not overwritten, and nothing of ours is half-saved"
            );
            // The rebased editor, saved again, overwrites knowingly.
            let (status, body) = r.save(&body, &[("A", "mine")]).await;
            assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
            assert_eq!(r.now().await.1["A"], "mine");
        }

        #[tokio::test]
        async fn saves_that_keep_landing_in_between_stop_the_retries_and_lose_nothing() {
            let r = start(&[("A", "1"), ("B", "2")]).await;
            let form = r.open_editor().await;
            // Other keys first (each retry is right to go on), then, before
            // the last attempt's write, the key this form changes too.
            assert_eq!(super::super::SAVE_ATTEMPTS, 3);
            r.app.interleave.push(&[("B", Some("theirs-1"))]);
            r.app.interleave.push(&[("B", Some("theirs-2"))]);
            r.app.interleave.push(&[("A", Some("their-a"))]);
            r.app.interleave.push(&[("B", Some("never"))]);
            let (status, body) = r.save(&form, &[("A", "mine")]).await;
            assert_eq!(status, StatusCode::CONFLICT, "{body}");
            assert!(body.contains("Others saved this secret 3 times"), "{body}");
            assert!(body.contains(">mine</textarea>"), "what was typed is kept");
            assert_eq!(
                r.app.interleave.pending(),
                1,
                "no write after the last attempt"
            );
            let theirs = dict(&[("A", "their-a"), ("B", "theirs-2")]);
            assert_eq!(r.now().await, (4, theirs.clone()));
            // The form is still based on what its person saw, so saving it
            // again finds the last of those saves changed A too.
            let (status, body) = r.save(&body, &[("A", "mine")]).await;
            assert_eq!(status, StatusCode::CONFLICT, "{body}");
            assert!(body.contains("Someone else changed A"), "{body}");
            assert_eq!(r.now().await, (4, theirs));
        }
    }
}
