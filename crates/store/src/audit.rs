//! The audit log: what each event holds, and the chain that makes a change
//! to the log evident.
//!
//! An event is appended in the transaction of the change it records (or,
//! for a read of values, committed before the values are returned). Each
//! carries an HMAC-SHA256, under the store's audit key, of its number, its
//! time, its fields and the previous event's MAC: whoever can write the
//! database but does not hold the master key (which wraps the audit key)
//! cannot alter, remove or reorder events without verification (the
//! store's `audit_verify`) finding the
//! first one touched. Cutting events off the end leaves a consistent but
//! shorter chain: that is what the head ([`AuditHead`]), which clients
//! remember, is for.
//!
//! No value, token secret or request body is ever part of an event.

use std::fmt;

use hmac::{Hmac, Mac};
use latchkey_core::time::Micros;
use sha2::Sha256;

/// Every action an event may name.
pub const ACTIONS: &[&str] = &[
    "secret.create",
    "secret.update",
    "secret.overwrite",
    "secret.rollback",
    "secret.delete",
    "secret.read",
    "secret.list",
    "secret.info",
    "environment.create",
    "environment.update",
    "environment.delete",
    "token.create",
    "token.revoke",
    "auth.failure",
    "permission.denied",
    "dashboard.signin",
    "dashboard.signout",
    "audit.checkpoint",
    "token.list",
    "token.rotate",
    "backup.create",
    "audit.list",
    "audit.verify",
    "audit.exposure",
    "key.rotate",
];

/// The action of a read of a secret's values.
pub const SECRET_READ: &str = "secret.read";
/// The action of the event [`Store::audit_retain`](crate::Store::audit_retain) appends.
pub const CHECKPOINT: &str = "audit.checkpoint";

/// Through which interface a request came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Interface {
    /// Modal's gRPC protocol.
    Grpc,
    /// The JSON API.
    Api,
    /// The dashboard.
    Dashboard,
    /// A sandbox or function container started by the server.
    Sandbox,
    /// The server itself (its first start, retention).
    Server,
}

impl Interface {
    /// Every interface.
    pub const ALL: [Interface; 5] = [
        Interface::Grpc,
        Interface::Api,
        Interface::Dashboard,
        Interface::Sandbox,
        Interface::Server,
    ];

    /// Its name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Grpc => "grpc",
            Interface::Api => "api",
            Interface::Dashboard => "dashboard",
            Interface::Sandbox => "sandbox",
            Interface::Server => "server",
        }
    }

    /// The interface named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.as_str() == name)
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who acted: a token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `ak-...`
    pub token_id: String,
    /// The token's name.
    pub name: String,
    /// The token's role.
    pub role: String,
}

/// What an event records, before the log numbers, times and chains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The workspace acted in; `None` when unknown (a failed authentication).
    pub workspace_id: Option<String>,
    /// Who acted, when known.
    pub actor: Option<Actor>,
    /// The client's address.
    pub client: Option<String>,
    /// The interface the request came through (an [`Interface`]'s name).
    pub interface: String,
    /// One of [`ACTIONS`].
    pub action: String,
    /// The environment's name.
    pub environment: Option<String>,
    /// The secret's name (`None` for an anonymous one).
    pub secret_name: Option<String>,
    /// The secret's id.
    pub secret_id: Option<String>,
    /// The secret's version the event is about.
    pub version: Option<i64>,
    /// `ok`, `denied`, or the error's code.
    pub outcome: String,
    /// More about the event, never a value: the token made or revoked, the
    /// version rolled back to, a checkpoint's details.
    pub detail: Option<String>,
}

impl AuditEntry {
    /// An event of `action` through `interface`, outcome `ok`, with nothing
    /// else known yet.
    pub fn new(interface: Interface, action: &str) -> Self {
        AuditEntry {
            workspace_id: None,
            actor: None,
            client: None,
            interface: interface.as_str().to_owned(),
            action: action.to_owned(),
            environment: None,
            secret_name: None,
            secret_id: None,
            version: None,
            outcome: OK.to_owned(),
            detail: None,
        }
    }

