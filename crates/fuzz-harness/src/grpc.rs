//! Modal's gRPC service: request messages decoded from the input are
//! handled by the real implementation (`latchkey_server::grpc::ModalApi`,
//! its `ModalClient` methods called directly with the credentials in the
//! request's metadata, as tonic would call them) over a real service on
//! SQLite in a temp dir, started once per process and put back as it was
//! after each input (see `support.rs`).
//!
//! Invariants, for every answer:
//! - no panic;
//! - never INTERNAL, UNKNOWN, UNAVAILABLE or DEADLINE_EXCEEDED: Modal's
//!   client retries those, so a deterministic error must not use them, and
//!   storage (the one cause of UNAVAILABLE) cannot fail here;
//! - a message under 1 KiB (it travels in an HTTP/2 header: long input is
//!   echoed shortened), showing no token secret (nor 12 characters of one)
//!   and no value the request set (checked by sending it again with the
//!   values disguised: see `support::disguise`);
//! - a write that succeeds leaves the store readable: the secret it made or
//!   changed reads back by id with the keys and values the request decided,
//!   a deleted one is gone, a new or renamed environment is found, a
//!   deleted one is not;
//! - `main`, to which a token is limited, is never renamed (checked when
//!   the store is put back).
//!
//! Input: up to 4 records `rpc auth len_lo len_hi message`: `rpc` (a byte)
//! picks one of [`RPCS`]; `auth` (low 3 bits): 0-3 the admin, 4 a reader,
//! 5 a developer limited to `main`, 6 the admin's id with a wrong secret, 7
//! no credentials; then a message of `len` bytes (fewer if the input ends)
//! in protobuf, skipped if it does not decode. In its strings `$E` is the
//! id of `main`, `$L` grows into 40,000 characters, and a `secret_id` of
//! `$` is the id of the last secret this input made.

use std::collections::BTreeMap;

use crate::support::{disguise, worth_checking, World};
use latchkey_proto::api::{self, modal_client_server::ModalClient, ObjectCreationType};
use latchkey_server::grpc::ModalApi;
use prost::Message;
use tonic::{Code, Request, Status};

#[derive(Clone, Copy, Debug)]
enum Rpc {
    ClientHello,
    SecretGetOrCreate,
    SecretList,
    SecretDelete,
    SecretUpdate,
    SecretGetInfo,
    EnvironmentList,
    EnvironmentCreate,
    EnvironmentDelete,
    EnvironmentUpdate,
    EnvironmentGetOrCreate,
    WorkspaceNameLookup,
    TokenInfoGet,
    AppGetOrCreate,
    ImageGetOrCreate,
    AuthTokenGet,
    SandboxCreateV2,
    SandboxWaitV2,
    SandboxTerminateV2,
    SandboxGetTaskIdV2,
    SandboxGetCommandRouterAccess,
}

/// Every RPC `ModalApi` implements (`crates/server/src/grpc/mod.rs`). The
/// sandbox ones answer UNIMPLEMENTED here (no `--sandboxes`).
const RPCS: [Rpc; 21] = [
    Rpc::ClientHello,
    Rpc::SecretGetOrCreate,
    Rpc::SecretList,
    Rpc::SecretDelete,
    Rpc::SecretUpdate,
    Rpc::SecretGetInfo,
    Rpc::EnvironmentList,
    Rpc::EnvironmentCreate,
    Rpc::EnvironmentDelete,
    Rpc::EnvironmentUpdate,
    Rpc::EnvironmentGetOrCreate,
    Rpc::WorkspaceNameLookup,
    Rpc::TokenInfoGet,
    Rpc::AppGetOrCreate,
    Rpc::ImageGetOrCreate,
    Rpc::AuthTokenGet,
    Rpc::SandboxCreateV2,
    Rpc::SandboxWaitV2,
    Rpc::SandboxTerminateV2,
    Rpc::SandboxGetTaskIdV2,
    Rpc::SandboxGetCommandRouterAccess,
];

