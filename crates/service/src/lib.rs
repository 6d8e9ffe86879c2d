//! The service layer: every rule of latchkey and every permission check, in
//! terms of the domain, independent of the wire.
//!
//! The gRPC adapter, the JSON API and the dashboard only translate requests
//! into these calls and [`Error`](latchkey_core::Error)s into their own status codes, so every
//! interface enforces the same rules.
//!
//! The calls are grouped by concept, as the interfaces are: secrets,
//! environments, tokens, and authentication (who is calling).

mod audit;
mod auth;
mod backup;
mod environments;
mod keys;
pub mod sandboxes;
mod secrets;
#[cfg(feature = "testing")]
pub mod testing;
mod throttle;
mod tokens;

use std::{sync::Arc, time::Duration};

pub use audit::{retention_cutoff, Origin};
pub use auth::{Caller, TOKEN_CACHE_TTL};
pub use keys::{KeyFiles, RotationEvent, ROTATION_BATCH};
pub use latchkey_store::audit as log;
pub use latchkey_store::{
    Environment, EnvironmentUpdate, KeyChanges, Role, Secret, SecretKind, SecretSummary,
    SecretVersion, Store, Token, VersionAction, DEFAULT_KEEP_VERSIONS,
};
pub use throttle::{AuthFailureLimit, ClientAddr, MAX_ADDRESSES};

/// Largest page a listing returns; larger requests are cut to this.
pub const MAX_PAGE: u32 = 1_000;

/// Settings of the service layer.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How long anonymous secrets (`from_dict` and friends) live.
    pub anonymous_ttl: Duration,
    /// How many versions of each named secret are kept (at least 1); older
    /// ones are destroyed with their data keys.
    pub keep_versions: u32,
    /// Whether reads of metadata (listings, lookups, info) go into the
    /// audit log too; reads of values always do.
    pub audit_metadata_reads: bool,
    /// How many failed authentications a client address may make.
    pub auth_failures: AuthFailureLimit,
}

/// The service layer. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    store: Arc<dyn Store>,
    config: Arc<ServiceConfig>,
    tokens: Arc<auth::TokenCache>,
    throttle: Arc<throttle::Throttle>,
    keys: Arc<keys::KeyRotation>,
}

/// How a named secret is created when its name exists.
pub use latchkey_store::OnConflict as CreateMode;

impl Service {
    /// A service over `store`.
    pub fn new(store: Arc<dyn Store>, config: ServiceConfig) -> Self {
        Self {
            store,
            throttle: Arc::new(throttle::Throttle::new(config.auth_failures)),
            config: Arc::new(config),
            tokens: Arc::new(auth::TokenCache::default()),
            keys: Arc::new(keys::KeyRotation::default()),
        }
    }

    /// The store, for readiness checks and the sweeper.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}
