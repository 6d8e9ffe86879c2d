//! Compiles `proto/modal/client/api.proto` and
//! `proto/modal/task_command_router/task_command_router.proto` with `protox`
//! (pure Rust, no system `protoc`) and generates prost messages plus tonic
//! server and client code.
//! Also writes the encoded `FileDescriptorSet` (with imports) to
//! `$OUT_DIR/latchkey_descriptor.bin` for gRPC reflection.

use std::{env, fs, path::PathBuf};

const PROTOS: [&str; 2] = [
    "proto/modal/client/api.proto",
    "proto/modal/task_command_router/task_command_router.proto",
];
const INCLUDE: &str = "proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let mut compiler = protox::Compiler::new([INCLUDE])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(PROTOS)?;

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);
    fs::write(
        out_dir.join("latchkey_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .emit_rerun_if_changed(false)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
