//! Compiles `proto/modal/client/api.proto` with `protox` (pure Rust, no system
//! `protoc`) and generates prost messages plus tonic server and client code.
//! Also writes the encoded `FileDescriptorSet` (with imports) to
//! `$OUT_DIR/latchkey_descriptor.bin` for gRPC reflection.

use std::{env, fs, path::PathBuf};

const PROTO: &str = "proto/modal/client/api.proto";
const INCLUDE: &str = "proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=build.rs");

    let mut compiler = protox::Compiler::new([INCLUDE])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_file(PROTO)?;

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
