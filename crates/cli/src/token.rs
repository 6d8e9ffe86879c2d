//! `latchkey token`: who may call the server, and what they may do.

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use latchkey::{blocking::Wait, Role};

use crate::{
    connect, input,
    output::{self, Stream, Table},
};

/// API tokens of the workspace (admin token needed).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey token create ci --role reader --env prod > ci.env
  latchkey token list
  latchkey token revoke ak-1234567890abcdefghijkl --yes")]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token; its secret is shown this once.
    Create(CreateArgs),
    /// List the workspace's tokens, revoked ones included.
    List(ListArgs),
    /// Revoke a token, irreversibly; asks first on a terminal.
    Revoke(RevokeArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    /// Everything, including tokens and environments.
    Admin,
    /// Read and write secrets.
    Developer,
    /// Read secrets.
    Reader,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Admin => Role::Admin,
            RoleArg::Developer => Role::Developer,
            RoleArg::Reader => Role::Reader,
        }
    }
}

/// Create a token. Stdout gets its id and secret as dotenv lines
/// (LATCHKEY_TOKEN_ID=..., LATCHKEY_TOKEN_SECRET=...), shown only this once;
/// the rest goes to stderr.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey token create ci --role reader
  latchkey token create deploy --role developer --env prod --env staging > deploy.env
  latchkey token create ci --json | jq -r .secret")]
struct CreateArgs {
    /// Its name, recorded as `created_by` of what it creates.
    name: String,
    /// What it may do.
    #[arg(long, value_enum, default_value = "developer")]
    role: RoleArg,
    /// Limit it to this environment (repeatable; default: all).
    #[arg(long = "env", short = 'e', value_name = "ENV")]
    envs: Vec<String>,
    /// Print JSON ({"token": ..., "secret": ...}) instead.
    #[arg(long)]
    json: bool,
}

/// List tokens (never their secrets).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey token list
  latchkey token list --json | jq -r '.[] | select(.revoked_at == null) | .id'")]
struct ListArgs {
    /// Print JSON (an array of tokens) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Revoke a token. The workspace's last admin token cannot be revoked.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey token revoke ak-1234567890abcdefghijkl
  latchkey token revoke ak-1234567890abcdefghijkl --yes")]
struct RevokeArgs {
    /// The token's id (ak-...).
    id: String,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
}

pub(crate) fn run(args: TokenArgs) -> Result<()> {
    let client = connect::client(None)?;
    let tokens = client.tokens();
    match args.command {
        TokenCommand::Create(a) => {
            let mut create = tokens.create(&a.name, a.role.into());
            if !a.envs.is_empty() {
                create = create.environments(&a.envs);
            }
            let token = create.wait()?;
            if a.json {
                return output::json(&serde_json::json!({
                    "token": token.info,
                    "secret": token.secret.expose(),
                }));
            }
            let scope = match &token.info.environments {
                Some(envs) => format!("environments {}", envs.join(", ")),
                None => "all environments".to_owned(),
            };
            output::note(format!(
                "Created token '{}' ({}, {scope}).",
                token.info.name, token.info.role
            ));
            output::print(&format!(
                "LATCHKEY_TOKEN_ID={}\nLATCHKEY_TOKEN_SECRET={}\n",
                token.info.id,
                token.secret.expose()
            ))?;
            output::note(output::paint(
                Stream::Stderr,
                "33",
                "The secret is shown only this once: store it now.",
            ));
            Ok(())
        }
        TokenCommand::List(a) => {
            let list = tokens.list().wait()?;
            if a.json {
                return output::json(&list);
            }
            let mut table = Table::new(&[
                "Id",
                "Name",
                "Role",
                "Environments",
                "Created at",
                "Revoked at",
            ]);
            for t in &list {
                table.row(vec![
                    t.id.clone(),
                    t.name.clone(),
                    t.role.to_string(),
                    t.environments
                        .as_ref()
                        .map_or_else(|| "all".to_owned(), |e| e.join(",")),
                    output::time(t.created_at),
                    output::time_or(t.revoked_at, "-"),
                ]);
            }
            table.print("No tokens.")
        }
        TokenCommand::Revoke(a) => {
            // What to rotate: shown before the question, so that it can be
            // weighed (and copied) before the token goes.
            let read = client.audit().token_exposure(&a.id).wait()?;
            if read.is_empty() {
                output::note(format!(
                    "Token {} has read the current version of no secret.",
                    a.id
                ));
            } else {
                output::note(output::paint(
                    Stream::Stderr,
                    "33",
                    &format!(
                        "Token {} has read the current version of these secrets; rotate them:",
                        a.id
                    ),
                ));
                for r in &read {
                    output::note(format!(
                        "  {} (environment {}, version {}, {} reads, last {})",
                        r.secret,
                        r.environment,
                        r.version,
                        r.count,
                        output::time(r.last)
                    ));
                }
            }
            input::confirm(
                &format!("revoke token {}", a.id),
                "Everything that uses it stops working.",
                a.yes,
            )?;
            tokens.revoke(&a.id).wait()?;
            output::line(format!("Revoked token {}.", a.id))
        }
    }
}
