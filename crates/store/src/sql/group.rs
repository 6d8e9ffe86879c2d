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
use crate::{rows::SecretRow, NewSecret, SecretKind};

/// Most creates committed together.
pub(crate) const MAX_GROUP: usize = 128;

/// What one create answers: its row (sealed) and whether it is new.
pub(crate) type Created = Result<(SecretRow, bool), Error>;

/// Commits one group: the answer of each create, in order, once the group's
/// transaction committed and the cache forgot what it changed.
pub(crate) type CommitGroup = Arc<
    dyn Fn(Vec<NewSecret>) -> Pin<Box<dyn Future<Output = Result<Vec<Created>, Error>> + Send>>
        + Send
        + Sync,
>;

/// A create waiting for the next group, and where its answer goes.
struct Job {
    new: NewSecret,
    done: oneshot::Sender<Created>,
}

/// The queue in front of the group commit task; cheap to clone. The task
/// ends when the last clone is dropped.
#[derive(Clone, Debug)]
pub(crate) struct Creates {
    queue: mpsc::Sender<Job>,
}

impl Creates {
    /// Starts the task that commits groups with `commit`.
    pub(crate) fn start(commit: CommitGroup) -> Self {
        let (queue, jobs) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(run(commit, jobs));
        Creates { queue }
    }

    /// Creates `new` in the next group.
    pub(crate) async fn create(&self, new: &NewSecret) -> Created {
        let (done, answer) = oneshot::channel();
        let closed = || Error::unavailable("The secret store is closing; try again shortly");
        let job = Job {
            new: new.clone(),
            done,
        };
        self.queue.send(job).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
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

/// The task: takes what waits, orders it by environment, commits it, answers.
/// The commit runs here, not in the callers, which may have stopped
/// waiting: the cache must hear of every overwrite that committed.
async fn run(commit: CommitGroup, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        #[allow(clippy::cast_precision_loss)] // at most MAX_GROUP
        metrics::histogram!("latchkey_group_commit_batch_size").record(jobs.len() as f64);
        // Named creates lock their environment: one order for every group.
        jobs.sort_by(|a, b| lock_order(&a.new).cmp(&lock_order(&b.new)));
        let (news, dones): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.new, j.done)).unzip();
        match commit(news).await {
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
