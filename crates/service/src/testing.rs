//! A service over a real SQLite store in a temp dir, for tests (feature
//! `testing`).
//!
//! The layers above the service (the JSON API, the gRPC adapter, the
//! dashboard) test their handlers over this one harness instead of each
//! building its own store, so a change to how a store is opened or
//! bootstrapped is made here once. It is bootstrapped as a first
//! `latchkey serve` would be: workspace `default`, environment `main`, and an
//! admin token named `admin` whose file lies in the data dir.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use latchkey_service::{testing::TestService, Role};
//!
//! let t = TestService::start().await;
//! let reader = t.caller("ci", Role::Reader, None).await;
//! assert!(t.service().create_environment(&reader, "dev").await.is_err());
//! # }
//! ```

use std::{path::Path, sync::Arc, time::Duration};

use latchkey_core::{admin_token::AdminTokenFile, ids, paths};
use latchkey_store::{
    crypto::{hash_token_secret, Keyring, MasterKey},
    NewToken, SqliteStore,
};
use zeroize::Zeroizing;

use crate::{Caller, Role, Service, ServiceConfig, Token};

/// How long anonymous secrets live in a test service.
pub const ANONYMOUS_TTL: Duration = Duration::from_secs(60);

/// A bootstrapped service and its admin token; the data dir is removed on
/// drop. `Debug` shows the token id, never its secret. Every method panics
/// on failure: it is for tests.
pub struct TestService {
    service: Service,
    admin: Caller,
    admin_file: AdminTokenFile,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestService")
            .field("data_dir", &self.dir.path())
            .field("admin_token_id", &self.admin_file.token_id)
            .finish_non_exhaustive()
    }
}

impl TestService {
    /// A fresh data dir, store and service. Anonymous secrets live
    /// [`ANONYMOUS_TTL`].
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
        let store = SqliteStore::open(&url, Keyring::new(MasterKey::generate()))
            .await
            .expect("a SQLite store in the temp dir");
        let admin_file = AdminTokenFile::new(
            Some("http://127.0.0.1:1".to_owned()),
            &ids::new_id(ids::TOKEN_ID),
            &ids::new_token_secret(),
        );
        let token_file = dir.path().join(paths::ADMIN_TOKEN_FILE);
        std::fs::write(&token_file, admin_file.render().as_bytes()).expect("the admin-token file");
        latchkey_store::Store::bootstrap(
            &store,
            &NewToken {
                id: admin_file.token_id.clone(),
                workspace_id: ids::new_id(ids::WORKSPACE),
                name: "admin".to_owned(),
                role: Role::Admin,
                environments: None,
                secret_hash: hash_token_secret(admin_file.token_secret()),
                expires_at: None,
            },
        )
        .await
        .expect("bootstrap of the empty store");
        let service = Service::new(
            Arc::new(store),
            ServiceConfig {
                anonymous_ttl: ANONYMOUS_TTL,
                keep_versions: crate::DEFAULT_KEEP_VERSIONS,
                audit_metadata_reads: false,
                auth_failures: crate::AuthFailureLimit::default(),
            },
        );
        let admin = service
            .authenticate(
                &admin_file.token_id,
                admin_file.token_secret(),
                &crate::Origin::server(),
            )
            .await
            .expect("the admin token authenticates");
        Self {
            service,
            admin,
            admin_file,
            dir,
        }
    }

    /// The service (a clone shares everything with it).
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The data dir, which holds the store and the `admin-token` file.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The admin token, authenticated.
    pub fn admin(&self) -> &Caller {
        &self.admin
    }

    /// The admin token's id (`ak-...`).
    pub fn admin_token_id(&self) -> &str {
        &self.admin_file.token_id
    }

    /// The admin token's secret (`as-...`).
    pub fn admin_token_secret(&self) -> &str {
        self.admin_file.token_secret()
    }

    /// A new token named `name` with `role`, limited to `environments` if
    /// given, created by the admin; its secret is returned this once.
    pub async fn token(
        &self,
        name: &str,
        role: Role,
        environments: Option<Vec<String>>,
    ) -> (Token, Zeroizing<String>) {
        self.service
            .create_token(&self.admin, name, role, environments, None)
            .await
            .expect("the admin creates a token")
    }

    /// The caller holding a new [`token`](Self::token).
    pub async fn caller(
        &self,
        name: &str,
        role: Role,
        environments: Option<Vec<String>>,
    ) -> Caller {
        let (token, secret) = self.token(name, role, environments).await;
        self.service
            .authenticate(&token.id, &secret, &crate::Origin::server())
            .await
            .expect("a new token authenticates")
    }
}
