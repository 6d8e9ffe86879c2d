//! Backups of a whole store, taken online, and their restore.
//!
//! A backup is one consistent snapshot of every table of [`TABLES`], read
//! while the server serves, with its rows exactly as stored: secrets stay
//! sealed under their data keys, wrapped by the master key, so a backup is no
//! more readable than the database itself, and restoring it needs the same
//! master key.
//!
//! # Format (version [`FORMAT_VERSION`])
//!
//! Text, one JSON document per line:
//!
//! 1. the [`Manifest`]: format and version, when and by which latchkey it
//!    was taken, the id of the master key the store was made with, and each
//!    table's columns, row count and digest (SHA-256 over the sorted
//!    SHA-256s of its rows, as `latchkey db copy` verifies);
//! 2. one line per row, tables in the manifest's order:
//!    `{"t":"secrets","r":[...]}`, cells in column order (text and integers
//!    as JSON, booleans as JSON, bytes as standard base64, `null` for NULL);
//! 3. the end marker `{"end":{"rows":N,"sha256":"..."}}`: the rows written
//!    and the SHA-256 of every byte before this line.
//!
//! A file that ends before its end marker is truncated; one whose bytes,
//! rows, counts or digests do not match is altered; another format version
//! is refused by its first line. [`verify`] checks all of it without writing
//! anything; [`restore`] checks it once in full, checks the master key, and
//! only then writes, in one transaction verified before it commits.

use std::path::Path;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::mpsc,
};

use crate::{
    copy::{
        row_hash, table_digest, Cell, CopyError, CopyReport, Kind, Message, RawStore, Table,
        TableSummary, TABLES,
    },
    crypto::{Binding, Keyring, Sealed},
};

/// What the first line of every backup says it is.
pub const FORMAT: &str = "latchkey-backup";

/// The version of the format this latchkey writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Rows per batch handed on to a restore's transaction.
const BATCH_ROWS: usize = 500;

/// Bytes gathered before a chunk of a backup is sent on.
const CHUNK_BYTES: usize = 64 * 1024;

/// The first line of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written by this latchkey.
    pub format_version: u32,
    /// When the snapshot was taken (RFC 3339).
    pub created_at: String,
    /// The version of the latchkey that took it.
    pub latchkey_version: String,
    /// The id of the master key the store was made with: restoring needs it.
    pub master_key_id: String,
    /// Every table, in the order its rows follow.
    pub tables: Vec<ManifestTable>,
}

/// One table of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTable {
    /// Its name.
    pub name: String,
    /// Its columns, in the order of each row's cells.
    pub columns: Vec<String>,
    /// How many rows it holds.
    pub rows: u64,
    /// Digest of its rows (see [`TableSummary::digest`]).
    pub sha256: String,
}

impl Manifest {
    /// Rows in all tables.
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    fn summary(&self) -> Vec<TableSummary> {
        TABLES
            .iter()
            .zip(&self.tables)
            .map(|(table, t)| TableSummary {
                table: table.name,
                rows: t.rows,
                digest: t.sha256.clone(),
            })
            .collect()
    }
}

/// Why a backup could not be taken, checked or restored. In every case the
/// target of a restore is left as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The file could not be read.
    #[error("cannot read {path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        cause: std::io::Error,
    },
    /// The file is not a latchkey backup at all.
    #[error("{path} is not a latchkey backup: {problem}")]
    NotABackup {
        /// The file.
        path: String,
        /// What its first line is instead.
        problem: String,
    },
    /// A backup of another format version.
    #[error(
        "{path} is a latchkey backup of format version {found}; this latchkey reads version {FORMAT_VERSION} only"
    )]
    Version {
        /// The file.
        path: String,
        /// Its version.
        found: u32,
    },
    /// A backup of a store whose tables differ from this latchkey's.
    #[error("{path} holds a store of another schema ({problem}); restore it with the latchkey version that took it ({version})")]
    Schema {
        /// The file.
        path: String,
        /// What differs.
        problem: String,
        /// The version that took it.
        version: String,
    },
    /// The file ends before its end marker.
    #[error(
        "{path} is truncated: it ends after line {line} ({rows} row(s)) without its end marker"
    )]
    Truncated {
        /// The file.
        path: String,
        /// The last line read.
        line: u64,
        /// Rows read.
        rows: u64,
    },
    /// The file's content does not match its manifest or its end marker.
    #[error("{path} is damaged or was altered: {problem}")]
    Altered {
        /// The file.
        path: String,
        /// What does not match.
        problem: String,
    },
    /// The master key given is not the one the backup's store was made with.
    #[error(
        "the master key given (id {given}) cannot open this backup, whose store was made with master key id {backup}: {problem}; \
         give the store's master key with --master-key-file or LATCHKEY_MASTER_KEY"
    )]
    WrongKey {
        /// The id of the key given.
        given: String,
        /// The key id the backup names.
        backup: String,
        /// What failed.
        problem: String,
    },
    /// Reading the store, or writing the restore's target, failed; or the
    /// target is not empty.
    #[error(transparent)]
    Store(#[from] CopyError),
}

