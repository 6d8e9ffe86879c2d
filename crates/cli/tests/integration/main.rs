//! Integration tests: the real `latchkey` binary, started on a free port.

mod grpc;
mod harness;
mod serve;
