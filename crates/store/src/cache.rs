//! A read-through cache of the rows behind named-secret lookups.
//!
//! The lookup by name (`from_name(...).hydrate()`, `latchkey run --secret`)
//! is on the start path of every container, and the same few secrets are
//! looked up over and over. Each adapter keeps the rows it read for
//! [`Store::secret_in_environment`](crate::Store::secret_in_environment)
//! here, so a repeated lookup costs no database round trip.
//!
//! What is kept is the row as stored, still sealed, beside its metadata
//! (name, version, keys: never a value) as read when the row was first
//! opened and its binding checked. A lookup that needs only the metadata
//! (`SecretGetOrCreate`, required keys) is answered without decrypting; one
//! that needs the values opens the sealed row again under the master key.
//! The cache never holds a value in plaintext.
//!
//! Freshness: an adapter forgets a secret after every write that changes it
//! (update, overwrite, delete, `last_used_at`) and forgets everything when an
//! environment is renamed or deleted, each time after the write committed.
//! Every forget bumps a generation; a read that began before it may not fill
//! the cache with what it read, so a row read just before a write cannot
//! outlive it here. Writes made by other processes (other PostgreSQL
//! replicas) reach the cache through the adapter's change feed; while that
//! feed is down the cache is [not live](LookupCache::set_live): it is empty
//! and every lookup reads the database.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    sync::{PoisonError, RwLock},
};

use std::sync::Arc;

use latchkey_core::Error;

use crate::{crypto::Keyring, rows::SecretRow, Secret, SecretSummary};

/// The most bytes of rows the cache keeps; past this it starts over. Far
/// above the working set of a deployment's named lookups (a row is a few
/// hundred bytes), and small beside the server's memory target.
const MAX_BYTES: usize = 8 << 20;

/// See the [module documentation](self).
pub(crate) struct LookupCache {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    /// Bumped by every forget: fills that began before it are refused.
    generation: u64,
    /// Whether every change to the database reaches this cache.
    live: bool,
    rows: HashMap<String, Arc<Entry>>,
    /// The keys each secret is cached under (its environment's name, and ""
    /// for the default environment).
    keys_of: HashMap<String, Vec<String>>,
    bytes: usize,
}

impl fmt::Debug for LookupCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("LookupCache")
            .field("live", &state.live)
            .field("rows", &state.rows.len())
            .field("bytes", &state.bytes)
            .finish()
    }
}

/// A cached lookup: the sealed row and the metadata it opened to.
pub(crate) struct Entry {
    row: SecretRow,
    summary: SecretSummary,
}

impl Entry {
    fn size(&self) -> usize {
        self.row.approximate_size()
            + self
                .summary
                .keys
                .iter()
                .map(|k| k.len() + 24)
                .sum::<usize>()
    }
}

/// What a lookup found: a cached entry, or a row it read.
enum Found {
    Cached(Arc<Entry>),
    Read(Box<SecretRow>),
}

/// Proof of the generation a database read started in; see
/// [`LookupCache::fill`].
#[must_use]
#[derive(Clone, Copy)]
pub(crate) struct Ticket(u64);

impl LookupCache {
    /// An empty cache; `live` says whether it may be filled yet.
    pub(crate) fn new(live: bool) -> Self {
        LookupCache {
            state: RwLock::new(State {
                live,
                ..State::default()
            }),
        }
    }

    /// The cache key of a lookup.
    pub(crate) fn key(workspace_id: &str, environment_name: &str, name: &str) -> String {
        // Names and ids never contain NUL, so the key is unambiguous.
        format!("{workspace_id}\0{environment_name}\0{name}")
    }

    /// A named secret with its values: the cached row opened again, or
    /// `read`'s row opened (and kept, if no write intervened). See
    /// [`find`](Self::find) for `current`.
    pub(crate) async fn secret<F>(
        &self,
        keyring: &Keyring,
        lookup: (&str, &str, &str),
        current: bool,
        read: F,
    ) -> Result<Option<Secret>, Error>
    where
        F: Future<Output = Result<Option<SecretRow>, Error>>,
    {
        Ok(match self.find(lookup, current, read).await? {
            Some(Found::Cached(entry)) => Some(entry.row.clone().open(keyring)?),
            Some(Found::Read(row)) => Some(row.open(keyring)?),
            None => None,
        })
    }

