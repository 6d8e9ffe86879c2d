//! `latchkey secret`: create, list, info, update and delete named secrets,
//! and read and roll back their versions.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use latchkey::{blocking::Wait, EnvDict, Secret, SecretInfo, VersionInfo};

use crate::{
    connect, input,
    output::{self, usage, Table},
};

/// Named secrets: dictionaries of environment variables, kept encrypted.
#[derive(Args)]
#[command(after_help = "Examples:
  latchkey secret create my-secret API_KEY=abc123 DB_URL=postgres://db/app
  latchkey secret list
  latchkey secret info my-secret
  latchkey secret update my-secret API_KEY=new --unset DB_URL
  latchkey secret history my-secret
  latchkey secret rollback my-secret --to 2
  latchkey secret delete my-secret --yes")]
pub(crate) struct SecretArgs {
    #[command(subcommand)]
    command: SecretCommand,
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Create a named secret from KEY=VALUE pairs and/or files.
    Create(CreateArgs),
    /// List the named secrets of an environment, newest first.
    List(ListArgs),
    /// Show a secret's metadata and keys (never its values).
    Info(InfoArgs),
    /// Set or remove some keys of a secret; the others stay.
    Update(UpdateArgs),
    /// Show a secret's kept versions: who changed which keys, when, how.
    History(HistoryArgs),
    /// Make a new version of a secret with the contents of an older one.
    Rollback(RollbackArgs),
    /// Delete a secret, irreversibly.
    Delete(DeleteArgs),
    /// Show which tokens read each version of a secret (admin token).
    Exposure(ExposureArgs),
}

/// The environment a command works in.
#[derive(Debug, Args)]
pub(crate) struct EnvArg {
    /// Environment [default: LATCHKEY_ENVIRONMENT, the profile's, else the workspace default].
    #[arg(long = "env", short = 'e', value_name = "ENV", alias = "environment")]
    pub(crate) env: Option<String>,
}

/// Create a named secret. Values given as KEY=- are read from $EDITOR on a
/// terminal, else from stdin, so that they stay out of shell history.
#[derive(Args)]
#[command(after_help = "Examples:
  latchkey secret create my-secret API_KEY=abc123 DEBUG=1
  latchkey secret create my-secret --from-dotenv .env
  latchkey secret create my-secret --from-json creds.json --env prod
  latchkey secret create my-secret PASSWORD=-            # type it in $EDITOR
  pass show db | latchkey secret create db PASSWORD=-    # or pipe it
  latchkey secret create my-secret API_KEY=rotated --force

--from-dotenv is read first, then --from-json; KEY=VALUE arguments override
both.")]
struct CreateArgs {
    /// The secret's name: 1 to 64 letters, digits, '.', '_' or '-'.
    name: String,
    /// Keys and values; KEY=- reads the value from $EDITOR or stdin.
    #[arg(value_name = "KEY=VALUE")]
    values: Vec<String>,
    /// Read keys and values from a .env file (python-dotenv syntax).
    #[arg(long, value_name = "FILE")]
    from_dotenv: Option<PathBuf>,
    /// Read keys and values from a JSON object of strings.
    #[arg(long, value_name = "FILE")]
    from_json: Option<PathBuf>,
    /// Replace the contents of an existing secret of that name.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    env: EnvArg,
    /// Print the created secret's metadata as JSON.
    #[arg(long)]
    json: bool,
}

/// List named secrets, newest first.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey secret list
  latchkey secret list --env prod
  latchkey secret list --max 20
  latchkey secret list --created-before 2026-01-01 --max 50
  latchkey secret list --json | jq -r '.[].name'")]
