//! Generated Rust types for latchkey's subset of Modal's gRPC wire protocol.
//!
//! latchkey serves the unmodified `modal` Python client (1.6.4). That package
//! ships no `.proto` file, only compiled descriptors (`modal_proto.api_pb2`),
//! so we keep our own `proto/modal/client/api.proto`: it declares only the
//! `modal.client.ModalClient` RPCs latchkey serves and the messages and enums
//! they need, with exactly the upstream full names, field names, numbers,
//! types and labels. `tests/python/test_proto_schema.py` checks every message,
//! enum and RPC in that file against the installed package, field by field,
//! so a drift fails the test suite rather than corrupting data on the wire.
//!
//! The file is compiled at build time by `protox` (no system `protoc`) and
//! turned into prost messages and tonic server/client code:
//!
//! - server trait: [`api::modal_client_server::ModalClient`], wrapped by
//!   [`api::modal_client_server::ModalClientServer`];
//! - the sandbox stdio service of Modal's V2 sandboxes,
//!   `modal.task_command_router.TaskCommandRouter`, from
//!   `proto/modal/task_command_router/task_command_router.proto`:
//!   [`tcr::task_command_router_server::TaskCommandRouter`];
//! - client: [`api::modal_client_client::ModalClientClient`];
//! - `google.protobuf.Empty` is `()`, `google.protobuf.StringValue` is
//!   `Option<String>`, `google.protobuf.Timestamp` is
//!   [`prost_types::Timestamp`].
//!
//! [`FILE_DESCRIPTOR_SET`] holds the encoded descriptors (with imports), e.g.
//! for gRPC server reflection.

/// Protobuf package `modal`.
pub mod modal {
    /// Protobuf package `modal.client` (generated code).
    #[allow(
        missing_docs,
        unreachable_pub,
        clippy::all,
        clippy::pedantic,
        clippy::nursery,
        rustdoc::all
    )]
    pub mod client {
        tonic::include_proto!("modal.client");
    }

    /// Protobuf package `modal.task_command_router` (generated code).
    #[allow(
        missing_docs,
        unreachable_pub,
        clippy::all,
        clippy::pedantic,
        clippy::nursery,
        rustdoc::all
    )]
    pub mod task_command_router {
        tonic::include_proto!("modal.task_command_router");
    }
}

/// Short alias: `latchkey_proto::api::...` is `latchkey_proto::modal::client::...`.
pub use modal::client as api;
/// Short alias: `latchkey_proto::tcr::...` is `latchkey_proto::modal::task_command_router::...`.
pub use modal::task_command_router as tcr;

pub use prost;
pub use prost_types;

/// Encoded `google.protobuf.FileDescriptorSet` of `modal/client/api.proto`,
/// `modal/task_command_router/task_command_router.proto` and their imports (well-known types), e.g. for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/latchkey_descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::api;
    use prost::Message;

    #[test]
    fn descriptor_set_decodes_and_holds_our_file() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let ours = set
            .file
            .iter()
            .find(|f| f.name() == "modal/client/api.proto")
            .unwrap();
        assert_eq!(ours.package(), "modal.client");
        assert_eq!(ours.service[0].name(), "ModalClient");
        assert!(set
            .file
            .iter()
            .any(|f| f.name() == "google/protobuf/empty.proto"));
        let router = set
            .file
            .iter()
            .find(|f| f.name() == "modal/task_command_router/task_command_router.proto")
            .unwrap();
        assert_eq!(router.package(), "modal.task_command_router");
        assert_eq!(router.service[0].name(), "TaskCommandRouter");
    }

    #[test]
    fn messages_round_trip() {
        let req = api::SecretUpdateRequest {
            secret_id: "st-1".into(),
            updates: vec![api::secret_update_request::Update {
                key: "A".into(),
                value: None,
            }],
        };
        let back = api::SecretUpdateRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, req);
        let upd = api::EnvironmentUpdateRequest {
            name: Some("dev".into()),
            ..Default::default()
        };
        assert_eq!(upd.name.as_deref(), Some("dev"));
    }
}