    /// A named secret's metadata, never decrypted: from the cache, or from
    /// `read`'s row (kept, if no write intervened). See [`find`](Self::find)
    /// for `current`.
    pub(crate) async fn summary<F>(
        &self,
        lookup: (&str, &str, &str),
        current: bool,
        read: F,
    ) -> Result<Option<SecretSummary>, Error>
    where
        F: Future<Output = Result<Option<SecretRow>, Error>>,
    {
        Ok(match self.find(lookup, current, read).await? {
            Some(Found::Cached(entry)) => Some(entry.summary.clone()),
            Some(Found::Read(row)) => Some(row.summary()),
            None => None,
        })
    }

    /// `lookup` is (workspace id, environment name, secret name). `current`
    /// says whether every change committed before this lookup began has
    /// reached the cache (PostgreSQL: the feed synced); if not, the cache
    /// is passed by: `read`'s row is returned and nothing is kept.
    async fn find<F>(
        &self,
        (workspace_id, environment_name, name): (&str, &str, &str),
        current: bool,
        read: F,
    ) -> Result<Option<Found>, Error>
    where
        F: Future<Output = Result<Option<SecretRow>, Error>>,
    {
        if !current {
            metrics::counter!("latchkey_lookup_cache_misses_total", "reason" => "not_current")
                .increment(1);
            return Ok(read.await?.map(|row| Found::Read(Box::new(row))));
        }
        let key = Self::key(workspace_id, environment_name, name);
        let ticket = match self.get(&key) {
            Ok(entry) => {
                metrics::counter!("latchkey_lookup_cache_hits_total").increment(1);
                return Ok(Some(Found::Cached(entry)));
            }
            Err(ticket) => ticket,
        };
        metrics::counter!("latchkey_lookup_cache_misses_total", "reason" => "absent").increment(1);
        let Some(row) = read.await? else {
            return Ok(None);
        };
        self.fill(
            key,
            ticket,
            Entry {
                summary: row.summary(),
                row: row.clone(),
            },
        );
        Ok(Some(Found::Read(Box::new(row))))
    }

