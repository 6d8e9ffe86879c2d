//! `/secrets`: named secrets and their values.

use axum::{
    extract::FromRequestParts,
    http::{request::Parts, StatusCode},
    Json,
};
use latchkey_core::{time::Timestamp, EnvDict};
use latchkey_service::{CreateMode, MAX_PAGE};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{
    openapi::path::{Parameter, ParameterIn},
    IntoParams, ToSchema,
};

use super::{
    error::{ApiError, ErrorBody},
    extract::{Authenticated, Body, OptionalBody, Params, PathParams},
    model::{parse_instant, EnvironmentQuery, SecretInfo},
    responses::{MissingKeys, SecretNotFound},
};

/// The `{name}` of `/secrets/{name}` routes. Its field's doc comment is the
/// parameter's description in the OpenAPI document.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct SecretPath {
    /// The secret's name
    name: String,
}

/// The secret a `/secrets/{name}` route acts on: the name from the path and
/// the environment from the query. The routes that take no other query
/// parameter read and document both through this one type, so they cannot
/// drift apart.
pub(crate) struct NamedSecret {
    name: String,
    environment: String,
}

impl<S: Send + Sync> FromRequestParts<S> for NamedSecret {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // The path first: a request wrong in both is told about its path,
        // as when the two were separate extractors.
        let PathParams(SecretPath { name }) = PathParams::from_request_parts(parts, state).await?;
        let Params(EnvironmentQuery { environment }) =
            Params::from_request_parts(parts, state).await?;
        Ok(Self { name, environment })
    }
}

impl IntoParams for NamedSecret {
    fn into_params(parameter_in_provider: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut params = SecretPath::into_params(&parameter_in_provider);
        params.extend(EnvironmentQuery::into_params(parameter_in_provider));
        params
    }
}

/// Query of `GET /secrets`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// The environment; empty or absent means the workspace default.
    #[serde(default)]
    environment: String,
    /// Only secrets created strictly before this instant (RFC 3339, or a
    /// date). Pass the previous page's `next_created_before` to page.
    created_before: Option<String>,
    /// At most this many secrets (1 to 1000; default and maximum 1000).
    limit: Option<u32>,
}

/// One page of named secrets, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SecretList {
    /// The environment listed (the default's name when none was given).
    environment: String,
    /// The secrets, newest first.
    items: Vec<SecretInfo>,
    /// When the page is full: the `created_before` of the next page.
    #[schema(value_type = Option<String>)]
    next_created_before: Option<Timestamp>,
}

/// List named secrets, newest first, paged by creation time.
#[utoipa::path(
    get, path = "/secrets", tag = "secrets",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of secrets", body = SecretList),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 404, description = "Unknown environment", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    Authenticated { service, caller }: Authenticated,
    Params(q): Params<ListQuery>,
) -> Result<Json<SecretList>, ApiError> {
    let before = q
        .created_before
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| parse_instant("created_before", s))
        .transpose()?;
    let limit = match q.limit {
        None => MAX_PAGE,
        Some(0) => return Err(ApiError::invalid("limit must be at least 1")),
        Some(n) => n.min(MAX_PAGE),
    };
    let (env, items) = service
        .list_secrets(&caller, &q.environment, before, Some(limit))
        .await?;
    let full = u32::try_from(items.len()).unwrap_or(u32::MAX) >= limit;
    let next_created_before = items
        .last()
        .filter(|_| full)
        .map(|s| Timestamp::from_micros(s.created_at));
    Ok(Json(SecretList {
        environment: env.name,
        items: items.iter().map(SecretInfo::from).collect(),
        next_created_before,
    }))
}

/// What to do when a secret of that name exists.
#[derive(Debug, Default, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum IfExists {
    /// Fail with `already_exists` (409).
    #[default]
    Fail,
    /// Leave the existing secret as it is and return it.
    Keep,
    /// Replace its contents.
    Overwrite,
}

/// Body of `POST /secrets`. No `Debug`: it holds values.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSecret {
    /// The new secret's name.
    #[schema(example = "my-secret")]
    name: String,
    /// Its contents: environment variable names to string values.
    #[schema(value_type = std::collections::BTreeMap<String, String>, example = json!({"API_KEY": "..."}))]
    values: Value,
    /// What to do when the name exists (default `fail`).
    #[serde(default)]
    if_exists: IfExists,
    /// Keys the resulting secret must hold.
    #[serde(default)]
    required_keys: Vec<String>,
}

/// The answer of `POST /secrets`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Created {
    /// Whether the secret was created (`false`: it existed and was kept or overwritten).
    created: bool,
    /// The secret.
    secret: SecretInfo,
}

/// `values` of a create request: an object of strings.
fn values_object(values: Value) -> Result<EnvDict, ApiError> {
    let Value::Object(map) = values else {
        return Err(ApiError::invalid(
            "'values' must be an object of environment variable names to strings",
        ));
    };
    map.into_iter()
        .map(|(key, value)| match value {
            Value::String(s) => Ok((key, s)),
            _ => Err(ApiError::invalid(format!(
                "The value of key '{}' must be a string",
                latchkey_core::rules::echo(&key)
            ))),
        })
        .collect()
}

