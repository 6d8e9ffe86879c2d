//! Lockfiles: the exact versions of the named secrets a command ran with.
//!
//! `latchkey run --lock FILE` records, for each `--secret`, the version it
//! resolved; `latchkey run --locked FILE` later resolves exactly those
//! versions, so that a deploy, a CI job or a rerun of old code gets the same
//! values however the secrets changed since (as long as the server still
//! keeps those versions: `latchkey serve --keep-versions`).
//! `latchkey lock status FILE` tells what changed since.
//!
//! A lockfile holds no value, only where each value is kept, so it can be
//! committed beside the code it runs. It is TOML with a format marker
//! (`latchkey_lockfile = 1`): a file that is not a lockfile (a `.env` given
//! by mistake, a lockfile of a future format) is refused before anything is
//! contacted, and its text is never quoted in the error, since a mistaken
//! file may hold secrets. Each entry also records the secret's id, so that a
//! secret deleted and created again under the same name (whose numbering
//! restarts) is never mistaken for the one that was locked.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use latchkey::{blocking::Wait, Client, Secret, VersionInfo};
use latchkey_core::rules;
use serde::Serialize;

use crate::{
    connect,
    output::{self, Table},
};

/// The key whose value says a TOML file is a lockfile, and of which format.
const MARKER: &str = "latchkey_lockfile";
/// The format this latchkey writes and reads.
const FORMAT: i64 = 1;
/// Larger files are not lockfiles (which hold a few lines per secret).
const MAX_BYTES: u64 = 4 << 20;

const HEADER: &str = "\
# Written by `latchkey run --lock`: the version of each named secret the
# command ran with, and never a value. `latchkey run --locked FILE -- CMD`
# resolves exactly these versions; `latchkey lock status FILE` shows what
# changed since.
";

/// One secret of a lockfile, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Pin {
    /// Its environment's name (never empty: the default's name is written).
    pub(crate) environment: String,
    pub(crate) name: String,
    /// `st-...`: tells a secret deleted and created again from the original.
    pub(crate) id: String,
    pub(crate) version: i64,
    pub(crate) required_keys: Vec<String>,
}

impl Pin {
    /// The SDK secret that resolves exactly this version.
    pub(crate) fn secret(&self) -> Secret {
        Secret::from_name(&self.name)
            .environment_name(&self.environment)
            .version(self.version)
            .required_keys(self.required_keys.iter().cloned())
    }

    /// `secret 'db' (environment 'main', version 3)`, for messages.
    pub(crate) fn label(&self) -> String {
        format!(
            "secret '{}' (environment '{}', version {})",
            self.name, self.environment, self.version
        )
    }
}

/// A lockfile's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Lockfile {
    pub(crate) pins: Vec<Pin>,
}

