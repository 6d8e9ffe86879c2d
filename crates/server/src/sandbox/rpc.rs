//! The `modal.client.ModalClient` RPCs of Modal's V2 sandbox flow, over the
//! service layer (authentication, permissions, secrets) and the manager.
//!
//! `grpc::ModalApi` authenticates the caller and hands the request here.
//! These RPCs are authenticated like every other one, by the token headers;
//! the `x-modal-auth-token` the client adds (from `AuthTokenGet`) is not a
//! credential here.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{extract::Request as HttpRequest, middleware::Next, response::Response};
use latchkey_core::{rules, time::micros_to_secs, time::now_micros, EnvDict, Error};
use latchkey_proto::api::{self, ObjectCreationType};
use latchkey_service::{Caller, Role, Service};
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use super::{
    process::{Launch, SandboxEnv},
    token::{self, Claims},
    Outcome, Sandbox, Sandboxes, Spawn, DEFAULT_TIMEOUT, MAX_TIMEOUT,
};
use crate::grpc::status;

/// Lifetime of the tokens `AuthTokenGet` hands out.
const CLIENT_TOKEN_TTL: u64 = 60 * 60;
/// Lifetime of a command router token; the client fetches a new one with
/// `SandboxGetCommandRouterAccess` when it expires, which checks the caller's
/// API token again (so a revoked token loses access within this time).
const ROUTER_TOKEN_TTL: u64 = 10 * 60;
/// Longest long poll of `SandboxWaitV2` (the client asks for 10 s).
const MAX_WAIT: Duration = Duration::from_secs(55);
/// Apps held in memory at most (they are a name and an id each).
const MAX_APPS: usize = 10_000;

/// An app, as `App.lookup(name, create_if_missing=True)` makes it. Apps are
/// kept in memory only; their ids are derived from the workspace, the
/// environment and the name, so they are the same after a restart.
#[derive(Debug, Clone)]
pub(crate) struct App {
    workspace_id: String,
    environment_name: String,
    name: String,
    created_at: f64,
}

/// The scheme and authority a client reached this server at, e.g.
/// `http://127.0.0.1:7420`: where it can reach the command router too.
#[derive(Debug, Clone)]
pub(crate) struct RequestOrigin(String);

/// The RPCs that answer with the command router's address, from
/// [`RequestOrigin`].
const NEED_ORIGIN: [&str; 2] = [
    "/modal.client.ModalClient/SandboxCreateV2",
    "/modal.client.ModalClient/SandboxGetCommandRouterAccess",
];

/// Middleware: remembers the origin of the requests that need it, for
/// [`RequestOrigin`] (every other request passes untouched).
pub(crate) async fn remember_origin(mut request: HttpRequest, next: Next) -> Response {
    if !NEED_ORIGIN.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let uri = request.uri();
    let authority = uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
        request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    });
    if let Some(authority) = authority {
        let scheme = uri.scheme_str().unwrap_or("http").to_owned();
        request
            .extensions_mut()
            .insert(RequestOrigin(format!("{scheme}://{authority}")));
    }
    next.run(request).await
}

fn echo(s: &str) -> String {
    rules::echo(s)
}

/// A hex digest prefix of `parts`, as the 22 alphanumerics of an id.
fn derived_id(prefix: &str, parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(11).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

fn check_app_name(name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "Invalid App name: '{}': use 1 to 64 letters, digits, '.', '_' and '-'",
            echo(name)
        )))
    }
}

fn required<T>(value: Option<T>, what: &str) -> Result<T, Status> {
    value.ok_or_else(|| Status::invalid_argument(format!("The request has no {what}")))
}

