//! `modal.task_command_router.TaskCommandRouter`: the stdio of sandboxes,
//! a thin translation over `latchkey-sandbox` (which checks the router
//! token, see `latchkey_sandbox::Sandboxes::router_sandbox`).

use std::{pin::Pin, sync::Arc, time::UNIX_EPOCH};

use futures::Stream;
use latchkey_proto::tcr::{self, task_command_router_server::TaskCommandRouter};
use latchkey_sandbox::{Sandbox, Sandboxes, READ_CHUNK};
use tonic::{Request, Response, Status};

use super::{sandbox::disabled, status, MAX_MESSAGE_BYTES};

/// The `TaskCommandRouter` service.
#[derive(Clone, Debug)]
pub(crate) struct RouterApi {
    sandboxes: Option<Sandboxes>,
}

impl RouterApi {
    /// The service over `sandboxes` (`None`: sandboxes are disabled).
    pub(crate) fn new(sandboxes: Option<Sandboxes>) -> Self {
        Self { sandboxes }
    }

    /// The tonic service, with Modal's message size limit and no compression.
    pub(crate) fn into_server(
        self,
    ) -> tcr::task_command_router_server::TaskCommandRouterServer<Self> {
        tcr::task_command_router_server::TaskCommandRouterServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The sandbox of `task_id`, if the request carries a valid token for it.
    fn authorize<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
        task_id: &str,
    ) -> Result<Arc<Sandbox>, Status> {
        let sandboxes = self.sandboxes.as_ref().ok_or_else(|| disabled(rpc))?;
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        sandboxes.router_sandbox(bearer, task_id).map_err(status)
    }
}

type ReadStream =
    Pin<Box<dyn Stream<Item = Result<tcr::SandboxStdioReadV2Response, Status>> + Send>>;

#[tonic::async_trait]
impl TaskCommandRouter for RouterApi {
    type SandboxStdioReadV2Stream = ReadStream;

    async fn sandbox_stdio_read_v2(
        &self,
        request: Request<tcr::SandboxStdioReadV2Request>,
    ) -> Result<Response<Self::SandboxStdioReadV2Stream>, Status> {
        let sandbox = self.authorize(&request, "SandboxStdioReadV2", &request.get_ref().task_id)?;
        let req = request.into_inner();
        let fd = tcr::SandboxStdioFileDescriptor::try_from(req.file_descriptor).map_err(|_| {
            Status::invalid_argument(format!("Unknown file descriptor {}", req.file_descriptor))
        })?;
        // Chunks from the asked offset until the stream ends; never an
        // empty chunk (the client treats one as an error).
        let stream = futures::stream::unfold(req.offset, move |offset| {
            let sandbox = Arc::clone(&sandbox);
            async move {
                let buffer = match fd {
                    tcr::SandboxStdioFileDescriptor::Stdout => sandbox.stdout(),
                    tcr::SandboxStdioFileDescriptor::Stderr => sandbox.stderr(),
                };
                let (at, data) = buffer.next(offset, READ_CHUNK).await?;
                let next = at + data.len() as u64;
                Some((
                    Ok(tcr::SandboxStdioReadV2Response {
                        data,
                        starting_offset: at,
                    }),
                    next,
                ))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn sandbox_stdin_write_v2(
        &self,
        request: Request<tcr::SandboxStdinWriteV2Request>,
    ) -> Result<Response<tcr::SandboxStdinWriteV2Response>, Status> {
        let sandbox =
            self.authorize(&request, "SandboxStdinWriteV2", &request.get_ref().task_id)?;
        let req = request.into_inner();
        sandbox
            .write_stdin(req.offset, &req.data, req.eof)
            .await
            .map_err(status)?;
        Ok(Response::new(tcr::SandboxStdinWriteV2Response {}))
    }

    /// latchkey has no readiness probes: a sandbox is ready once started.
    async fn sandbox_wait_until_ready(
        &self,
        request: Request<tcr::SandboxWaitUntilReadyTcrRequest>,
    ) -> Result<Response<tcr::SandboxWaitUntilReadyTcrResponse>, Status> {
        let sandbox = self.authorize(
            &request,
            "SandboxWaitUntilReady",
            &request.get_ref().task_id,
        )?;
        let ready_at = sandbox
            .started_at()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Ok(Response::new(tcr::SandboxWaitUntilReadyTcrResponse {
            ready_at,
        }))
    }
}
