//! The `latchkey` command.

mod db;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// latchkey: named secrets, encrypted at rest, delivered as environment variables.
#[derive(Debug, Parser)]
#[command(name = "latchkey", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (gRPC for Modal's client, health checks) on one port.
    Serve(serve::ServeArgs),
    /// Work on a store's database directly: `db copy` between SQLite and PostgreSQL.
    Db(db::DbArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("latchkey: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Db(args) => db::run(args),
    }
}