struct ListArgs {
    #[command(flatten)]
    env: EnvArg,
    /// Show at most N secrets, the newest first.
    #[arg(long, value_name = "N")]
    max: Option<usize>,
    /// Only secrets created before WHEN: a date (2026-01-01), an RFC 3339
    /// date-time (2026-01-01T12:00:00Z) or a Unix timestamp in seconds.
    /// To page, pass the oldest "created_at" of the previous page.
    #[arg(long, value_name = "WHEN")]
    created_before: Option<String>,
    /// Print JSON (an array of secrets) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Show a secret's metadata: id, environment, creation, last use, keys.
/// With --version N, the keys of version N and how it was made.
#[derive(Debug, Args)]
#[command(
    // `--version N` is a secret's version here, not latchkey's.
    disable_version_flag = true,
    after_help = "Examples:
  latchkey secret info my-secret
  latchkey secret info my-secret --version 2
  latchkey secret info my-secret --env prod --json"
)]
struct InfoArgs {
    /// The secret's name.
    name: String,
    /// A kept version (see `latchkey secret history`) instead of the current one.
    #[arg(long, value_name = "N", value_parser = parse_version, allow_negative_numbers = true)]
    version: Option<i64>,
    #[command(flatten)]
    env: EnvArg,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Set keys (KEY=VALUE, or KEY=- to type the value) and remove keys
/// (--unset KEY). Keys not named are left as they are.
#[derive(Args)]
#[command(after_help = "Examples:
  latchkey secret update my-secret API_KEY=rotated
  latchkey secret update my-secret --unset OLD_KEY --unset LEGACY
  latchkey secret update my-secret PASSWORD=- < new-password.txt")]
struct UpdateArgs {
    /// The secret's name.
    name: String,
    /// Keys to set; KEY=- reads the value from $EDITOR or stdin.
    #[arg(value_name = "KEY=VALUE")]
    values: Vec<String>,
    /// A key to remove (repeatable).
    #[arg(long, value_name = "KEY")]
    unset: Vec<String>,
    #[command(flatten)]
    env: EnvArg,
    /// Print the secret's metadata after the change as JSON.
    #[arg(long)]
    json: bool,
}

/// The versions of a secret that the server keeps, newest first: each one's
/// number, time, author (a token's name), action (created, updated,
/// overwritten, rolled back to N) and the names of the keys it added,
/// removed and changed. Never a value. "?" marks changes that are not known
/// (the version before was never kept).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey secret history my-secret
  latchkey secret history my-secret --env prod --json | jq '.[0].keys_changed'")]
struct HistoryArgs {
    /// The secret's name.
    name: String,
    #[command(flatten)]
    env: EnvArg,
    /// Print JSON (an array of versions, newest first) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Who read a secret's values: per version, each token that read it, how
/// often, first and last, and through which interfaces (from the audit log).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey secret exposure db-password --env prod
  latchkey secret exposure db-password --json")]
struct ExposureArgs {
    /// The secret's name.
    name: String,
    #[command(flatten)]
    env: EnvArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Roll a secret back: a new version whose contents are those of version N
/// (history is kept; roll forward the same way). Prints the new version.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey secret history my-secret          # find the version to go back to
  latchkey secret rollback my-secret --to 3
  latchkey secret rollback my-secret --to 3 --env prod --json")]
struct RollbackArgs {
    /// The secret's name.
    name: String,
    /// The kept version whose contents become the new version.
    #[arg(long, value_name = "N", value_parser = parse_version, allow_negative_numbers = true)]
    to: i64,
    #[command(flatten)]
    env: EnvArg,
    /// Print the secret's metadata at its new version as JSON.
    #[arg(long)]
    json: bool,
}

/// A version number given on the command line; clap shows the message.
pub(crate) fn parse_version(text: &str) -> Result<i64, String> {
    latchkey_core::rules::parse_version(text).map_err(|e| e.message().to_owned())
}

/// Delete a secret: its values are gone for good. Asks first on a terminal;
/// elsewhere --yes is required.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey secret delete my-secret
  latchkey secret delete my-secret --env dev --yes
  latchkey secret delete maybe-there --allow-missing --yes")]
struct DeleteArgs {
    /// The secret's name.
    name: String,
    /// Succeed when there is no such secret.
    #[arg(long)]
    allow_missing: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
    #[command(flatten)]
    env: EnvArg,
}

pub(crate) fn run(args: SecretArgs) -> Result<()> {
    match args.command {
        SecretCommand::Create(a) => create(&a),
        SecretCommand::List(a) => list(&a),
        SecretCommand::Info(a) => info(&a),
        SecretCommand::Update(a) => update(&a),
        SecretCommand::History(a) => history(&a),
        SecretCommand::Rollback(a) => rollback(&a),
        SecretCommand::Delete(a) => delete(&a),
        SecretCommand::Exposure(a) => exposure(&a),
    }
}

fn create(args: &CreateArgs) -> Result<()> {
    let assignments = input::parse_assignments(&args.values)?;
    if assignments.is_empty() && args.from_dotenv.is_none() && args.from_json.is_none() {
        return Err(usage(
            "a secret needs at least one key: give KEY=VALUE, --from-dotenv FILE or --from-json FILE",
        ));
    }
    let mut values = EnvDict::new();
    if let Some(path) = &args.from_dotenv {
        values.extend(read_dotenv(path)?);
    }
    if let Some(path) = &args.from_json {
        values.extend(read_json(path)?);
    }
    values.extend(input::resolve_values(assignments)?);
    if values.is_empty() {
        return Err(usage(
            "the files given hold no keys: a secret needs at least one",
        ));
    }

    let client = connect::client(args.env.env.as_deref())?;
    let created = client
        .secrets()
        .create(&args.name, values)
        .overwrite(args.force)
        .wait()?;
    if args.json {
        return output::json(&created.info);
    }
    let info = &created.info;
    let verb = if created.created {
        "Created"
    } else {
        "Overwrote"
    };
    output::line(format!(
        "{verb} secret '{}' in environment '{}' with {}.",
        info.name,
        info.environment_name,
        keys_phrase(&info.keys)
    ))
}

/// The variables of a .env file, read by the SDK as python-dotenv reads
/// them. A directory means its `.env` (or a parent's), as in Modal.
fn read_dotenv(path: &Path) -> Result<EnvDict> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    let secret = if meta.is_dir() {
        Secret::from_dotenv(path)?
    } else {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{}: not a file name", path.display()))?;
        // The file's own directory is searched first, and it is there.
        Secret::from_dotenv_with(Some(path), name)?
    };
    Ok(secret.local_values().cloned().unwrap_or_default())
}

/// A JSON object of strings; `null` drops its key, as `from_dict` does.
fn read_json(path: &Path) -> Result<EnvDict> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    // Syntax errors name a line and column, never the text; a type error
    // could quote it, so the shape is checked here instead.
    let parsed: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not valid JSON ({e})", path.display()))?;
    let serde_json::Value::Object(object) = parsed else {
        anyhow::bail!("{}: expected a JSON object of strings", path.display());
    };
    let mut out = EnvDict::new();
    for (key, value) in object {
        match value {
            serde_json::Value::String(v) => {
                out.insert(key, v);
            }
            serde_json::Value::Null => {}
            _ => anyhow::bail!(
                "{}: the value of {key} is not a string (quote numbers and booleans)",
                path.display()
            ),
        }
    }
    Ok(out)
}

fn keys_phrase(keys: &[String]) -> String {
    match keys.len() {
        0 => "no keys".to_owned(),
        1 => format!("key {}", keys[0]),
        _ => format!("keys {}", keys.join(", ")),
    }
}

fn list(args: &ListArgs) -> Result<()> {
    let client = connect::client(args.env.env.as_deref())?;
    let mut list = client.secrets().list();
    if let Some(max) = args.max {
        list = list.max_objects(max);
    }
    if let Some(when) = &args.created_before {
        list = list.created_before(when.as_str());
    }
    let secrets = list.wait()?;
    if args.json {
        return output::json(&secrets);
    }
    let mut table = Table::new(&["Name", "Created at", "Created by", "Last used at"]);
    for s in &secrets {
        table.row(vec![
            s.name.clone(),
            output::time(s.created_at),
            s.created_by.clone(),
            output::time_or(s.last_used_at, "-"),
        ]);
    }
    table.print(&format!(
        "No secrets in {}.",
        connect::environment_label(&client)
    ))
}

fn named(name: &str, client: &latchkey::Client) -> Secret {
    let secret = Secret::from_name(name);
    match client.environment() {
        Some(env) => secret.environment_name(env),
        None => secret,
    }
}

fn info(args: &InfoArgs) -> Result<()> {
    let client = connect::client(args.env.env.as_deref())?;
    let mut secret = named(&args.name, &client);
    if let Some(version) = args.version {
        secret = secret.version(version);
    }
    let info = secret.info_with(&client).wait()?;
    if args.json {
        return output::json(&info);
    }
    print_info(&info)
}

fn print_info(info: &SecretInfo) -> Result<()> {
    let version = match &info.version_info {
        None => info.version.to_string(),
        Some(v) => format!(
            "{} ({} by {} at {})",
            v.version,
            v.action,
            author(v),
            output::time(v.created_at)
        ),
    };
    let mut rows = vec![
        ("Name", info.name.clone()),
        ("Id", info.id.clone()),
        ("Environment", info.environment_name.clone()),
        ("Created at", output::time(info.created_at)),
        ("Created by", info.created_by.clone()),
        ("Last used at", output::time_or(info.last_used_at, "never")),
        ("Version", version),
    ];
    if let Some(v) = &info.version_info {
        rows.push(("Changes", changes_phrase(v)));
    }
    rows.push(("Keys", info.keys.join(", ")));
    let mut text = String::new();
    for (label, value) in rows {
        text.push_str(&format!(
            "{} {value}\n",
            output::paint(
                output::Stream::Stdout,
                "1",
                &format!("{label}:{:1$}", "", 13 - label.len())
            )
        ));
    }
    output::print(&text)
}

fn update(args: &UpdateArgs) -> Result<()> {
    let assignments = input::parse_assignments(&args.values)?;
    if assignments.is_empty() && args.unset.is_empty() {
        return Err(usage(
            "nothing to change: give KEY=VALUE to set a key or --unset KEY to remove one",
        ));
    }
    if let Some(key) = args
        .unset
        .iter()
        .find(|k| assignments.iter().any(|(a, _)| a == *k))
    {
        return Err(usage(format!("{key} is both set and unset")));
    }
    let mut changes: Vec<(String, Option<String>)> = input::resolve_values(assignments)?
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    changes.extend(args.unset.iter().map(|k| (k.clone(), None)));

    let client = connect::client(args.env.env.as_deref())?;
    let info = named(&args.name, &client)
        .update_with(&client, changes)
        .wait()?;
    if args.json {
        return output::json(&info);
    }
    output::line(format!(
        "Updated secret '{}' in environment '{}': {} (version {}).",
        info.name,
        info.environment_name,
        keys_phrase(&info.keys),
        info.version
    ))
}

/// The author of a version, for people.
fn author(v: &VersionInfo) -> &str {
    if v.created_by.is_empty() {
        "an unknown token"
    } else {
        &v.created_by
    }
}

/// `added A; changed B, C`: what a version did to keys, for people.
fn changes_phrase(v: &VersionInfo) -> String {
    let (Some(added), Some(removed), Some(changed)) =
        (&v.keys_added, &v.keys_removed, &v.keys_changed)
    else {
        return "not known (the version before was never kept)".to_owned();
    };
    let parts: Vec<String> = [("added", added), ("removed", removed), ("changed", changed)]
        .into_iter()
        .filter(|(_, keys)| !keys.is_empty())
        .map(|(what, keys)| format!("{what} {}", keys.join(", ")))
        .collect();
    if parts.is_empty() {
        "no key changed".to_owned()
    } else {
        parts.join("; ")
    }
}

fn exposure(args: &ExposureArgs) -> Result<()> {
    let client = connect::client(args.env.env.as_deref())?;
    let exposure = client.audit().secret_exposure(&args.name, None).wait()?;
    if args.json {
        return output::json(&exposure);
    }
    output::note(format!(
        "Secret '{}' in environment '{}', at version {}.",
        exposure.secret, exposure.environment, exposure.current_version
    ));
    let mut table = Table::new(&["Version", "Token", "Name", "Reads", "First", "Last", "Via"]);
    for r in &exposure.items {
        table.row(vec![
            r.version.to_string(),
            r.token_id.clone(),
            r.token_name.clone(),
            r.count.to_string(),
            output::time(r.first),
            output::time(r.last),
            r.interfaces.join(","),
        ]);
    }
    table.print("No token has read its values.")
}

fn history(args: &HistoryArgs) -> Result<()> {
    let client = connect::client(args.env.env.as_deref())?;
    let versions = named(&args.name, &client).history_with(&client).wait()?;
    if args.json {
        return output::json(&versions);
    }
    let list = |keys: &Option<Vec<String>>| match keys {
        None => "?".to_owned(),
        Some(k) if k.is_empty() => "-".to_owned(),
        Some(k) => k.join(", "),
    };
    let mut table = Table::new(&[
        "Version",
        "Created at",
        "Created by",
        "Action",
        "Keys added",
        "Keys removed",
        "Keys changed",
    ]);
    for v in &versions {
        table.row(vec![
            v.version.to_string(),
            output::time(v.created_at),
            if v.created_by.is_empty() {
                "-".to_owned()
            } else {
                v.created_by.clone()
            },
            v.action.to_string(),
            list(&v.keys_added),
            list(&v.keys_removed),
            list(&v.keys_changed),
        ]);
    }
    table.print(&format!("Secret '{}' has no kept version.", args.name))
}

fn rollback(args: &RollbackArgs) -> Result<()> {
    let client = connect::client(args.env.env.as_deref())?;
    let info = named(&args.name, &client)
        .rollback_with(&client, args.to)
        .wait()?;
    if args.json {
        return output::json(&info);
    }
    output::line(format!(
        "Rolled back secret '{}' in environment '{}' to version {}: it is now at version {} ({}).",
        info.name,
        info.environment_name,
        args.to,
        info.version,
        keys_phrase(&info.keys)
    ))
}

fn delete(args: &DeleteArgs) -> Result<()> {
    let client = connect::client(args.env.env.as_deref())?;
    let place = connect::environment_label(&client);
    input::confirm(
        &format!("delete secret '{}' in {place}", args.name),
        "Its values cannot be recovered.",
        args.yes,
    )?;
    let deleted = client
        .secrets()
        .delete(&args.name)
        .allow_missing(args.allow_missing)
        .wait()?;
    if deleted {
        output::line(format!("Deleted secret '{}' in {place}.", args.name))
    } else {
        output::line(format!(
            "No secret '{}' in {place}: nothing to delete.",
            args.name
        ))
    }
}
