//! Integration tests: the real `latchkey` binary, started on a free port.

mod audit;
mod backup;
mod cli;
mod crash;
mod grpc;
mod harness;
mod keys;
mod limits;
mod logs;
mod run;
mod serve;
mod throttle;
mod tls;
mod tokens;
mod versions;