// ---- taking a backup ---------------------------------------------------------

/// Takes a backup of `store` while it serves: the returned receiver yields
/// the backup's bytes in chunks, and an error (after which nothing follows)
/// if reading the store fails. A consumer that stops reading ends it.
pub fn take(store: RawStore) -> mpsc::Receiver<Result<Vec<u8>, CopyError>> {
    let (bytes_out, bytes) = mpsc::channel(4);
    let (rows_out, mut rows) = mpsc::channel(4);
    let errors = bytes_out.clone();
    tokio::spawn(async move {
        if let Err(e) = store.export_backup(&rows_out).await {
            let _ = errors.send(Err(e)).await;
        }
    });
    tokio::spawn(async move {
        let mut encoder = Encoder::default();
        while let Some(message) = rows.recv().await {
            let done = matches!(message, Message::End(_));
            encoder.message(message);
            let full = done || encoder.buffer.len() >= CHUNK_BYTES;
            // A consumer that stopped reading ends the backup.
            if full
                && bytes_out
                    .send(Ok(std::mem::take(&mut encoder.buffer)))
                    .await
                    .is_err()
            {
                return;
            }
        }
    });
    bytes
}

/// Turns an export's messages into the backup's lines.
#[derive(Default)]
struct Encoder {
    buffer: Vec<u8>,
    hash: Sha256,
    rows: u64,
}

impl Encoder {
    fn line(&mut self, value: &Value) {
        let mut line = serde_json::to_vec(value).expect("JSON values serialize");
        line.push(b'\n');
        self.hash.update(&line);
        self.buffer.extend_from_slice(&line);
    }

    fn message(&mut self, message: Message) {
        match message {
            Message::Begin {
                summary,
                master_key_id,
            } => {
                let manifest = Manifest {
                    format: FORMAT.to_owned(),
                    format_version: FORMAT_VERSION,
                    created_at: latchkey_core::time::Timestamp::now().to_string(),
                    latchkey_version: env!("CARGO_PKG_VERSION").to_owned(),
                    master_key_id,
                    tables: TABLES
                        .iter()
                        .zip(summary)
                        .map(|(table, s)| ManifestTable {
                            name: table.name.to_owned(),
                            columns: table.columns.iter().map(|(c, _)| (*c).to_owned()).collect(),
                            rows: s.rows,
                            sha256: s.digest,
                        })
                        .collect(),
                };
                self.line(&serde_json::to_value(&manifest).expect("a manifest serializes"));
            }
            Message::Rows { table, rows } => {
                for row in rows {
                    self.rows += 1;
                    let cells: Vec<Value> = row.iter().map(encode_cell).collect();
                    self.line(&serde_json::json!({"t": table.name, "r": cells}));
                }
            }
            Message::End(_) => {
                let digest: String = std::mem::take(&mut self.hash)
                    .finalize()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let end = serde_json::json!({"end": {"rows": self.rows, "sha256": digest}});
                let mut line = serde_json::to_vec(&end).expect("JSON values serialize");
                line.push(b'\n');
                self.buffer.extend_from_slice(&line);
            }
        }
    }
}

fn encode_cell(cell: &Cell) -> Value {
    match cell {
        Cell::Text(v) => v.as_deref().map_or(Value::Null, Value::from),
        Cell::Int(v) => v.map_or(Value::Null, Value::from),
        Cell::Bool(v) => Value::Bool(*v),
        Cell::Bytes(v) => v
            .as_deref()
            .map_or(Value::Null, |b| STANDARD.encode(b).into()),
    }
}

fn decode_cell(kind: Kind, value: &Value) -> Option<Cell> {
    Some(match (kind, value) {
        (Kind::Text, Value::Null) => Cell::Text(None),
        (Kind::Text, Value::String(s)) => Cell::Text(Some(s.clone())),
        (Kind::Int, Value::Null) => Cell::Int(None),
        (Kind::Int, Value::Number(n)) => Cell::Int(Some(n.as_i64()?)),
        (Kind::Bool, Value::Bool(b)) => Cell::Bool(*b),
        (Kind::Bytes, Value::Null) => Cell::Bytes(None),
        (Kind::Bytes, Value::String(s)) => Cell::Bytes(Some(STANDARD.decode(s).ok()?)),
        _ => return None,
    })
}

