//! `/secrets`: named secrets and their values.

use axum::{
    extract::FromRequestParts,
    http::{request::Parts, StatusCode},
    Json,
};
use latchkey_core::{rules, time::Timestamp, EnvDict};
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
    model::{parse_instant, EnvironmentQuery, SecretInfo, VersionInfo},
    responses::{MissingKeys, SecretNotFound},
};

/// The `{name}` of `/secrets/{name}` routes. Its field's doc comment is the
/// parameter's description in the OpenAPI document.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct SecretPath {
    /// The secret's name
    pub(crate) name: String,
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
    let limit = page_limit(q.limit)?;
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

/// The `limit` of a listing: 1 to [`MAX_PAGE`], default the maximum.
fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(MAX_PAGE),
        Some(0) => Err(ApiError::invalid("limit must be at least 1")),
        Some(n) => Ok(n.min(MAX_PAGE)),
    }
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
    /// A kept version (1, 2, 3...) instead of the current one.
    version: Option<String>,
}

fn split_keys(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A named secret's metadata and keys, no values; with `version`, as of that
/// version (its number and keys), with the version's record.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SecretAt {
    /// The secret; `version` and `keys` are those of the version asked for.
    #[serde(flatten)]
    secret: SecretInfo,
    /// With `?version=N`: that version's record.
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<VersionInfo>,
}

/// A named secret's metadata and keys (no values), current or of a kept version.
#[utoipa::path(
    get, path = "/secrets/{name}", tag = "secrets",
    params(SecretPath, GetQuery),
    responses(
        (status = 200, description = "The secret", body = SecretAt),
        (status = 400, description = "Invalid version", body = ErrorBody),
        (status = 404, description = "No such secret, or the version is not kept \
            (the message names the kept versions)", body = ErrorBody),
        MissingKeys,
    )
)]
pub(crate) async fn get(
    Authenticated { service, caller }: Authenticated,
    PathParams(SecretPath { name }): PathParams<SecretPath>,
    Params(q): Params<GetQuery>,
) -> Result<Json<SecretAt>, ApiError> {
    let version = q.version.as_deref().map(rules::parse_version).transpose()?;
    let required = split_keys(&q.required_keys);
    let Some(version) = version else {
        let secret = service
            .lookup_secret(&caller, &q.environment, &name, &required)
            .await?;
        return Ok(Json(SecretAt {
            secret: SecretInfo::from(&secret),
            version_info: None,
        }));
    };
    let current = service
        .lookup_secret(&caller, &q.environment, &name, &[])
        .await?;
    let (secret, record) = service
        .secret_version(&caller, &current.id, version)
        .await?;
    rules::check_required_keys_in_sorted(
        &secret.summary.keys,
        required.iter().map(String::as_str),
    )?;
    Ok(Json(SecretAt {
        secret: SecretInfo::from(&secret.summary),
        version_info: Some(VersionInfo::from(&record)),
    }))
}

/// Query of `GET /secrets/{name}/versions`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct VersionsQuery {
    /// The environment; empty or absent means the workspace default.
    #[serde(default)]
    environment: String,
    /// Only versions numbered below this one. Pass the previous page's
    /// `next_before` to page.
    before: Option<String>,
    /// At most this many versions (1 to 1000; default and maximum 1000).
    limit: Option<u32>,
}

/// One page of a secret's kept versions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VersionList {
    /// The secret's current version.
    current_version: i64,
    /// The versions, newest first.
    items: Vec<VersionInfo>,
    /// When more versions are kept: the `before` of the next page.
    next_before: Option<i64>,
}

