//! `latchkey key rotate`: a new master key, every data key rewrapped under it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use latchkey::blocking::Wait as _;
use latchkey_server::bootstrap::{self, MasterKeySources};
use latchkey_store::crypto::{Keyring, MasterKey};
use zeroize::Zeroizing;

use crate::{connect, db, output};

/// Data keys rewrapped per transaction (as the server does).
const ROTATION_BATCH: u32 = 500;

/// The master key.
#[derive(Debug, Args)]
pub(crate) struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Rotate the master key: a new key, every data key rewrapped under it.
    Rotate(RotateArgs),
}

/// Rotate the master key.
///
/// Online (no --new-key-file): the running server, whose key is its data
/// dir's `master.key`, makes a new key, keeps it in `master.key.new`, seals
/// every new row under it and rewraps every data key in batches while it
/// keeps serving, then renames it over `master.key`. Needs an admin token of
/// the server's first workspace. A crash at any point resumes at the next
/// start.
///
/// Offline (--new-key-file): for a key given by LATCHKEY_MASTER_KEY or
/// --master-key-file. Stop every server on the store first; the key in
/// NEW (made, 0600, if the file does not exist) replaces the old one given
/// by --master-key-file or LATCHKEY_MASTER_KEY; then start the servers with
/// NEW. Running it again with the same files finishes an interrupted run.
///
/// PostgreSQL replicas rotate online in rolling restarts instead: each with
/// --next-master-key-file NEW, then each with --master-key-file NEW
/// --previous-master-key-file OLD; then `latchkey key rotate` against any
/// one of them rewraps every data key; then each without the previous key
/// (see "Rotating the master key" in the README).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  latchkey key rotate\n  latchkey key rotate --new-key-file /etc/latchkey/master.key.2 --master-key-file /etc/latchkey/master.key --database postgres://latchkey@db:5432/latchkey"
)]
struct RotateArgs {
    /// Rotate offline into this file (made if it does not exist), for a key
    /// the server was given rather than its data dir's `master.key`.
    #[arg(long, value_name = "FILE", requires = "database")]
    new_key_file: Option<PathBuf>,
    /// The store, for an offline rotation (sqlite://PATH or postgres://USER@HOST:PORT/DB).
    #[arg(long, value_name = "URL", requires = "new_key_file")]
    database: Option<String>,
    /// The current master key, for an offline rotation; or give it in
    /// LATCHKEY_MASTER_KEY.
    #[arg(long, value_name = "FILE", requires = "new_key_file")]
    master_key_file: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub(crate) fn run(args: KeyArgs) -> Result<()> {
    let KeyCommand::Rotate(args) = args.command;
    match (&args.new_key_file, &args.database) {
        (Some(file), Some(database)) => offline(&args, file, database),
        _ => online(args.quiet),
    }
}

fn bar(quiet: bool) -> ProgressBar {
    db::rows_bar(if quiet { None } else { Some(0) }, "rewrapping".to_owned())
}

fn online(quiet: bool) -> Result<()> {
    let client = connect::client(None)?;
    let bar = bar(quiet);
    let mut end: Option<serde_json::Value> = None;
    let streamed = client
        .rotate_master_key(&mut |line| {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
                return;
            };
            if let (Some(done), Some(total)) = (value["done"].as_u64(), value["total"].as_u64()) {
                bar.set_length(total);
                bar.set_position(done);
            } else {
                end = Some(value);
            }
        })
        .wait();
    bar.finish_and_clear();
    streamed?;
    match end {
        Some(v) if v["finished"] == true => output::line(format!(
            "rotated the master key: every data key is under the new key (id {}); \
             the previous key no longer opens the store",
            v["key_id"].as_str().unwrap_or_default()
        )),
        Some(v) => bail!(
            "the rotation stopped: {}; run `latchkey key rotate` again to finish it",
            v["error"].as_str().unwrap_or("no reason given")
        ),
        None => bail!(
            "the server's answer ended before the rotation did; run `latchkey key rotate` again to finish it"
        ),
    }
}

/// The key in `file`, or a new one written there (0600) when there is none.
fn new_key(file: &Path) -> Result<MasterKey> {
    if file.exists() {
        let text = Zeroizing::new(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the new key file {}", file.display()))?,
        );
        return MasterKey::from_base64(&text)
            .with_context(|| format!("invalid master key in {}", file.display()));
    }
    let key = MasterKey::generate();
    let mut line = key.to_base64();
    line.push('\n');
    bootstrap::write_private_file(file, line.as_bytes()).with_context(|| {
        format!(
            "cannot write the new key file {}; nothing was changed",
            file.display()
        )
    })?;
    Ok(key)
}

fn offline(args: &RotateArgs, file: &Path, database: &str) -> Result<()> {
    let env = std::env::var("LATCHKEY_MASTER_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .map(Zeroizing::new);
    if args.master_key_file.is_none() && env.is_none() {
        bail!(
            "an offline rotation needs the current master key: --master-key-file FILE or LATCHKEY_MASTER_KEY"
        );
    }
    let sources = MasterKeySources {
        file: args.master_key_file.clone(),
        env,
        extra: None,
    };
    let old = bootstrap::master_key(Path::new("."), &sources, true)?;
    if latchkey_store::Backend::of(database).is_none() {
        bail!(
            "unsupported --database URL (expected sqlite://PATH or postgres://USER@HOST:PORT/DB)"
        );
    }
    let new = new_key(file)?;
    if new.id() == old.id() {
        bail!(
            "{} holds the current master key (id {}); give a new file to rotate into",
            file.display(),
            old.id()
        );
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let bar = bar(args.quiet);
    let result = runtime.block_on(async {
        let store = latchkey_store::open(
            database,
            Keyring::rotating(new.clone(), old),
            &latchkey_store::Options::default(),
        )
        .await
        .context("cannot open the store")?;
        let report = store
            .rotate_master_key(new.clone(), ROTATION_BATCH, &|p| {
                bar.set_length(p.total);
                bar.set_position(p.done);
            })
            .await;
        store.close().await;
        Ok::<_, anyhow::Error>(report?)
    });
    bar.finish_and_clear();
    let report =
        result.context("the rotation did not finish; run the same command again to finish it")?;
    output::line(format!(
        "rotated the master key: {} data keys rewrapped; the store now opens with the key in {} (id {}) only. \
         Start the server with --master-key-file {} (or LATCHKEY_MASTER_KEY set to its contents)",
        report.done,
        file.display(),
        new.id(),
        file.display()
    ))
}
