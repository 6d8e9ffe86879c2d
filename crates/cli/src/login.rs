//! `latchkey login` (check a token, save it as a profile) and
//! `latchkey whoami`.

use anyhow::Result;
use clap::Args;
use latchkey::{
    blocking::Wait, Client, Config, ConfigSource, Profile, ProfileFile, DEFAULT_SERVER_URL,
};

use crate::{
    input,
    output::{self, usage},
    profile,
};

/// Check a token against a server and save it as a profile of
/// ~/.latchkey.toml (LATCHKEY_CONFIG_PATH), active unless --no-activate.
///
/// The token secret is read from LATCHKEY_TOKEN_SECRET, else typed without
/// echo on a terminal, else the first line of stdin: never from the command
/// line, where it would end in shell history.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey login --server https://secrets.example.com --token-id ak-...   # asks for the secret
  latchkey login --server http://127.0.0.1:7420 --token-id ak-... --profile local < secret.txt
  latchkey login --token-id ak-... --profile prod --env prod --no-activate")]
pub(crate) struct LoginArgs {
    /// The server's URL.
    #[arg(long, env = "LATCHKEY_SERVER_URL", default_value = DEFAULT_SERVER_URL)]
    server: String,
    /// The token's id (ak-...); asked for on a terminal when not given.
    #[arg(long, env = "LATCHKEY_TOKEN_ID")]
    token_id: Option<String>,
    /// The profile to write [default: the workspace's name].
    #[arg(long)]
    profile: Option<String>,
    /// The environment this profile's commands use by default.
    #[arg(long = "env", short = 'e', value_name = "ENV")]
    env: Option<String>,
    /// Save the profile without making it the active one.
    #[arg(long)]
    no_activate: bool,
}

/// Show the token in use, its workspace, and where it was configured.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey whoami
  LATCHKEY_PROFILE=prod latchkey whoami --json")]
pub(crate) struct WhoamiArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn login(args: LoginArgs) -> Result<()> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let token_id = match args.token_id.filter(|t| !t.is_empty()) {
        Some(id) => id,
        None if terminal => input::prompt_line("Token id (ak-...): ")?,
        None => return Err(usage("--token-id is required (or LATCHKEY_TOKEN_ID)")),
    };
    let secret = match std::env::var("LATCHKEY_TOKEN_SECRET") {
        Ok(s) if !s.is_empty() => zeroize::Zeroizing::new(s),
        _ => input::read_secret("Token secret (as-...): ")?,
    };
    if token_id.is_empty() || secret.is_empty() {
        return Err(usage("a token id and a token secret are both needed"));
    }

    // The token must work before it is saved.
    let client = Client::new(Config::new(&args.server, &token_id, secret.as_str()))?;
    let me = client.whoami().wait()?;

    let mut file = ProfileFile::load_default()?;
    let name = args.profile.unwrap_or_else(|| me.workspace_name.clone());
    let mut entry = Profile::new(&args.server, &token_id, secret.as_str());
    if let Some(env) = args.env {
        entry = entry.with_environment(env);
    }
    let activate = !args.no_activate || file.profiles().is_empty();
    entry.active = activate;
    file.insert(&name, entry)?;
    file.save()?;
    output::line(format!(
        "Logged in to {} as token '{}' ({}) of workspace '{}'.",
        args.server, me.token.name, me.token.role, me.workspace_name
    ))?;
    output::line(format!(
        "Saved profile '{name}' in {}{}.",
        file.path().display(),
        if activate { " and made it active" } else { "" }
    ))?;
    if activate {
        profile::warn_if_overridden();
    }
    Ok(())
}

pub(crate) fn whoami(args: &WhoamiArgs) -> Result<()> {
    let client = Client::from_env()?;
    let me = client.whoami().wait()?;
    let config = client.config();
    let source = match config.source() {
        ConfigSource::Environment => "LATCHKEY_TOKEN_ID and LATCHKEY_TOKEN_SECRET".to_owned(),
        ConfigSource::Profile { name, path } => {
            format!("profile '{name}' in {}", path.display())
        }
        ConfigSource::AdminTokenFile { path } => format!("admin token file {}", path.display()),
        _ => "given in code".to_owned(),
    };
    if args.json {
        let mut value = serde_json::to_value(&me)?;
        if let Some(map) = value.as_object_mut() {
            map.insert("server_url".into(), config.server_url().into());
            map.insert("environment".into(), config.environment().into());
            map.insert("credentials".into(), source.into());
        }
        return output::json(&value);
    }
    let environments = me
        .token
        .environments
        .as_ref()
        .map_or_else(|| "all".to_owned(), |e| e.join(", "));
    let rows = [
        (
            "Workspace",
            format!("{} ({})", me.workspace_name, me.workspace_id),
        ),
        ("Token", format!("{} ({})", me.token.name, me.token.id)),
        ("Role", me.token.role.to_string()),
        ("Environments", environments),
        ("Server", config.server_url().to_owned()),
        (
            "Environment",
            config
                .environment()
                .unwrap_or("(workspace default)")
                .to_owned(),
        ),
        ("Credentials", source),
    ];
    let mut text = String::new();
    for (label, value) in rows {
        text.push_str(&format!("{:13} {value}\n", format!("{label}:")));
    }
    output::print(&text)
}
