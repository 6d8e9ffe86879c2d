//! The latchkey server: the adapters over the service layer
//! (`latchkey-service`) and start-up. [`grpc`] speaks Modal's protocol,
//! [`http`] puts everything on one port, [`serve`](mod@serve) opens the store,
//! bootstraps and serves until stopped. With `--sandboxes` it runs Modal
//! sandboxes as processes, through `latchkey-sandbox`.

pub mod api;
mod blobs;
pub mod bootstrap;
pub mod grpc;
pub mod http;
pub mod serve;
pub mod telemetry;
pub mod tls;

pub use latchkey_service::{AuthFailureLimit, DEFAULT_KEEP_VERSIONS};
pub use serve::{serve, ServeConfig};