impl Sandboxes {
    fn apps(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, App>> {
        self.inner
            .apps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sign(&self, audience: &str, subject: &str, caller: &Caller, ttl: u64) -> String {
        let now = token::unix_now();
        self.inner.signer.sign(&Claims {
            aud: audience.to_owned(),
            sub: subject.to_owned(),
            wsp: caller.workspace_id().to_owned(),
            iat: now,
            exp: now + ttl,
        })
    }

    pub(crate) async fn app_get_or_create(
        &self,
        service: &Service,
        caller: &Caller,
        req: api::AppGetOrCreateRequest,
    ) -> Result<api::AppGetOrCreateResponse, Status> {
        check_app_name(&req.app_name)?;
        let create = match ObjectCreationType::try_from(req.object_creation_type) {
            Ok(ObjectCreationType::Unspecified) => false,
            Ok(ObjectCreationType::CreateIfMissing) => true,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "Unsupported object_creation_type {} for an App",
                    req.object_creation_type
                )))
            }
        };
        let env = service
            .environment(caller, &req.environment_name)
            .await
            .map_err(status)?;
        let app_id = derived_id(
            latchkey_core::ids::APP,
            &[
                caller.workspace_id().as_bytes(),
                env.id.as_bytes(),
                req.app_name.as_bytes(),
            ],
        );
        let app = {
            let mut apps = self.apps();
            match apps.get(&app_id) {
                Some(app) => app.clone(),
                None if !create => {
                    return Err(Status::not_found(format!(
                        "App '{}' not found in environment '{}'",
                        req.app_name, env.name
                    )))
                }
                None => {
                    if apps.len() >= MAX_APPS {
                        return Err(Status::resource_exhausted(format!(
                            "This server holds {MAX_APPS} apps, its limit"
                        )));
                    }
                    let app = App {
                        workspace_id: caller.workspace_id().to_owned(),
                        environment_name: env.name,
                        name: req.app_name.clone(),
                        created_at: micros_to_secs(now_micros()),
                    };
                    apps.insert(app_id.clone(), app.clone());
                    app
                }
            }
        };
        Ok(api::AppGetOrCreateResponse {
            app_id: app_id.clone(),
            handle_metadata: Some(api::AppHandleMetadata {
                description: app.name,
                app_id,
                environment_name: app.environment_name,
                lifecycle: Some(api::AppLifecycle {
                    app_state: api::AppState::Deployed as i32,
                    created_at: app.created_at,
                    created_by: caller.token().name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
    }

    /// Images are not pulled or built: every image "exists", with an id
    /// derived from its definition.
    pub(crate) fn image_get_or_create(
        &self,
        req: &api::ImageGetOrCreateRequest,
    ) -> api::ImageGetOrCreateResponse {
        let definition = req
            .image
            .as_ref()
            .map(latchkey_proto::prost::Message::encode_to_vec)
            .unwrap_or_default();
        api::ImageGetOrCreateResponse {
            image_id: derived_id("im-", &[&definition, req.builder_version.as_bytes()]),
            result: Some(api::GenericResult {
                status: api::generic_result::GenericStatus::Success as i32,
                ..Default::default()
            }),
            metadata: None,
        }
    }

    pub(crate) fn auth_token_get(&self, caller: &Caller) -> api::AuthTokenGetResponse {
        api::AuthTokenGetResponse {
            token: self.sign(
                token::AUDIENCE_CLIENT,
                &caller.token().id,
                caller,
                CLIENT_TOKEN_TTL,
            ),
        }
    }

    fn router_access<T>(
        &self,
        caller: &Caller,
        sandbox: &Sandbox,
        request: &Request<T>,
    ) -> Result<api::CommandRouterAccess, Status> {
        let url = match (
            &self.inner.config.router_url,
            request.extensions().get::<RequestOrigin>(),
        ) {
            (Some(url), _) => url.clone(),
            (None, Some(origin)) => origin.0.clone(),
            (None, None) => {
                return Err(Status::failed_precondition(
                    "Cannot tell the address clients reach this server at; \
                     start it with --sandbox-router-url URL",
                ))
            }
        };
        Ok(api::CommandRouterAccess {
            jwt: self.sign(
                token::AUDIENCE_ROUTER,
                &sandbox.task_id,
                caller,
                ROUTER_TOKEN_TTL,
            ),
            url,
        })
    }

    pub(crate) async fn sandbox_create_v2(
        &self,
        service: &Service,
        caller: &Caller,
        request: Request<api::SandboxCreateV2Request>,
    ) -> Result<api::SandboxCreateV2Response, Status> {
        caller
            .require(Role::Developer, "create sandboxes")
            .map_err(status)?;
        let req = request.get_ref();
        let app = self
            .apps()
            .get(&req.app_id)
            .filter(|a| a.workspace_id == caller.workspace_id())
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "App '{}' not found (look it up again with modal.App.lookup)",
                    echo(&req.app_id)
                ))
            })?;
        caller
            .check_environment(&app.environment_name)
            .map_err(status)?;
        let definition = required(req.definition.as_ref(), "sandbox definition")?;
        let (launch, timeout) = launch_of(definition)?;
        let (env, named) = resolve_secrets(service, caller, req, definition).await?;
        let launch = Launch {
            env: SandboxEnv(env.into_iter().collect()),
            ..launch
        };
        let sandbox = self.spawn(Spawn {
            workspace_id: caller.workspace_id().to_owned(),
            environment_name: app.environment_name.clone(),
            app_id: req.app_id.clone(),
            name: definition.name.clone(),
            launch,
            timeout,
        })?;
        if !named.is_empty() {
            // The values have reached a process: record it. The process runs
            // already, so a failure here is only logged.
            if let Err(e) = service.mark_used(caller, &named).await {
                tracing::warn!(sandbox = %sandbox.id, error = %e, "cannot record that secrets were used");
            }
        }
        let access = self.router_access(caller, &sandbox, &request)?;
        Ok(api::SandboxCreateV2Response {
            sandbox_id: sandbox.id.clone(),
            tunnels: Vec::new(),
            task_id: sandbox.task_id.clone(),
            metadata: Some(handle_metadata(&sandbox)),
            command_router_access: Some(access),
            sandbox_token: String::new(),
        })
    }

    /// The sandbox `id`, if the caller may see it.
    fn sandbox_for(&self, caller: &Caller, id: &str) -> Result<Arc<Sandbox>, Status> {
        let sandbox = self.get(caller.workspace_id(), id)?;
        caller
            .check_environment(&sandbox.environment_name)
            .map_err(status)?;
        Ok(sandbox)
    }

    pub(crate) async fn sandbox_wait_v2(
        &self,
        caller: &Caller,
        req: api::SandboxWaitRequest,
    ) -> Result<api::SandboxWaitResponse, Status> {
        let sandbox = self.sandbox_for(caller, &req.sandbox_id)?;
        let timeout = if req.timeout.is_finite() && req.timeout > 0.0 {
            Duration::from_secs_f32(req.timeout).min(MAX_WAIT)
        } else {
            Duration::ZERO
        };
        sandbox.wait(timeout).await;
        Ok(api::SandboxWaitResponse {
            result: sandbox.outcome().map(|o| o.to_result()),
            metadata: Some(handle_metadata(&sandbox)),
        })
    }

    pub(crate) async fn sandbox_terminate_v2(
        &self,
        caller: &Caller,
        req: api::SandboxTerminateRequest,
    ) -> Result<api::SandboxTerminateResponse, Status> {
        caller
            .require(Role::Developer, "terminate sandboxes")
            .map_err(status)?;
        let sandbox = self.sandbox_for(caller, &req.sandbox_id)?;
        let existing = sandbox.terminate();
        if existing.is_none() {
            // Answer once it is gone, so that what follows sees it ended.
            sandbox.wait(Duration::from_secs(10)).await;
        }
        Ok(api::SandboxTerminateResponse {
            existing_result: existing.map(|o| o.to_result()),
        })
    }

    pub(crate) fn sandbox_get_task_id_v2(
        &self,
        caller: &Caller,
        req: &api::SandboxGetTaskIdRequest,
    ) -> Result<api::SandboxGetTaskIdResponse, Status> {
        let sandbox = self.sandbox_for(caller, &req.sandbox_id)?;
        Ok(api::SandboxGetTaskIdResponse {
            task_id: Some(sandbox.task_id.clone()),
            task_result: sandbox.outcome().map(|o| o.to_result()),
        })
    }

    pub(crate) fn sandbox_get_command_router_access(
        &self,
        caller: &Caller,
        request: &Request<api::SandboxGetCommandRouterAccessRequest>,
    ) -> Result<api::SandboxGetCommandRouterAccessResponse, Status> {
        use api::sandbox_get_command_router_access_request::Target;
        caller
            .require(Role::Developer, "use sandboxes")
            .map_err(status)?;
        let sandbox = match &request.get_ref().target {
            Some(Target::SandboxId(id)) => self.sandbox_for(caller, id)?,
            Some(Target::TaskId(task_id)) => {
                let sandbox = self
                    .by_task(task_id)
                    .filter(|s| s.workspace_id == caller.workspace_id())
                    .ok_or_else(|| {
                        Status::not_found(format!("Task '{}' not found", echo(task_id)))
                    })?;
                self.sandbox_for(caller, &sandbox.id)?
            }
            None => return Err(Status::invalid_argument("Name a sandbox_id or a task_id")),
        };
        let access = self.router_access(caller, &sandbox, request)?;
        Ok(api::SandboxGetCommandRouterAccessResponse {
            jwt: access.jwt,
            url: access.url,
            worker_ipv4_address: String::new(),
        })
    }
}

