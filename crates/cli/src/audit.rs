//! `latchkey audit`: the audit log (admin token), and the watch every
//! command keeps on the server's chain head.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use latchkey::{blocking::Wait, AuditEvent, AuditHead, AuditQuery, Client};

use crate::{
    connect,
    output::{self, Stream, Table},
};

/// The audit log: who did what, and whether the log is intact (admin token).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  latchkey audit list --secret db-password --action secret.read
  latchkey audit list --since 2026-01-01 --json
  latchkey audit export --follow | my-log-shipper
  latchkey audit verify")]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// List events, oldest first within the window.
    List(ListArgs),
    /// Print events as JSON lines, for a log shipper.
    Export(ExportArgs),
    /// Check the whole chain: exit 0 with the count, 1 naming the first bad event.
    Verify,
}

/// Which events: every filter given must hold.
#[derive(Debug, Args)]
struct Filters {
    /// Logged at or after this instant (RFC 3339 or a date).
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Logged before this instant.
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
    /// About the secret of this name.
    #[arg(long, value_name = "NAME")]
    secret: Option<String>,
    /// By the token of this id (ak-...).
    #[arg(long, value_name = "ID")]
    token: Option<String>,
    /// Of this action (e.g. secret.read, token.create, auth.failure).
    #[arg(long, value_name = "ACTION")]
    action: Option<String>,
    /// In this environment.
    #[arg(long = "env", short = 'e', value_name = "ENV")]
    env: Option<String>,
}

impl Filters {
    fn query(&self) -> AuditQuery {
        let mut query = AuditQuery::default();
        query.since.clone_from(&self.since);
        query.until.clone_from(&self.until);
        query.secret.clone_from(&self.secret);
        query.token.clone_from(&self.token);
        query.action.clone_from(&self.action);
        query.environment.clone_from(&self.env);
        query
    }
}

/// List events (never a value: events hold none).
#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    filters: Filters,
    /// At most this many events.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
    /// Print a JSON array instead.
    #[arg(long)]
    json: bool,
}

/// Export events as JSON lines (one object per event, oldest first).
#[derive(Debug, Args)]
struct ExportArgs {
    /// Logged at or after this instant.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Keep going: print new events as they are logged (until interrupted).
    #[arg(long)]
    follow: bool,
}

/// How long `export --follow` waits between polls.
const FOLLOW_POLL: Duration = Duration::from_secs(1);

pub(crate) fn run(args: AuditArgs) -> Result<()> {
    let client = connect::client(None)?;
    let audit = client.audit();
    match args.command {
        AuditCommand::List(a) => {
            let mut query = a.filters.query();
            let mut events = Vec::new();
            while events.len() < a.limit as usize {
                query.limit = Some((a.limit as usize - events.len()).min(1_000) as u32);
                let page = audit.list(&query).wait()?;
                events.extend(page.items);
                match page.next_after {
                    Some(after) => query.after = Some(after),
                    None => break,
                }
            }
            if a.json {
                return output::json(&events);
            }
            print_table(&events)
        }
        AuditCommand::Export(a) => {
            let mut query = AuditQuery::default();
            query.since = a.since;
            let mut out = std::io::stdout().lock();
            loop {
                let page = audit.list(&query).wait()?;
                for event in &page.items {
                    serde_json::to_writer(&mut out, event)?;
                    out.write_all(b"\n")?;
                    query.after = Some(event.seq);
                }
                out.flush()?;
                if page.next_after.is_none() {
                    if !a.follow {
                        return Ok(());
                    }
                    std::thread::sleep(FOLLOW_POLL);
                }
            }
        }
        AuditCommand::Verify => {
            let verdict = audit.verify().wait()?;
            if verdict.intact {
                output::line(format!(
                    "The audit log is intact: {} events, {} to {}.",
                    verdict.count.unwrap_or(0),
                    verdict.first.unwrap_or(0),
                    verdict.last.unwrap_or(0)
                ))
            } else {
                Err(anyhow::anyhow!(
                    "the audit log is NOT intact at event {}: {}",
                    verdict.broken_at.unwrap_or(0),
                    verdict.reason.unwrap_or_default()
                ))
            }
        }
    }
}

