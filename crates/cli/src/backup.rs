//! `latchkey backup` and `latchkey restore`: online snapshots of a whole
//! store, still sealed, and their restore into a new store.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use latchkey::blocking::Wait as _;
use latchkey_server::bootstrap::{self, MasterKeySources};
use latchkey_store::{
    backup::{self, Manifest},
    copy::TableSummary,
    crypto::Keyring,
};
use zeroize::Zeroizing;

use crate::{connect, db, output};

/// Back up the whole store of a running server, or check a backup.
///
/// The server takes one consistent snapshot while it keeps serving and
/// streams it: a manifest (format version, master key id, each table's row
/// count and digest), every row as stored (secrets still sealed under the
/// master key), and an end marker with the file's SHA-256. The file is
/// checked before it is given its name. Needs an admin token of the
/// server's first workspace. Keep the master key (and the admin-token file)
/// apart from the backup: restoring needs the key.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  latchkey backup latchkey-$(date +%F).backup\n  latchkey backup verify latchkey-2025-01-01.backup"
)]
pub(crate) struct BackupArgs {
    #[command(subcommand)]
    command: Option<BackupCommand>,
    /// The file to write (refused if it exists).
    file: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Check a backup without restoring it: format version, every row, each
    /// table's count and digest, and the file's SHA-256.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  latchkey backup verify latchkey-2025-01-01.backup")]
struct VerifyArgs {
    /// The backup file.
    file: PathBuf,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Restore a backup into a new, empty store (no server may run on it).
///
/// Nothing is written before the whole file is checked and the master key
/// is shown to open it (its id, the store's key check, and a data key
/// unwrapped). The rows are then written in one transaction that commits
/// only when the written rows match the backup's counts and digests; a
/// failure leaves the target as it was. Afterwards `latchkey serve
/// --database URL` with the same master key serves every secret, version
/// and token of the backup.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  latchkey restore latchkey.backup --database sqlite:///var/lib/latchkey-new/latchkey.db --master-key-file /var/lib/latchkey/master.key\n  LATCHKEY_MASTER_KEY=$(cat master.key) latchkey restore latchkey.backup --database postgres://latchkey@db:5432/latchkey_new"
)]
pub(crate) struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    /// The store to restore into (sqlite://PATH or postgres://USER@HOST:PORT/DB): new or empty.
    #[arg(long, value_name = "URL")]
    database: String,
    /// File holding the master key the backup's store was made with; or
    /// give it in LATCHKEY_MASTER_KEY.
    #[arg(long, value_name = "FILE")]
    master_key_file: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub(crate) fn run(args: BackupArgs) -> Result<()> {
    match (args.command, args.file) {
        (Some(BackupCommand::Verify(v)), _) => runtime()?.block_on(verify(&v.file, v.quiet)),
        (None, Some(file)) => take(&file, args.quiet),
        (None, None) => {
            bail!("give the file to write: latchkey backup FILE (or latchkey backup verify FILE)")
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

/// The rows bar: `verb` while it runs.
fn rows_bar(quiet: bool, verb: &str) -> ProgressBar {
    db::rows_bar(if quiet { None } else { Some(0) }, verb.to_owned())
}

fn take(file: &Path, quiet: bool) -> Result<()> {
    if file.exists() {
        bail!(
            "{} exists; give a new file name (a backup never replaces a file)",
            file.display()
        );
    }
    let partial = partial_path(file);
    let client = connect::client(None)?;
    let started = Instant::now();
    let bar = rows_bar(quiet, "backing up");
    let downloaded = (|| -> Result<()> {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_private()
            .open(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let mut counter = LineCounter::default();
        client
            .backup_into(&mut out, &mut |chunk| {
                counter.feed(chunk);
                if let Some(total) = counter.total {
                    bar.set_length(total);
                }
                bar.set_position(counter.rows);
            })
            .wait()?;
        out.flush()?;
        out.sync_all()?;
        Ok(())
    })();
    bar.finish_and_clear();
    let checked = downloaded.and_then(|()| runtime()?.block_on(check(&partial, true)));
    match checked {
        Ok(manifest) => {
            fs::rename(&partial, file).with_context(|| {
                format!("cannot rename {} to {}", partial.display(), file.display())
            })?;
            output::line(format!(
                "backed up {} rows to {} in {:.1?}; verified. Master key id {} (restoring needs that key).",
                manifest.total_rows(),
                file.display(),
                started.elapsed(),
                manifest.master_key_id
            ))?;
            print_tables(&manifest);
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&partial);
            Err(e.context("the backup failed; no file was written"))
        }
    }
}

/// Where a backup is written before it is checked.
fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Counts the rows of a backup as it arrives (its lines after the
/// manifest, less the end marker), and reads the total from the manifest.
#[derive(Default)]
struct LineCounter {
    first: Vec<u8>,
    total: Option<u64>,
    rows: u64,
}

impl LineCounter {
    fn feed(&mut self, mut chunk: &[u8]) {
        if self.total.is_none() {
            let Some(end) = chunk.iter().position(|b| *b == b'\n') else {
                self.first.extend_from_slice(chunk);
                return;
            };
            self.first.extend_from_slice(&chunk[..end]);
            self.total = Some(
                serde_json::from_slice::<Manifest>(&self.first)
                    .map(|m| m.total_rows())
                    .unwrap_or(0),
            );
            chunk = &chunk[end + 1..];
        }
        self.rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
}

async fn check(file: &Path, quiet: bool) -> Result<Manifest> {
    let bar = rows_bar(quiet, "checking");
    let checked = backup::verify(file, &|n, total| {
        bar.set_length(total);
        bar.set_position(n);
    })
    .await;
    bar.finish_and_clear();
    Ok(checked?.manifest)
}

async fn verify(file: &Path, quiet: bool) -> Result<()> {
    let manifest = check(file, quiet).await?;
    output::line(format!(
        "{} is a complete latchkey backup (format version {}), taken {} by latchkey {}: \
         {} rows, every count and digest as its manifest records. Master key id {}.",
        file.display(),
        manifest.format_version,
        manifest.created_at,
        manifest.latchkey_version,
        manifest.total_rows(),
        manifest.master_key_id
    ))?;
    print_tables(&manifest);
    Ok(())
}

fn print_tables(manifest: &Manifest) {
    for t in &manifest.tables {
        println!("  {:<15} {:>8} rows  sha256 {}", t.name, t.rows, t.sha256);
    }
}

pub(crate) fn restore(args: &RestoreArgs) -> Result<()> {
    let env = std::env::var("LATCHKEY_MASTER_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .map(Zeroizing::new);
    if args.master_key_file.is_none() && env.is_none() {
        bail!(
            "restore needs the master key the backup's store was made with: \
             --master-key-file FILE or LATCHKEY_MASTER_KEY"
        );
    }
    let sources = MasterKeySources {
        file: args.master_key_file.clone(),
        env,
        extra: None,
    };
    let key = bootstrap::master_key(Path::new("."), &sources, true)?;
    let keyring = Keyring::new(key);
    let started = Instant::now();
    let runtime = runtime()?;
    // Everything is checked before anything is created or written.
    let bar = rows_bar(args.quiet, "checking");
    let checked = runtime.block_on(backup::check(&args.file, &keyring, &|n, total| {
        bar.set_length(total);
        bar.set_position(n);
    }));
    bar.finish_and_clear();
    let checked = checked.context("nothing was restored")?;
    let new_file = db::new_sqlite_file(&args.database);
    if let Some(dir) = new_file.as_deref().and_then(Path::parent) {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            bootstrap::ensure_data_dir(dir)?;
        }
    }
    let bar = rows_bar(args.quiet, "restoring");
    let result = runtime.block_on(backup::restore_checked(
        &args.file,
        &checked,
        &args.database,
        &|n, total| {
            bar.set_length(total);
            bar.set_position(n);
        },
    ));
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(backup::BackupError::Store(e)) if e.committed() => return Err(e.into()),
        Err(e) => {
            if let Some(path) = new_file {
                db::remove_sqlite_file(&path);
            }
            return Err(anyhow::Error::new(e).context("nothing was restored"));
        }
    };
    let manifest = checked.manifest;
    output::line(format!(
        "restored {} rows into {} in {:.1?}; verified (row counts and digests match the backup's):",
        manifest.total_rows(),
        latchkey_store::describe(&args.database),
        started.elapsed()
    ))?;
    print_summary(&report.tables);
    Ok(())
}

fn print_summary(tables: &[TableSummary]) {
    for t in tables {
        println!("  {:<15} {:>8} rows  sha256 {}", t.table, t.rows, t.digest);
    }
}

/// Opens new files readable by their owner only: a backup holds token
/// hashes and sealed secrets.
trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateMode for fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}
