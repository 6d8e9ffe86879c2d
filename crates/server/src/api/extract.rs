//! Extractors whose every rejection is an [`ApiError`] in the API's JSON
//! shape, with a message that names the problem without quoting secrets.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
    http::{header, request::Parts, HeaderMap},
};
use latchkey_core::rules;
use latchkey_service::{Caller, Service};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The caller, authenticated from `Authorization: Bearer
/// <token_id>:<token_secret>`, with the service that authenticated it.
/// Handlers take both from this one extractor, so none of them can reach the
/// service without authenticating first.
pub(crate) struct Authenticated {
    pub(crate) service: Service,
    pub(crate) caller: Caller,
}

/// How the API wants to be called, for messages.
const BEARER_FORM: &str = "Authorization: Bearer <token_id>:<token_secret>";

impl FromRequestParts<Service> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, service: &Service) -> Result<Self, ApiError> {
        let (id, secret) = match parts.headers.get(header::AUTHORIZATION) {
            // The service layer's message says how to get a token.
            None => ("", ""),
            Some(value) => {
                let parsed = value.to_str().ok().and_then(|v| {
                    let (scheme, credentials) = v.trim().split_once(' ')?;
                    if !scheme.eq_ignore_ascii_case("bearer") {
                        return None;
                    }
                    credentials.trim().split_once(':')
                });
                parsed.ok_or_else(|| {
                    ApiError::from(latchkey_core::Error::unauthenticated(format!(
                        "Malformed Authorization header: expected `{BEARER_FORM}`"
                    )))
                })?
            }
        };
        let origin = latchkey_service::Origin::new(
            latchkey_service::log::Interface::Api,
            parts
                .extensions
                .get::<latchkey_service::ClientAddr>()
                .copied(),
        );
        let caller = service.authenticate(id, secret, &origin).await?;
        Ok(Authenticated {
            service: service.clone(),
            caller,
        })
    }
}

/// A JSON request body of type `T`.
pub(crate) struct Body<T>(pub(crate) T);

/// A JSON request body of type `T`, or `T::default()` when the body is empty.
pub(crate) struct OptionalBody<T>(pub(crate) T);

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| {
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

async fn read_body(req: Request) -> Result<(bool, Bytes), ApiError> {
    let json = is_json(req.headers());
    let bytes = Bytes::from_request(req, &()).await.map_err(|rejection| {
        ApiError::invalid(format!(
            "Cannot read the request body: {}",
            rejection.body_text()
        ))
    })?;
    Ok((json, bytes))
}

/// Parses a body, describing a failure by its position and kind only.
fn parse<T: DeserializeOwned>(json: bool, bytes: &[u8]) -> Result<T, ApiError> {
    if !json {
        return Err(ApiError::invalid(
            "Expected a JSON body with the header Content-Type: application/json",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        let what = match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => "is not valid JSON",
            Category::Data => "does not have the expected shape",
        };
        // serde's own description may quote a piece of the body: keep only
        // the part that names fields and types, never a string's content.
        let detail = tame(&describe_data_error(&e.to_string()));
        ApiError::invalid(format!(
            "The request body {what} (line {}, column {}){detail}",
            e.line(),
            e.column()
        ))
    })
}

/// The useful part of a serde message: unknown and missing fields, and the
/// expected type. Text quoted from the body (after `string "`) is dropped.
fn describe_data_error(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    if message.starts_with("unknown field")
        || message.starts_with("missing field")
        || message.starts_with("unknown variant")
        || message.starts_with("duplicate field")
    {
        return format!(": {message}");
    }
    if let Some(expected) = message.split(", expected ").nth(1) {
        return format!(": expected {expected}");
    }
    String::new()
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let (json, bytes) = read_body(req).await?;
        if bytes.is_empty() {
            return Err(ApiError::invalid("The request needs a JSON body"));
        }
        parse(json, &bytes).map(Body)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let (json, bytes) = read_body(req).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(T::default()));
        }
        parse(json, &bytes).map(OptionalBody)
    }
}

/// Longest rejection text an error repeats.
const MAX_DETAIL: usize = 300;

/// A rejection's text made fit to repeat. What serde quotes in backticks may
/// be the caller's input (an unknown field, an unknown variant): each such
/// name is shortened and escaped by [`rules::echo`]; control characters
/// elsewhere are escaped, and the whole is cut to [`MAX_DETAIL`] characters,
/// so that no request can make its error as long as itself.
fn tame(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 1 {
            out.push_str(&rules::echo(part));
        } else {
            for c in part.chars() {
                if c.is_control() {
                    out.extend(c.escape_default());
                } else {
                    out.push(c);
                }
            }
        }
    }
    if out.chars().count() > MAX_DETAIL {
        out = out.chars().take(MAX_DETAIL).collect();
        out.push('…');
    }
    out
}

/// Query parameters of type `T`.
pub(crate) struct Params<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|rejection| {
                let text = rejection.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::invalid(format!("Invalid query string: {}", tame(text)))
            })
    }
}

/// Path parameters of type `T`.
pub(crate) struct PathParams<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| PathParams(p))
            .map_err(|rejection| {
                ApiError::invalid(format!("Invalid path: {}", tame(&rejection.body_text())))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::describe_data_error;

    #[test]
    fn data_errors_keep_field_names_and_drop_quoted_text() {
        assert_eq!(
            describe_data_error("unknown field `nmae`, expected one of `name` at line 1 column 7"),
            ": unknown field `nmae`, expected one of `name`"
        );
        assert_eq!(
            describe_data_error(
                "invalid type: string \"hunter2\", expected a boolean at line 1 column 9"
            ),
            ": expected a boolean"
        );
        assert!(!describe_data_error("invalid type: string \"hunter2\"").contains("hunter2"));
    }
}