// ---- reading a backup ---------------------------------------------------------

/// What a full read of a backup found, beyond its manifest: what the
/// master key is checked against.
pub struct Checked {
    /// The manifest, every count and digest of which the rows matched.
    pub manifest: Manifest,
    /// The store's master key check (`meta.key_check`), if it has one.
    key_check: Option<Vec<u8>>,
    /// One sealed secret version, to open with the key.
    sample: Option<(String, String, i64, Sealed)>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

impl Checked {
    /// Whether `keyring` opens the backup: its id is the one the manifest
    /// names, it passes the store's key check, and it opens a secret
    /// version (unwrapping its data key and decrypting it; the plaintext is
    /// dropped at once).
    pub fn check_key(&self, keyring: &Keyring) -> Result<(), BackupError> {
        let wrong = |problem: &str| BackupError::WrongKey {
            given: keyring.key_id(),
            backup: self.manifest.master_key_id.clone(),
            problem: problem.to_owned(),
        };
        if keyring.key_id() != self.manifest.master_key_id {
            return Err(wrong("the key ids differ"));
        }
        if let Some(check) = &self.key_check {
            if !keyring.verify_key_check(check) {
                return Err(wrong("it fails the store's key check"));
            }
        }
        if let Some((workspace_id, secret_id, version, sealed)) = &self.sample {
            let binding = Binding {
                workspace_id,
                secret_id,
                version: *version,
            };
            if keyring.open(binding, sealed).is_err() {
                return Err(wrong("it does not unwrap the backup's data keys"));
            }
        }
        Ok(())
    }
}

/// Reads and checks the whole backup at `path` without writing anything:
/// its format version, its schema, every row, every table's count and
/// digest against the manifest, and the file's SHA-256 against its end
/// marker. `progress` gets the rows read so far and the total.
pub async fn verify(
    path: &Path,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<Checked, BackupError> {
    read(path, None, progress).await
}

/// [`verify`], sending the rows (then [`Message::End`]) to `out` when
/// given. Fails on the first problem: a consumer of `out` then sees the
/// channel close without an end.
async fn read(
    path: &Path,
    out: Option<&mpsc::Sender<Message>>,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<Checked, BackupError> {
    let shown = path.display().to_string();
    let io = |cause| BackupError::Io {
        path: shown.clone(),
        cause,
    };
    let altered = |problem: String| BackupError::Altered {
        path: shown.clone(),
        problem,
    };
    let file = tokio::fs::File::open(path).await.map_err(io)?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut hash = Sha256::new();

    // The manifest.
    reader.read_until(b'\n', &mut line).await.map_err(io)?;
    hash.update(&line);
    let manifest = parse_manifest(&shown, &line)?;
    let total = manifest.total_rows();

    let mut number = 1u64;
    let mut rows_read = 0u64;
    let mut table_index = 0usize;
    let mut hashes: Vec<[u8; 32]> = Vec::new();
    let mut summary: Vec<TableSummary> = Vec::new();
    let mut batch: Vec<Vec<Cell>> = Vec::new();
    let mut checked = Checked {
        manifest: manifest.clone(),
        key_check: None,
        sample: None,
    };
    let mut first_secret: Option<(String, String)> = None;
    let finish_table =
        |index: usize, hashes: &mut Vec<[u8; 32]>, summary: &mut Vec<TableSummary>| {
            let table = &TABLES[index];
            summary.push(TableSummary {
                table: table.name,
                rows: hashes.len() as u64,
                digest: table_digest(std::mem::take(hashes)),
            });
        };
    let send = |table: &'static Table, rows: Vec<Vec<Cell>>| async move {
        if let Some(out) = out {
            // The consumer gave up: its own error is the one to report.
            let _ = out.send(Message::Rows { table, rows }).await;
        }
    };
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).await.map_err(io)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Err(BackupError::Truncated {
                path: shown,
                line: number,
                rows: rows_read,
            });
        }
        number += 1;
        let value: Value = serde_json::from_slice(&line)
            .map_err(|_| altered(format!("line {number} is not valid JSON")))?;
        if let Some(end) = value.get("end") {
            let digest: String = std::mem::take(&mut hash)
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if end.get("sha256").and_then(Value::as_str) != Some(digest.as_str()) {
                return Err(altered(format!(
                    "the file's SHA-256 is {digest}, not the one its end marker records"
                )));
            }
            if end.get("rows").and_then(Value::as_u64) != Some(rows_read) {
                return Err(altered(format!(
                    "it holds {rows_read} row(s), not the number its end marker records"
                )));
            }
            // Tables after the last row read are empty.
            while table_index < TABLES.len() {
                if !batch.is_empty() {
                    send(&TABLES[table_index], std::mem::take(&mut batch)).await;
                }
                finish_table(table_index, &mut hashes, &mut summary);
                table_index += 1;
            }
            break;
        }
        hash.update(&line);
        let (Some(name), Some(Value::Array(cells))) =
            (value.get("t").and_then(Value::as_str), value.get("r"))
        else {
            return Err(altered(format!("line {number} is not a row")));
        };
        // Rows come table by table, in the manifest's order.
        while TABLES.get(table_index).is_some_and(|t| t.name != name) {
            if !batch.is_empty() {
                send(&TABLES[table_index], std::mem::take(&mut batch)).await;
            }
            finish_table(table_index, &mut hashes, &mut summary);
            table_index += 1;
        }
        let Some(table) = TABLES.get(table_index) else {
            return Err(altered(format!(
                "line {number} is a row of table {}, which is unknown or out of order",
                latchkey_core::rules::echo(name)
            )));
        };
        if cells.len() != table.columns.len() {
            return Err(altered(format!(
                "line {number} has {} cell(s) for the {} columns of table {}",
                cells.len(),
                table.columns.len(),
                table.name
            )));
        }
        let row = table
            .columns
            .iter()
            .zip(cells)
            .map(|((_, kind), cell)| decode_cell(*kind, cell))
            .collect::<Option<Vec<Cell>>>()
            .ok_or_else(|| altered(format!("line {number} has a cell of the wrong type")))?;
        remember(table, &row, &mut checked, &mut first_secret);
        hashes.push(row_hash(&row));
        rows_read += 1;
        if out.is_some() {
            batch.push(row);
            if batch.len() == BATCH_ROWS {
                send(table, std::mem::take(&mut batch)).await;
            }
        }
        if rows_read.is_multiple_of(1000) {
            progress(rows_read, total);
        }
    }
    progress(rows_read, total);
    // Anything after the end marker is not part of a backup.
    line.clear();
    if reader.read_until(b'\n', &mut line).await.map_err(io)? > 0 {
        return Err(altered("it goes on after its end marker".to_owned()));
    }
    let expected = manifest.summary();
    for (found, want) in summary.iter().zip(&expected) {
        if found != want {
            return Err(altered(format!(
                "table {} has {} row(s) with digest {}, but the manifest records {} row(s) with digest {}",
                found.table, found.rows, found.digest, want.rows, want.digest
            )));
        }
    }
    if let Some(out) = out {
        let _ = out.send(Message::End(expected)).await;
    }
    Ok(checked)
}