fn handle_metadata(sandbox: &Arc<Sandbox>) -> api::SandboxHandleMetadata {
    api::SandboxHandleMetadata {
        result: sandbox.outcome().as_ref().map(Outcome::to_result),
        app_id: sandbox.app_id.clone(),
    }
}

/// The command, working directory, network and timeout of a definition;
/// what latchkey cannot honour is refused rather than ignored.
fn launch_of(def: &api::Sandbox) -> Result<(Launch, Duration), Status> {
    let unsupported = |what: &str| {
        Err(Status::invalid_argument(format!(
            "latchkey sandboxes do not support {what}"
        )))
    };
    if def.entrypoint_args.is_empty() {
        return Err(Status::invalid_argument(
            "A sandbox needs a command: latchkey does not run images, so pass the command \
             to Sandbox.create(\"cmd\", \"arg\", ...)",
        ));
    }
    if !def.volume_mounts.is_empty()
        || !def.nfs_mounts.is_empty()
        || !def.cloud_bucket_mounts.is_empty()
    {
        return unsupported("volumes, network file systems or cloud bucket mounts");
    }
    if !def.mount_ids.is_empty() {
        return unsupported("mounts or local files added to the image");
    }
    if matches!(&def.open_ports_oneof, Some(api::sandbox::OpenPortsOneof::OpenPorts(p)) if !p.ports.is_empty())
    {
        return unsupported("open ports (tunnels)");
    }
    if def.pty_info.is_some() {
        return unsupported("a PTY");
    }
    if def.proxy_id.as_deref().is_some_and(|p| !p.is_empty())
        || def.experimental_outbound_policy.is_some()
        || def.outbound_policy.is_some()
    {
        return unsupported("proxies or outbound policies");
    }
    if def.include_oidc_identity_token {
        return unsupported("OIDC identity tokens");
    }
    use api::network_access::NetworkAccessType;
    let access = def
        .network_access
        .as_ref()
        .map(|n| NetworkAccessType::try_from(n.network_access_type));
    let block_network = match access {
        None | Some(Ok(NetworkAccessType::Unspecified | NetworkAccessType::Open)) => {
            def.block_network
        }
        Some(Ok(NetworkAccessType::Blocked)) => true,
        Some(Ok(NetworkAccessType::Allowlist)) => return unsupported("outbound allowlists"),
        Some(Err(_)) => return Err(Status::invalid_argument("Unknown network access type")),
    };
    let timeout = match def.timeout_secs {
        0 => DEFAULT_TIMEOUT,
        secs => Duration::from_secs(secs.into()),
    };
    if timeout > MAX_TIMEOUT {
        return Err(Status::invalid_argument(format!(
            "A sandbox's timeout is at most {}s, got {}s",
            MAX_TIMEOUT.as_secs(),
            timeout.as_secs()
        )));
    }
    let launch = Launch {
        argv: def.entrypoint_args.clone(),
        env: SandboxEnv::default(),
        workdir: def.workdir.clone().filter(|w| !w.is_empty()),
        block_network,
    };
    Ok((launch, timeout))
}

