//! The domain of latchkey, shared by the store, the server, the SDK and the CLI.
//!
//! Everything that decides whether a request is acceptable lives here, so that
//! the gRPC API, the JSON API and the dashboard enforce exactly the same rules:
//! what a secret name, an environment name or a key may look like ([`rules`]),
//! how ids are made ([`ids`]), the error kinds every interface maps to its own
//! status codes ([`Error`]), and how `.env` files are read ([`dotenv`]).
//! The server and its local clients also share where things lie on a machine
//! ([`paths`]) and the admin token file one writes and the others read
//! ([`admin_token`]).

pub mod admin_token;
pub mod dotenv;
mod error;
pub mod ids;
pub mod paths;
pub mod rules;
pub mod time;

pub use error::{Error, ErrorKind};

/// The contents of a secret: environment variable names to values.
///
/// A `BTreeMap` keeps keys sorted, so listings and encodings are stable.
pub type EnvDict = std::collections::BTreeMap<String, String>;
