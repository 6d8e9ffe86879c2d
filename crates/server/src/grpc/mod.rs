//! The gRPC adapter: Modal's `modal.client.ModalClient` service over the
//! service layer.
//!
//! Each method authenticates the caller from the `x-modal-token-id` and
//! `x-modal-token-secret` headers, translates the request into one service
//! call, and the answer into Modal's messages. Errors keep their kind: the
//! client maps NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT,
//! FAILED_PRECONDITION, UNAUTHENTICATED and PERMISSION_DENIED to its own
//! exceptions, and retries only the transient codes, which deterministic
//! errors therefore never use.

mod convert;
pub(crate) mod functions;
pub(crate) mod router;
pub(crate) mod sandbox;
mod unimplemented;

use latchkey_core::{time::secs_to_micros, EnvDict, Error, ErrorKind};
use latchkey_proto::api::{self, modal_client_server::ModalClient, ObjectCreationType};
use latchkey_store::EnvironmentUpdate;
use tonic::{Request, Response, Status};

pub use unimplemented::name_unimplemented_rpcs;
pub(crate) use unimplemented::unknown_service;

use latchkey_service::{Caller, CreateMode, Service};

use latchkey_functions::Functions;
use latchkey_sandbox::Sandboxes;

/// Largest message the server accepts or sends. Modal's client moves larger
/// payloads through blobs, so no valid request needs more; tonic refuses a
/// longer message from its 5-byte length prefix, before reading it.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The image builder version reported to clients: one that `modal` 1.6.4 accepts.
pub const IMAGE_BUILDER_VERSION: &str = "2025.06";

/// The `ModalClient` service.
#[derive(Clone)]
pub struct ModalApi {
    service: Service,
    sandboxes: Option<Sandboxes>,
    functions: Option<Functions>,
}

impl ModalApi {
    /// The adapter over `service`.
    pub fn new(service: Service) -> Self {
        Self {
            service,
            sandboxes: None,
            functions: None,
        }
    }

    /// Serves the function RPCs with `functions` (`None`: they answer
    /// UNIMPLEMENTED, saying that functions are disabled).
    pub fn with_functions(mut self, functions: Option<Functions>) -> Self {
        self.functions = functions;
        self
    }

    /// The workspace a blob RPC works in: the container's (through its
    /// task's socket) or the caller's (a developer's token).
    async fn blob_workspace<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
    ) -> Result<(String, &Functions), Status> {
        let functions = self
            .functions
            .as_ref()
            .ok_or_else(|| functions::disabled(rpc))?;
        if let Some(task) = request.extensions().get::<functions::TaskIdentity>() {
            let workspace = functions.task_workspace(&task.0).map_err(status)?;
            return Ok((workspace, functions));
        }
        let caller = self.caller(request).await?;
        caller
            .require(latchkey_service::Role::Developer, "move function payloads")
            .map_err(status)?;
        Ok((caller.workspace_id().to_owned(), functions))
    }

    /// The function manager and the caller, for the function RPC `rpc`.
    async fn function_caller<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
    ) -> Result<(Caller, &Functions), Status> {
        let functions = self
            .functions
            .as_ref()
            .ok_or_else(|| functions::disabled(rpc))?;
        Ok((self.caller(request).await?, functions))
    }

    /// Serves the sandbox RPCs with `sandboxes` (`None`: they answer
    /// UNIMPLEMENTED, saying that sandboxes are disabled).
    pub fn with_sandboxes(mut self, sandboxes: Option<Sandboxes>) -> Self {
        self.sandboxes = sandboxes;
        self
    }

    /// The sandbox manager and the caller, for the sandbox RPC `rpc`.
    async fn sandbox_caller<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
    ) -> Result<(Caller, &Sandboxes), Status> {
        let sandboxes = self
            .sandboxes
            .as_ref()
            .ok_or_else(|| sandbox::disabled(rpc))?;
        Ok((self.caller(request).await?, sandboxes))
    }

    /// The tonic service, with Modal's message size limit and no compression.
    pub fn into_server(self) -> api::modal_client_server::ModalClientServer<Self> {
        api::modal_client_server::ModalClientServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The caller [`authenticate_first`] found, or (for a service driven
    /// without that layer) the one the headers name.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        if let Some(caller) = request.extensions().get::<Caller>() {
            return Ok(caller.clone());
        }
        let header = |name| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let origin = grpc_origin(request.extensions());
        self.service
            .authenticate(
                header("x-modal-token-id"),
                header("x-modal-token-secret"),
                &origin,
            )
            .await
            .map_err(status)
    }
}