    /// An event by the server itself (no token), its action still to set.
    pub fn server() -> Self {
        Self::new(Interface::Server, "")
    }

    /// This event, of `action`.
    pub fn action(mut self, action: &str) -> Self {
        action.clone_into(&mut self.action);
        self
    }

    /// This event, about the version of `secret` that `secret` describes.
    pub fn about(mut self, secret: &crate::SecretSummary) -> Self {
        self.environment = Some(secret.environment_name.clone());
        self.secret_name = secret.name().map(str::to_owned);
        self.secret_id = Some(secret.id.clone());
        self.version = Some(secret.version);
        self
    }

    /// This event, with `outcome`.
    pub fn outcome(mut self, outcome: &str) -> Self {
        outcome.clone_into(&mut self.outcome);
        self
    }
}

/// The outcome of what succeeded.
pub const OK: &str = "ok";
/// The outcome of what the caller's token may not do.
pub const DENIED: &str = "denied";

/// An event as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Its number: 1, 2, 3... with no gap.
    pub seq: i64,
    /// When it was logged.
    pub at: Micros,
    /// What it records.
    pub entry: AuditEntry,
    /// Its MAC in the chain.
    pub mac: Vec<u8>,
}

/// The newest event: its number and MAC (zero and empty before any event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    /// The newest event's number.
    pub seq: i64,
    /// Its MAC.
    pub mac: Vec<u8>,
}

impl AuditHead {
    /// The MAC in lowercase hex.
    pub fn mac_hex(&self) -> String {
        hex(&self.mac)
    }
}

/// `bytes` in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which events a listing returns: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Logged at or after this time.
    pub since: Option<Micros>,
    /// Logged before this time.
    pub until: Option<Micros>,
    /// About the secret of this name.
    pub secret: Option<String>,
    /// By the token of this id.
    pub token: Option<String>,
    /// Of this action.
    pub action: Option<String>,
    /// In the environment of this name.
    pub environment: Option<String>,
    /// Numbered after this (keyset paging, oldest first).
    pub after: Option<i64>,
}

/// Who read the values of one version of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionExposure {
    /// The version.
    pub version: i64,
    /// The token that read it.
    pub token_id: String,
    /// That token's name.
    pub token_name: String,
    /// How many reads.
    pub count: i64,
    /// The first read.
    pub first_at: Micros,
    /// The last read.
    pub last_at: Micros,
    /// Through which interfaces, sorted.
    pub interfaces: Vec<String>,
}

/// A secret whose current version a token has read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenExposure {
    /// The secret's id.
    pub secret_id: String,
    /// Its name.
    pub secret_name: String,
    /// Its environment's name.
    pub environment: String,
    /// Its current version, which the token read.
    pub version: i64,
    /// How many reads of that version.
    pub count: i64,
    /// The last one.
    pub last_at: Micros,
}

/// What verifying the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every event checks, from `first` to `last` (`count` events; none
    /// when the log is empty), and the head is the last one.
    Intact {
        /// How many events were checked.
        count: u64,
        /// The first kept event's number (after retention, above 1).
        first: i64,
        /// The last one's.
        last: i64,
    },
    /// The first event that does not check, and why.
    Broken {
        /// Its number.
        seq: i64,
        /// What is wrong.
        reason: String,
    },
}

/// The MAC of one event: over its number, time, fields and the previous
/// event's MAC, under the audit key. Fields are written length-prefixed,
/// with a marker for absent ones, so that no two events encode alike.
pub(crate) fn chain_mac(
    key: &[u8],
    prev: &[u8],
    seq: i64,
    at: Micros,
    entry: &AuditEntry,
) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    let mut field = |value: Option<&[u8]>| match value {
        None => mac.update(&[0]),
        Some(bytes) => {
            mac.update(&[1]);
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        }
    };
    let actor = entry.actor.as_ref();
    field(Some(b"latchkey/v1/audit"));
    field(Some(prev));
    field(Some(&seq.to_be_bytes()));
    field(Some(&at.to_be_bytes()));
    field(text(&entry.workspace_id));
    field(actor.map(|a| a.token_id.as_bytes()));
    field(actor.map(|a| a.name.as_bytes()));
    field(actor.map(|a| a.role.as_bytes()));
    field(text(&entry.client));
    field(Some(entry.interface.as_bytes()));
    field(Some(entry.action.as_bytes()));
    field(text(&entry.environment));
    field(text(&entry.secret_name));
    field(text(&entry.secret_id));
    field(entry.version.map(i64::to_be_bytes).as_ref().map(|b| &b[..]));
    field(Some(entry.outcome.as_bytes()));
    field(text(&entry.detail));
    mac.finalize().into_bytes().to_vec()
}

