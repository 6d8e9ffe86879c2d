//! The `modal.client.ModalClient` RPCs of Modal's V2 sandbox flow, over the
//! service layer (authentication, permissions, secrets) and the manager.
//!
//! The gRPC adapter authenticates the caller and hands the request here.
//! These RPCs are authenticated like every other one, by the token headers;
//! the `x-modal-auth-token` the client adds (from `AuthTokenGet`) is not a
//! credential here. Role and environment checks are the service layer's
//! (`Caller::may_sandbox`, `Caller::may_see_sandbox`).

use std::{sync::Arc, time::Duration};

use latchkey_core::{rules, time::micros_to_secs, time::now_micros, Error};
use latchkey_proto::api::{self, ObjectCreationType};
use latchkey_service::{
    sandboxes::{SandboxAction, SandboxSecret},
    Caller, Service,
};
use sha2::{Digest, Sha256};

use super::{
    process::{Launch, SandboxEnv},
    token::{self, Claims},
    Outcome, Sandbox, Sandboxes, Spawn, DEFAULT_TIMEOUT, MAX_TIMEOUT,
};

/// Lifetime of the tokens `AuthTokenGet` hands out.
const CLIENT_TOKEN_TTL: u64 = 60 * 60;
/// Lifetime of a command router token; the client fetches a new one with
/// `SandboxGetCommandRouterAccess` when it expires, which checks the caller's
/// API token again (so a revoked token loses access within this time).
const ROUTER_TOKEN_TTL: u64 = 10 * 60;
/// Longest long poll of `SandboxWaitV2` (the client asks for 10 s).
const MAX_WAIT: Duration = Duration::from_secs(55);
/// An app, as `App.lookup(name, create_if_missing=True)` makes it. Apps are
/// kept in memory only; their ids are derived from the workspace, the
/// environment and the name, so they are the same after a restart.
#[derive(Debug, Clone)]
pub(crate) struct App {
    workspace_id: String,
    environment_name: String,
    name: String,
    created_at: f64,
    /// The last lookup: when the server holds
    /// [`SandboxConfig::max_apps`](crate::SandboxConfig::max_apps), the app
    /// looked up least recently that holds no sandbox makes room.
    last_used: std::time::Instant,
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

fn required<T>(value: Option<T>, what: &str) -> Result<T, Error> {
    value.ok_or_else(|| Error::invalid(format!("The request has no {what}")))
}

impl Sandboxes {
    fn apps(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, App>> {
        self.inner
            .apps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `app`, making room when the server holds
    /// [`SandboxConfig::max_apps`](crate::SandboxConfig::max_apps): the app
    /// looked up least recently among those that hold no sandbox goes (its
    /// id is derived from its name, so a later lookup makes it again as it
    /// was).
    fn add_app(&self, app_id: &str, app: App) -> Result<(), Error> {
        let in_use: std::collections::HashSet<String> =
            self.registry().values().map(|s| s.app_id.clone()).collect();
        let mut apps = self.apps();
        if !apps.contains_key(app_id) && apps.len() >= self.inner.config.max_apps {
            let unused = apps
                .iter()
                .filter(|(id, _)| !in_use.contains(*id))
                .min_by_key(|(_, app)| app.last_used)
                .map(|(id, _)| id.clone());
            let Some(unused) = unused else {
                return Err(Error::resource_exhausted(format!(
                    "This server holds {} apps, its limit, and each holds a sandbox",
                    self.inner.config.max_apps
                )));
            };
            apps.remove(&unused);
        }
        apps.insert(app_id.to_owned(), app);
        Ok(())
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

    /// `AppGetOrCreate`: apps hold sandboxes and exist in memory only.
    pub async fn app_get_or_create(
        &self,
        service: &Service,
        caller: &Caller,
        req: api::AppGetOrCreateRequest,
    ) -> Result<api::AppGetOrCreateResponse, Error> {
        rules::check_app_name(&req.app_name)?;
        let create = match ObjectCreationType::try_from(req.object_creation_type) {
            Ok(ObjectCreationType::Unspecified) => false,
            Ok(ObjectCreationType::CreateIfMissing) => true,
            _ => {
                return Err(Error::invalid(format!(
                    "Unsupported object_creation_type {} for an App",
                    req.object_creation_type
                )))
            }
        };
        let env = service.environment(caller, &req.environment_name).await?;
        let app_id = derived_id(
            latchkey_core::ids::APP,
            &[
                caller.workspace_id().as_bytes(),
                env.id.as_bytes(),
                req.app_name.as_bytes(),
            ],
        );
        let app = match self.apps().get_mut(&app_id) {
            Some(app) => {
                app.last_used = std::time::Instant::now();
                Some(app.clone())
            }
            None => None,
        };
        let app = match app {
            Some(app) => app,
            None if !create => {
                return Err(Error::not_found(format!(
                    "App '{}' not found in environment '{}'",
                    req.app_name, env.name
                )))
            }
            None => {
                // An app exists to hold sandboxes: making one is developer
                // work, like starting a sandbox.
                caller.may_sandbox(SandboxAction::CreateApp)?;
                let app = App {
                    workspace_id: caller.workspace_id().to_owned(),
                    environment_name: env.name,
                    name: req.app_name.clone(),
                    created_at: micros_to_secs(now_micros()),
                    last_used: std::time::Instant::now(),
                };
                self.add_app(&app_id, app.clone())?;
                app
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
    pub fn image_get_or_create(
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

    /// `AuthTokenGet`: a token the client sends along, which nothing checks.
    pub fn auth_token_get(&self, caller: &Caller) -> api::AuthTokenGetResponse {
        api::AuthTokenGetResponse {
            token: self.sign(
                token::AUDIENCE_CLIENT,
                &caller.token().id,
                caller,
                CLIENT_TOKEN_TTL,
            ),
        }
    }

    /// `origin`: the scheme and authority the client reached this server at
    /// (e.g. `http://127.0.0.1:7420`), where it can reach the router too.
    fn router_access(
        &self,
        caller: &Caller,
        sandbox: &Sandbox,
        origin: Option<&str>,
    ) -> Result<api::CommandRouterAccess, Error> {
        let url = match (&self.inner.config.router_url, origin) {
            (Some(url), _) => url.clone(),
            (None, Some(origin)) => origin.to_owned(),
            (None, None) => {
                return Err(Error::failed_precondition(
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

    /// `SandboxCreateV2`; `origin` as for the router's address (see
    /// [`Sandboxes::sandbox_get_command_router_access`]).
    pub async fn sandbox_create_v2(
        &self,
        service: &Service,
        caller: &Caller,
        req: &api::SandboxCreateV2Request,
        origin: Option<&str>,
    ) -> Result<api::SandboxCreateV2Response, Error> {
        caller.may_sandbox(SandboxAction::Create)?;
        let app = self
            .apps()
            .get(&req.app_id)
            .filter(|a| a.workspace_id == caller.workspace_id())
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!(
                    "App '{}' not found (look it up again with modal.App.lookup)",
                    echo(&req.app_id)
                ))
            })?;
        caller.may_see_sandbox(&app.environment_name)?;
        let definition = required(req.definition.as_ref(), "sandbox definition")?;
        if !req.tags.is_empty() {
            return Err(Error::invalid(
                "latchkey sandboxes do not support tags (Sandbox.create(tags=...))",
            ));
        }
        let (launch, timeout) = launch_of(definition)?;
        let secrets = service
            .sandbox_secrets(caller, secret_sources(req, definition)?)
            .await?;
        let named = secrets.named;
        let launch = Launch {
            env: SandboxEnv(secrets.env),
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
        let access = self.router_access(caller, &sandbox, origin)?;
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
    fn sandbox_for(&self, caller: &Caller, id: &str) -> Result<Arc<Sandbox>, Error> {
        let sandbox = self.get(caller.workspace_id(), id)?;
        caller.may_see_sandbox(&sandbox.environment_name)?;
        Ok(sandbox)
    }

    /// `SandboxWaitV2`: a long poll of at most 55 s.
    pub async fn sandbox_wait_v2(
        &self,
        caller: &Caller,
        req: api::SandboxWaitRequest,
    ) -> Result<api::SandboxWaitResponse, Error> {
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

    /// `SandboxTerminateV2`: answers once the sandbox is gone.
    pub async fn sandbox_terminate_v2(
        &self,
        caller: &Caller,
        req: api::SandboxTerminateRequest,
    ) -> Result<api::SandboxTerminateResponse, Error> {
        caller.may_sandbox(SandboxAction::Terminate)?;
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

    /// `SandboxGetTaskIdV2`.
    pub fn sandbox_get_task_id_v2(
        &self,
        caller: &Caller,
        req: &api::SandboxGetTaskIdRequest,
    ) -> Result<api::SandboxGetTaskIdResponse, Error> {
        let sandbox = self.sandbox_for(caller, &req.sandbox_id)?;
        Ok(api::SandboxGetTaskIdResponse {
            task_id: Some(sandbox.task_id.clone()),
            task_result: sandbox.outcome().map(|o| o.to_result()),
        })
    }

    /// `SandboxGetCommandRouterAccess`: a fresh router token. `origin` is
    /// the scheme and authority the client reached this server at, the
    /// router's address unless `--sandbox-router-url` names one.
    pub fn sandbox_get_command_router_access(
        &self,
        caller: &Caller,
        req: &api::SandboxGetCommandRouterAccessRequest,
        origin: Option<&str>,
    ) -> Result<api::SandboxGetCommandRouterAccessResponse, Error> {
        use api::sandbox_get_command_router_access_request::Target;
        caller.may_sandbox(SandboxAction::Attach)?;
        let sandbox = match &req.target {
            Some(Target::SandboxId(id)) => self.sandbox_for(caller, id)?,
            Some(Target::TaskId(task_id)) => {
                let sandbox = self
                    .by_task(task_id)
                    .filter(|s| s.workspace_id == caller.workspace_id())
                    .ok_or_else(|| {
                        Error::not_found(format!("Task '{}' not found", echo(task_id)))
                    })?;
                self.sandbox_for(caller, &sandbox.id)?
            }
            None => return Err(Error::invalid("Name a sandbox_id or a task_id")),
        };
        let access = self.router_access(caller, &sandbox, origin)?;
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
fn launch_of(def: &api::Sandbox) -> Result<(Launch, Duration), Error> {
    let unsupported = |what: &str| {
        Err(Error::invalid(format!(
            "latchkey sandboxes do not support {what}"
        )))
    };
    if def.entrypoint_args.is_empty() {
        return Err(Error::invalid(
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
    if def.idle_timeout_secs.is_some() {
        // Nothing here could tell idle from busy: say so rather than keep
        // a sandbox the caller believes will end.
        return unsupported("idle_timeout (use timeout)");
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
        Some(Err(_)) => return Err(Error::invalid("Unknown network access type")),
    };
    let timeout = match def.timeout_secs {
        0 => DEFAULT_TIMEOUT,
        secs => Duration::from_secs(secs.into()),
    };
    if timeout > MAX_TIMEOUT {
        return Err(Error::invalid(format!(
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

/// The sources of the sandbox's variables, in the order they apply (a
/// later one overriding an earlier one key by key).
///
/// The client lists every secret in `secret_sources` (stored ones by id,
/// `from_dict` and the like inline, then `env=`); an older request without
/// them names stored secrets in `definition.secret_ids`. Required keys of
/// `Secret.from_name` were checked when the client looked the secret up,
/// before this request.
fn secret_sources<'a>(
    req: &'a api::SandboxCreateV2Request,
    def: &'a api::Sandbox,
) -> Result<Vec<SandboxSecret<'a>>, Error> {
    use api::secret_source::Source as Wire;
    let inline = |map: &std::collections::HashMap<String, String>| {
        SandboxSecret::Inline(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    };
    let mut sources: Vec<SandboxSecret<'a>> = if req.secret_sources.is_empty() {
        def.secret_ids
            .iter()
            .map(|id| SandboxSecret::Stored(id))
            .collect()
    } else {
        req.secret_sources
            .iter()
            .map(|s| match &s.source {
                Some(Wire::SecretId(id)) => Ok(SandboxSecret::Stored(id)),
                Some(Wire::Env(map)) => Ok(inline(&map.contents)),
                None => Err(Error::invalid("A secret source names no secret")),
            })
            .collect::<Result<_, _>>()?
    };
    sources.extend(req.ephemeral_secrets.iter().map(|m| inline(&m.contents)));
    sources.extend(
        def.environment_variables
            .iter()
            .map(|m| inline(&m.contents)),
    );
    Ok(sources)
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
                launch_of(&bad).unwrap_err().kind(),
                latchkey_core::ErrorKind::Invalid
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