/// Where Modal's client service's RPCs live.
const MODAL_CLIENT_PREFIX: &str = "/modal.client.ModalClient/";
/// Where the sandbox command router's RPCs live.
const ROUTER_PREFIX: &str = "/modal.task_command_router.TaskCommandRouter/";

/// Checks the credentials in the headers before anything reads the body, so
/// that a caller without a token cannot make the server buffer or decode a
/// message (up to [`MAX_MESSAGE_BYTES`]): Modal's RPCs need a valid
/// `x-modal-token-id`/`x-modal-token-secret` pair (the caller is handed on
/// to the handler in the request's extensions), the command router's a
/// bearer token it issued. Refusals are the handlers' own statuses.
pub(crate) async fn authenticate_first(
    axum::extract::State(auth): axum::extract::State<GrpcAuth>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // Owned: the body is not `Sync`, so no borrow of the request may live
    // across the await.
    let path = request.uri().path().to_owned();
    if !declared(&path) {
        // tonic answers UNIMPLEMENTED without reading the body; the caller
        // learns which RPC we lack whether or not it has a token.
        return next.run(request).await;
    }
    if path.starts_with(MODAL_CLIENT_PREFIX) {
        let (id, secret) = {
            let header = |name| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            (header("x-modal-token-id"), header("x-modal-token-secret"))
        };
        let origin = grpc_origin(request.extensions());
        match auth.service.authenticate(&id, &secret, &origin).await {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
            }
            Err(e) => return status(e).into_http(),
        }
    } else if let Some(rpc) = path.strip_prefix(ROUTER_PREFIX) {
        let Some(sandboxes) = &auth.sandboxes else {
            return sandbox::disabled(rpc).into_http();
        };
        let bearer = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Err(e) = sandboxes.check_router_token(bearer) {
            return status(e).into_http();
        }
    }
    too_large_is_invalid(next.run(request).await)
}

/// Where a gRPC request came from.
fn grpc_origin(extensions: &http::Extensions) -> latchkey_service::Origin {
    latchkey_service::Origin::new(
        latchkey_service::log::Interface::Grpc,
        extensions.get::<latchkey_service::ClientAddr>().copied(),
    )
}

