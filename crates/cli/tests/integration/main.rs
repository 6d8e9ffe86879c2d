//! Integration tests: the real `latchkey` binary, started on a free port.

mod cli;
mod crash;
mod grpc;
mod harness;
mod limits;
mod logs;
mod run;
mod serve;
mod tls;
mod versions;