/// Keeps what the key is checked against: the store's key check, and the
/// first version of the first secret.
fn remember(
    table: &Table,
    row: &[Cell],
    checked: &mut Checked,
    first_secret: &mut Option<(String, String)>,
) {
    let text = |i: usize| match &row[i] {
        Cell::Text(Some(s)) => Some(s.clone()),
        _ => None,
    };
    let col = |name: &str| {
        table
            .columns
            .iter()
            .position(|(c, _)| *c == name)
            .expect("a column of the schema")
    };
    match table.name {
        "meta" if text(col("key")).as_deref() == Some("key_check") => {
            if let Cell::Bytes(Some(b)) = &row[col("value")] {
                checked.key_check = Some(b.clone());
            }
        }
        "secrets" if first_secret.is_none() => {
            if let (Some(id), Some(ws)) = (text(col("id")), text(col("workspace_id"))) {
                *first_secret = Some((id, ws));
            }
        }
        "secret_versions" if checked.sample.is_none() => {
            let Some((id, ws)) = first_secret.as_ref() else {
                return;
            };
            if text(col("secret_id")).as_ref() != Some(id) {
                return;
            }
            if let (
                Cell::Int(Some(version)),
                Some(key_id),
                Cell::Bytes(Some(wrapped)),
                Cell::Bytes(Some(ct)),
            ) = (
                &row[col("version")],
                text(col("key_id")),
                &row[col("wrapped_key")],
                &row[col("ciphertext")],
            ) {
                checked.sample = Some((
                    ws.clone(),
                    id.clone(),
                    *version,
                    Sealed {
                        key_id,
                        wrapped_key: wrapped.clone(),
                        ciphertext: ct.clone(),
                    },
                ));
            }
        }
        _ => {}
    }
}

