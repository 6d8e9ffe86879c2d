//! Crash test: the real server killed with SIGKILL while 8 writers create
//! and update secrets through the JSON API, restarted on the same store, and
//! every write it acknowledged read back, decrypted, with its value.
//!
//! A write the server answered with success is one its caller may act on
//! (and forget its own copy of the value), so it must survive the process
//! dying at any instant, with no shutdown code run: SIGTERM would let the
//! server close its store cleanly and prove nothing about durability. A
//! write still in flight at the kill may or may not be there; either is
//! accepted, and what the restarted server shows is then taken as the truth
//! for the next cycles. The restart itself must be clean: a lock left by
//! the dead process, a WAL it cannot replay or a master key it no longer
//! accepts would each stop the server from starting, which fails the test.
//!
//! Each writer owns its names (`w{writer}-{seq}`), so the last write it got
//! acknowledged for a name is that name's expected value without any
//! ordering between writers. Values are `seq-{n}` markers, not secrets; a
//! failure names the write's sequence number, never a token.

use std::{
    collections::{btree_map::Entry, BTreeMap},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use latchkey::{Client, Config, Secret};

use crate::harness::Server;

const WRITERS: usize = 8;
/// How long writers run before the kill: a random time in this range, so
/// that the kill lands at a different point of a write each cycle.
const WRITE_MS: std::ops::Range<u64> = 200..600;
/// The key every test secret holds.
const KEY: &str = "V";
/// Bounds a writer's or reader's wait after the kill, so that a hung
/// client fails the test instead of the CI job.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_keeps_every_acknowledged_write_across_kill_9() {
    crash_cycles("sqlite", 10, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_keeps_every_acknowledged_write_across_kill_9() {
    let db = pg::TestDb::create().await;
    crash_cycles("postgres", 5, &["--database", &db.url]).await;
}

/// One writer's view: the names it owns and the sequence number of the last
/// write the server acknowledged for each, plus the write that was in
/// flight when the server died.
struct Writer {
    id: usize,
    rng: Rng,
    next: u64,
    acked: BTreeMap<String, u64>,
    /// `(name, seq, is_create)` of the write with no answer yet.
    pending: Option<(String, u64, bool)>,
    /// Acknowledged writes over the whole test.
    total: u64,
}

async fn crash_cycles(backend: &str, cycles: usize, args: &[&str]) {
    let started = Instant::now();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng::new(seed);
    // The data dir (master.key, admin-token, and for SQLite the database)
    // outlives every server: each restart must find the same key and token.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut writers: Vec<Writer> = (0..WRITERS)
        .map(|id| Writer {
            id,
            rng: Rng::new(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            next: 0,
            acked: BTreeMap::new(),
            pending: None,
            total: 0,
        })
        .collect();
    let mut token_id: Option<String> = None;
    let mut in_flight_kept = 0;
    for cycle in 0..cycles {
        let server = start(&dir, args, backend, cycle);
        let (id, secret) = server.admin_token();
        match &token_id {
            None => token_id = Some(id.clone()),
            Some(first) => assert_eq!(
                first, &id,
                "{backend} cycle {cycle}: the restart bootstrapped a new admin token"
            ),
        }
        let client = Client::new(Config::new(server.url(), &id, &secret)).unwrap();
        if cycle > 0 {
            // What the previous server acknowledged, read through this one.
            in_flight_kept += verify(&client, &mut writers, backend, cycle).await;
        }
        // Write for a random time, then kill -9 with writes in flight.
        let killed = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = writers
            .drain(..)
            .map(|w| tokio::spawn(write_until_killed(w, client.clone(), killed.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(
            WRITE_MS.start + rng.below(WRITE_MS.end - WRITE_MS.start),
        ))
        .await;
        killed.store(true, Ordering::SeqCst);
        sigkill(server);
        for task in tasks {
            let w = tokio::time::timeout(JOIN_TIMEOUT, task)
                .await
                .unwrap_or_else(|_| panic!("{backend} cycle {cycle}: a writer hung after the kill"))
                .unwrap();
            writers.push(w);
        }
    }
    // The last kill's writes, read once more.
    let server = start(&dir, args, backend, cycles);
    let (id, secret) = server.admin_token();
    let client = Client::new(Config::new(server.url(), &id, &secret)).unwrap();
    in_flight_kept += verify(&client, &mut writers, backend, cycles).await;
    assert!(server.stop().success());

    let acked: u64 = writers.iter().map(|w| w.total).sum();
    let names: usize = writers.iter().map(|w| w.acked.len()).sum();
    println!(
        "crash test {backend}: {cycles} kill -9 cycles, {acked} acknowledged writes \
         ({names} secrets), all present and decrypted after each restart; \
         {in_flight_kept} in-flight writes found committed; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // A cycle that acknowledged nothing would check nothing.
    assert!(
        acked >= (cycles * WRITERS) as u64,
        "{backend}: too few writes ({acked}) to test anything"
    );
}

fn start(dir: &Path, args: &[&str], backend: &str, cycle: usize) -> Server {
    Server::try_start(dir, args, &[]).unwrap_or_else(|log| match cycle {
        0 => panic!("{backend}: the server did not start:\n{log}"),
        n => panic!("{backend}: the server did not restart cleanly after kill {n}:\n{log}"),
    })
}

/// SIGKILL, not SIGTERM: no shutdown code runs. Dropping the server then
/// reaps the process.
fn sigkill(server: Server) {
    let pid = i32::try_from(server.pid()).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(server);
}

/// Creates (one write in four, or when it owns nothing yet) and updates its
/// own secrets until a write fails, which must be after the kill.
async fn write_until_killed(mut w: Writer, client: Client, killed: Arc<AtomicBool>) -> Writer {
    loop {
        let seq = w.next;
        w.next += 1;
        let create = w.acked.is_empty() || w.rng.below(4) == 0;
        let name = if create {
            format!("w{}-{seq}", w.id)
        } else {
            let i = w.rng.below(w.acked.len() as u64) as usize;
            w.acked.keys().nth(i).unwrap().clone()
        };
        w.pending = Some((name.clone(), seq, create));
        let value = format!("seq-{seq}");
        let result = if create {
            client
                .secrets()
                .create(&name, [(KEY, value)])
                .await
                .map(drop)
        } else {
            Secret::from_name(&name)
                .update_with(&client, [(KEY, value)])
                .await
                .map(drop)
        };
        match result {
            Ok(()) => {
                w.acked.insert(name, seq);
                w.pending = None;
                w.total += 1;
            }
            Err(e) => {
                assert!(
                    killed.load(Ordering::SeqCst),
                    "writer {} failed before the kill: {e}",
                    w.id
                );
                return w;
            }
        }
    }
}

/// Reads every acknowledged secret (8 readers at once, one per writer) and
/// checks its value; the write in flight at the kill may have landed or
/// not, and the store's answer is adopted. Returns how many had landed.
async fn verify(client: &Client, writers: &mut Vec<Writer>, backend: &str, cycle: usize) -> usize {
    let tasks: Vec<_> = writers
        .drain(..)
        .map(|w| {
            let client = client.clone();
            let backend = backend.to_owned();
            tokio::spawn(async move { verify_writer(&client, w, &backend, cycle).await })
        })
        .collect();
    let mut landed = 0;
    for task in tasks {
        let (w, n) = tokio::time::timeout(JOIN_TIMEOUT, task)
            .await
            .expect("reading back hung")
            .unwrap();
        landed += n;
        writers.push(w);
    }
    landed
}

async fn verify_writer(
    client: &Client,
    mut w: Writer,
    backend: &str,
    cycle: usize,
) -> (Writer, usize) {
    let pending = w.pending.take();
    let mut landed = 0;
    for (name, seq) in &mut w.acked {
        let found = read(client, name).await;
        let in_flight = match &pending {
            Some((p, s, _)) if p == name => Some(*s),
            _ => None,
        };
        match found {
            Some(got) if got == *seq => {}
            Some(got) if Some(got) == in_flight => {
                *seq = got;
                landed += 1;
            }
            Some(got) => panic!(
                "{backend}, after kill {cycle}: {name} holds write seq {got}, \
                 but write seq {seq} was acknowledged"
            ),
            None => panic!(
                "{backend}, after kill {cycle}: {name} is gone, \
                 but write seq {seq} was acknowledged"
            ),
        }
    }
    // A create in flight: the secret exists with that write's value, or not at all.
    if let Some((name, seq, true)) = pending {
        if let Entry::Vacant(slot) = w.acked.entry(name) {
            let name = slot.key();
            match read(client, name).await {
                None => {}
                Some(got) if got == seq => {
                    slot.insert(seq);
                    landed += 1;
                }
                Some(got) => panic!(
                    "{backend}, after kill {cycle}: {name} holds write seq {got}, \
                     but only seq {seq} was ever sent for it"
                ),
            }
        }
    }
    (w, landed)
}

/// The sequence number in the secret's decrypted value; `None` when the
/// secret does not exist.
async fn read(client: &Client, name: &str) -> Option<u64> {
    match Secret::from_name(name).resolve_with(client).await {
        Ok(values) => {
            let value = values
                .get(KEY)
                .unwrap_or_else(|| panic!("{name} lost its key {KEY}"));
            Some(
                value
                    .strip_prefix("seq-")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{name} holds a value no writer wrote")),
            )
        }
        Err(e) if e.is_not_found() => None,
        Err(e) => panic!("reading {name} back failed: {e}"),
    }
}

/// xorshift64*: enough randomness for write mixes and kill times without a
/// dependency. Seeded from the clock, so that each run kills at other
/// points; the kill's timing against the writes cannot be replayed anyway.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// A PostgreSQL database of its own for the test, on the server of
/// `LATCHKEY_TEST_DATABASE_URL`: the store's PostgreSQL tests' helper, so
/// that how a test database is made and dropped is written once.
#[path = "../../../store/tests/support/mod.rs"]
pub(crate) mod pg;
