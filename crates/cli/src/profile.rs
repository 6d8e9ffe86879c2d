//! `latchkey profile`: the named sets of credentials in `~/.latchkey.toml`
//! (`LATCHKEY_CONFIG_PATH`), one of them active.

use anyhow::Result;
use clap::{Args, Subcommand};
use latchkey::ProfileFile;
use serde::Serialize;

use crate::output::{self, Table};

/// Profiles: saved servers and tokens (`latchkey login` adds them).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey profile list
  latchkey profile activate prod
  latchkey profile delete old-laptop
  LATCHKEY_PROFILE=staging latchkey secret list   # one command, another profile")]
pub(crate) struct ProfileArgs {
    #[command(subcommand)]
    command: ProfileCommand,
}

#[derive(Debug, Subcommand)]
enum ProfileCommand {
    /// List the profiles; the active one is marked.
    List(ListArgs),
    /// Make a profile the active one.
    Activate(ActivateArgs),
    /// Delete a profile from the file (the token itself stays valid:
    /// `latchkey token revoke` ends it).
    Delete(DeleteArgs),
}

/// List profiles (never their token secrets).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey profile list
  latchkey profile list --json")]
struct ListArgs {
    /// Print JSON (an array of profiles, without secrets) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Make a profile the active one: commands and the SDK use it when no
/// LATCHKEY_TOKEN_ID / LATCHKEY_TOKEN_SECRET variables are set.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey profile activate prod")]
struct ActivateArgs {
    /// The profile's name.
    name: String,
}

/// Delete a saved profile and the token secret it holds from the file.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey profile delete staging")]
struct DeleteArgs {
    /// The profile's name.
    name: String,
}

#[derive(Serialize)]
struct Listed<'a> {
    name: &'a str,
    server_url: Option<&'a str>,
    token_id: Option<&'a str>,
    environment: Option<&'a str>,
    active: bool,
}

pub(crate) fn run(args: ProfileArgs) -> Result<()> {
    let mut file = ProfileFile::load_default()?;
    match args.command {
        ProfileCommand::List(a) => {
            let active = file.active().map(|(name, _)| name.to_owned());
            let listed: Vec<Listed<'_>> = file
                .profiles()
                .iter()
                .map(|(name, p)| Listed {
                    name,
                    server_url: p.server_url.as_deref(),
                    token_id: p.token_id.as_deref(),
                    environment: p.environment.as_deref(),
                    active: active.as_deref() == Some(name.as_str()),
                })
                .collect();
            if a.json {
                return output::json(&listed);
            }
            let mut table = Table::new(&["Active", "Name", "Server", "Token id", "Environment"]);
            for p in &listed {
                table.row(vec![
                    if p.active { "*" } else { "" }.to_owned(),
                    p.name.to_owned(),
                    p.server_url.unwrap_or("-").to_owned(),
                    p.token_id.unwrap_or("-").to_owned(),
                    p.environment.unwrap_or("-").to_owned(),
                ]);
            }
            table.print(&format!(
                "No profiles in {}: `latchkey login` adds one.",
                file.path().display()
            ))
        }
        ProfileCommand::Activate(a) => {
            file.activate(&a.name)?;
            file.save()?;
            output::line(format!("Profile '{}' is now active.", a.name))?;
            warn_if_overridden();
            Ok(())
        }
        ProfileCommand::Delete(a) => {
            file.remove(&a.name)?;
            file.save()?;
            output::line(format!(
                "Profile '{}' deleted from {}.",
                a.name,
                file.path().display()
            ))?;
            match file.active() {
                Some((name, _)) => output::line(format!("Profile '{name}' is active.")),
                None if file.profiles().is_empty() => Ok(()),
                None => output::line(
                    "No profile is active now: `latchkey profile activate NAME` picks one.",
                ),
            }
        }
    }
}

/// Token variables win over any profile: say so when they are set.
pub(crate) fn warn_if_overridden() {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if set("LATCHKEY_TOKEN_ID") || set("LATCHKEY_TOKEN_SECRET") {
        output::note(
            "Note: LATCHKEY_TOKEN_ID/LATCHKEY_TOKEN_SECRET are set in this shell and take \
             precedence over profiles.",
        );
    } else if set("LATCHKEY_PROFILE") {
        output::note("Note: LATCHKEY_PROFILE is set in this shell and chooses another profile.");
    }
}