/// Create a named secret.
#[utoipa::path(
    post, path = "/secrets", tag = "secrets",
    params(EnvironmentQuery),
    request_body = CreateSecret,
    responses(
        (status = 201, description = "Created", body = Created),
        (status = 200, description = "It existed; kept or overwritten as `if_exists` said", body = Created),
        (status = 400, description = "Invalid name, key or value", body = ErrorBody),
        (status = 409, description = "It exists and `if_exists` is `fail`", body = ErrorBody),
        MissingKeys,
    )
)]
pub(crate) async fn create(
    Authenticated { service, caller }: Authenticated,
    Params(q): Params<EnvironmentQuery>,
    Body(body): Body<CreateSecret>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let contents = values_object(body.values)?;
    let mode = match body.if_exists {
        IfExists::Fail => CreateMode::Fail,
        IfExists::Keep => CreateMode::ReturnExisting,
        IfExists::Overwrite => CreateMode::Overwrite,
    };
    let (secret, created) = service
        .create_secret(
            &caller,
            &q.environment,
            &body.name,
            contents,
            mode,
            &body.required_keys,
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Created {
            created,
            secret: SecretInfo::from(&secret.summary),
        }),
    ))
}

/// Query of `GET /secrets/{name}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct GetQuery {
    /// The environment; empty or absent means the workspace default.
    #[serde(default)]
    environment: String,
    /// Comma-separated keys the secret must hold (`A,B`).
    #[serde(default)]
    required_keys: String,
}

fn split_keys(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A named secret's metadata and keys (no values).
#[utoipa::path(
    get, path = "/secrets/{name}", tag = "secrets",
    params(SecretPath, GetQuery),
    responses(
        (status = 200, description = "The secret", body = SecretInfo),
        SecretNotFound,
        MissingKeys,
    )
)]
pub(crate) async fn get(
    Authenticated { service, caller }: Authenticated,
    PathParams(SecretPath { name }): PathParams<SecretPath>,
    Params(q): Params<GetQuery>,
) -> Result<Json<SecretInfo>, ApiError> {
    let secret = service
        .lookup_secret(
            &caller,
            &q.environment,
            &name,
            &split_keys(&q.required_keys),
        )
        .await?;
    Ok(Json(SecretInfo::from(&secret)))
}

/// Body of `POST /secrets/{name}/resolve` (may be empty).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveRequest {
    /// Keys the secret must hold.
    #[serde(default)]
    required_keys: Vec<String>,
}

/// A secret's values, for a process that starts now.
#[derive(Serialize, ToSchema)]
pub(crate) struct Resolved {
    /// The secret (its `last_used_at` as it was before this call).
    secret: SecretInfo,
    /// Its contents.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    values: EnvDict,
}

/// A named secret's values, for delivery to a process: checks the required
/// keys and records the use (`last_used_at`). Any role may resolve.
#[utoipa::path(
    post, path = "/secrets/{name}/resolve", tag = "secrets",
    params(NamedSecret),
    request_body(content = Option<ResolveRequest>, description = "Optional; required keys"),
    responses(
        (status = 200, description = "The values", body = Resolved),
        SecretNotFound,
        MissingKeys,
    )
)]
pub(crate) async fn resolve(
    Authenticated { service, caller }: Authenticated,
    NamedSecret { name, environment }: NamedSecret,
    OptionalBody(body): OptionalBody<ResolveRequest>,
) -> Result<Json<Resolved>, ApiError> {
    let secret = service
        .resolve_secret(&caller, &environment, &name, &body.required_keys)
        .await?;
    Ok(Json(Resolved {
        secret: SecretInfo::from(&secret.summary),
        values: secret.contents,
    }))
}

/// Body of `PATCH /secrets/{name}`. No `Debug`: it holds values.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateSecret {
    /// Keys to set (a string) or remove (`null`); keys not named stay.
    #[schema(value_type = std::collections::BTreeMap<String, Option<String>>, example = json!({"NEW_KEY": "v", "OLD_KEY": null}))]
    values: Value,
}

/// Merge changes into a secret like `dict.update`: a string sets a key,
/// `null` removes it, keys not named stay. Concurrent updates of different
/// keys all survive.
#[utoipa::path(
    patch, path = "/secrets/{name}", tag = "secrets",
    params(NamedSecret),
    request_body = UpdateSecret,
    responses(
        (status = 200, description = "The secret after the change", body = SecretInfo),
        (status = 400, description = "Invalid key or value", body = ErrorBody),
        SecretNotFound,
    )
)]
pub(crate) async fn update(
    Authenticated { service, caller }: Authenticated,
    NamedSecret { name, environment }: NamedSecret,
    Body(body): Body<UpdateSecret>,
) -> Result<Json<SecretInfo>, ApiError> {
    let Value::Object(map) = body.values else {
        return Err(ApiError::invalid(
            "'values' must be an object of keys to a string (set) or null (remove)",
        ));
    };
    let changes = map
        .into_iter()
        .map(|(key, value)| match value {
            Value::String(s) => Ok((key, Some(s))),
            Value::Null => Ok((key, None)),
            _ => Err(ApiError::invalid(format!(
                "The value of key '{}' must be a string, or null to remove it",
                latchkey_core::rules::echo(&key)
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let secret = service
        .lookup_secret(&caller, &environment, &name, &[])
        .await?;
    let updated = service.update_secret(&caller, &secret.id, &changes).await?;
    Ok(Json(SecretInfo::from(&updated.summary)))
}

/// Delete a named secret, irreversibly.
#[utoipa::path(
    delete, path = "/secrets/{name}", tag = "secrets",
    params(NamedSecret),
    responses(
        (status = 204, description = "Deleted"),
        SecretNotFound,
    )
)]
pub(crate) async fn delete(
    Authenticated { service, caller }: Authenticated,
    NamedSecret { name, environment }: NamedSecret,
) -> Result<StatusCode, ApiError> {
    service
        .delete_secret_by_name(&caller, &environment, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