/// An optional text field's bytes.
fn text(field: &Option<String>) -> Option<&[u8]> {
    field.as_deref().map(str::as_bytes)
}

/// What a checkpoint says: events before `kept_from` were removed, and the
/// last of them had MAC `prev_mac` (hex), with which the chain goes on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Checkpoint {
    pub(crate) kept_from: i64,
    pub(crate) prev_mac: String,
    pub(crate) removed: u64,
}

/// Checks a chain fed in order of number, page by page.
pub(crate) struct Verifier<'k> {
    key: &'k [u8],
    /// The MAC the next event must chain from, once known.
    prev: Option<Vec<u8>>,
    /// The number the next event must have.
    next: Option<i64>,
    /// The newest checkpoint's claim, read before the walk.
    checkpoint: Option<Checkpoint>,
    first: Option<i64>,
    count: u64,
    broken: Option<(i64, String)>,
}

impl<'k> Verifier<'k> {
    pub(crate) fn new(key: &'k [u8], checkpoint: Option<Checkpoint>) -> Self {
        Verifier {
            key,
            prev: None,
            next: None,
            checkpoint,
            first: None,
            count: 0,
            broken: None,
        }
    }

    /// Whether a break was found (nothing more need be read).
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    fn fail(&mut self, seq: i64, reason: String) {
        if self.broken.is_none() {
            self.broken = Some((seq, reason));
        }
    }

    /// Checks the next event.
    pub(crate) fn feed(&mut self, event: &AuditEvent) {
        if self.broken.is_some() {
            return;
        }
        let prev = match (&self.prev, self.next) {
            (Some(prev), Some(next)) => {
                if event.seq != next {
                    return self.fail(
                        next,
                        format!("event {next} is missing (the next event is {})", event.seq),
                    );
                }
                prev.clone()
            }
            _ => {
                // The first event kept: the chain starts at 1, or at a
                // checkpoint's cut.
                self.first = Some(event.seq);
                if event.seq == 1 {
                    Vec::new()
                } else {
                    match &self.checkpoint {
                        Some(c) if c.kept_from == event.seq => match unhex(&c.prev_mac) {
                            Some(mac) => mac,
                            None => return self.fail(
                                event.seq,
                                "the checkpoint that removed the events before it is unreadable"
                                    .to_owned(),
                            ),
                        },
                        _ => {
                            let missing = event.seq - 1;
                            return self.fail(
                                missing,
                                format!(
                                    "event {missing} is missing: the log starts at event {} and \
                                     no checkpoint removed the events before it",
                                    event.seq
                                ),
                            );
                        }
                    }
                }
            }
        };
        let want = chain_mac(self.key, &prev, event.seq, event.at, &event.entry);
        if want != event.mac {
            return self.fail(
                event.seq,
                format!(
                    "event {} does not match its MAC: it was altered, moved or forged",
                    event.seq
                ),
            );
        }
        self.count += 1;
        self.prev = Some(want);
        self.next = Some(event.seq + 1);
    }