/// A decoded request, placeholders filled.
// Made once per request of an input: boxing the large ones would gain nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Call {
    Empty(Rpc),
    SecretGetOrCreate(api::SecretGetOrCreateRequest),
    SecretList(api::SecretListRequest),
    SecretDelete(api::SecretDeleteRequest),
    SecretUpdate(api::SecretUpdateRequest),
    SecretGetInfo(api::SecretGetInfoRequest),
    EnvironmentCreate(api::EnvironmentCreateRequest),
    EnvironmentDelete(api::EnvironmentDeleteRequest),
    EnvironmentUpdate(api::EnvironmentUpdateRequest),
    EnvironmentGetOrCreate(api::EnvironmentGetOrCreateRequest),
    TokenInfoGet(api::TokenInfoGetRequest),
    AppGetOrCreate(api::AppGetOrCreateRequest),
    ImageGetOrCreate(api::ImageGetOrCreateRequest),
    AuthTokenGet(api::AuthTokenGetRequest),
    SandboxCreateV2(Box<api::SandboxCreateV2Request>),
    SandboxWaitV2(api::SandboxWaitRequest),
    SandboxTerminateV2(api::SandboxTerminateRequest),
    SandboxGetTaskIdV2(api::SandboxGetTaskIdRequest),
    SandboxGetCommandRouterAccess(api::SandboxGetCommandRouterAccessRequest),
}

fn decode(rpc: Rpc, bytes: &[u8]) -> Option<Call> {
    fn d<M: Message + Default>(bytes: &[u8]) -> Option<M> {
        M::decode(bytes).ok()
    }
    Some(match rpc {
        Rpc::ClientHello | Rpc::EnvironmentList | Rpc::WorkspaceNameLookup => {
            d::<()>(bytes)?;
            Call::Empty(rpc)
        }
        Rpc::SecretGetOrCreate => Call::SecretGetOrCreate(d(bytes)?),
        Rpc::SecretList => Call::SecretList(d(bytes)?),
        Rpc::SecretDelete => Call::SecretDelete(d(bytes)?),
        Rpc::SecretUpdate => Call::SecretUpdate(d(bytes)?),
        Rpc::SecretGetInfo => Call::SecretGetInfo(d(bytes)?),
        Rpc::EnvironmentCreate => Call::EnvironmentCreate(d(bytes)?),
        Rpc::EnvironmentDelete => Call::EnvironmentDelete(d(bytes)?),
        Rpc::EnvironmentUpdate => Call::EnvironmentUpdate(d(bytes)?),
        Rpc::EnvironmentGetOrCreate => Call::EnvironmentGetOrCreate(d(bytes)?),
        Rpc::TokenInfoGet => Call::TokenInfoGet(d(bytes)?),
        Rpc::AppGetOrCreate => Call::AppGetOrCreate(d(bytes)?),
        Rpc::ImageGetOrCreate => Call::ImageGetOrCreate(d(bytes)?),
        Rpc::AuthTokenGet => Call::AuthTokenGet(d(bytes)?),
        Rpc::SandboxCreateV2 => Call::SandboxCreateV2(Box::new(d(bytes)?)),
        Rpc::SandboxWaitV2 => Call::SandboxWaitV2(d(bytes)?),
        Rpc::SandboxTerminateV2 => Call::SandboxTerminateV2(d(bytes)?),
        Rpc::SandboxGetTaskIdV2 => Call::SandboxGetTaskIdV2(d(bytes)?),
        Rpc::SandboxGetCommandRouterAccess => Call::SandboxGetCommandRouterAccess(d(bytes)?),
    })
}

/// What a call answered, reduced to what the checks need.
enum Reply {
    Done,
    Secret(api::SecretGetOrCreateResponse),
    Info(api::SecretGetInfoResponse),
    Environment(api::EnvironmentListItem),
    EnvironmentFound(api::EnvironmentGetOrCreateResponse),
}

struct Run<'w> {
    world: &'w mut World,
    /// The whole input: what the caller sent (before placeholders, which
    /// only add ids).
    input: Vec<u8>,
    api: ModalApi,
    last_secret: Option<String>,
    wrote: bool,
}