/// One source of variables, in the order they apply.
enum Source<'a> {
    Stored(&'a str),
    Inline(&'a std::collections::HashMap<String, String>),
}

/// The sandbox's variables: its secrets in order, a later one overriding an
/// earlier one key by key, and the ids of the named secrets among them.
///
/// The client lists every secret in `secret_sources` (stored ones by id,
/// `from_dict` and the like inline, then `env=`); an older request without
/// them names stored secrets in `definition.secret_ids`. Required keys of
/// `Secret.from_name` were checked when the client looked the secret up,
/// before this request.
async fn resolve_secrets(
    service: &Service,
    caller: &Caller,
    req: &api::SandboxCreateV2Request,
    def: &api::Sandbox,
) -> Result<(EnvDict, Vec<String>), Status> {
    use api::secret_source::Source as Wire;
    let mut sources: Vec<Source<'_>> = if req.secret_sources.is_empty() {
        def.secret_ids.iter().map(|id| Source::Stored(id)).collect()
    } else {
        req.secret_sources
            .iter()
            .map(|s| match &s.source {
                Some(Wire::SecretId(id)) => Ok(Source::Stored(id)),
                Some(Wire::Env(map)) => Ok(Source::Inline(&map.contents)),
                None => Err(Status::invalid_argument("A secret source names no secret")),
            })
            .collect::<Result<_, _>>()?
    };
    sources.extend(
        req.ephemeral_secrets
            .iter()
            .map(|m| Source::Inline(&m.contents)),
    );
    sources.extend(
        def.environment_variables
            .iter()
            .map(|m| Source::Inline(&m.contents)),
    );

    let mut env = BTreeMap::new();
    let mut named = Vec::new();
    for source in sources {
        let contents: EnvDict = match source {
            Source::Stored(id) => {
                let secret = service.secret(caller, id).await.map_err(status)?;
                if secret.summary.name().is_some() && !named.iter().any(|n| n == id) {
                    named.push(id.to_owned());
                }
                secret.contents.clone()
            }
            Source::Inline(map) => {
                let dict: EnvDict = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                rules::check_env_dict(&dict).map_err(status)?;
                dict
            }
        };
        env.extend(contents);
    }
    if env.len() > 10_000 {
        return Err(status(Error::invalid(format!(
            "A sandbox's secrets hold {} variables; at most 10000",
            env.len()
        ))));
    }
    Ok((env, named))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_shaped_like_ids() {
        let a = derived_id("ap-", &[b"ws", b"en", b"x"]);
        assert_eq!(a, derived_id("ap-", &[b"ws", b"en", b"x"]));
        assert_ne!(a, derived_id("ap-", &[b"ws", b"enx", b""]));
        assert!(latchkey_core::ids::has_shape(&a, "ap-", 22), "{a}");
    }

    #[test]
    fn definitions_latchkey_cannot_honour_are_refused() {
        let ok = api::Sandbox {
            entrypoint_args: vec!["true".into()],
            timeout_secs: 5,
            ..Default::default()
        };
        let (launch, timeout) = launch_of(&ok).unwrap();
        assert_eq!(launch.argv, ["true"]);
        assert_eq!(timeout, Duration::from_secs(5));
        let (_, timeout) = launch_of(&api::Sandbox {
            timeout_secs: 0,
            ..ok.clone()
        })
        .unwrap();
        assert_eq!(timeout, DEFAULT_TIMEOUT);
        for bad in [
            api::Sandbox {
                entrypoint_args: vec![],
                ..ok.clone()
            },
            api::Sandbox {
                mount_ids: vec!["mo-1".into()],
                ..ok.clone()
            },
            api::Sandbox {
                timeout_secs: 100_000,
                ..ok.clone()
            },
            api::Sandbox {
                include_oidc_identity_token: true,
                ..ok.clone()
            },
            api::Sandbox {
                network_access: Some(api::NetworkAccess {
                    network_access_type: api::network_access::NetworkAccessType::Allowlist as i32,
                    ..Default::default()
                }),
                ..ok.clone()
            },
        ] {
            assert_eq!(
                launch_of(&bad).unwrap_err().code(),
                tonic::Code::InvalidArgument
            );
        }
        let blocked = api::Sandbox {
            network_access: Some(api::NetworkAccess {
                network_access_type: api::network_access::NetworkAccessType::Blocked as i32,
                ..Default::default()
            }),
            ..ok
        };
        assert!(launch_of(&blocked).unwrap().0.block_network);
    }
}
