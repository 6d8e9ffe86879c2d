//! The PostgreSQL change feed that keeps a replica's lookup cache exact.
//!
//! Each change to a named secret or an environment is announced on the
//! channel `latchkey_changes` when it commits (triggers of migration 0002).
//! One task per replica listens on a connection of its own and applies the
//! announcements to the [`LookupCache`].
//!
//! Listening alone would leave a window: another replica's write is
//! acknowledged, and a lookup here still finds the old row because the
//! announcement is in flight. So before a lookup uses the cache it waits for
//! a *sync*: a `SELECT pg_backend_pid()` on the listening connection that
//! was sent after the lookup arrived (and answered by the session that
//! subscribed). PostgreSQL delivers to a listening session every
//! announcement committed before it reads a command, ahead of that
//! command's answer; once the sync returns, every write acknowledged before
//! the lookup arrived has been applied. One sync serves every lookup that
//! was waiting when it was sent, so under load a single trivial round trip
//! stands for many lookups, and a write acknowledged by any replica is what
//! the next lookup on every replica returns.
//!
//! When the connection fails, the cache is switched off (emptied, no fills)
//! and lookups read the database directly until the task has connected and
//! subscribed again.

use std::{sync::Arc, time::Duration};

use sqlx::{postgres::PgListener, PgPool};
use tokio::sync::{mpsc, oneshot};

use crate::cache::LookupCache;

/// The channel the triggers announce changes on.
const CHANNEL: &str = "latchkey_changes";

/// The payload that stands for every secret.
const EVERYTHING: &str = "*";

/// With no lookup waiting, announcements are still drained this often.
const IDLE_SYNC: Duration = Duration::from_secs(1);

/// The PostgreSQL session a command ran in. Every sync asks it, and one
/// that answers from another session than the one that subscribed (a proxy
/// pooling by transaction) counts as a lost feed.
async fn backend_pid(listener: &mut PgListener) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(listener)
        .await
}

/// How long to wait before connecting again after a failure; doubled after
/// each failure in a row, up to [`MAX_RECONNECT_DELAY`].
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// A handle on the listening task; cloned into every user of the cache.
#[derive(Debug, Clone)]
pub(crate) struct ChangeFeed {
    syncs: mpsc::UnboundedSender<oneshot::Sender<bool>>,
    /// The listening connection's own one-connection pool.
    listening: PgPool,
}

impl ChangeFeed {
    /// Starts listening for changes on a connection of `listening` (a pool
    /// of its own), applying them to `cache`, which is live only while the
    /// feed is connected; `requests` is the store's pool, from which the
    /// feed's probes are sent. Subscribing and each sync may take at most
    /// `limit`; past it the feed counts as lost. The task ends at
    /// [`close`](Self::close).
    pub(crate) fn start(
        listening: PgPool,
        requests: PgPool,
        limit: Duration,
        cache: Arc<LookupCache>,
    ) -> Self {
        let (syncs, waiting) = mpsc::unbounded_channel();
        tokio::spawn(listen(listening.clone(), requests, limit, cache, waiting));
        ChangeFeed { syncs, listening }
    }

    /// Stops listening and closes the connection.
    pub(crate) async fn close(&self) {
        self.listening.close().await;
    }

    /// Waits until every change committed before this call has reached the
    /// cache. False when that cannot be known (the feed is down): the
    /// caller must then read the database.
    pub(crate) async fn sync(&self) -> bool {
        let (done, synced) = oneshot::channel();
        if self.syncs.send(done).is_err() {
            return false;
        }
        synced.await.unwrap_or(false)
    }
}

