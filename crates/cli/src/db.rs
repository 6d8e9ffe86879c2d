//! `latchkey db`: work on a store's database directly.

use std::{path::PathBuf, str::FromStr, time::Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use latchkey_store::copy::{self, CopyError, RawStore};

/// Work on a store's database directly (stop the servers that use it first).
#[derive(Debug, Args)]
pub(crate) struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    Copy(CopyArgs),
}

/// Copy a whole store into a new, empty one, e.g. from SQLite to PostgreSQL.
///
/// Rows are copied as they are stored: secrets stay encrypted, and the
/// destination is opened with the same master key as the source. The copy
/// reads one consistent snapshot of the source, writes the destination in one
/// transaction, and commits only after the written rows match the source's
/// (row counts and a digest of every table); on failure nothing is left in
/// the destination. Stop the servers on the source first: writes made after
/// the snapshot are not copied.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  latchkey db copy --from sqlite:///var/lib/latchkey/latchkey.db --to postgres://latchkey@db:5432/latchkey\n  latchkey db copy --from postgres://latchkey@db:5432/latchkey --to sqlite://./backup.db"
)]
pub(crate) struct CopyArgs {
    /// The store to copy (sqlite://PATH or postgres://USER@HOST:PORT/DB). It is not modified.
    #[arg(long, value_name = "URL")]
    from: String,
    /// The new store (created if it does not exist; refused unless empty).
    #[arg(long, value_name = "URL")]
    to: String,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub(crate) fn run(args: DbArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match args.command {
        DbCommand::Copy(args) => runtime.block_on(copy_store(args)),
    }
}

async fn copy_store(args: CopyArgs) -> Result<()> {
    if args.from == args.to {
        bail!("--from and --to name the same store");
    }
    let source = RawStore::open_source(&args.from)
        .await
        .context("cannot open the source")?;
    // A new SQLite file that a failed copy leaves behind is removed; an
    // existing destination only ever gets a rolled-back transaction.
    let new_file = new_sqlite_file(&args.to);
    let result = copy_into(&source, &args.to, args.quiet).await;
    source.close().await?;
    if let Err(e) = &result {
        let committed = e
            .downcast_ref::<CopyError>()
            .is_some_and(CopyError::committed);
        if let Some(path) = new_file.filter(|_| !committed) {
            remove_sqlite_file(&path);
        }
    }
    result
}

/// The file of a `sqlite://` URL when it does not exist yet: what a failed
/// copy or restore removes.
pub(crate) fn new_sqlite_file(url: &str) -> Option<PathBuf> {
    sqlite_path(url).filter(|p| !p.exists())
}

/// Removes a SQLite database and its journals.
pub(crate) fn remove_sqlite_file(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.to_path_buf().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

/// A progress bar of rows (hidden when `total` is `None`), showing `message`.
pub(crate) fn rows_bar(total: Option<u64>, message: String) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} rows ({per_sec}, {eta} left)")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

async fn copy_into(source: &RawStore, to: &str, quiet: bool) -> Result<()> {
    let destination = match RawStore::open_destination(to).await {
        Ok(d) => d,
        Err(e @ CopyError::NotEmpty { .. }) => return Err(e.into()),
        Err(e) => return Err(anyhow::Error::new(e).context("cannot open the destination")),
    };
    let total: u64 = source.counts().await?.iter().map(|(_, n)| n).sum();
    let bar = rows_bar(
        (!quiet).then_some(total),
        format!("copying {} → {}", source.target(), destination.target()),
    );
    let started = Instant::now();
    let result = copy::copy(source, &destination, &|n| bar.set_position(n)).await;
    let closed = destination.close().await;
    let report = match result {
        Ok(report) => {
            bar.finish_and_clear();
            report
        }
        Err(e) => {
            bar.abandon();
            return Err(anyhow::Error::new(e)
                .context("the copy failed; the destination was left unchanged"));
        }
    };
    println!(
        "copied {} rows from {} to {} in {:.1?}; verified (row counts and digests match):",
        report.total_rows(),
        source.target(),
        destination.target(),
        started.elapsed()
    );
    for table in &report.tables {
        println!(
            "  {:<13} {:>8} rows  sha256 {}",
            table.table, table.rows, table.digest
        );
    }
    Ok(closed?)
}

/// The file of a `sqlite://` URL.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split('?').next().unwrap_or(rest);
    PathBuf::from_str(path).ok()
}
