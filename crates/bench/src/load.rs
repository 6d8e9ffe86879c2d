//! Load generation over a few HTTP/2 connections.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use latchkey_proto::api::{self, modal_client_client::ModalClientClient};
use tonic::{
    metadata::MetadataValue,
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig},
    Request, Status,
};

use crate::server::Server;

#[derive(Clone)]
pub(crate) struct Auth {
    id: MetadataValue<tonic::metadata::Ascii>,
    secret: MetadataValue<tonic::metadata::Ascii>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let md = request.metadata_mut();
        md.insert("x-modal-token-id", self.id.clone());
        md.insert("x-modal-token-secret", self.secret.clone());
        Ok(request)
    }
}

pub(crate) type Client = ModalClientClient<InterceptedService<Channel, Auth>>;

/// What one request does.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// ClientHello: authentication and the gRPC round trip, nothing else.
    Hello,
    /// What `from_name(...).hydrate()` sends.
    Lookup(String),
    /// Creates a new named secret (prefix + counter).
    Create(String),
    /// The newest page of 100 in an environment.
    ListNewest(String),
    /// `update()` of one key of one of these secrets (by id), in turn: a new version each time.
    Update(Arc<Vec<String>>),
    /// Values for a process: `POST /api/v1/secrets/NAME/resolve`, the SDK's
    /// resolve (an audited read of values).
    Resolve(String),
    /// Deletes these secrets (by id), one per request, in turn (the counter
    /// says which is next); a request past the end deletes nothing and is
    /// not counted.
    Delete(Arc<(Vec<String>, AtomicU64)>),
}

pub(crate) struct Load {
    clients: Vec<Client>,
    /// The SDK's client, for the JSON API.
    sdk: latchkey::Client,
    counter: Arc<AtomicU64>,
}

/// Latencies and throughput of one run.
pub(crate) struct Stats {
    histogram: Histogram<u64>,
    elapsed: Duration,
}

impl Stats {
    /// No requests yet; [`add`](Self::add) runs to it.
    pub(crate) fn empty() -> Stats {
        Stats {
            histogram: Histogram::<u64>::new(3).expect("histogram"),
            elapsed: Duration::ZERO,
        }
    }

    /// Adds another run of the same load.
    pub(crate) fn add(&mut self, other: Stats) {
        self.histogram.add(other.histogram).ok();
        self.elapsed += other.elapsed;
    }

    /// The merged latencies of `tasks`, which began at `started`.
    async fn of(
        started: Instant,
        tasks: impl IntoIterator<Item = impl std::future::Future<Output = Result<Histogram<u64>>>>,
    ) -> Result<Stats> {
        let mut histogram = Histogram::<u64>::new(3).expect("histogram");
        for h in futures::future::join_all(tasks).await {
            histogram.add(h?).ok();
        }
        Ok(Stats {
            histogram,
            elapsed: started.elapsed(),
        })
    }

    pub(crate) fn rate(&self) -> f64 {
        self.histogram.len() as f64 / self.elapsed.as_secs_f64()
    }
    pub(crate) fn p99_ms(&self) -> f64 {
        self.histogram.value_at_quantile(0.99) as f64 / 1000.0
    }
    /// How many requests completed.
    pub(crate) fn count(&self) -> usize {
        usize::try_from(self.histogram.len()).unwrap_or(usize::MAX)
    }
    pub(crate) fn p50_ms(&self) -> f64 {
        self.histogram.value_at_quantile(0.5) as f64 / 1000.0
    }
}

impl Load {
    pub(crate) async fn new(server: &Server, connections: usize) -> Result<Load> {
        Self::with_ca(server, connections, None).await
    }

