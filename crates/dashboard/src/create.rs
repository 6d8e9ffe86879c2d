//! Creating a secret from key/value rows, a pasted `.env` file or a JSON
//! object.
//!
//! The browser checks names and keys before anything is sent (`pattern`,
//! `maxlength`); pasted text is loaded into the rows on the server, which
//! shows each refused row with its reason; and when the service still
//! refuses, its own message is shown next to the field it names.

use std::collections::{HashMap, HashSet};

use axum::{
    body::Bytes,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use latchkey_core::{rules, EnvDict, ErrorKind};
use latchkey_service::{CreateMode, Environment};
use maud::{html, Markup};
use serde::Deserialize;

use crate::{
    form::Form,
    layout::{self, Section},
    paste, rows,
    secrets::query,
    session::Auth,
    App,
};

/// Blank rows offered below the filled ones.
const BLANK_ROWS: usize = 3;

/// The HTML `pattern` of a secret name, the rule of
/// [`rules::check_secret_name`] but for the app-id shape.
const NAME_PATTERN: &str = "[A-Za-z0-9._\\-]+";

/// What the person has typed so far.
#[derive(Default)]
struct Draft {
    env: String,
    name: String,
    rows: Vec<(String, String)>,
    paste: String,
    blank_rows: usize,
}

/// Messages shown next to the fields they are about.
#[derive(Default)]
struct Errors {
    general: Option<String>,
    name: Option<String>,
    paste: Option<String>,
    rows: HashMap<usize, String>,
}

impl Errors {
    fn any(&self) -> bool {
        self.general.is_some()
            || self.name.is_some()
            || self.paste.is_some()
            || !self.rows.is_empty()
    }
}

#[derive(Deserialize)]
pub(crate) struct NewQuery {
    #[serde(default)]
    env: String,
}

fn page(auth: &Auth, envs: &[Environment], draft: &Draft, errors: &Errors) -> Markup {
    let err_attr = |e: &Option<String>, id: &'static str| e.as_ref().map(|_| id);
    let body = html! {
        p.crumbs { a href={ "/" (query(&[("env", &draft.env)])) } { "Secrets" } " / new" }
        h1 { "New secret" }
        @if let Some(general) = &errors.general {
            p.error role="alert" #create-error { (general) }
        }
        form.stack method="post" action="/secrets/new" {
            (layout::csrf(auth))
            div.row2 {
                div.field {
                    label for="env" { "Environment" }
                    select #env name="env" {
                        @for env in envs {
                            option value=(env.name)
                                selected[env.name == draft.env || (draft.env.is_empty() && env.is_default)] {
                                (env.name) @if env.is_default { " (default)" }
                            }
                        }
                    }
                }
                div.field.grow {
                    label for="name" { "Name" }
                    input #name type="text" name="name" value=(draft.name) required
                        pattern=(NAME_PATTERN) maxlength=(rules::MAX_SECRET_NAME_LEN)
                        title="1 to 64 letters, digits, '.', '_' and '-'"
                        placeholder="my-api-keys" autocomplete="off" spellcheck="false" autocapitalize="off"
                        aria-invalid=[errors.name.as_ref().map(|_| "true")]
                        aria-describedby=[err_attr(&errors.name, "name-error")];
                    (layout::field_error("name-error", errors.name.as_ref()))
                }
            }
            fieldset {
                legend { "Keys and values" }
                div.kv-head aria-hidden="true" { span { "Key" } span { "Value" } }
                @for (i, (key, value)) in draft.rows.iter().enumerate() {
                    (rows::row(("k", "v"), i, key, value, errors.rows.get(&i)))
                }
                @for i in draft.rows.len()..draft.rows.len() + draft.blank_rows {
                    (rows::row(("k", "v"), i, "", "", None))
                }
                button type="submit" name="action" value="more" formnovalidate { "More rows" }
            }
            details open[!draft.paste.is_empty() || errors.paste.is_some()] {
                summary { "Paste a .env file or a JSON object" }
                label for="paste" { "Contents of a " code { ".env" } " file, or a JSON object of strings" }
                textarea #paste name="paste" rows="6" spellcheck="false" autocomplete="off"
                    placeholder="DATABASE_URL=postgres://…\nAPI_KEY=…"
                    aria-invalid=[errors.paste.as_ref().map(|_| "true")]
                    aria-describedby=[err_attr(&errors.paste, "paste-error")] { (draft.paste) }
                (layout::field_error("paste-error", errors.paste.as_ref()))
                p.hint { "Pasted keys are added to the rows (a key already there takes the pasted value). "
                    code { "${NAME}" } " refers only to keys of the pasted file." }
                button type="submit" name="action" value="load" formnovalidate { "Load into rows" }
            }
            div.actions {
                button.primary type="submit" name="action" value="create" { "Create secret" }
                a href={ "/" (query(&[("env", &draft.env)])) } { "Cancel" }
            }
        }
    };
    layout::page("New secret", Some(auth), Section::Secrets, body)
}

