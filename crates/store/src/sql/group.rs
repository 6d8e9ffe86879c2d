//! Writes committed in groups, on every engine.
//!
//! Each write (a create, an update or a delete of a secret) waits in a
//! queue while the previous group commits; the next transaction then takes
//! everything waiting (up to [`MAX_GROUP`]) and runs it with a fixed number
//! of statements ([`super::batch`] decides in memory what each write does;
//! a refused write fails alone and changes nothing), and one commit makes
//! the whole group durable before any of it is acknowledged. Alone, a write
//! costs what it did; under load, one transaction serves many.
//!
//! Why it is correct on PostgreSQL too, with any number of replicas:
//!
//! - Nothing is acknowledged before its group's commit, so every
//!   acknowledged write is visible to every later read on every replica.
//! - A group takes the same row locks its writes would take one by one (a
//!   key share lock on the environments of its creates, the secrets it
//!   changes, then the audit chain's head), each kind in one statement in
//!   one order, and holds them until its commit, so groups on two replicas
//!   (or two groups in flight on one) wait for each other rather than
//!   deadlock; the rare deadlock PostgreSQL still detects runs the group
//!   again. Within a group the writes apply one after another, in the order
//!   they came, each seeing the ones before.
//! - Two creates of one name in two groups are ordered by the unique index
//!   of names: the second group waits for the first to commit, collides,
//!   and runs again from the start, now seeing the first (its create is then
//!   refused or returns the existing secret, as asked). A refused write
//!   fails alone; a collision only delays its group.
//! - Creation times stay unique per environment: each is the replica's
//!   strictly increasing clock, past the newest the group read (and the
//!   unique index of creation times is the last word: a collision with
//!   another replica runs the group again), so paging by `created_before`
//!   stays exact while other replicas write.
//! - The audit chain's head is locked last and for one commit per group,
//!   so its numbers stay gapless and in commit order, as before; holding it
//!   once per group instead of once per write is the whole gain.

use std::{future::Future, pin::Pin, sync::Arc};

use latchkey_core::Error;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::batch::{Write, Written};
use crate::{audit::AuditEntry, audit::AuditHead};

/// Most jobs committed together.
pub(crate) const MAX_GROUP: usize = 128;

/// Commits one group: the answer of each job, in order, once the group's
/// transaction committed (and the cache forgot what it changed).
pub(crate) type Commit<J, R> = Arc<
    dyn Fn(Vec<J>) -> Pin<Box<dyn Future<Output = Result<Vec<Result<R, Error>>, Error>> + Send>>
        + Send
        + Sync,
>;

/// A job waiting for the next group, and where its answer goes.
type Job<J, R> = (J, oneshot::Sender<Result<R, Error>>);

/// The queue in front of a group commit task; cheap to clone. The task
/// ends when the last clone is dropped.
pub(crate) struct Group<J, R> {
    queue: mpsc::Sender<Job<J, R>>,
}

impl<J, R> Clone for Group<J, R> {
    fn clone(&self) -> Self {
        Group {
            queue: self.queue.clone(),
        }
    }
}

impl<J, R> std::fmt::Debug for Group<J, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").finish_non_exhaustive()
    }
}

impl<J: Send + 'static, R: Send + 'static> Group<J, R> {
    /// Starts the task that commits groups with `commit`, each in the
    /// order its jobs came; `name` labels its batch sizes in the metrics.
    pub(crate) fn start(name: &'static str, commit: Commit<J, R>) -> Self {
        let (queue, jobs) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(run(name, commit, jobs, 1));
        Group { queue }
    }

    /// Starts the task that commits groups with `commit` on a thread of its
    /// own, with a runtime of its own: a group is a chain of round trips to
    /// the database, and on the request runtime each step would wait its
    /// turn behind the requests' tasks. Up to `in_flight` groups run at
    /// once, each in its own transaction: while one waits for its commit to
    /// be durable, the next one does its reads. The thread ends with the
    /// task, once the groups in flight are answered.
    pub(crate) fn start_on_thread(
        name: &'static str,
        commit: Commit<J, R>,
        in_flight: usize,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel(4 * MAX_GROUP);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("latchkey-{name}"))
            .spawn(move || runtime.block_on(run(name, commit, jobs, in_flight)))?;
        Ok(Group { queue })
    }

    /// Runs `job` in the next group.
    pub(crate) async fn submit(&self, job: J) -> Result<R, Error> {
        let (done, answer) = oneshot::channel();
        let closed = || Error::unavailable("The secret store is closing; try again shortly");
        self.queue.send((job, done)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// Writes of secrets, in the order they came.
pub(crate) type Writes = Group<Write, Written>;

/// Appends of audit events that record no change of their own (reads,
/// refusals), each job one request's events; answered with the head after
/// the group.
pub(crate) type Events = Group<Vec<AuditEntry>, AuditHead>;

impl Writes {
    /// Starts the thread that commits groups of writes with `commit`, up to
    /// `in_flight` at once ([`Group::start_on_thread`]); `commit` must use
    /// connections that thread may drive (opened lazily there, or
    /// runtime-independent).
    pub(crate) fn writes_on_thread(
        commit: Commit<Write, Written>,
        in_flight: usize,
    ) -> std::io::Result<Self> {
        Group::start_on_thread("writes", commit, in_flight)
    }
}

impl Events {
    /// Starts the task that commits groups of events with `commit`, in the
    /// order they came.
    pub(crate) fn events(commit: Commit<Vec<AuditEntry>, AuditHead>) -> Self {
        Group::start("audit_events", commit)
    }
}

/// The task: takes what waits, commits it, answers; up to `in_flight`
/// groups at once. A group is formed only when one may start, so that what
/// arrives meanwhile waits for the next. The commit runs here, not in the
/// callers, which may have stopped waiting: the cache must hear of every
/// change that committed.
async fn run<J: Send + 'static, R: Send + 'static>(
    name: &'static str,
    commit: Commit<J, R>,
    mut queue: mpsc::Receiver<Job<J, R>>,
    in_flight: usize,
) {
    let in_flight = in_flight.max(1);
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            break;
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        #[allow(clippy::cast_precision_loss)] // at most MAX_GROUP
        metrics::histogram!("latchkey_group_commit_batch_size", "group" => name)
            .record(jobs.len() as f64);
        let commit = commit.clone();
        tokio::spawn(async move {
            let (inputs, dones): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
            match commit(inputs).await {
                Ok(results) => {
                    for (done, result) in dones.into_iter().zip(results) {
                        let _ = done.send(result);
                    }
                }
                Err(e) => {
                    for done in dones {
                        let _ = done.send(Err(e.clone()));
                    }
                }
            }
            drop(slot);
        });
    }
    // The queue is closed: the groups in flight finish before the runtime
    // that drives them goes.
    let all = u32::try_from(in_flight).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}
