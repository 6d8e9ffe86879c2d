//! What the gRPC adapter adds to the function RPCs (`latchkey-functions`
//! does the rest): the answer of a server without `--functions`, the
//! client's version from its headers, the log stream, and the per-task Unix
//! socket server through which a container calls, identified by its socket
//! rather than by a token.

use std::{collections::VecDeque, pin::Pin, sync::Arc, time::Duration};

use axum::{extract::Request as HttpRequest, middleware::Next};
use futures::Stream;
use latchkey_functions::Functions;
use latchkey_proto::api;
use latchkey_service::Caller;
use tonic::{Request, Status};

use super::{status, ModalApi};

/// The answer to a function RPC on a server started without `--functions`
/// (UNIMPLEMENTED, as for sandboxes: never retried, and it says how to
/// enable them).
pub(crate) fn disabled(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not served: functions are disabled on this server; start it with --functions \
         (modal run and modal deploy need it)"
    ))
}

/// The task a container's call comes from: set by the server of that
/// task's socket, never by anything the caller sends.
#[derive(Debug, Clone)]
pub(crate) struct TaskIdentity(pub(crate) String);

/// The RPCs a container may make through its socket.
const CONTAINER_RPCS: [&str; 7] = [
    "ContainerHello",
    "ContainerHeartbeat",
    "FunctionGetInputs",
    "FunctionPutOutputs",
    "TaskResult",
    "BlobCreate",
    "BlobGet",
];

/// What the client says of its versions in its headers.
pub(crate) fn client_version<T>(request: &Request<T>) -> latchkey_functions::ClientVersions {
    let header = |name| {
        request
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    latchkey_functions::ClientVersions {
        modal: header("x-modal-client-version"),
        python: header("x-modal-python-version"),
    }
}

/// The task calling through its socket, for the container RPC `rpc`.
pub(crate) fn task_of<'a, T>(
    api: &'a ModalApi,
    request: &Request<T>,
    rpc: &str,
) -> Result<(String, &'a Functions), Status> {
    let functions = api.functions.as_ref().ok_or_else(|| disabled(rpc))?;
    let task = request.extensions().get::<TaskIdentity>().ok_or_else(|| {
        Status::permission_denied(format!(
            "{rpc} is called by function containers only, through their task's socket"
        ))
    })?;
    Ok((task.0.clone(), functions))
}

/// The gRPC service on a task's socket: only [`CONTAINER_RPCS`], each
/// marked with the task.
pub(crate) fn task_server(api: ModalApi) -> latchkey_functions::TaskServer {
    Arc::new(move |listener, task_id, stopped| {
        let task = TaskIdentity(task_id);
        let router = tonic::service::Routes::new(api.clone().into_server())
            .into_axum_router()
            .layer(axum::middleware::from_fn(
                move |mut request: HttpRequest, next: Next| {
                    let task = task.clone();
                    async move {
                        let path = request.uri().path();
                        let rpc = path.rsplit('/').next().unwrap_or("");
                        if !path.starts_with(super::MODAL_CLIENT_PREFIX)
                            || !CONTAINER_RPCS.contains(&rpc)
                        {
                            return Status::permission_denied(format!(
                                "A function container may not call {rpc}: it holds no token"
                            ))
                            .into_http();
                        }
                        request.extensions_mut().insert(task);
                        next.run(request).await
                    }
                },
            ));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(error = %e, "a task's socket failed");
            }
        });
    })
}

/// The stream of `AppGetLogs`.
pub(crate) type LogStream = Pin<Box<dyn Stream<Item = Result<api::TaskLogsBatch, Status>> + Send>>;

/// Streams the app's container output after the request's entry, for up to
/// its timeout; ends with `app_done` when the app has stopped.
pub(crate) fn log_stream(
    functions: Functions,
    caller: Caller,
    req: &api::AppGetLogsRequest,
) -> LogStream {
    struct S {
        functions: Functions,
        caller: Caller,
        app_id: String,
        cursor: u64,
        deadline: tokio::time::Instant,
        queue: VecDeque<api::TaskLogsBatch>,
        finished: bool,
    }
    let timeout = if req.timeout.is_finite() && req.timeout > 0.0 {
        Duration::from_secs_f32(req.timeout.min(55.0))
    } else {
        Duration::from_secs(55)
    };
    let start = S {
        functions,
        caller,
        app_id: req.app_id.clone(),
        cursor: req
            .last_entry_id
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        deadline: tokio::time::Instant::now() + timeout,
        queue: VecDeque::new(),
        finished: false,
    };
    Box::pin(futures::stream::unfold(start, |mut s| async move {
        loop {
            if let Some(batch) = s.queue.pop_front() {
                return Some((Ok(batch), s));
            }
            if s.finished {
                return None;
            }
            let left = s
                .deadline
                .saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            match s
                .functions
                .app_logs(&s.caller, &s.app_id, s.cursor, left)
                .await
            {
                Err(e) => {
                    s.finished = true;
                    return Some((Err(status(e)), s));
                }
                Ok((batches, done)) => {
                    if let Some(last) = batches.last() {
                        s.cursor = last.entry_id.parse().unwrap_or(s.cursor);
                    }
                    s.queue.extend(batches);
                    if done {
                        s.queue.push_back(api::TaskLogsBatch {
                            app_done: true,
                            entry_id: s.cursor.to_string(),
                            ..Default::default()
                        });
                        s.finished = true;
                    } else if s.queue.is_empty() {
                        return None;
                    }
                }
            }
        }
    }))
}
