//! `latchkey token`: who may call the server, and what they may do.

use std::time::Duration;

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
  latchkey token create ci --role reader --env prod --ttl 30d > ci.env
  latchkey token list
  latchkey token rotate ak-1234567890abcdefghijkl --grace 10m > ci.env
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
    /// Give a token a new secret, shown this once; the old one can stay
    /// accepted for a grace period.
    Rotate(RotateArgs),
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
  latchkey token create ci --ttl 30d
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
    /// How long it is valid, e.g. 3600, 90m, 24h, 30d (default: it never
    /// expires). After it, the token is refused, and dashboard sessions
    /// signed in with it end.
    #[arg(long, value_name = "DURATION", value_parser = ttl, allow_hyphen_values = true)]
    ttl: Option<Duration>,
    /// Print JSON ({"token": ..., "secret": ...}) instead.
    #[arg(long)]
    json: bool,
}

/// Give a token a new secret. Stdout gets its id and new secret as dotenv
/// lines, shown only this once; the rest goes to stderr.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey token rotate ak-1234567890abcdefghijkl
  latchkey token rotate ak-1234567890abcdefghijkl --grace 10m > ci.env
  latchkey token rotate ak-1234567890abcdefghijkl --json | jq -r .secret")]
struct RotateArgs {
    /// The token's id (ak-...).
    id: String,
    /// How long its current secret stays accepted, e.g. 10m, 1h (default:
    /// not at all: it is refused at once, as after a leak).
    #[arg(long, value_name = "DURATION", value_parser = grace, allow_hyphen_values = true)]
    grace: Option<Duration>,
    /// Print JSON ({"token": ..., "secret": ...}) instead.
    #[arg(long)]
    json: bool,
}

fn ttl(text: &str) -> Result<Duration, String> {
    latchkey_core::time::parse_duration("--ttl", text).map_err(|e| e.to_string())
}

fn grace(text: &str) -> Result<Duration, String> {
    latchkey_core::time::parse_duration("--grace", text).map_err(|e| e.to_string())
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
            if let Some(ttl) = a.ttl {
                create = create.ttl(ttl);
            }
            let token = create.wait()?;
            if a.json {
                return show_json(&token);
            }
            let scope = match &token.info.environments {
                Some(envs) => format!("environments {}", envs.join(", ")),
                None => "all environments".to_owned(),
            };
            let expiry = match token.info.expires_at {
                Some(at) => format!(", expires {}", output::time(at)),
                None => String::new(),
            };
            output::note(format!(
                "Created token '{}' ({}, {scope}{expiry}).",
                token.info.name, token.info.role
            ));
            show_secret(&token)
        }
        TokenCommand::Rotate(a) => {
            let token = tokens.rotate(&a.id, a.grace).wait()?;
            if a.json {
                return show_json(&token);
            }
            let old = match token.info.previous_secret_until {
                Some(until) => format!("its old secret is accepted until {}", output::time(until)),
                None => "its old secret is no longer accepted".to_owned(),
            };
            output::note(format!(
                "Rotated token '{}' ({}): {old}.",
                token.info.name, token.info.id
            ));
            show_secret(&token)
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
                "Expires at",
                "Last used at",
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
                    output::time_or(t.expires_at, "never"),
                    output::time_or(t.last_used_at, "never"),
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

/// A new or rotated token and its secret as JSON.
fn show_json(token: &latchkey::NewToken) -> Result<()> {
    output::json(&serde_json::json!({
        "token": token.info,
        "secret": token.secret.expose(),
    }))
}

/// A new or rotated token's id and secret as dotenv lines on stdout, with
/// the warning that it is shown once on stderr.
fn show_secret(token: &latchkey::NewToken) -> Result<()> {
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