    /// The verdict, given the head the store holds.
    pub(crate) fn finish(mut self, head: &AuditHead) -> Verdict {
        if self.broken.is_none() {
            match (self.next, &self.prev) {
                (None, _) if head.seq != 0 => self.fail(
                    head.seq,
                    format!("the log is empty but its head names event {}", head.seq),
                ),
                (Some(next), Some(prev)) if head.seq != next - 1 || &head.mac != prev => {
                    let last = next - 1;
                    if head.seq > last {
                        self.fail(
                            next,
                            format!(
                                "event {next} is missing: the log ends at event {last} but its \
                                 head names event {}",
                                head.seq
                            ),
                        );
                    } else {
                        self.fail(
                            last,
                            format!("the log's head (event {}) is not its last event", head.seq),
                        );
                    }
                }
                _ => {}
            }
        }
        match self.broken {
            Some((seq, reason)) => Verdict::Broken { seq, reason },
            None => Verdict::Intact {
                count: self.count,
                first: self.first.unwrap_or(0),
                last: self.next.map_or(0, |n| n - 1),
            },
        }
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &[u8], prev: &[u8], seq: i64, action: &str) -> AuditEvent {
        let entry = AuditEntry::new(Interface::Api, action);
        let mac = chain_mac(key, prev, seq, 1_000 + seq, &entry);
        AuditEvent {
            seq,
            at: 1_000 + seq,
            entry,
            mac,
        }
    }

    fn chain(key: &[u8], n: i64) -> Vec<AuditEvent> {
        let mut prev = Vec::new();
        (1..=n)
            .map(|seq| {
                let e = event(key, &prev, seq, "secret.read");
                prev = e.mac.clone();
                e
            })
            .collect()
    }

    fn verify(events: &[AuditEvent], head: &AuditHead, key: &[u8]) -> Verdict {
        let mut v = Verifier::new(key, None);
        for e in events {
            v.feed(e);
        }
        v.finish(head)
    }

    fn head_of(events: &[AuditEvent]) -> AuditHead {
        let last = events.last().unwrap();
        AuditHead {
            seq: last.seq,
            mac: last.mac.clone(),
        }
    }

    #[test]
    fn an_intact_chain_verifies_and_every_tampering_is_named() {
        let key = [7u8; 32];
        let events = chain(&key, 5);
        let head = head_of(&events);
        assert_eq!(
            verify(&events, &head, &key),
            Verdict::Intact {
                count: 5,
                first: 1,
                last: 5
            }
        );

        let mut altered = events.clone();
        altered[2].entry.outcome = "denied".to_owned();
        assert!(matches!(
            verify(&altered, &head, &key),
            Verdict::Broken { seq: 3, .. }
        ));

        let mut removed = events.clone();
        removed.remove(1);
        assert!(matches!(
            verify(&removed, &head, &key),
            Verdict::Broken { seq: 2, .. }
        ));

        let mut swapped = events.clone();
        let (a, b) = (swapped[1].entry.clone(), swapped[3].entry.clone());
        swapped[1].entry = b;
        swapped[3].entry = a;
        swapped[1].entry.action = "secret.delete".to_owned();
        assert!(matches!(
            verify(&swapped, &head, &key),
            Verdict::Broken { seq: 2, .. }
        ));

        // The tail cut off, head included: consistent (the CLI's remembered
        // head finds that); with the head left, the cut is named.
        assert!(matches!(
            verify(&events[..3], &head, &key),
            Verdict::Broken { seq: 4, .. }
        ));
        assert!(matches!(
            verify(&events[..3], &head_of(&events[..3]), &key),
            Verdict::Intact { last: 3, .. }
        ));

        // Another key checks nothing.
        assert!(matches!(
            verify(&events, &head, &[8u8; 32]),
            Verdict::Broken { seq: 1, .. }
        ));
        // The front cut without a checkpoint.
        assert!(matches!(
            verify(&events[2..], &head, &key),
            Verdict::Broken { seq: 2, .. }
        ));
    }

    #[test]
    fn a_checkpoint_lets_the_chain_start_later() {
        let key = [1u8; 32];
        let events = chain(&key, 6);
        let head = head_of(&events);
        let checkpoint = Checkpoint {
            kept_from: 4,
            prev_mac: hex(&events[2].mac),
            removed: 3,
        };
        let mut v = Verifier::new(&key, Some(checkpoint));
        for e in &events[3..] {
            v.feed(e);
        }
        assert_eq!(
            v.finish(&head),
            Verdict::Intact {
                count: 3,
                first: 4,
                last: 6
            }
        );
        assert_eq!(unhex(&hex(&[0, 255, 16])), Some(vec![0, 255, 16]));
        assert_eq!(unhex("zz"), None);
    }
}