fn parse_manifest(path: &str, line: &[u8]) -> Result<Manifest, BackupError> {
    let not_a_backup = |problem: &str| BackupError::NotABackup {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    if line.is_empty() {
        return Err(not_a_backup("it is empty"));
    }
    let value: Value =
        serde_json::from_slice(line).map_err(|_| not_a_backup("its first line is not JSON"))?;
    if value.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(not_a_backup(
            "its first line is not a latchkey backup manifest",
        ));
    }
    let version = value.get("format_version").and_then(Value::as_u64);
    if version != Some(u64::from(FORMAT_VERSION)) {
        return Err(BackupError::Version {
            path: path.to_owned(),
            found: version
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(u32::MAX),
        });
    }
    let manifest: Manifest = serde_json::from_value(value)
        .map_err(|e| not_a_backup(&format!("its manifest is malformed ({e})")))?;
    let ours: Vec<(&str, Vec<&str>)> = TABLES
        .iter()
        .map(|t| (t.name, t.columns.iter().map(|(c, _)| *c).collect()))
        .collect();
    let theirs: Vec<(&str, Vec<&str>)> = manifest
        .tables
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.columns.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    if ours != theirs {
        let problem = match ours.iter().zip(&theirs).find(|(a, b)| a != b) {
            Some((a, _)) => format!("table {} differs", a.0),
            None => format!("{} tables, not {}", theirs.len(), ours.len()),
        };
        return Err(BackupError::Schema {
            path: path.to_owned(),
            problem,
            version: manifest.latchkey_version,
        });
    }
    Ok(manifest)
}

// ---- restoring -----------------------------------------------------------------

/// Restores the backup at `path` into the new, empty store at `to` (a
/// database URL), whose master key must be `keyring`'s: [`check`], then
/// [`restore_checked`].
pub async fn restore(
    path: &Path,
    to: &str,
    keyring: &Keyring,
    progress: &(dyn Fn(bool, u64, u64) + Send + Sync),
) -> Result<(Manifest, CopyReport), BackupError> {
    let checked = check(path, keyring, &|n, total| progress(false, n, total)).await?;
    let report = restore_checked(path, &checked, to, &|n, total| progress(true, n, total)).await?;
    Ok((checked.manifest, report))
}

/// Reads and checks the whole backup at `path` ([`verify`]) and that
/// `keyring` opens it ([`Checked::check_key`]); writes nothing.
pub async fn check(
    path: &Path,
    keyring: &Keyring,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<Checked, BackupError> {
    let checked = verify(path, progress).await?;
    checked.check_key(keyring)?;
    Ok(checked)
}

/// Restores the backup at `path`, which [`check`] passed, into the new,
/// empty store at `to`.
///
/// The target is opened (and refused unless empty) only now; the rows are
/// written in one transaction which commits only when what it holds matches
/// the backup's counts and digests (the file is read and checked again as it
/// is written, so a file changed since the check is refused too), and what
/// is committed is read back and compared once more. `progress` gets the
/// rows written and the total.
pub async fn restore_checked(
    path: &Path,
    checked: &Checked,
    to: &str,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<CopyReport, BackupError> {
    let target = RawStore::open_destination(to).await?;
    // audit: store restored from a backup (its manifest's created_at and
    // master key id); no server runs here, so the event would be written
    // into the restored store, in the transaction of `target.import`.
    let result = async {
        let total = checked.manifest.total_rows();
        let (rows_out, rows) = mpsc::channel(4);
        let reading = async {
            let read = read(path, Some(&rows_out), &|_, _| {}).await;
            drop(rows_out);
            read
        };
        let written_progress = |n| progress(n, total);
        let writing = target.import(rows, &written_progress);
        let (read, written) = tokio::join!(reading, writing);
        // A failed read closes the channel, which fails the import: the
        // read's cause is the one to report.
        let again = read?;
        if again.manifest != checked.manifest {
            return Err(BackupError::Altered {
                path: path.display().to_string(),
                problem: "it changed while it was being restored".to_owned(),
            });
        }
        let report = written?;
        let expected = checked.manifest.summary();
        for (found, want) in report.tables.iter().zip(&expected) {
            if found != want {
                return Err(BackupError::Store(CopyError::Mismatch {
                    table: want.table,
                    source_rows: want.rows,
                    source_digest: want.digest.clone(),
                    destination_rows: found.rows,
                    destination_digest: found.digest.clone(),
                }));
            }
        }
        Ok(report)
    }
    .await;
    let closed = target.close().await;
    let report = result?;
    closed?;
    Ok(report)
}