impl Run<'_> {
    /// `$E` and `$L` in a string.
    fn fill(&self, s: &mut String) {
        if s.contains('$') {
            let filled = crate::support::expand(s.as_bytes());
            *s = String::from_utf8(filled)
                .expect("UTF-8 in, UTF-8 out")
                .replace("$E", &self.world.main_id);
        }
    }

    fn fill_secret_id(&self, id: &mut String) {
        if id == "$" {
            if let Some(last) = &self.last_secret {
                id.clone_from(last);
            }
        }
        self.fill(id);
    }

    fn fill_call(&self, call: &mut Call) {
        match call {
            Call::SecretGetOrCreate(r) => {
                self.fill(&mut r.deployment_name);
                self.fill(&mut r.environment_name);
                self.fill(&mut r.app_id);
                r.env_dict = std::mem::take(&mut r.env_dict)
                    .into_iter()
                    .map(|(mut k, mut v)| {
                        self.fill(&mut k);
                        self.fill(&mut v);
                        (k, v)
                    })
                    .collect();
                r.required_keys.iter_mut().for_each(|k| self.fill(k));
            }
            Call::SecretList(r) => self.fill(&mut r.environment_name),
            Call::SecretDelete(r) => self.fill_secret_id(&mut r.secret_id),
            Call::SecretGetInfo(r) => self.fill_secret_id(&mut r.secret_id),
            Call::SecretUpdate(r) => {
                self.fill_secret_id(&mut r.secret_id);
                for u in &mut r.updates {
                    self.fill(&mut u.key);
                    if let Some(v) = &mut u.value {
                        self.fill(v);
                    }
                }
            }
            Call::EnvironmentCreate(r) => self.fill(&mut r.name),
            Call::EnvironmentDelete(r) => self.fill(&mut r.name),
            Call::EnvironmentUpdate(r) => {
                self.fill(&mut r.current_name);
                if let Some(n) = &mut r.name {
                    self.fill(n);
                }
                if let Some(s) = &mut r.web_suffix {
                    self.fill(s);
                }
            }
            Call::EnvironmentGetOrCreate(r) => self.fill(&mut r.deployment_name),
            _ => {}
        }
    }

    fn request<T>(&self, message: T, auth: u8) -> Request<T> {
        let mut request = Request::new(message);
        let (id, secret) = match auth & 7 {
            0..=3 => (&self.world.admin.id, self.world.admin.secret.clone()),
            4 => (&self.world.reader.id, self.world.reader.secret.clone()),
            5 => (&self.world.limited.id, self.world.limited.secret.clone()),
            6 => (
                &self.world.admin.id,
                format!("{}x", self.world.admin.secret),
            ),
            _ => return request,
        };
        let metadata = request.metadata_mut();
        metadata.insert("x-modal-token-id", id.parse().expect("ASCII"));
        metadata.insert("x-modal-token-secret", secret.parse().expect("ASCII"));
        request
    }

    async fn dispatch(&self, call: Call, auth: u8) -> Result<Reply, Status> {
        fn done<T>(_: T) -> Reply {
            Reply::Done
        }
        let a = &self.api;
        Ok(match call {
            Call::Empty(Rpc::ClientHello) => {
                a.client_hello(self.request((), auth)).await.map(done)?
            }
            Call::Empty(Rpc::EnvironmentList) => {
                a.environment_list(self.request((), auth)).await.map(done)?
            }
            Call::Empty(_) => a
                .workspace_name_lookup(self.request((), auth))
                .await
                .map(done)?,
            Call::SecretGetOrCreate(r) => Reply::Secret(
                a.secret_get_or_create(self.request(r, auth))
                    .await?
                    .into_inner(),
            ),
            Call::SecretList(r) => a.secret_list(self.request(r, auth)).await.map(done)?,
            Call::SecretDelete(r) => a.secret_delete(self.request(r, auth)).await.map(done)?,
            Call::SecretUpdate(r) => a.secret_update(self.request(r, auth)).await.map(done)?,
            Call::SecretGetInfo(r) => {
                Reply::Info(a.secret_get_info(self.request(r, auth)).await?.into_inner())
            }
            Call::EnvironmentCreate(r) => a
                .environment_create(self.request(r, auth))
                .await
                .map(done)?,
            Call::EnvironmentDelete(r) => a
                .environment_delete(self.request(r, auth))
                .await
                .map(done)?,
            Call::EnvironmentUpdate(r) => Reply::Environment(
                a.environment_update(self.request(r, auth))
                    .await?
                    .into_inner(),
            ),
            Call::EnvironmentGetOrCreate(r) => Reply::EnvironmentFound(
                a.environment_get_or_create(self.request(r, auth))
                    .await?
                    .into_inner(),
            ),
            Call::TokenInfoGet(r) => a.token_info_get(self.request(r, auth)).await.map(done)?,
            Call::AppGetOrCreate(r) => {
                a.app_get_or_create(self.request(r, auth)).await.map(done)?
            }
            Call::ImageGetOrCreate(r) => a
                .image_get_or_create(self.request(r, auth))
                .await
                .map(done)?,
            Call::AuthTokenGet(r) => a.auth_token_get(self.request(r, auth)).await.map(done)?,
            Call::SandboxCreateV2(r) => a
                .sandbox_create_v2(self.request(*r, auth))
                .await
                .map(done)?,
            Call::SandboxWaitV2(r) => a.sandbox_wait_v2(self.request(r, auth)).await.map(done)?,
            Call::SandboxTerminateV2(r) => a
                .sandbox_terminate_v2(self.request(r, auth))
                .await
                .map(done)?,
            Call::SandboxGetTaskIdV2(r) => a
                .sandbox_get_task_id_v2(self.request(r, auth))
                .await
                .map(done)?,
            Call::SandboxGetCommandRouterAccess(r) => a
                .sandbox_get_command_router_access(self.request(r, auth))
                .await
                .map(done)?,
        })
    }

    fn check_status(&mut self, call: &Call, status: &Status) {
        let message = status.message();
        assert!(
            !matches!(
                status.code(),
                Code::Internal | Code::Unknown | Code::Unavailable | Code::DeadlineExceeded
            ),
            "{call:.300?}: answered {:?}: {message}",
            status.code()
        );
        assert!(
            message.len() < 1024,
            "{:?}: a message of {} bytes: {}…",
            status.code(),
            message.len(),
            &message[..message
                .char_indices()
                .nth(200)
                .map_or(message.len(), |(i, _)| i)]
        );
        assert!(
            self.world
                .shown_secret(message.as_bytes(), &self.input)
                .is_none(),
            "the message shows a token secret: {message}"
        );
    }

    /// Values the request sets.
    fn values(call: &Call) -> Vec<&str> {
        match call {
            Call::SecretGetOrCreate(r) => r.env_dict.values().map(String::as_str).collect(),
            Call::SecretUpdate(r) => r
                .updates
                .iter()
                .filter_map(|u| u.value.as_deref())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// An error must not show a value the request set: if its message
    /// shows one, the same request with the values disguised must not show
    /// the disguised ones.
    async fn no_value_shown(&mut self, call: &Call, auth: u8, first: &Status) {
        let shown: Vec<String> = Self::values(call)
            .into_iter()
            .filter(|v| worth_checking(v, first.message()))
            .map(str::to_owned)
            .collect();
        if shown.is_empty() {
            return;
        }
        let mut disguised = call.clone();
        match &mut disguised {
            Call::SecretGetOrCreate(r) => r.env_dict.values_mut().for_each(|v| *v = disguise(v)),
            Call::SecretUpdate(r) => r
                .updates
                .iter_mut()
                .filter_map(|u| u.value.as_mut())
                .for_each(|v| *v = disguise(v)),
            _ => return,
        }
        match self.dispatch(disguised, auth).await {
            Ok(_) => self.wrote = true,
            Err(second) => {
                for value in shown {
                    assert!(
                        !second.message().contains(&disguise(&value)),
                        "the error shows a value: {:?}",
                        second.message()
                    );
                }
            }
        }
    }

    /// One record: the call, its checks, and what a success must leave.
    async fn record(&mut self, rpc: Rpc, auth: u8, message: &[u8]) {
        let Some(mut call) = decode(rpc, message) else {
            return;
        };
        self.fill_call(&mut call);
        let reply = match self.dispatch(call.clone(), auth).await {
            Ok(reply) => reply,
            Err(status) => {
                self.check_status(&call, &status);
                self.no_value_shown(&call, auth, &status).await;
                return;
            }
        };
        let admin = self.world.test.admin().clone();
        let service = self.world.service().clone();
        match (&call, reply) {
            (Call::SecretGetOrCreate(r), Reply::Secret(answer)) => {
                let kind = ObjectCreationType::try_from(r.object_creation_type)
                    .expect("the server refuses unknown kinds");
                if kind != ObjectCreationType::Unspecified {
                    self.wrote = true;
                }
                let id = answer.secret_id.clone();
                let keys = answer.metadata.expect("metadata").keys;
                let info = self
                    .info(&id)
                    .await
                    .expect("a secret just answered reads back");
                assert_eq!(info.metadata.expect("metadata").keys, keys);
                let secret = service
                    .secret(&admin, &id)
                    .await
                    .expect("a secret just answered opens");
                assert_eq!(secret.contents.keys().cloned().collect::<Vec<_>>(), keys);
                // Modes that write exactly the request's contents.
                if matches!(
                    kind,
                    ObjectCreationType::CreateFailIfExists
                        | ObjectCreationType::CreateOverwriteIfExists
                        | ObjectCreationType::AnonymousOwnedByApp
                        | ObjectCreationType::Ephemeral
                ) {
                    let sent: BTreeMap<_, _> = r.env_dict.clone().into_iter().collect();
                    assert!(secret.contents == sent, "the contents read back differ");
                }
                self.last_secret = Some(id);
            }
            (Call::SecretUpdate(r), _) => {
                self.wrote = true;
                let secret = service
                    .secret(&admin, &r.secret_id)
                    .await
                    .expect("an updated secret opens");
                let mut want = BTreeMap::new();
                for u in &r.updates {
                    want.insert(&u.key, u.value.as_ref());
                }
                for (key, value) in want {
                    assert_eq!(
                        secret.contents.get(key),
                        value,
                        "key {key:?} after the update"
                    );
                }
            }
            (Call::SecretDelete(r), _) => {
                self.wrote = true;
                let status = self.info(&r.secret_id).await.expect_err("deleted");
                assert_eq!(status.code(), Code::NotFound);
            }
            (Call::EnvironmentCreate(r), _) => {
                self.wrote = true;
                self.environment_found(&r.name, true).await;
            }
            (Call::EnvironmentUpdate(_), Reply::Environment(env)) => {
                self.wrote = true;
                self.environment_found(&env.name, true).await;
            }
            (Call::EnvironmentDelete(r), _) => {
                self.wrote = true;
                self.environment_found(&r.name, false).await;
            }
            (Call::EnvironmentGetOrCreate(r), _) if r.object_creation_type != 0 => {
                self.wrote = true;
            }
            _ => {}
        }
    }

    async fn info(&mut self, id: &str) -> Result<api::SecretGetInfoResponse, Status> {
        let call = Call::SecretGetInfo(api::SecretGetInfoRequest {
            secret_id: id.to_owned(),
        });
        match self.dispatch(call.clone(), 0).await {
            Ok(Reply::Info(info)) => Ok(info),
            Ok(_) => unreachable!("SecretGetInfo answers info"),
            Err(status) => {
                self.check_status(&call, &status);
                Err(status)
            }
        }
    }

    /// Whether the admin finds the environment `name`, as `want` says.
    async fn environment_found(&mut self, name: &str, want: bool) {
        let call = Call::EnvironmentGetOrCreate(api::EnvironmentGetOrCreateRequest {
            deployment_name: name.to_owned(),
            object_creation_type: 0,
        });
        match self.dispatch(call.clone(), 0).await {
            Ok(Reply::EnvironmentFound(found)) => {
                assert!(want, "environment {name:?} is found after its deletion");
                let metadata = found.metadata.expect("metadata");
                assert!(
                    metadata.name == name || found.environment_id == name,
                    "looked up {name:?}, found {:?}",
                    metadata.name
                );
            }
            Ok(_) => unreachable!("EnvironmentGetOrCreate answers an environment"),
            Err(status) => {
                self.check_status(&call, &status);
                assert!(
                    !want,
                    "environment {name:?} is not found: {}",
                    status.message()
                );
                assert_eq!(status.code(), Code::NotFound);
            }
        }
    }
}

/// Runs one input, panicking when an invariant does not hold.
// The world's lock is held through the input on purpose: inputs run one
// at a time, on a one-thread runtime.
#[allow(clippy::await_holding_lock)]
pub fn check(data: &[u8]) {
    crate::support::runtime().block_on(async {
        let mut world = crate::support::world().await;
        let api = ModalApi::new(world.service().clone());
        let mut run = Run {
            world: &mut world,
            input: data.to_vec(),
            api,
            last_secret: None,
            wrote: false,
        };
        let mut rest = data;
        for _ in 0..4 {
            let Some((&[rpc, auth, lo, hi], tail)) = rest.split_first_chunk::<4>() else {
                break;
            };
            let len = usize::from(u16::from_le_bytes([lo, hi])).min(tail.len());
            let (message, tail) = tail.split_at(len);
            rest = tail;
            let rpc = RPCS[usize::from(rpc) % RPCS.len()];
            run.record(rpc, auth, message).await;
        }
        if run.wrote {
            world.reset().await;
        }
    });
}