/// A secret's history: its kept versions, newest first, with the keys each
/// added, removed and changed (compared inside the server; never a value).
#[utoipa::path(
    get, path = "/secrets/{name}/versions", tag = "secrets",
    params(SecretPath, VersionsQuery),
    responses(
        (status = 200, description = "A page of versions", body = VersionList),
        (status = 400, description = "Bad query", body = ErrorBody),
        SecretNotFound,
    )
)]
pub(crate) async fn versions(
    Authenticated { service, caller }: Authenticated,
    PathParams(SecretPath { name }): PathParams<SecretPath>,
    Params(q): Params<VersionsQuery>,
) -> Result<Json<VersionList>, ApiError> {
    let before = q
        .before
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(rules::parse_version)
        .transpose()?;
    let limit = page_limit(q.limit)?;
    let secret = service
        .lookup_secret(&caller, &q.environment, &name, &[])
        .await?;
    let items = service
        .secret_history(&caller, &secret.id, before, Some(limit))
        .await?;
    let full = u32::try_from(items.len()).unwrap_or(u32::MAX) >= limit;
    let next_before = items
        .last()
        .filter(|v| full && v.version > 1)
        .map(|v| v.version);
    Ok(Json(VersionList {
        current_version: secret.version,
        items: items.iter().map(VersionInfo::from).collect(),
        next_before,
    }))
}

/// Body of `POST /secrets/{name}/rollback`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollbackRequest {
    /// The kept version whose contents become a new version.
    to: i64,
    /// Refuse (412) unless this is the current version.
    #[serde(default)]
    expected_version: Option<i64>,
}

/// Roll a secret back: a new version whose contents are those of version
/// `to`. Rolling back to the current version is refused (412), as there is
/// nothing to undo.
#[utoipa::path(
    post, path = "/secrets/{name}/rollback", tag = "secrets",
    params(NamedSecret),
    request_body = RollbackRequest,
    responses(
        (status = 200, description = "The secret at its new version", body = SecretInfo),
        (status = 400, description = "Invalid version", body = ErrorBody),
        (status = 404, description = "No such secret, or the version is not kept", body = ErrorBody),
        (status = 412, description = "`to` is the current version, or `expected_version` is not", body = ErrorBody),
    )
)]
pub(crate) async fn rollback(
    Authenticated { service, caller }: Authenticated,
    NamedSecret { name, environment }: NamedSecret,
    Body(body): Body<RollbackRequest>,
) -> Result<Json<SecretInfo>, ApiError> {
    let secret = service
        .lookup_secret(&caller, &environment, &name, &[])
        .await?;
    let rolled = service
        .rollback_secret(&caller, &secret.id, body.to, body.expected_version)
        .await?;
    Ok(Json(SecretInfo::from(&rolled.summary)))
}

/// Body of `POST /secrets/{name}/resolve` (may be empty).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveRequest {
    /// Keys the secret must hold.
    #[serde(default)]
    required_keys: Vec<String>,
    /// A kept version's values instead of the current ones.
    #[serde(default)]
    version: Option<i64>,
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
    let secret = match body.version {
        None => {
            service
                .resolve_secret(&caller, &environment, &name, &body.required_keys)
                .await?
        }
        Some(version) => {
            service
                .resolve_secret_version(&caller, &environment, &name, version, &body.required_keys)
                .await?
        }
    };
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
    /// Refuse (412) unless this is the current version: a compare-and-swap.
    #[serde(default)]
    expected_version: Option<i64>,
}

/// Merge changes into a secret like `dict.update`, as a new version: a
/// string sets a key, `null` removes it, keys not named stay. Concurrent
/// updates of different keys all survive.
#[utoipa::path(
    patch, path = "/secrets/{name}", tag = "secrets",
    params(NamedSecret),
    request_body = UpdateSecret,
    responses(
        (status = 200, description = "The secret after the change", body = SecretInfo),
        (status = 400, description = "Invalid key or value", body = ErrorBody),
        SecretNotFound,
        (status = 412, description = "`expected_version` is not the current version", body = ErrorBody),
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
    let updated = service
        .update_secret(&caller, &secret.id, &changes, body.expected_version)
        .await?;
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