async fn listen(
    pool: PgPool,
    probes: PgPool,
    limit: Duration,
    cache: Arc<LookupCache>,
    mut requests: mpsc::UnboundedReceiver<oneshot::Sender<bool>>,
) {
    let mut waiting = Vec::new();
    // The listener holds a connection of the pool, which `close()` waits
    // for: let go of it as soon as the pool starts closing.
    let mut closing = std::pin::pin!(pool.close_event());
    let mut delay = RECONNECT_DELAY;
    'connect: while !pool.is_closed() {
        let subscribed = tokio::time::timeout(limit, subscribe(&pool, &probes)).await;
        let subscribed = subscribed.unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
        let (mut listener, backend) = match subscribed {
            Ok(subscribed) => subscribed,
            Err(e) => {
                if !pool.is_closed() {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot listen for changes; named lookups read the database until it works");
                }
                answer_all(&mut requests, &mut waiting, false);
                if !pause(delay, &mut requests, closing.as_mut()).await {
                    break 'connect;
                }
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                continue;
            }
        };
        delay = RECONNECT_DELAY;
        // Subscribed: from here every change reaches us. Start empty.
        cache.set_live(true);
        let mut idle = tokio::time::interval(IDLE_SYNC);
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => waiting.push(request),
                    None => break 'connect, // the store is gone
                },
                _ = idle.tick() => {}
                () = &mut closing => break 'connect,
            }
            // Everyone who asked before the sync is sent is answered by it.
            while let Ok(request) = requests.try_recv() {
                waiting.push(request);
            }
            // Bounded: a connection that hangs without an error (a lost
            // network) must not hold every lookup.
            let synced = tokio::time::timeout(limit, backend_pid(&mut listener))
                .await
                .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut))
                .and_then(|pid| {
                    if pid == backend {
                        Ok(())
                    } else {
                        Err(sqlx::Error::Protocol(
                            "the listening session changed (is a proxy pooling connections by \
                             transaction?)"
                                .to_owned(),
                        ))
                    }
                });
            while let Some(note) = listener.next_buffered() {
                apply(&cache, note.payload());
            }
            if let Err(e) = synced {
                cache.set_live(false);
                metrics::counter!("latchkey_change_feed_reconnects_total").increment(1);
                if !pool.is_closed() {
                    tracing::warn!(error = %e, "lost the change feed; reconnecting");
                }
                answer_all(&mut requests, &mut waiting, false);
                break;
            }
            for request in waiting.drain(..) {
                let _ = request.send(true);
            }
        }
        if !pause(RECONNECT_DELAY, &mut requests, closing.as_mut()).await {
            break 'connect;
        }
    }
    cache.set_live(false);
    answer_all(&mut requests, &mut waiting, false);
}

/// A listener subscribed to the channel, once a probe announced from
/// another session has been seen to arrive before a sync's answer. Behind a
/// proxy that pools by transaction (where a `LISTEN` does not stay with its
/// session) the probe does not arrive, and the cache stays off rather than
/// go stale.
/// Waits `delay` before the next connection attempt, telling every lookup
/// that asks meanwhile to read the database. False when the store is closing.
async fn pause(
    delay: Duration,
    requests: &mut mpsc::UnboundedReceiver<oneshot::Sender<bool>>,
    mut closing: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> bool {
    let mut done = std::pin::pin!(tokio::time::sleep(delay));
    loop {
        tokio::select! {
            () = &mut done => return true,
            () = &mut closing => return false,
            request = requests.recv() => match request {
                Some(request) => {
                    let _ = request.send(false);
                }
                None => return false,
            },
        }
    }
}

async fn subscribe(pool: &PgPool, probes: &PgPool) -> Result<(PgListener, i32), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    let backend = backend_pid(&mut listener).await?;
    let probe = format!("probe:{}", latchkey_core::ids::new_id("p"));
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(&probe)
        .execute(probes)
        .await?;
    let same_session = backend_pid(&mut listener).await? == backend;
    let mut arrived = false;
    while let Some(note) = listener.next_buffered() {
        arrived |= note.payload() == probe;
    }
    if arrived && same_session {
        Ok((listener, backend))
    } else {
        Err(sqlx::Error::Protocol(
            "a change announced by another session did not arrive before the next answer \
             (is a proxy pooling connections by transaction?)"
                .to_owned(),
        ))
    }
}

fn apply(cache: &LookupCache, payload: &str) {
    if payload.starts_with("probe:") {
        // Another replica checking its feed: nothing changed.
    } else if payload == EVERYTHING {
        cache.clear();
    } else {
        cache.forget(payload);
    }
}

/// Tells every waiting lookup to read the database itself.
fn answer_all(
    requests: &mut mpsc::UnboundedReceiver<oneshot::Sender<bool>>,
    waiting: &mut Vec<oneshot::Sender<bool>>,
    synced: bool,
) {
    while let Ok(request) = requests.try_recv() {
        waiting.push(request);
    }
    for request in waiting.drain(..) {
        let _ = request.send(synced);
    }
}
