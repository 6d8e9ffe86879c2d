//! Creates committed in groups, on every engine.
//!
//! Each create waits in a queue while the previous group commits; the next
//! transaction then takes everything waiting (up to [`MAX_GROUP`]), each
//! create in a savepoint of its own so that one refusal does not undo the
//! others, and one commit makes the whole group durable before any of them
//! is acknowledged. Alone, a create costs what it did; under load, one
//! commit serves many.
//!
//! Why it is correct on PostgreSQL too: a create of a named secret locks its
//! environment's row until its transaction commits (that is what keeps
//! creation times unique and increasing in commit order, so that paging is
//! exact). A group holds those locks for one transaction instead of one per
//! create, which changes the throughput, not the order: within a group the
//! creates of an environment run one after another under its lock, and
//! across groups and replicas the lock orders them as before. The group
//! takes the locks of its environments in one order (it is sorted by
//! environment), so two groups on two replicas cannot deadlock. Nothing is
//! acknowledged before the group's commit.

use std::{future::Future, pin::Pin, sync::Arc};

use latchkey_core::Error;
use tokio::sync::{mpsc, oneshot};

use super::Changed;
use crate::{audit::AuditEntry, audit::AuditHead, rows::SecretRow, NewSecret, SecretKind};

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
    /// Starts the task that commits groups with `commit`, each ordered by
    /// `order` first; `name` labels its batch sizes in the metrics.
    pub(crate) fn start(
        name: &'static str,
        commit: Commit<J, R>,
        order: fn(&J, &J) -> std::cmp::Ordering,
    ) -> Self {
        let (queue, jobs) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(run(name, commit, order, jobs));
        Group { queue }
    }

    /// Runs `job` in the next group.
    pub(crate) async fn submit(&self, job: J) -> Result<R, Error> {
        let (done, answer) = oneshot::channel();
        let closed = || Error::unavailable("The secret store is closing; try again shortly");
        self.queue.send((job, done)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// What one create answers: its row (sealed) and whether it is new.
pub(crate) type Created = Result<(SecretRow, bool), Error>;

/// Creates of secrets, ordered by environment (see the module's docs).
pub(crate) type Creates = Group<NewSecret, (SecretRow, bool)>;

/// Appends of audit events that record no change of their own (reads,
/// refusals), each job one request's events; answered with the head after
/// the group.
pub(crate) type Events = Group<Vec<AuditEntry>, AuditHead>;

impl Creates {
    /// Starts the task that commits groups of creates with `commit`.
    pub(crate) fn creates(commit: Commit<NewSecret, (SecretRow, bool)>) -> Self {
        Group::start("creates", commit, |a, b| lock_order(a).cmp(&lock_order(b)))
    }

    /// Creates `new` in the next group.
    pub(crate) async fn create(&self, new: &NewSecret) -> Created {
        self.submit(new.clone()).await
    }
}

impl Events {
    /// Starts the task that commits groups of events with `commit`, in the
    /// order they came.
    pub(crate) fn events(commit: Commit<Vec<AuditEntry>, AuditHead>) -> Self {
        Group::start("audit_events", commit, |_, _| std::cmp::Ordering::Equal)
    }
}

/// What a group changed that the lookup cache may hold: the secrets it
/// overwrote (new ones were in no lookup).
pub(crate) fn overwritten(results: &[Created]) -> Changed {
    Changed::Secrets(
        results
            .iter()
            .flatten()
            .filter(|(_, created)| !created)
            .map(|(row, _)| row.id.clone())
            .collect(),
    )
}

/// The task: takes what waits, orders it, commits it, answers. The commit
/// runs here, not in the callers, which may have stopped waiting: the cache
/// must hear of every overwrite that committed.
async fn run<J, R>(
    name: &'static str,
    commit: Commit<J, R>,
    order: fn(&J, &J) -> std::cmp::Ordering,
    mut queue: mpsc::Receiver<Job<J, R>>,
) {
    while let Some(first) = queue.recv().await {
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
        // A stable sort: jobs that compare equal keep their order.
        jobs.sort_by(|a, b| order(&a.0, &b.0));
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
    }
}

/// The environment a create locks, if any.
fn lock_order(new: &NewSecret) -> Option<&str> {
    match new.kind {
        SecretKind::Named(_) => Some(&new.environment_id),
        SecretKind::Anonymous { .. } => None,
    }
}