/// Whether `path` names an RPC our `.proto` declares, which we serve.
fn declared(path: &str) -> bool {
    use prost::Message as _;
    static DECLARED: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    DECLARED
        .get_or_init(|| {
            let set = prost_types::FileDescriptorSet::decode(latchkey_proto::FILE_DESCRIPTOR_SET)
                .unwrap_or_default();
            let mut paths = std::collections::HashSet::new();
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        paths.insert(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
            paths
        })
        .contains(path)
}

/// What [`authenticate_first`] checks credentials with.
#[derive(Clone)]
pub(crate) struct GrpcAuth {
    pub(crate) service: Service,
    pub(crate) sandboxes: Option<Sandboxes>,
}

/// tonic answers a message over the limit with OUT_OF_RANGE; this says
/// INVALID_ARGUMENT instead, naming the limit: the request is wrong, not
/// the server, and the client must neither retry it nor read it as a
/// range error of some field.
fn too_large_is_invalid(response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    // The message is percent-encoded (spaces are `%20`).
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if out_of_range && too_large {
        return Status::invalid_argument(format!(
            "The request message is larger than the {} MiB limit; Modal's client sends larger payloads as blobs",
            MAX_MESSAGE_BYTES / (1024 * 1024)
        ))
        .into_http();
    }
    response
}

/// An [`Error`] as a gRPC status with the same meaning.
// By value so that it reads as `.map_err(status)`.
#[allow(clippy::needless_pass_by_value)]
pub fn status(error: Error) -> Status {
    let code = match error.kind() {
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorKind::Invalid => tonic::Code::InvalidArgument,
        ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
        ErrorKind::ResourceExhausted => tonic::Code::ResourceExhausted,
        _ => tonic::Code::Internal,
    };
    Status::new(code, error.message())
}

fn invalid(message: impl Into<String>) -> Status {
    status(Error::invalid(message))
}

/// A Modal timestamp (float seconds; 0 means none) as microseconds.
fn optional_time(secs: f64, field: &str) -> Result<Option<i64>, Status> {
    if secs == 0.0 {
        return Ok(None);
    }
    secs_to_micros(secs)
        .map(Some)
        .ok_or_else(|| invalid(format!("Invalid {field}: {secs}")))
}

#[tonic::async_trait]
impl ModalClient for ModalApi {
    async fn client_hello(
        &self,
        request: Request<()>,
    ) -> Result<Response<api::ClientHelloResponse>, Status> {
        self.caller(&request).await?;
        Ok(Response::new(api::ClientHelloResponse {
            warning: String::new(),
            image_builder_version: IMAGE_BUILDER_VERSION.to_owned(),
            server_warnings: Vec::new(),
        }))
    }

    async fn secret_get_or_create(
        &self,
        request: Request<api::SecretGetOrCreateRequest>,
    ) -> Result<Response<api::SecretGetOrCreateResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let kind = ObjectCreationType::try_from(req.object_creation_type).map_err(|_| {
            invalid(format!(
                "Unknown object_creation_type {}",
                req.object_creation_type
            ))
        })?;
        let contents: EnvDict = req.env_dict.into_iter().collect();
        let named_mode = match kind {
            ObjectCreationType::Unspecified => None,
            ObjectCreationType::CreateIfMissing => Some(CreateMode::ReturnExisting),
            ObjectCreationType::CreateFailIfExists => Some(CreateMode::Fail),
            ObjectCreationType::CreateOverwriteIfExists => Some(CreateMode::Overwrite),
            ObjectCreationType::AnonymousOwnedByApp | ObjectCreationType::Ephemeral => {
                if !req.deployment_name.is_empty() {
                    return Err(invalid(
                        "An anonymous Secret cannot have a name (deployment_name must be empty)",
                    ));
                }
                let app_id = if kind == ObjectCreationType::AnonymousOwnedByApp {
                    if req.app_id.is_empty() {
                        return Err(invalid("A Secret owned by an app needs an app_id"));
                    }
                    Some(req.app_id)
                } else {
                    None
                };
                let secret = self
                    .service
                    .create_anonymous_secret(
                        &caller,
                        &req.environment_name,
                        contents,
                        app_id,
                        &req.required_keys,
                    )
                    .await
                    .map_err(status)?;
                return Ok(Response::new(api::SecretGetOrCreateResponse {
                    secret_id: secret.summary.id.clone(),
                    metadata: Some(convert::secret_metadata(&secret.summary)),
                }));
            }
        };
        let summary = match named_mode {
            None => {
                if !contents.is_empty() {
                    return Err(invalid("A Secret lookup cannot carry values; use an object_creation_type that creates"));
                }
                let found = self.service
                    .lookup_secret(&caller, &req.environment_name, &req.deployment_name, &req.required_keys)
                    .await;
                // A function's container checks these keys again when it
                // starts with the secret.
                if let (Ok(summary), Some(functions)) = (&found, &self.functions) {
                    functions.remember_required_keys(&summary.id, &req.required_keys);
                }
                found
            }
            Some(mode) => self
                .service
                .create_secret(&caller, &req.environment_name, &req.deployment_name, contents, mode, &req.required_keys)
                .await
                .map(|(secret, _)| secret.summary),
        }
        .map_err(status)?;
        Ok(Response::new(api::SecretGetOrCreateResponse {
            secret_id: summary.id.clone(),
            metadata: Some(convert::secret_metadata(&summary)),
        }))
    }

    async fn secret_list(
        &self,
        request: Request<api::SecretListRequest>,
    ) -> Result<Response<api::SecretListResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let pagination = req.pagination.unwrap_or_default();
        if pagination.max_objects < 0 {
            return Err(invalid("max_objects cannot be negative"));
        }
        let max = (pagination.max_objects > 0).then(|| pagination.max_objects.unsigned_abs());
        let before = optional_time(pagination.created_before, "created_before")?;
        let (env, items) = self
            .service
            .list_secrets(&caller, &req.environment_name, before, max)
            .await
            .map_err(status)?;
        Ok(Response::new(api::SecretListResponse {
            items: items.iter().map(convert::secret_list_item).collect(),
            environment_name: env.name,
        }))
    }

    async fn secret_delete(
        &self,
        request: Request<api::SecretDeleteRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = self.caller(&request).await?;
        self.service
            .delete_secret(&caller, &request.get_ref().secret_id)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn secret_update(
        &self,
        request: Request<api::SecretUpdateRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let changes: Vec<(String, Option<String>)> =
            req.updates.into_iter().map(|u| (u.key, u.value)).collect();
        self.service
            .update_secret(&caller, &req.secret_id, &changes, None)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn secret_get_info(
        &self,
        request: Request<api::SecretGetInfoRequest>,
    ) -> Result<Response<api::SecretGetInfoResponse>, Status> {
        let caller = self.caller(&request).await?;
        let secret = self
            .service
            .secret(&caller, &request.get_ref().secret_id)
            .await
            .map_err(status)?;
        Ok(Response::new(api::SecretGetInfoResponse {
            metadata: Some(convert::secret_metadata(&secret.summary)),
        }))
    }

    async fn environment_list(
        &self,
        request: Request<()>,
    ) -> Result<Response<api::EnvironmentListResponse>, Status> {
        let caller = self.caller(&request).await?;
        let envs = self
            .service
            .list_environments(&caller)
            .await
            .map_err(status)?;
        Ok(Response::new(api::EnvironmentListResponse {
            items: envs.iter().map(convert::environment_list_item).collect(),
        }))
    }

    async fn environment_create(
        &self,
        request: Request<api::EnvironmentCreateRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.get_ref();
        // Options latchkey has no model for are refused, never dropped: an
        // environment reported created as restricted must be restricted.
        if req.is_managed {
            return Err(Status::invalid_argument(
                "latchkey does not support restricted environments (--restricted): limit a token \
                 to environments instead (latchkey token create NAME --role R --env ENV)",
            ));
        }
        if !req.default_member_role_str.is_empty() || req.default_member_role.is_some() {
            return Err(Status::invalid_argument(
                "latchkey does not support a default member role (--default-role): roles belong \
                 to tokens (latchkey token create NAME --role R)",
            ));
        }
        if req.environment_type == api::EnvironmentType::Public as i32 {
            return Err(Status::invalid_argument(
                "latchkey does not support public environments",
            ));
        }
        self.service
            .create_environment(&caller, &req.name)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn environment_delete(
        &self,
        request: Request<api::EnvironmentDeleteRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = self.caller(&request).await?;
        // Modal's CLI asks for confirmation before it sends this, and Modal
        // deletes an environment with its contents: do the same.
        self.service
            .delete_environment(&caller, &request.get_ref().name, true)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn environment_update(
        &self,
        request: Request<api::EnvironmentUpdateRequest>,
    ) -> Result<Response<api::EnvironmentListItem>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        // Refused before anything changes: none of these is kept here.
        let unsupported = if req
            .image_builder_version
            .as_deref()
            .is_some_and(|v| v != IMAGE_BUILDER_VERSION)
        {
            Some(format!(
                "changing the image builder version (--set-image-builder-version): \
                 every environment reports {IMAGE_BUILDER_VERSION}"
            ))
        } else if req.max_concurrent_tasks.is_some() || req.max_concurrent_gpus.is_some() {
            Some("concurrency limits".to_owned())
        } else if req.block_unauthenticated_resources.is_some() {
            Some("blocking unauthenticated resources".to_owned())
        } else {
            None
        };
        if let Some(what) = unsupported {
            return Err(Status::invalid_argument(format!(
                "latchkey does not support {what}"
            )));
        }
        let env = self
            .service
            .update_environment(
                &caller,
                &req.current_name,
                EnvironmentUpdate {
                    name: req.name,
                    webhook_suffix: req.web_suffix,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(convert::environment_list_item(&env)))
    }

    async fn environment_get_or_create(
        &self,
        request: Request<api::EnvironmentGetOrCreateRequest>,
    ) -> Result<Response<api::EnvironmentGetOrCreateResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let create = match ObjectCreationType::try_from(req.object_creation_type) {
            Ok(ObjectCreationType::Unspecified) => false,
            Ok(ObjectCreationType::CreateIfMissing) => true,
            _ => {
                return Err(invalid(format!(
                    "Unsupported object_creation_type {} for an environment",
                    req.object_creation_type
                )))
            }
        };
        let env = self
            .service
            .get_or_create_environment(&caller, &req.deployment_name, create)
            .await
            .map_err(status)?;
        Ok(Response::new(api::EnvironmentGetOrCreateResponse {
            environment_id: env.id.clone(),
            metadata: Some(convert::environment_metadata(&env)),
        }))
    }

    async fn workspace_name_lookup(
        &self,
        request: Request<()>,
    ) -> Result<Response<api::WorkspaceNameLookupResponse>, Status> {
        let caller = self.caller(&request).await?;
        // Modal's client reads `username` as the workspace's name: `modal
        // token set` names the profile after it, `modal profile list` and
        // `Workspace.from_context().name` show it. The token's name is not
        // that.
        let workspace = caller.workspace().name.clone();
        Ok(Response::new(api::WorkspaceNameLookupResponse {
            workspace_name: workspace.clone(),
            username: workspace,
        }))
    }

    async fn token_info_get(
        &self,
        request: Request<api::TokenInfoGetRequest>,
    ) -> Result<Response<api::TokenInfoGetResponse>, Status> {
        let caller = self.caller(&request).await?;
        Ok(Response::new(convert::token_info(&caller)))
    }

    // Sandboxes (`latchkey serve --sandboxes`): see `latchkey_sandbox`.

    async fn app_get_or_create(
        &self,
        request: Request<api::AppGetOrCreateRequest>,
    ) -> Result<Response<api::AppGetOrCreateResponse>, Status> {
        let (caller, sandboxes) = self.sandbox_caller(&request, "AppGetOrCreate").await?;
        sandboxes
            .app_get_or_create(&self.service, &caller, request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn image_get_or_create(
        &self,
        request: Request<api::ImageGetOrCreateRequest>,
    ) -> Result<Response<api::ImageGetOrCreateResponse>, Status> {
        if self.functions.is_some() {
            let (_, functions) = self.function_caller(&request, "ImageGetOrCreate").await?;
            return Ok(Response::new(
                functions.image_get_or_create(request.get_ref()),
            ));
        }
        let (_, sandboxes) = self.sandbox_caller(&request, "ImageGetOrCreate").await?;
        Ok(Response::new(
            sandboxes.image_get_or_create(request.get_ref()),
        ))
    }

    async fn auth_token_get(
        &self,
        request: Request<api::AuthTokenGetRequest>,
    ) -> Result<Response<api::AuthTokenGetResponse>, Status> {
        let (caller, sandboxes) = self.sandbox_caller(&request, "AuthTokenGet").await?;
        Ok(Response::new(sandboxes.auth_token_get(&caller)))
    }

    async fn sandbox_create_v2(
        &self,
        request: Request<api::SandboxCreateV2Request>,
    ) -> Result<Response<api::SandboxCreateV2Response>, Status> {
        let (caller, sandboxes) = self.sandbox_caller(&request, "SandboxCreateV2").await?;
        let origin = sandbox::origin(&request);
        sandboxes
            .sandbox_create_v2(&self.service, &caller, request.get_ref(), origin)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn sandbox_wait_v2(
        &self,
        request: Request<api::SandboxWaitRequest>,
    ) -> Result<Response<api::SandboxWaitResponse>, Status> {
        let (caller, sandboxes) = self.sandbox_caller(&request, "SandboxWaitV2").await?;
        sandboxes
            .sandbox_wait_v2(&caller, request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn sandbox_terminate_v2(
        &self,
        request: Request<api::SandboxTerminateRequest>,
    ) -> Result<Response<api::SandboxTerminateResponse>, Status> {
        let (caller, sandboxes) = self.sandbox_caller(&request, "SandboxTerminateV2").await?;
        sandboxes
            .sandbox_terminate_v2(&caller, request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn sandbox_get_task_id_v2(
        &self,
        request: Request<api::SandboxGetTaskIdRequest>,
    ) -> Result<Response<api::SandboxGetTaskIdResponse>, Status> {
        let (caller, sandboxes) = self.sandbox_caller(&request, "SandboxGetTaskIdV2").await?;
        sandboxes
            .sandbox_get_task_id_v2(&caller, request.get_ref())
            .map(Response::new)
            .map_err(status)
    }

    async fn sandbox_get_command_router_access(
        &self,
        request: Request<api::SandboxGetCommandRouterAccessRequest>,
    ) -> Result<Response<api::SandboxGetCommandRouterAccessResponse>, Status> {
        let (caller, sandboxes) = self
            .sandbox_caller(&request, "SandboxGetCommandRouterAccess")
            .await?;
        sandboxes
            .sandbox_get_command_router_access(
                &caller,
                request.get_ref(),
                sandbox::origin(&request),
            )
            .map(Response::new)
            .map_err(status)
    }

    // Functions (`latchkey serve --functions`): see `latchkey_functions`.

    async fn app_create(
        &self,
        request: Request<api::AppCreateRequest>,
    ) -> Result<Response<api::AppCreateResponse>, Status> {
        let (caller, functions) = self.function_caller(&request, "AppCreate").await?;
        functions
            .app_create(&caller, request.get_ref())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn app_heartbeat(
        &self,
        request: Request<api::AppHeartbeatRequest>,
    ) -> Result<Response<()>, Status> {
        let (caller, functions) = self.function_caller(&request, "AppHeartbeat").await?;
        functions
            .app_heartbeat(&caller, &request.get_ref().app_id)
            .map(Response::new)
            .map_err(status)
    }

    type AppGetLogsStream = functions::LogStream;

    async fn app_get_logs(
        &self,
        request: Request<api::AppGetLogsRequest>,
    ) -> Result<Response<Self::AppGetLogsStream>, Status> {
        let (caller, functions) = self.function_caller(&request, "AppGetLogs").await?;
        Ok(Response::new(functions::log_stream(
            functions.clone(),
            caller,
            request.get_ref(),
        )))
    }

    async fn app_client_disconnect(
        &self,
        request: Request<api::AppClientDisconnectRequest>,
    ) -> Result<Response<()>, Status> {
        let (caller, functions) = self
            .function_caller(&request, "AppClientDisconnect")
            .await?;
        functions
            .app_client_disconnect(&caller, &request.get_ref().app_id)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn app_publish(
        &self,
        request: Request<api::AppPublishRequest>,
    ) -> Result<Response<api::AppPublishResponse>, Status> {
        let (caller, functions) = self.function_caller(&request, "AppPublish").await?;
        functions
            .app_publish(&caller, request.get_ref())
            .map(Response::new)
            .map_err(status)
    }

    async fn app_get_by_deployment_name(
        &self,
        request: Request<api::AppGetByDeploymentNameRequest>,
    ) -> Result<Response<api::AppGetByDeploymentNameResponse>, Status> {
        let (caller, functions) = self
            .function_caller(&request, "AppGetByDeploymentName")
            .await?;
        functions
            .app_get_by_deployment_name(&caller, request.get_ref())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn app_get_layout(
        &self,
        request: Request<api::AppGetLayoutRequest>,
    ) -> Result<Response<api::AppGetLayoutResponse>, Status> {
        let (caller, functions) = self.function_caller(&request, "AppGetLayout").await?;
        functions
            .app_get_layout(&caller, &request.get_ref().app_id)
            .map(Response::new)
            .map_err(status)
    }

    async fn app_list(
        &self,
        request: Request<api::AppListRequest>,
    ) -> Result<Response<api::AppListResponse>, Status> {
        let (caller, functions) = self.function_caller(&request, "AppList").await?;
        functions
            .app_list(&caller, &request.get_ref().environment_name)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn app_stop(
        &self,
        request: Request<api::AppStopRequest>,
    ) -> Result<Response<()>, Status> {
        let (caller, functions) = self.function_caller(&request, "AppStop").await?;
        functions
            .app_stop(&caller, &request.get_ref().app_id)
            .map(Response::new)
            .map_err(status)
    }

    async fn function_precreate(
        &self,
        request: Request<api::FunctionPrecreateRequest>,
    ) -> Result<Response<api::FunctionPrecreateResponse>, Status> {
        let (caller, functions) = self.function_caller(&request, "FunctionPrecreate").await?;
        functions
            .function_precreate(&caller, request.get_ref())
            .map(Response::new)
            .map_err(status)
    }

    async fn function_create(
        &self,
        request: Request<api::FunctionCreateRequest>,
    ) -> Result<Response<api::FunctionCreateResponse>, Status> {
        let (caller, functions) = self.function_caller(&request, "FunctionCreate").await?;
        let version = functions::client_version(&request);
        functions
            .function_create(&caller, request.into_inner(), &version)
            .map(Response::new)
            .map_err(status)
    }

    async fn function_get(
        &self,
        request: Request<api::FunctionGetRequest>,
    ) -> Result<Response<api::FunctionGetResponse>, Status> {
        let (caller, functions) = self.function_caller(&request, "FunctionGet").await?;
        functions
            .function_get(&caller, request.get_ref())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn function_map(
        &self,
        request: Request<api::FunctionMapRequest>,
    ) -> Result<Response<api::FunctionMapResponse>, Status> {
        let (caller, functions) = self.function_caller(&request, "FunctionMap").await?;
        let version = functions::client_version(&request);
        functions
            .function_map(&caller, request.into_inner(), &version)
            .map(Response::new)
            .map_err(status)
    }

    async fn function_put_inputs(
        &self,
        request: Request<api::FunctionPutInputsRequest>,
    ) -> Result<Response<api::FunctionPutInputsResponse>, Status> {
        let (caller, functions) = self.function_caller(&request, "FunctionPutInputs").await?;
        functions
            .function_put_inputs(&caller, request.into_inner())
            .map(Response::new)
            .map_err(status)
    }

    async fn function_get_outputs(
        &self,
        request: Request<api::FunctionGetOutputsRequest>,
    ) -> Result<Response<api::FunctionGetOutputsResponse>, Status> {
        let (caller, functions) = self.function_caller(&request, "FunctionGetOutputs").await?;
        functions
            .function_get_outputs(&caller, request.get_ref())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn function_finish_inputs(
        &self,
        request: Request<api::FunctionFinishInputsRequest>,
    ) -> Result<Response<()>, Status> {
        let (caller, functions) = self
            .function_caller(&request, "FunctionFinishInputs")
            .await?;
        functions
            .function_finish_inputs(&caller, request.get_ref())
            .map(Response::new)
            .map_err(status)
    }

    async fn function_call_cancel(
        &self,
        request: Request<api::FunctionCallCancelRequest>,
    ) -> Result<Response<()>, Status> {
        let (caller, functions) = self.function_caller(&request, "FunctionCallCancel").await?;
        functions
            .function_call_cancel(&caller, request.get_ref())
            .map(Response::new)
            .map_err(status)
    }

    async fn mount_get_or_create(
        &self,
        request: Request<api::MountGetOrCreateRequest>,
    ) -> Result<Response<api::MountGetOrCreateResponse>, Status> {
        let (caller, functions) = self.function_caller(&request, "MountGetOrCreate").await?;
        functions
            .mount_get_or_create(&caller, request.get_ref())
            .map(Response::new)
            .map_err(status)
    }

    async fn mount_batched_check_existence(
        &self,
        request: Request<api::MountBatchedCheckExistenceRequest>,
    ) -> Result<Response<api::MountBatchedCheckExistenceResponse>, Status> {
        let (caller, functions) = self
            .function_caller(&request, "MountBatchedCheckExistence")
            .await?;
        functions
            .mount_missing(&caller, &request.get_ref().sha256_hex_hashes)
            .map(|missing| {
                Response::new(api::MountBatchedCheckExistenceResponse {
                    missing_sha256_hex_hashes: missing,
                    ..Default::default()
                })
            })
            .map_err(status)
    }

    async fn mount_put_file(
        &self,
        request: Request<api::MountPutFileRequest>,
    ) -> Result<Response<api::MountPutFileResponse>, Status> {
        let (caller, functions) = self.function_caller(&request, "MountPutFile").await?;
        functions
            .mount_put_file(&caller, request.into_inner())
            .map(Response::new)
            .map_err(status)
    }

    // The container side: calls through a task's socket.

    async fn container_hello(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let (task, functions) = functions::task_of(self, &request, "ContainerHello")?;
        functions
            .container_alive(&task)
            .map(Response::new)
            .map_err(status)
    }

    async fn container_heartbeat(
        &self,
        request: Request<api::ContainerHeartbeatRequest>,
    ) -> Result<Response<api::ContainerHeartbeatResponse>, Status> {
        let (task, functions) = functions::task_of(self, &request, "ContainerHeartbeat")?;
        functions
            .container_alive(&task)
            .map(|()| Response::new(api::ContainerHeartbeatResponse::default()))
            .map_err(status)
    }

    async fn function_get_inputs(
        &self,
        request: Request<api::FunctionGetInputsRequest>,
    ) -> Result<Response<api::FunctionGetInputsResponse>, Status> {
        let (task, functions) = functions::task_of(self, &request, "FunctionGetInputs")?;
        functions
            .function_get_inputs(&task)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn function_put_outputs(
        &self,
        request: Request<api::FunctionPutOutputsRequest>,
    ) -> Result<Response<()>, Status> {
        let (task, functions) = functions::task_of(self, &request, "FunctionPutOutputs")?;
        functions
            .function_put_outputs(&task, request.into_inner())
            .map(Response::new)
            .map_err(status)
    }

    async fn task_result(
        &self,
        request: Request<api::TaskResultRequest>,
    ) -> Result<Response<()>, Status> {
        let (task, functions) = functions::task_of(self, &request, "TaskResult")?;
        functions
            .task_result(&task, request.into_inner())
            .map(Response::new)
            .map_err(status)
    }

    async fn blob_create(
        &self,
        request: Request<api::BlobCreateRequest>,
    ) -> Result<Response<api::BlobCreateResponse>, Status> {
        let (workspace, functions) = self.blob_workspace(&request, "BlobCreate").await?;
        functions
            .blob_create(&workspace, request.get_ref())
            .map(Response::new)
            .map_err(status)
    }

    async fn blob_get(
        &self,
        request: Request<api::BlobGetRequest>,
    ) -> Result<Response<api::BlobGetResponse>, Status> {
        let (workspace, functions) = self.blob_workspace(&request, "BlobGet").await?;
        functions
            .blob_get(&workspace, &request.get_ref().blob_id)
            .map(Response::new)
            .map_err(status)
    }
}

#[cfg(test)]
mod declared_tests {
    #[test]
    fn the_rpcs_we_serve_are_declared_and_others_not() {
        assert!(super::declared(
            "/modal.client.ModalClient/SecretGetOrCreate"
        ));
        assert!(super::declared(
            "/modal.task_command_router.TaskCommandRouter/SandboxStdinWriteV2"
        ));
        assert!(super::declared("/modal.client.ModalClient/AppCreate"));
        assert!(!super::declared(
            "/modal.client.ModalClient/AppDeploymentHistory"
        ));
    }
}
