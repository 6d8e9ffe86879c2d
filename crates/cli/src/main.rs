//! The `latchkey` command: the server (`serve`, `db`) and its client
//! (`secret`, `environment`, `token`, `profile`, `login`, ...), the client
//! commands being a thin layer over the SDK (crate `latchkey`).

mod audit;
mod backup;
mod completions;
mod connect;
mod db;
mod environment;
mod input;
mod key;
mod lock;
mod login;
mod mask;
mod modal_env;
mod output;
mod profile;
mod run;
mod secret;
mod serve;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// latchkey: named secrets, encrypted at rest, delivered as environment variables.
///
/// Client commands find their server and token in LATCHKEY_SERVER_URL,
/// LATCHKEY_TOKEN_ID and LATCHKEY_TOKEN_SECRET, else the active profile of
/// ~/.latchkey.toml (LATCHKEY_CONFIG_PATH, LATCHKEY_PROFILE), else the admin
/// token of a local server started with `latchkey serve`.
// No `Debug` here or below where arguments can hold secret values
// (`secret create K=V`, `run --set K=V`): nothing may print them.
#[derive(Parser)]
#[command(
    name = "latchkey",
    version,
    about,
    propagate_version = true,
    after_help = "Examples:
  latchkey serve                              # in one terminal
  latchkey secret create demo A=1             # in another: no set-up needed
  latchkey secret list
  latchkey secret history demo
  latchkey login --server https://secrets.example.com --token-id ak-...
  eval \"$(latchkey modal-env)\"                # point Modal's client here

Exit codes: 0 success, 1 failure, 2 usage error. NO_COLOR turns colour off."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (gRPC for Modal's client, health checks) on one port.
    Serve(Box<serve::ServeArgs>),
    /// Work on a store's database directly: `db copy` between SQLite and PostgreSQL.
    Db(db::DbArgs),
    /// Back up the whole store of a running server (`backup FILE`), or check a backup (`backup verify FILE`).
    Backup(backup::BackupArgs),
    /// Restore a backup into a new, empty store.
    Restore(backup::RestoreArgs),
    /// The master key: `key rotate` makes a new one and rewraps every data key under it.
    Key(key::KeyArgs),
    /// Create, list, inspect, update and delete named secrets.
    Secret(secret::SecretArgs),
    /// List, create, rename and delete environments.
    Environment(environment::EnvironmentArgs),
    /// Create, list and revoke API tokens.
    Token(token::TokenArgs),
    /// List and activate the profiles of ~/.latchkey.toml.
    Profile(profile::ProfileArgs),
    /// Check a token and save it as a profile.
    Login(login::LoginArgs),
    /// Show the token in use and its workspace.
    Whoami(login::WhoamiArgs),
    /// Print the MODAL_* variables that point Modal's client at this server.
    ModalEnv(modal_env::ModalEnvArgs),
    /// Print a shell completion script (bash, zsh, fish...).
    Completions(completions::CompletionsArgs),
    /// Run a command with secrets in its environment.
    Run(run::RunArgs),
    /// Inspect the lockfiles that `latchkey run --lock` writes.
    Lock(lock::LockArgs),
    /// The audit log: list, export and verify it (admin token).
    Audit(audit::AuditArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => output::fail(&err),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Db(args) => db::run(args),
        Command::Backup(args) => backup::run(args),
        Command::Restore(args) => backup::restore(&args),
        Command::Key(args) => key::run(args),
        Command::Secret(args) => secret::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Environment(args) => environment::run(args),
        Command::Token(args) => token::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Login(args) => login::login(args),
        Command::Whoami(args) => login::whoami(&args),
        Command::ModalEnv(args) => modal_env::run(&args),
        Command::Completions(args) => completions::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Lock(args) => lock::run(args),
    }
}