async fn render(
    app: &App,
    auth: &Auth,
    status: StatusCode,
    draft: &Draft,
    errors: &Errors,
) -> Response {
    match app.service.list_environments(&auth.caller).await {
        Ok(envs) => layout::respond(status, page(auth, &envs, draft, errors)),
        Err(e) => layout::error_page(Some(auth), &e),
    }
}

/// The empty form.
pub(crate) async fn form(
    auth: Auth,
    State(app): State<App>,
    Query(q): Query<NewQuery>,
) -> Response {
    let draft = Draft {
        env: q.env,
        blank_rows: BLANK_ROWS,
        ..Draft::default()
    };
    render(&app, &auth, StatusCode::OK, &draft, &Errors::default()).await
}

/// Loads pasted text into the rows, adds rows, or creates the secret.
pub(crate) async fn submit(auth: Auth, State(app): State<App>, body: Bytes) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = auth.csrf_refusal(&form) {
        return refused;
    }
    let action = form.get("action").to_owned();
    let mut draft = Draft {
        env: form.get("env").to_owned(),
        name: form.get("name").trim().to_owned(),
        rows: rows::pair(&form.all("k"), &form.all("v")),
        paste: form.get("paste").to_owned(),
        blank_rows: if action == "more" {
            BLANK_ROWS + 5
        } else {
            BLANK_ROWS
        },
    };
    drop(form);
    let mut errors = Errors::default();
    if !draft.paste.trim().is_empty() {
        match paste::parse(&draft.paste) {
            Ok(entries) => {
                rows::merge(&mut draft.rows, entries);
                draft.paste.clear();
            }
            Err(message) => errors.paste = Some(message),
        }
    }
    errors.rows = rows::check(&draft.rows, &HashSet::new());
    if !draft.name.is_empty() {
        errors.name = rules::check_secret_name(&draft.name)
            .err()
            .map(|e| e.message().to_owned());
    }
    if action != "create" || errors.paste.is_some() {
        let status = if errors.any() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        return render(&app, &auth, status, &draft, &errors).await;
    }
    if draft.name.is_empty() {
        errors.name = Some("Give the secret a name".to_owned());
    }
    if draft.rows.is_empty() {
        errors.general = Some("Add at least one key".to_owned());
    } else if let Err(e) = rules::check_key_count(draft.rows.len()) {
        errors.general = Some(e.message().to_owned());
    }
    if errors.any() {
        errors
            .general
            .get_or_insert_with(|| "Nothing was created: fix the fields marked below.".to_owned());
        return render(&app, &auth, StatusCode::BAD_REQUEST, &draft, &errors).await;
    }
    let contents: EnvDict = draft.rows.iter().cloned().collect();
    let created = app
        .service
        .create_secret(
            &auth.caller,
            &draft.env,
            &draft.name,
            contents,
            CreateMode::Fail,
            &[],
        )
        .await;
    match created {
        Ok((secret, _)) => {
            auth.flash_next(format!(
                "Secret '{}' was created in {}.",
                draft.name, secret.summary.environment_name
            ));
            Redirect::to(&format!("/secrets/{}", secret.summary.id)).into_response()
        }
        Err(e) => {
            let message = e.message().to_owned();
            if e.kind() == ErrorKind::AlreadyExists || message.starts_with("Invalid Secret name") {
                errors.name = Some(message.clone());
            }
            errors.general = Some(message);
            render(&app, &auth, layout::status_of(&e), &draft, &errors).await
        }
    }
}