fn print_table(events: &[AuditEvent]) -> Result<()> {
    let mut table = Table::new(&[
        "Seq",
        "Time",
        "Actor",
        "Client",
        "Via",
        "Action",
        "Environment",
        "Secret",
        "Version",
        "Outcome",
    ]);
    for e in events {
        table.row(vec![
            e.seq.to_string(),
            output::time(e.time),
            e.actor
                .as_ref()
                .map_or_else(|| "-".to_owned(), |a| format!("{} ({})", a.name, a.id)),
            e.client.clone().unwrap_or_else(|| "-".to_owned()),
            e.interface.clone(),
            e.action.clone(),
            e.environment.clone().unwrap_or_else(|| "-".to_owned()),
            e.secret.clone().unwrap_or_else(|| "-".to_owned()),
            e.version.map_or_else(|| "-".to_owned(), |v| v.to_string()),
            e.outcome.clone(),
        ]);
    }
    table.print("No events.")
}

/// Where the heads seen are kept: beside the profile file when
/// `LATCHKEY_CONFIG_PATH` names one, else in `$XDG_CONFIG_HOME/latchkey`
/// (`~/.config/latchkey`).
fn heads_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LATCHKEY_CONFIG_PATH") {
        return Some(Path::new(&path).parent()?.join("latchkey-audit-heads.json"));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(config.join("latchkey").join("audit-heads.json"))
}

/// What a new head says against the highest one seen before, if it is
/// suspicious.
fn compare(seen: &AuditHead, now: &AuditHead) -> Option<String> {
    if now.seq < seen.seq {
        Some(format!(
            "its audit log ends at event {}, but this machine saw it at event {} before: \
             events were cut off, or the database was restored from an older copy",
            now.seq, seen.seq
        ))
    } else if now.seq == seen.seq && now.mac != seen.mac {
        Some(format!(
            "its audit event {} has another MAC than when this machine saw it: \
             the log was rewritten, or this is another server's database",
            now.seq
        ))
    } else {
        None
    }
}

/// Checks the server's audit head against the highest one this machine has
/// seen for it, warning loudly on stderr when the log is shorter or differs,
/// and remembers a higher one. Best effort: a server without the head (or
/// unreachable) is left for the command itself to report.
pub(crate) fn watch_head(client: &Client) {
    let Ok(now) = client.audit().head().wait() else {
        return;
    };
    let Some(file) = heads_file() else {
        return;
    };
    let mut heads: BTreeMap<String, AuditHead> = std::fs::read(&file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    // The workspace names the database, whatever address serves it.
    let server = now
        .workspace_id
        .clone()
        .unwrap_or_else(|| client.server_url().to_owned());
    if let Some(seen) = heads.get(&server) {
        if let Some(problem) = compare(seen, &now) {
            output::note(output::paint(
                Stream::Stderr,
                "1;31",
                &format!(
                    "WARNING: the server {} (workspace {server}) may have been rolled back: {problem}. \
                     Check with `latchkey audit verify` and your backups before trusting it. \
                     (Remembered in {}.)",
                    client.server_url(),
                    file.display()
                ),
            ));
            return;
        }
        if now.seq <= seen.seq {
            return;
        }
    }
    heads.insert(server, now);
    if let Err(e) = save(&file, &heads) {
        tracing::debug!(error = %e, "cannot remember the audit head");
    }
}

fn save(file: &Path, heads: &BTreeMap<String, AuditHead>) -> Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(heads)?)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: i64, mac: &str) -> AuditHead {
        serde_json::from_value(serde_json::json!({"seq": seq, "mac": mac})).unwrap()
    }

    #[test]
    fn a_shorter_or_different_chain_is_suspicious() {
        assert!(compare(&head(5, "a"), &head(5, "a")).is_none());
        assert!(compare(&head(5, "a"), &head(9, "b")).is_none());
        assert!(compare(&head(5, "a"), &head(4, "a"))
            .unwrap()
            .contains("ends at event 4"));
        assert!(compare(&head(5, "a"), &head(5, "b"))
            .unwrap()
            .contains("another MAC"));
    }
}
