//! `latchkey-bench --soak DURATION`: a mixed load held for a long time, to
//! show what a short benchmark cannot: errors that come only with time,
//! memory that grows, descriptors that leak. It prints the server's RSS and
//! open descriptors at the start, every minute and at the end, and every
//! error; it fails (exit 1) if any request failed.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::Result;
use hdrhistogram::Histogram;
use latchkey::{Client, Secret};
use latchkey_proto::api;

use crate::{load::Load, server::Server};

/// Concurrent workers; each keeps its own secrets to update and delete.
const WORKERS: usize = 16;

/// What a worker does, and how often (out of 100).
const MIX: [(Kind, u32); 6] = [
    (Kind::Lookup, 40),
    (Kind::Resolve, 20),
    (Kind::Update, 15),
    (Kind::Create, 10),
    (Kind::List, 10),
    (Kind::Delete, 5),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// `from_name(...).hydrate()` over gRPC.
    Lookup,
    /// Values for a process, over the JSON API (the SDK's resolve).
    Resolve,
    /// `update()` of one key over gRPC: a new version each time.
    Update,
    /// A new named secret over gRPC.
    Create,
    /// The newest page of 100 over gRPC.
    List,
    /// Deletes the worker's oldest secret over gRPC.
    Delete,
}

/// Counts, latencies and the first errors of each kind of request.
#[derive(Default)]
struct Tally {
    kinds: BTreeMap<Kind, (Histogram<u64>, u64)>,
    errors: Vec<String>,
}

impl Tally {
    fn record(&mut self, kind: Kind, took: Duration, result: Result<()>) {
        let (histogram, errors) = self
            .kinds
            .entry(kind)
            .or_insert_with(|| (Histogram::new(3).expect("histogram"), 0));
        histogram.record(took.as_micros() as u64).ok();
        if let Err(e) = result {
            *errors += 1;
            if self.errors.len() < 20 {
                self.errors.push(format!("{kind:?}: {e:#}"));
            }
        }
    }

    fn totals(&self) -> (u64, u64) {
        self.kinds
            .values()
            .fold((0, 0), |(n, e), (h, errors)| (n + h.len(), e + errors))
    }
}

/// The server's resident memory (MiB) and open descriptors, as one line.
fn vitals(server: &Server) -> String {
    match (server.rss_kib(), server.open_descriptors()) {
        (Ok(rss), Ok(fds)) => format!("RSS {:.1} MiB, {fds} open descriptors", rss as f64 / 1024.0),
        (rss, fds) => format!("RSS {rss:?}, descriptors {fds:?}"),
    }
}

/// Runs the mixed load against `server` for `duration`, reporting as it
/// goes. Fails if any request failed.
pub(crate) async fn soak(server: &Server, duration: Duration) -> Result<()> {
    let load = Arc::new(Load::new(server, 4).await?);
    let client = server.sdk_client()?;
    for i in 0..10 {
        load.create_named(&format!("soak-shared-{i}"), 10).await?;
    }
    let start_vitals = vitals(server);
    eprintln!("soak for {duration:?}, {WORKERS} workers; at start: {start_vitals}");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (load, client, tally) = (load.clone(), client.clone(), tally.clone());
            tokio::spawn(async move { worker(w, &load, &client, &tally, deadline).await })
        })
        .collect();
    let mut next_report = started + Duration::from_secs(60);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if Instant::now() >= next_report {
            let (count, errors) = tally
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .totals();
            eprintln!(
                "  {:>5.0} s: {count} requests, {errors} errors; {}",
                started.elapsed().as_secs_f64(),
                vitals(server)
            );
            next_report += Duration::from_secs(60);
        }
    }
    for w in workers {
        w.await??;
    }
    let elapsed = started.elapsed();
    // Let background work (WAL checkpoints, pool idling) settle first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end_vitals = vitals(server);
    let tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
    println!("| request | count | per second | p50 | p99 | errors |\n| --- | ---: | ---: | ---: | ---: | ---: |");
    for (kind, (h, errors)) in &tally.kinds {
        println!(
            "| {kind:?} | {} | {:.0} | {:.2} ms | {:.2} ms | {errors} |",
            h.len(),
            h.len() as f64 / elapsed.as_secs_f64(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
        );
    }
    println!("\nserver at start: {start_vitals}\nserver at end:   {end_vitals}");
    let (count, errors) = tally.totals();
    println!(
        "{count} requests in {:.0} s, {errors} errors",
        elapsed.as_secs_f64()
    );
    for e in &tally.errors {
        println!("  error: {e}");
    }
    anyhow::ensure!(errors == 0, "{errors} requests failed during the soak");
    Ok(())
}

/// One worker: requests drawn from [`MIX`] until `deadline`.
async fn worker(
    w: usize,
    load: &Load,
    client: &Client,
    tally: &Mutex<Tally>,
    deadline: Instant,
) -> Result<()> {
    let mut grpc = load.client(w);
    // The worker's own secrets, oldest first: (name, id).
    let mut own: std::collections::VecDeque<(String, String)> = Default::default();
    let mut n = 0u64;
    let mut draw = w as u64 * 7919 + 1;
    while Instant::now() < deadline {
        // A small linear congruential generator: the mix need not be random,
        // only spread, and the same on every run.
        draw = draw
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut pick = ((draw >> 33) % 100) as u32;
        let kind = MIX
            .iter()
            .find(|(_, weight)| {
                let hit = pick < *weight;
                pick = pick.saturating_sub(*weight);
                hit
            })
            .map_or(Kind::Lookup, |(kind, _)| *kind);
        let shared = format!("soak-shared-{}", (draw >> 40) % 10);
        let sent = Instant::now();
        let result: Result<()> = match kind {
            Kind::Lookup => grpc
                .secret_get_or_create(api::SecretGetOrCreateRequest {
                    deployment_name: shared,
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(Into::into),
            Kind::Resolve => Secret::from_name(shared)
                .resolve_with(client)
                .await
                .map(drop)
                .map_err(Into::into),
            Kind::Create => {
                n += 1;
                let name = format!("soak-{w}-{n}");
                let created = grpc
                    .secret_get_or_create(api::SecretGetOrCreateRequest {
                        deployment_name: name.clone(),
                        object_creation_type: api::ObjectCreationType::CreateFailIfExists as i32,
                        env_dict: [("KEY".to_owned(), format!("value-{n}"))].into(),
                        ..Default::default()
                    })
                    .await;
                created
                    .map(|r| own.push_back((name, r.into_inner().secret_id)))
                    .map_err(Into::into)
            }
            Kind::Update => match own.back() {
                None => Ok(()),
                Some((_, id)) => grpc
                    .secret_update(api::SecretUpdateRequest {
                        secret_id: id.clone(),
                        updates: vec![api::secret_update_request::Update {
                            key: format!("K{}", draw % 5),
                            value: Some(format!("v{n}")),
                        }],
                    })
                    .await
                    .map(drop)
                    .map_err(Into::into),
            },
            Kind::List => grpc
                .secret_list(api::SecretListRequest {
                    environment_name: String::new(),
                    pagination: Some(api::ListPagination {
                        max_objects: 100,
                        created_before: 0.0,
                    }),
                })
                .await
                .map(drop)
                .map_err(Into::into),
            Kind::Delete => match own.pop_front() {
                None => Ok(()),
                Some((_, id)) => grpc
                    .secret_delete(api::SecretDeleteRequest { secret_id: id })
                    .await
                    .map(drop)
                    .map_err(Into::into),
            },
        };
        tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(kind, sent.elapsed(), result);
    }
    Ok(())
}
