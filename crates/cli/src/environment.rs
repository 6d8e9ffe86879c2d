//! `latchkey environment`: the namespaces of secrets (`main`, `dev`, ...).

use anyhow::Result;
use clap::{Args, Subcommand};
use latchkey::blocking::Wait;

use crate::{
    connect, input,
    output::{self, Table},
};

/// Environments: separate sets of secrets in one workspace (main, dev, prod...).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey environment list
  latchkey environment create dev
  latchkey environment rename dev staging
  latchkey environment delete staging --yes")]
pub(crate) struct EnvironmentArgs {
    #[command(subcommand)]
    command: EnvironmentCommand,
}

#[derive(Debug, Subcommand)]
enum EnvironmentCommand {
    /// List the environments, the default first.
    List(ListArgs),
    /// Create an environment (admin token).
    Create(CreateArgs),
    /// Delete an environment (admin token); asks first on a terminal.
    Delete(DeleteArgs),
    /// Rename an environment; its secrets move with it (admin token).
    Rename(RenameArgs),
}

/// List the environments the token may see.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey environment list
  latchkey environment list --json | jq -r '.[].name'")]
struct ListArgs {
    /// Print JSON (an array of environments) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Create an environment.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey environment create dev
  latchkey secret create db URL=postgres://dev-db --env dev")]
struct CreateArgs {
    /// Its name: up to 64 letters, digits, '-' or '_', starting with a letter or digit.
    name: String,
    /// Print the environment as JSON.
    #[arg(long)]
    json: bool,
}

/// Delete an environment. One that holds secrets is refused unless
/// --with-secrets; the workspace default cannot be deleted.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey environment delete dev
  latchkey environment delete dev --with-secrets --yes")]
struct DeleteArgs {
    /// The environment's name.
    name: String,
    /// Also delete the secrets in it, irreversibly.
    #[arg(long)]
    with_secrets: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
}

/// Rename an environment.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey environment rename dev staging")]
struct RenameArgs {
    /// Its current name.
    name: String,
    /// Its new name.
    new_name: String,
}

pub(crate) fn run(args: EnvironmentArgs) -> Result<()> {
    let client = connect::client(None)?;
    let environments = client.environments();
    match args.command {
        EnvironmentCommand::List(a) => {
            let list = environments.list().wait()?;
            if a.json {
                return output::json(&list);
            }
            let mut table = Table::new(&["Name", "Default", "Created at", "Id"]);
            for e in &list {
                table.row(vec![
                    e.name.clone(),
                    if e.is_default { "yes" } else { "" }.to_owned(),
                    output::time(e.created_at),
                    e.id.clone(),
                ]);
            }
            table.print("No environments.")
        }
        EnvironmentCommand::Create(a) => {
            let env = environments.create(&a.name).wait()?;
            if a.json {
                return output::json(&env);
            }
            output::line(format!("Created environment '{}'.", env.name))
        }
        EnvironmentCommand::Delete(a) => {
            let warning = if a.with_secrets {
                "Every secret in it is deleted too, irreversibly."
            } else {
                "It must hold no secrets."
            };
            input::confirm(&format!("delete environment '{}'", a.name), warning, a.yes)?;
            environments
                .delete(&a.name)
                .with_secrets(a.with_secrets)
                .wait()?;
            output::line(format!("Deleted environment '{}'.", a.name))
        }
        EnvironmentCommand::Rename(a) => {
            let env = environments.rename(&a.name, &a.new_name).wait()?;
            output::line(format!(
                "Renamed environment '{}' to '{}'.",
                a.name, env.name
            ))
        }
    }
}
