//! The latchkey server: the [`service`] layer that holds the rules, the
//! [`grpc`] adapter that speaks Modal's protocol over it, the HTTP routes
//! beside it on the same port ([`http`]), and start-up ([`serve`]).

pub mod bootstrap;
pub mod grpc;
pub mod http;
pub mod serve;
pub mod service;

pub use serve::{serve, ServeConfig};