impl Lockfile {
    /// Reads and checks the lockfile at `path`.
    pub(crate) fn read(path: &Path) -> Result<Lockfile> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_BYTES + 1).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read lockfile {}", path.display()))?;
        if bytes.len() as u64 > MAX_BYTES {
            bail!(
                "{} is not a latchkey lockfile: it is larger than {} MiB",
                path.display(),
                MAX_BYTES >> 20
            );
        }
        let Ok(text) = String::from_utf8(bytes) else {
            bail!(
                "{} is not a latchkey lockfile: it is not UTF-8 text",
                path.display()
            );
        };
        Lockfile::parse(&text).map_err(|e| anyhow::anyhow!("{}{e}", path.display()))
    }

    /// Checks `text`. The error begins where the file's name goes
    /// (` is not a latchkey lockfile...`, `: secret 2: ...`) and never
    /// quotes the text, which may not be a lockfile at all.
    fn parse(text: &str) -> Result<Lockfile, String> {
        let not_ours = |why: String| format!(" is not a latchkey lockfile: {why}");
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            not_ours(format!("it is not valid TOML{at}"))
        })?;
        match table.get(MARKER) {
            None => {
                return Err(not_ours(format!(
                    "it has no `{MARKER} = {FORMAT}` line (write one with `latchkey run --lock`)"
                )))
            }
            Some(toml::Value::Integer(FORMAT)) => {}
            Some(toml::Value::Integer(n)) if *n > FORMAT => {
                return Err(format!(
                    " is a lockfile of format {n}, written by a newer latchkey; \
                     this one reads format {FORMAT}"
                ))
            }
            Some(_) => return Err(not_ours(format!("`{MARKER}` must be {FORMAT}"))),
        }
        if let Some(key) = table.keys().find(|k| *k != MARKER && *k != "secret") {
            return Err(format!(": unknown key '{}'", rules::echo(key)));
        }
        let entries = match table.get("secret") {
            None => &Vec::new(),
            Some(toml::Value::Array(entries)) => entries,
            Some(_) => return Err(": `secret` must be an array of tables ([[secret]])".into()),
        };
        let pins = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| parse_pin(entry).map_err(|e| format!(": secret {}: {e}", i + 1)))
            .collect::<Result<_, _>>()?;
        Ok(Lockfile { pins })
    }

    /// The file's text.
    pub(crate) fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct File<'a> {
            latchkey_lockfile: i64,
            secret: &'a [Pin],
        }
        let body = toml::to_string(&File {
            latchkey_lockfile: FORMAT,
            secret: &self.pins,
        })
        .unwrap_or_else(|e| unreachable!("a lockfile is plain TOML: {e}"));
        format!("{HEADER}{body}")
    }

    /// Writes the lockfile to `path` atomically: a temp file in the same
    /// directory, flushed to disk, renamed over `path`. A reader sees the
    /// old file or the new one, never half of one, and a failure leaves the
    /// old one as it was. A new file is 0644 (it holds no secret); an
    /// existing one keeps its mode.
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let context = || format!("cannot write lockfile {}", path.display());
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
        let mut tmp = tempfile::Builder::new()
            .prefix(".latchkey-lock-")
            .tempfile_in(dir)
            .with_context(context)?;
        tmp.write_all(self.to_toml().as_bytes())
            .and_then(|()| {
                tmp.as_file()
                    .set_permissions(std::fs::Permissions::from_mode(mode))
            })
            .and_then(|()| tmp.as_file().sync_all())
            .with_context(context)?;
        tmp.persist(path)
            .map_err(|e| e.error)
            .with_context(context)?;
        // The rename itself, on disk: best effort (some filesystems refuse).
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// One `[[secret]]` table, checked field by field; the errors name fields,
/// not what they hold.
fn parse_pin(entry: &toml::Value) -> Result<Pin, String> {
    let toml::Value::Table(table) = entry else {
        return Err("expected a table ([[secret]])".into());
    };
    if let Some(key) = table.keys().find(|k| {
        !matches!(
            k.as_str(),
            "environment" | "name" | "id" | "version" | "required_keys"
        )
    }) {
        return Err(format!("unknown key '{}'", rules::echo(key)));
    }
    let string = |field: &str| match table.get(field) {
        Some(toml::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("`{field}` must be a string")),
        None => Err(format!("`{field}` is missing")),
    };
    let environment = string("environment")?;
    let name = string("name")?;
    let id = string("id")?;
    rules::check_environment_name(&environment).map_err(|e| e.message().to_owned())?;
    rules::check_secret_name(&name).map_err(|e| e.message().to_owned())?;
    if !id.starts_with("st-") {
        return Err("`id` must be a secret id (st-...)".into());
    }
    let version = match table.get("version") {
        Some(toml::Value::Integer(v)) => *v,
        Some(_) => return Err("`version` must be a whole number from 1".into()),
        None => return Err("`version` is missing".into()),
    };
    rules::check_version(version).map_err(|e| e.message().to_owned())?;
    let required_keys = match table.get("required_keys") {
        None => Vec::new(),
        Some(toml::Value::Array(keys)) => keys
            .iter()
            .map(|k| match k {
                toml::Value::String(k) => rules::check_key(k)
                    .map(|()| k.clone())
                    .map_err(|e| e.message().to_owned()),
                _ => Err("`required_keys` must be an array of key names".to_owned()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`required_keys` must be an array of key names".into()),
    };
    Ok(Pin {
        environment,
        name,
        id,
        version,
        required_keys,
    })
}

/// Lockfiles written by `latchkey run --lock`.
#[derive(Args)]
#[command(after_help = "Examples:
  latchkey run --lock secrets.lock --secret db --secret api:TOKEN -- ./deploy.sh
  latchkey lock status secrets.lock
  latchkey run --locked secrets.lock -- ./deploy.sh")]
pub(crate) struct LockArgs {
    #[command(subcommand)]
    command: LockCommand,
}

#[derive(Subcommand)]
enum LockCommand {
    /// Show each locked secret's version, its current version and the keys changed since.
    Status(StatusArgs),
}

/// For each secret of a lockfile: the locked version, the current one, and
/// the names of the keys added, removed and changed since (never a value).
/// Fails (exit code 1) when a locked version can no longer be resolved: its
/// secret or environment is gone, or the server no longer keeps it.
#[derive(Args)]
#[command(after_help = "Examples:
  latchkey lock status secrets.lock
  latchkey lock status secrets.lock --json | jq '.[] | select(.current_version != .pinned_version)'")]
struct StatusArgs {
    /// The lockfile.
    file: PathBuf,
    /// Print JSON (an array, one object per locked secret) instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: LockArgs) -> Result<()> {
    match args.command {
        LockCommand::Status(a) => status(&a),
    }
}

/// Where a locked secret stands now.
#[derive(Debug, Serialize)]
struct PinStatus {
    environment: String,
    name: String,
    pinned_version: i64,
    /// `None` when the secret (or its environment) is gone.
    current_version: Option<i64>,
    /// Keys of the current version not in the pinned one; `None` when not
    /// known (the pinned version is no longer kept).
    keys_added: Option<Vec<String>>,
    keys_removed: Option<Vec<String>>,
    /// Keys in both whose value some version since changed.
    keys_changed: Option<Vec<String>>,
    /// Why `latchkey run --locked` would fail on this secret.
    error: Option<String>,
}

fn status(args: &StatusArgs) -> Result<()> {
    let lock = Lockfile::read(&args.file)?;
    let client = connect::client(None)?;
    let statuses: Vec<PinStatus> = lock.pins.iter().map(|p| pin_status(&client, p)).collect();
    if args.json {
        output::json(&statuses)?;
    } else {
        let list = |keys: &Option<Vec<String>>| match keys {
            None => "?".to_owned(),
            Some(k) if k.is_empty() => "-".to_owned(),
            Some(k) => k.join(", "),
        };
        let mut table = Table::new(&[
            "Secret",
            "Environment",
            "Pinned",
            "Current",
            "Keys added",
            "Keys removed",
            "Keys changed",
        ]);
        for s in &statuses {
            table.row(vec![
                s.name.clone(),
                s.environment.clone(),
                s.pinned_version.to_string(),
                s.current_version.map_or("-".to_owned(), |v| v.to_string()),
                list(&s.keys_added),
                list(&s.keys_removed),
                list(&s.keys_changed),
            ]);
        }
        table.print(&format!("{} locks no secret.", args.file.display()))?;
    }
    let broken: Vec<String> = statuses
        .iter()
        .zip(&lock.pins)
        .filter_map(|(s, pin)| s.error.as_ref().map(|e| format!("{}: {e}", pin.label())))
        .collect();
    if !broken.is_empty() {
        bail!(
            "{} of {} locked secret(s) can no longer be resolved, so \
             `latchkey run --locked {}` fails:\n  {}",
            broken.len(),
            lock.pins.len(),
            args.file.display(),
            broken.join("\n  ")
        );
    }
    Ok(())
}

/// The status of one pin: the secret's current version and history, and the
/// keys changed between the pinned version and the current one.
fn pin_status(client: &Client, pin: &Pin) -> PinStatus {
    let mut status = PinStatus {
        environment: pin.environment.clone(),
        name: pin.name.clone(),
        pinned_version: pin.version,
        current_version: None,
        keys_added: None,
        keys_removed: None,
        keys_changed: None,
        error: None,
    };
    let secret = Secret::from_name(&pin.name).environment_name(&pin.environment);
    let found = secret
        .info_with(client)
        .wait()
        .and_then(|info| Ok((info, secret.history_with(client).wait()?)));
    let (info, history) = match found {
        Ok(found) => found,
        Err(e) => {
            status.error = Some(e.to_string());
            return status;
        }
    };
    if info.id != pin.id {
        status.error = Some(format!(
            "the secret was deleted and created again since it was locked \
             (locked id {}, now {}); lock it again",
            pin.id, info.id
        ));
        return status;
    }
    // The newest kept version is the current one, and the history is one
    // consistent read: an update between the two calls shows there.
    status.current_version = Some(history.first().map_or(info.version, |v| v.version));
    let Some(pinned) = history.iter().find(|v| v.version == pin.version) else {
        let kept = match (history.last(), history.first()) {
            (Some(first), Some(last)) if first.version == last.version => {
                format!("only version {} is kept", last.version)
            }
            (Some(first), Some(last)) => {
                format!("versions {} to {} are kept", first.version, last.version)
            }
            _ => "no version is kept".to_owned(),
        };
        status.error = Some(format!(
            "version {} is no longer kept (destroyed); {kept}",
            pin.version
        ));
        return status;
    };
    let since: Vec<&VersionInfo> = history.iter().filter(|v| v.version > pin.version).collect();
    let changes = KeyChanges::since(pinned, &since);
    status.keys_added = Some(changes.added);
    status.keys_removed = Some(changes.removed);
    status.keys_changed = changes.changed;
    status
}

/// The keys that differ between a pinned version and the current one.
#[derive(Debug, PartialEq, Eq)]
struct KeyChanges {
    /// In the current version, not in the pinned one.
    added: Vec<String>,
    /// In the pinned version, not in the current one.
    removed: Vec<String>,
    /// In both, and changed by a version in between (set, or removed and
    /// added again); `None` when a version in between did not record what
    /// it changed.
    changed: Option<Vec<String>>,
}

impl KeyChanges {
    /// From the pinned version's record and those of the versions after it
    /// (any order). Only key names: values never leave the server.
    fn since(pinned: &VersionInfo, later: &[&VersionInfo]) -> KeyChanges {
        let before: BTreeSet<&String> = pinned.keys.iter().collect();
        let Some(current) = later.iter().max_by_key(|v| v.version) else {
            return KeyChanges {
                added: Vec::new(),
                removed: Vec::new(),
                changed: Some(Vec::new()),
            };
        };
        let after: BTreeSet<&String> = current.keys.iter().collect();
        let mut touched = BTreeSet::new();
        let mut known = true;
        for v in later {
            match (&v.keys_added, &v.keys_removed, &v.keys_changed) {
                (Some(a), Some(r), Some(c)) => touched.extend(a.iter().chain(r).chain(c)),
                _ => known = false,
            }
        }
        KeyChanges {
            added: after.difference(&before).map(|k| (*k).clone()).collect(),
            removed: before.difference(&after).map(|k| (*k).clone()).collect(),
            changed: known.then(|| {
                before
                    .intersection(&after)
                    .filter(|k| touched.contains(**k))
                    .map(|k| (*k).clone())
                    .collect()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(name: &str, version: i64, keys: &[&str]) -> Pin {
        Pin {
            environment: "main".into(),
            name: name.into(),
            id: "st-abc".into(),
            version,
            required_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    #[test]
    fn a_lockfile_reads_back_what_was_written() {
        let lock = Lockfile {
            pins: vec![pin("db.prod", 3, &["URL", "PASSWORD"]), pin("api", 1, &[])],
        };
        let text = lock.to_toml();
        assert!(
            text.starts_with("# Written by `latchkey run --lock`"),
            "{text}"
        );
        assert!(text.contains("latchkey_lockfile = 1\n"), "{text}");
        assert_eq!(Lockfile::parse(&text).unwrap(), lock);
        // Command-line order is kept.
        assert!(text.find("db.prod").unwrap() < text.find("\"api\"").unwrap());
    }

    #[test]
    fn files_that_are_not_lockfiles_are_refused_without_quoting_them() {
        let secret = "hunter2-in-a-dotenv";
        for (text, needle) in [
            (
                format!("PASSWORD={secret}\n"),
                " is not a latchkey lockfile: it is not valid TOML (line 1)",
            ),
            (
                format!("password = \"{secret}\"\n"),
                " is not a latchkey lockfile: it has no `latchkey_lockfile = 1` line",
            ),
            (
                "latchkey_lockfile = \"yes\"\n".to_owned(),
                " is not a latchkey lockfile: `latchkey_lockfile` must be 1",
            ),
            (
                "latchkey_lockfile = 2\n".to_owned(),
                " is a lockfile of format 2",
            ),
            (
                format!("latchkey_lockfile = 1\n[[secret]]\nname = \"a\"\nenvironment = \"main\"\nid = \"st-x\"\nversion = \"{secret}\"\n"),
                ": secret 1: `version` must be a whole number from 1",
            ),
            (
                "latchkey_lockfile = 1\n[[secret]]\nname = \"a\"\nenvironment = \"main\"\nid = \"st-x\"\nversion = 0\n".to_owned(),
                ": secret 1: Invalid version 0: versions are numbered from 1",
            ),
            (
                "latchkey_lockfile = 1\n[[secret]]\nname = \"a\"\nenvironment = \"main\"\nversion = 2\n".to_owned(),
                ": secret 1: `id` is missing",
            ),
            (
                "latchkey_lockfile = 1\nsecrets = []\n".to_owned(),
                ": unknown key 'secrets'",
            ),
        ] {
            let e = Lockfile::parse(&text).unwrap_err();
            assert!(e.starts_with(needle), "{e:?} should start with {needle:?}");
            assert!(!e.contains(secret), "{e}");
        }
        assert_eq!(
            Lockfile::parse("latchkey_lockfile = 1\n").unwrap(),
            Lockfile::default()
        );
    }

    fn version(n: i64, keys: &[&str], changes: Option<[&[&str]; 3]>) -> VersionInfo {
        let owned = |k: &[&str]| k.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
        let mut v: VersionInfo = serde_json::from_value(serde_json::json!({
            "version": n,
            "created_at": "2025-01-01T00:00:00Z",
            "created_by": "admin",
            "action": "updated",
            "keys": keys,
        }))
        .unwrap();
        if let Some([a, r, c]) = changes {
            v.keys_added = Some(owned(a));
            v.keys_removed = Some(owned(r));
            v.keys_changed = Some(owned(c));
        }
        v
    }

    #[test]
    fn changes_since_a_pin_are_composed_from_key_names() {
        let pinned = version(2, &["A", "B", "C", "D"], Some([&[], &[], &[]]));
        // v3 changes A and removes B; v4 adds B back and adds E; v5 changes
        // nothing that was pinned but E.
        let v3 = version(3, &["A", "C", "D"], Some([&[], &["B"], &["A"]]));
        let v4 = version(4, &["A", "B", "C", "D", "E"], Some([&["B", "E"], &[], &[]]));
        let v5 = version(5, &["A", "B", "C", "E"], Some([&[], &["D"], &["E"]]));
        let changes = KeyChanges::since(&pinned, &[&v5, &v4, &v3]);
        assert_eq!(changes.added, ["E"]);
        assert_eq!(changes.removed, ["D"]);
        assert_eq!(changes.changed, Some(vec!["A".into(), "B".into()]));

        let up_to_date = KeyChanges::since(&pinned, &[]);
        assert_eq!(up_to_date.changed, Some(vec![]));
        let unknown = version(3, &["A", "B", "C", "D"], None);
        assert_eq!(KeyChanges::since(&pinned, &[&unknown]).changed, None);
    }
}