    /// A load on a server over TLS whose certificate `ca` (PEM) signed;
    /// plain HTTP/2 without it.
    pub(crate) async fn with_ca(
        server: &Server,
        connections: usize,
        ca: Option<&std::path::Path>,
    ) -> Result<Load> {
        let tls = match ca {
            Some(ca) => Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
                std::fs::read(ca).with_context(|| format!("{}", ca.display()))?,
            ))),
            None => None,
        };
        let (id, secret) = server.admin_token();
        let auth = Auth {
            id: id.parse().context("token id")?,
            secret: secret.parse().context("token secret")?,
        };
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            let mut endpoint = Channel::from_shared(server.url().to_owned())?;
            if let Some(tls) = &tls {
                endpoint = endpoint.tls_config(tls.clone())?;
            }
            let channel = endpoint.connect().await?;
            clients.push(ModalClientClient::with_interceptor(channel, auth.clone()));
        }
        let sdk = latchkey::Client::new(latchkey::Config::new(server.url(), &id, &secret))?;
        Ok(Load {
            clients,
            sdk,
            counter: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A gRPC client on one of the load's connections.
    pub(crate) fn client(&self, i: usize) -> Client {
        self.clients[i % self.clients.len()].clone()
    }

    async fn once(&self, client: &mut Client, op: &Op) -> Result<(), Status> {
        match op {
            Op::Hello => client.client_hello(()).await.map(drop),
            Op::Lookup(name) => client
                .secret_get_or_create(api::SecretGetOrCreateRequest {
                    deployment_name: name.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Op::Create(prefix) => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed);
                client
                    .secret_get_or_create(api::SecretGetOrCreateRequest {
                        deployment_name: format!("{prefix}{n}"),
                        object_creation_type: api::ObjectCreationType::CreateFailIfExists as i32,
                        env_dict: [("KEY".to_owned(), format!("value-{n}"))].into(),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
            Op::Resolve(name) => latchkey::Secret::from_name(name.as_str())
                .resolve_with(&self.sdk)
                .await
                .map(drop)
                .map_err(|e| Status::unknown(e.to_string())),
            Op::Update(ids) => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed);
                client
                    .secret_update(api::SecretUpdateRequest {
                        secret_id: ids[n as usize % ids.len()].clone(),
                        updates: vec![api::secret_update_request::Update {
                            key: "KEY".to_owned(),
                            value: Some(format!("value-{n}")),
                        }],
                    })
                    .await
                    .map(drop)
            }
            Op::Delete(list) => {
                let (ids, next) = &**list;
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(id) = ids.get(n) else {
                    return Err(Status::out_of_range("no secret left to delete"));
                };
                client
                    .secret_delete(api::SecretDeleteRequest {
                        secret_id: id.clone(),
                    })
                    .await
                    .map(drop)
            }
            Op::ListNewest(env) => client
                .secret_list(api::SecretListRequest {
                    environment_name: env.clone(),
                    pagination: Some(api::ListPagination {
                        max_objects: 100,
                        created_before: 0.0,
                    }),
                })
                .await
                .map(drop),
        }
    }

    /// `op` from `streams` concurrent tasks for `duration`.
    pub(crate) async fn run(&self, op: Op, streams: usize, duration: Duration) -> Result<Stats> {
        let started = Instant::now();
        let deadline = started + duration;
        let tasks = (0..streams).map(|i| {
            let mut client = self.clients[i % self.clients.len()].clone();
            let op = op.clone();
            async move {
                let mut h = Histogram::<u64>::new(3).expect("histogram");
                while Instant::now() < deadline && self.timed(&mut client, &op, &mut h).await? {}
                Ok::<_, anyhow::Error>(h)
            }
        });
        Stats::of(started, tasks).await
    }

    /// One request, its latency recorded in `h`. False when the operation
    /// has nothing left to do (deletes past their list).
    async fn timed(&self, client: &mut Client, op: &Op, h: &mut Histogram<u64>) -> Result<bool> {
        let sent = Instant::now();
        match self.once(client, op).await {
            Err(s) if s.code() == tonic::Code::OutOfRange => return Ok(false),
            other => other.map_err(|s| anyhow::anyhow!("{op:?}: {s}"))?,
        }
        h.record(sent.elapsed().as_micros() as u64).ok();
        Ok(true)
    }

    /// Makes the secrets `{prefix}N` for N below `count` (one key each), 128
    /// at a time; returns their ids.
    pub(crate) async fn make_secrets(&self, prefix: &str, count: usize) -> Result<Vec<String>> {
        let next = Arc::new(AtomicU64::new(0));
        let tasks = (0..128.min(count.max(1))).map(|i| {
            let mut client = self.client(i);
            let next = next.clone();
            async move {
                let mut ids = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count as u64 {
                        return Ok::<_, anyhow::Error>(ids);
                    }
                    let created = client
                        .secret_get_or_create(api::SecretGetOrCreateRequest {
                            deployment_name: format!("{prefix}{n}"),
                            object_creation_type: api::ObjectCreationType::CreateFailIfExists
                                as i32,
                            env_dict: [("KEY".to_owned(), format!("value-{n}"))].into(),
                            ..Default::default()
                        })
                        .await?;
                    ids.push(created.into_inner().secret_id);
                }
            }
        });
        let mut ids = Vec::with_capacity(count);
        for made in futures::future::join_all(tasks).await {
            ids.extend(made?);
        }
        Ok(ids)
    }

    /// `op` at a fixed total `rate` (requests per second) from `streams`
    /// tasks for `duration`: an open loop, so that latency is measured at a
    /// load the server keeps up with rather than in a queue. Each latency
    /// counts from when the request was sent. (Counting from when it was due
    /// would add the client's timer granularity, a millisecond in tokio,
    /// to every request; at the loads used here, below the server's peak,
    /// a request is rarely sent late for any other reason.)
    pub(crate) async fn run_at_rate(
        &self,
        op: Op,
        streams: usize,
        rate: f64,
        duration: Duration,
    ) -> Result<Stats> {
        let started = Instant::now();
        let streams = streams.max(1);
        let interval = Duration::from_secs_f64(streams as f64 / rate.max(1.0));
        let tasks = (0..streams).map(|i| {
            let mut client = self.clients[i % self.clients.len()].clone();
            let op = op.clone();
            // Spread the streams' first requests over one interval.
            let first = started + interval.mul_f64(i as f64 / streams as f64);
            async move {
                let mut h = Histogram::<u64>::new(3).expect("histogram");
                let mut due = first;
                while due < started + duration {
                    tokio::time::sleep_until(due.into()).await;
                    if !self.timed(&mut client, &op, &mut h).await? {
                        break;
                    }
                    due += interval;
                }
                Ok::<_, anyhow::Error>(h)
            }
        });
        Stats::of(started, tasks).await
    }

    pub(crate) async fn create_named(&self, name: &str, keys: usize) -> Result<()> {
        let mut client = self.clients[0].clone();
        client
            .secret_get_or_create(api::SecretGetOrCreateRequest {
                deployment_name: name.to_owned(),
                object_creation_type: api::ObjectCreationType::CreateOverwriteIfExists as i32,
                env_dict: (0..keys)
                    .map(|i| (format!("KEY_{i}"), format!("value-{i}-0123456789abcdef")))
                    .collect(),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Gives the named secret `name` (made by [`create_named`](Self::create_named))
    /// `count` more versions, each changing one key through `update()`.
    pub(crate) async fn add_versions(&self, name: &str, count: usize) -> Result<()> {
        let mut client = self.clients[0].clone();
        let id = client
            .secret_get_or_create(api::SecretGetOrCreateRequest {
                deployment_name: name.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .secret_id;
        for i in 0..count {
            client
                .secret_update(api::SecretUpdateRequest {
                    secret_id: id.clone(),
                    updates: vec![api::secret_update_request::Update {
                        key: "KEY_0".to_owned(),
                        value: Some(format!("value-0-version-{i}")),
                    }],
                })
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn create_environment(&self, name: &str) -> Result<()> {
        let mut client = self.clients[0].clone();
        client
            .environment_create(api::EnvironmentCreateRequest {
                name: name.to_owned(),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Creates the secrets `fill-N` for each N of `range` in `env`, 128 at
    /// a time (as many as one group commit takes).
    pub(crate) async fn fill(&self, env: &str, range: std::ops::Range<usize>) -> Result<()> {
        let count = range.end;
        let next = Arc::new(AtomicU64::new(range.start as u64));
        let tasks = (0..128).map(|i| {
            let mut client = self.clients[i % self.clients.len()].clone();
            let next = next.clone();
            let env = env.to_owned();
            async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count as u64 {
                        return Ok::<_, anyhow::Error>(());
                    }
                    client
                        .secret_get_or_create(api::SecretGetOrCreateRequest {
                            deployment_name: format!("fill-{n}"),
                            environment_name: env.clone(),
                            object_creation_type: api::ObjectCreationType::CreateFailIfExists
                                as i32,
                            env_dict: [("KEY".to_owned(), format!("value-{n}"))].into(),
                            ..Default::default()
                        })
                        .await?;
                }
            }
        });
        for r in futures::future::join_all(tasks).await {
            r?;
        }
        Ok(())
    }
}
