//! What each of latchkey's fuzz targets checks, as one function per target:
//! `check(input)` runs an input and panics when an invariant does not hold.
//!
//! Two callers share them, so that a fuzzer's find stays a test:
//! - the cargo-fuzz targets in `fuzz/` (one line each), which `scripts/fuzz`
//!   runs with coverage and sanitizers, on nightly;
//! - `tests/corpus.rs`, which runs every committed input (`fuzz/corpus/*`
//!   and the reproducers in `fuzz/artifacts-found/`) through them in the
//!   ordinary `cargo test`, on stable.

pub mod api;
pub mod dotenv;
pub mod grpc;
pub mod mask;
pub mod rules;
mod support;

/// What a target checks of one input.
pub type Check = fn(&[u8]);

/// The targets, by the names `fuzz/` gives them.
pub const TARGETS: &[(&str, Check)] = &[
    ("api", api::check),
    ("dotenv", dotenv::check),
    ("grpc", grpc::check),
    ("mask", mask::check),
    ("rules", rules::check),
];
