//! `/whoami` and `/tokens`: the caller, and the workspace's tokens.

use axum::{http::StatusCode, Json};
use latchkey_core::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::{
    error::{ApiError, ErrorBody},
    extract::{Authenticated, Body, OptionalBody, PathParams},
    model::{TokenInfo, WhoAmI},
    responses::NotAdmin,
};

/// The caller's token and workspace.
#[utoipa::path(
    get, path = "/whoami", tag = "tokens",
    responses(
        (status = 200, description = "The caller", body = WhoAmI),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub(crate) async fn whoami(
    Authenticated { service, caller }: Authenticated,
) -> Result<Json<WhoAmI>, ApiError> {
    let head = service.audit_head(&caller).await?;
    Ok(Json(WhoAmI {
        audit_head: Some(super::audit::AuditHeadInfo::new(&head, &caller)),
        ..WhoAmI::from(&caller)
    }))
}

/// The workspace's tokens.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TokenList {
    /// Oldest first, revoked ones included.
    items: Vec<TokenInfo>,
}

/// List the workspace's tokens (admin).
#[utoipa::path(
    get, path = "/tokens", tag = "tokens",
    responses(
        (status = 200, description = "The tokens", body = TokenList),
        NotAdmin,
    )
)]
pub(crate) async fn list(
    Authenticated { service, caller }: Authenticated,
) -> Result<Json<TokenList>, ApiError> {
    let tokens = service.list_tokens(&caller).await?;
    Ok(Json(TokenList {
        items: tokens.iter().map(TokenInfo::from).collect(),
    }))
}

/// Body of `POST /tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    /// Its name (1 to 64 of `[A-Za-z0-9._@-]`): the `created_by` of what it creates.
    #[schema(example = "ci")]
    name: String,
    /// What it may do.
    role: Role,
    /// Limit it to these environments; absent or `null` means all.
    environments: Option<Vec<String>>,
    /// How long it is valid: seconds (`3600`) or with units (`90m`, `24h`,
    /// `30d`); absent or `null`: it never expires.
    #[schema(example = "30d")]
    ttl: Option<String>,
}

/// A new token and its secret, shown this once.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedToken {
    /// The token.
    token: TokenInfo,
    /// Its secret (`as-...`). The server keeps only a hash: it cannot show it again.
    #[schema(value_type = String)]
    #[serde(serialize_with = "expose")]
    secret: Zeroizing<String>,
}

fn expose<S: serde::Serializer>(secret: &Zeroizing<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret)
}

/// Create a token (admin). The answer holds its secret, once.
#[utoipa::path(
    post, path = "/tokens", tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "Created", body = CreatedToken),
        (status = 400, description = "Invalid name or environments", body = ErrorBody),
        NotAdmin,
    )
)]
pub(crate) async fn create(
    Authenticated { service, caller }: Authenticated,
    Body(body): Body<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let ttl = optional_duration("ttl", body.ttl.as_deref())?;
    let (token, secret) = service
        .create_token(&caller, &body.name, body.role, body.environments, ttl)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: TokenInfo::from(&token),
            secret,
        }),
    ))
}

/// A duration field of a body, parsed like the CLI's flags.
fn optional_duration(
    field: &str,
    text: Option<&str>,
) -> Result<Option<std::time::Duration>, ApiError> {
    Ok(text
        .map(|t| latchkey_core::time::parse_duration(field, t))
        .transpose()?)
}

/// Body of `POST /tokens/{id}/rotate`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateToken {
    /// How long the secret it replaces stays accepted, like `ttl` of
    /// `POST /tokens` (`10m`); absent or `null`: not at all, it is refused
    /// at once.
    #[schema(example = "10m")]
    grace: Option<String>,
}

/// Give a token a new secret (admin). The answer holds the new secret,
/// once; the old one stays accepted for `grace`.
#[utoipa::path(
    post, path = "/tokens/{id}/rotate", tag = "tokens",
    params(("id" = String, Path, description = "The token's id (`ak-...`)")),
    request_body(content = Option<RotateToken>, description = "Optional: `{}` or no body means no grace period"),
    responses(
        (status = 200, description = "Rotated", body = CreatedToken),
        (status = 400, description = "Invalid grace period", body = ErrorBody),
        (status = 404, description = "No such active token", body = ErrorBody),
        (status = 412, description = "The token has expired", body = ErrorBody),
        NotAdmin,
    )
)]
pub(crate) async fn rotate(
    Authenticated { service, caller }: Authenticated,
    PathParams(id): PathParams<String>,
    OptionalBody(body): OptionalBody<RotateToken>,
) -> Result<Json<CreatedToken>, ApiError> {
    let grace = optional_duration("grace", body.grace.as_deref())?;
    let (token, secret) = service.rotate_token(&caller, &id, grace).await?;
    Ok(Json(CreatedToken {
        token: TokenInfo::from(&token),
        secret,
    }))
}

/// Revoke a token (admin). The workspace's last admin token cannot be revoked.
#[utoipa::path(
    delete, path = "/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "The token's id (`ak-...`)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such active token", body = ErrorBody),
        (status = 412, description = "The last admin token", body = ErrorBody),
    )
)]
pub(crate) async fn revoke(
    Authenticated { service, caller }: Authenticated,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    service.revoke_token(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
