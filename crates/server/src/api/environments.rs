//! `/environments`: the namespaces of secrets in a workspace.

use axum::{http::StatusCode, Json};
use latchkey_service::EnvironmentUpdate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    error::{ApiError, ErrorBody},
    extract::{Authenticated, Body, Params, PathParams},
    model::EnvironmentInfo,
    responses::{EnvironmentNotFound, NotAdmin},
};

/// The environments the caller may see.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EnvironmentList {
    /// The default first, then by creation.
    items: Vec<EnvironmentInfo>,
}

/// List the environments the caller may see, the default first.
#[utoipa::path(
    get, path = "/environments", tag = "environments",
    responses((status = 200, description = "The environments", body = EnvironmentList))
)]
pub(crate) async fn list(
    Authenticated { service, caller }: Authenticated,
) -> Result<Json<EnvironmentList>, ApiError> {
    let envs = service.list_environments(&caller).await?;
    Ok(Json(EnvironmentList {
        items: envs.iter().map(EnvironmentInfo::from).collect(),
    }))
}

/// Body of `POST /environments`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateEnvironment {
    /// The new environment's name.
    #[schema(example = "dev")]
    name: String,
}

/// Create an environment (admin).
#[utoipa::path(
    post, path = "/environments", tag = "environments",
    request_body = CreateEnvironment,
    responses(
        (status = 201, description = "Created", body = EnvironmentInfo),
        (status = 400, description = "Invalid name", body = ErrorBody),
        NotAdmin,
        (status = 409, description = "The name is taken", body = ErrorBody),
    )
)]
pub(crate) async fn create(
    Authenticated { service, caller }: Authenticated,
    Body(body): Body<CreateEnvironment>,
) -> Result<(StatusCode, Json<EnvironmentInfo>), ApiError> {
    let env = service.create_environment(&caller, &body.name).await?;
    Ok((StatusCode::CREATED, Json(EnvironmentInfo::from(&env))))
}

/// Body of `PATCH /environments/{name}`: the fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateEnvironment {
    /// A new name.
    name: Option<String>,
    /// A new web suffix (at most 64 letters, digits and '-').
    webhook_suffix: Option<String>,
}

/// Rename an environment or change its web suffix (admin).
#[utoipa::path(
    patch, path = "/environments/{name}", tag = "environments",
    params(("name" = String, Path, description = "The environment's current name")),
    request_body = UpdateEnvironment,
    responses(
        (status = 200, description = "The environment after the change", body = EnvironmentInfo),
        (status = 400, description = "Invalid name or suffix", body = ErrorBody),
        EnvironmentNotFound,
        (status = 409, description = "The new name is taken", body = ErrorBody),
    )
)]
pub(crate) async fn update(
    Authenticated { service, caller }: Authenticated,
    PathParams(name): PathParams<String>,
    Body(body): Body<UpdateEnvironment>,
) -> Result<Json<EnvironmentInfo>, ApiError> {
    if body.name.is_none() && body.webhook_suffix.is_none() {
        return Err(ApiError::invalid(
            "Nothing to change: give 'name' and/or 'webhook_suffix'",
        ));
    }
    let env = service
        .update_environment(
            &caller,
            &name,
            EnvironmentUpdate {
                name: body.name,
                webhook_suffix: body.webhook_suffix,
            },
        )
        .await?;
    Ok(Json(EnvironmentInfo::from(&env)))
}

/// Query of `DELETE /environments/{name}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteQuery {
    /// Also delete the secrets in it; without this, an environment holding
    /// secrets is not deleted.
    #[serde(default)]
    with_secrets: bool,
}

/// Delete an environment (admin). The workspace default cannot be deleted.
#[utoipa::path(
    delete, path = "/environments/{name}", tag = "environments",
    params(("name" = String, Path, description = "The environment's name"), DeleteQuery),
    responses(
        (status = 204, description = "Deleted"),
        EnvironmentNotFound,
        (status = 412, description = "The default environment, or it holds secrets", body = ErrorBody),
    )
)]
pub(crate) async fn delete(
    Authenticated { service, caller }: Authenticated,
    PathParams(name): PathParams<String>,
    Params(q): Params<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    service
        .delete_environment(&caller, &name, q.with_secrets)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