    /// The cached entry for `key`, or the ticket to fill it with after
    /// reading the database.
    fn get(&self, key: &str) -> Result<Arc<Entry>, Ticket> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        match state.rows.get(key) {
            Some(entry) => Ok(entry.clone()),
            None => Err(Ticket(state.generation)),
        }
    }

    /// Keeps `entry` under `key`, unless something was forgotten since
    /// `ticket` was issued (the row may predate that write) or the cache is
    /// not live.
    fn fill(&self, key: String, ticket: Ticket, entry: Entry) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if !state.live || state.generation != ticket.0 || state.rows.contains_key(&key) {
            return;
        }
        let size = key.len() + entry.size();
        if state.bytes + size > MAX_BYTES {
            state.rows.clear();
            state.keys_of.clear();
            state.bytes = 0;
        }
        state.bytes += size;
        state
            .keys_of
            .entry(entry.row.id.clone())
            .or_default()
            .push(key.clone());
        state.rows.insert(key, Arc::new(entry));
    }

    /// Forgets the secret with this id, after a write that changed it.
    pub(crate) fn forget(&self, secret_id: &str) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.generation += 1;
        metrics::counter!("latchkey_lookup_cache_invalidations_total", "scope" => "secret")
            .increment(1);
        let Some(keys) = state.keys_of.remove(secret_id) else {
            return;
        };
        for key in keys {
            if let Some(entry) = state.rows.remove(&key) {
                state.bytes -= key.len() + entry.size();
            }
        }
    }

    /// Forgets every secret, after a write that may change many (an
    /// environment renamed or deleted) or when changes may have been missed.
    pub(crate) fn clear(&self) {
        metrics::counter!("latchkey_lookup_cache_invalidations_total", "scope" => "all")
            .increment(1);
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        Self::clear_state(&mut state);
    }

    /// Whether every change to the database reaches the cache from now on.
    /// Either way the cache starts empty.
    pub(crate) fn set_live(&self, live: bool) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        Self::clear_state(&mut state);
        state.live = live;
    }

    fn clear_state(state: &mut State) {
        state.generation += 1;
        state.rows.clear();
        state.keys_of.clear();
        state.bytes = 0;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .rows
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn miss(cache: &LookupCache, key: &str, why: &str) -> Ticket {
        match cache.get(key) {
            Ok(_) => panic!("a hit where a miss was expected: {why}"),
            Err(ticket) => ticket,
        }
    }

    fn row(id: &str, name: &str) -> Entry {
        let row = SecretRow::for_test(id, name, 1);
        let summary = SecretSummary {
            id: id.to_owned(),
            kind: crate::SecretKind::Named(name.to_owned()),
            environment_id: "en".to_owned(),
            environment_name: "main".to_owned(),
            created_at: 0,
            created_by: "test".to_owned(),
            last_used_at: None,
            version: 1,
            keys: vec!["K".to_owned()],
        };
        Entry { row, summary }
    }

    #[test]
    fn a_filled_row_is_returned_until_its_secret_is_forgotten() {
        let cache = LookupCache::new(true);
        let key = LookupCache::key("ws", "main", "db");
        let ticket = miss(&cache, &key, "empty cache");
        cache.fill(key.clone(), ticket, row("st-1", "db"));
        assert_eq!(
            cache
                .get(&key)
                .ok()
                .map(|e| e.summary.id.clone())
                .as_deref(),
            Some("st-1")
        );

        // The same secret under its default-environment key as well.
        let default_key = LookupCache::key("ws", "", "db");
        let ticket = miss(&cache, &default_key, "not cached yet");
        cache.fill(default_key.clone(), ticket, row("st-1", "db"));
        assert_eq!(cache.len(), 2);

        cache.forget("st-2");
        assert!(
            cache.get(&key).is_ok(),
            "another secret's write keeps this one"
        );
        cache.forget("st-1");
        assert!(cache.get(&key).is_err());
        assert!(cache.get(&default_key).is_err());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_read_that_began_before_a_write_does_not_fill() {
        let cache = LookupCache::new(true);
        let key = LookupCache::key("ws", "main", "db");
        let ticket = miss(&cache, &key, "empty cache");
        // A write commits and forgets (any secret) while the read is running.
        cache.forget("st-9");
        cache.fill(key.clone(), ticket, row("st-1", "db"));
        assert!(
            cache.get(&key).is_err(),
            "a row that may predate the write was kept"
        );

        let ticket = miss(&cache, &key, "still empty");
        cache.clear();
        cache.fill(key.clone(), ticket, row("st-1", "db"));
        assert!(
            cache.get(&key).is_err(),
            "a fill from before clear() was kept"
        );
    }

    #[test]
    fn a_cache_that_is_not_live_never_fills() {
        let cache = LookupCache::new(false);
        let key = LookupCache::key("ws", "main", "db");
        let ticket = miss(&cache, &key, "empty cache");
        cache.fill(key.clone(), ticket, row("st-1", "db"));
        assert!(cache.get(&key).is_err());

        cache.set_live(true);
        let ticket = miss(&cache, &key, "empty cache");
        cache.fill(key.clone(), ticket, row("st-1", "db"));
        assert!(cache.get(&key).is_ok());

        cache.set_live(false);
        assert!(cache.get(&key).is_err(), "going down empties the cache");
    }

    #[test]
    fn the_cache_starts_over_past_its_size_limit() {
        let cache = LookupCache::new(true);
        let mut n = 0;
        // Fill until the size limit forces a restart: the count drops.
        let mut previous = 0;
        loop {
            let key = LookupCache::key("ws", "main", &format!("s{n}"));
            let ticket = miss(&cache, &key, "new key");
            cache.fill(key, ticket, row(&format!("st-{n}"), "x"));
            n += 1;
            let len = cache.len();
            if len < previous {
                break;
            }
            previous = len;
            assert!(n < 1_000_000, "the cache never started over");
        }
        assert_eq!(cache.len(), 1);
    }
}
