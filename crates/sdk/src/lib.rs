//! The Rust client of [latchkey](https://example.invalid/latchkey), a
//! self-hosted secrets server: Modal's `modal.Secret` API in Rust.
//!
//! A secret is a small dictionary of environment variables. It is made from a
//! dictionary, from this process's environment or from a `.env` file, or it
//! names a secret kept (encrypted) on the server; either way it ends as
//! variables in the environment of the process that needs them.
//!
//! Calls go to the server's JSON API (`/api/v1`) over HTTP(S). They are async
//! (tokio); [`blocking::Wait`] makes any of them synchronous. Modal-style
//! calls ([`Secret::objects`], [`Secret::info`], ...) use the [shared
//! client](Client::shared), configured like Modal's from the environment
//! ([`Config::from_env`]: `LATCHKEY_SERVER_URL`, `LATCHKEY_TOKEN_ID`,
//! `LATCHKEY_TOKEN_SECRET`, `LATCHKEY_ENVIRONMENT`, then the active profile of
//! `~/.latchkey.toml`, then a local server's admin token); each has a form
//! that takes an explicit [`Client`] ([`Client::secrets`],
//! [`Secret::info_with`], ...).
//!
//! Every example below runs against a real server as a test (a hidden first
//! line starts one with `latchkey::testing`, behind the `testing` feature).
//!
//! # Creating secrets
//!
//! ## From a dictionary
//!
//! Modal's `@app.function(secrets=[modal.Secret.from_dict({"FOO": "bar"})])`
//! gives the function's container `FOO=bar`. In Rust, resolve the secrets and
//! hand them to the process:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let _server = latchkey::testing::start_server_for_examples()?;
//! use latchkey::Secret;
//!
//! let secrets = [Secret::from_dict([("FOO", "bar")])];
//! let env = Secret::resolve_all(&secrets).await?;
//! let out = std::process::Command::new("sh")
//!     .args(["-c", "echo $FOO"])
//!     .env_clear()
//!     .envs(&env)
//!     .output()?;
//! assert_eq!(String::from_utf8(out.stdout)?, "bar\n"); // prints "bar"
//! # Ok(()) }
//! ```
//!
//! A `None` value is dropped: `Secret::from_dict([("FOO", Some("bar")), ("BAZ", None)])`
//! holds `FOO` only.
//!
//! ## From local environment variables
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let _server = latchkey::testing::start_server_for_examples()?;
//! # std::env::set_var("API_KEY", "k-123");
//! # std::env::set_var("SECRET_TOKEN", "t-456");
//! use latchkey::Secret;
//!
//! // API_KEY and SECRET_TOKEN from this process's environment.
//! let secret = Secret::from_local_environ(["API_KEY", "SECRET_TOKEN"])?;
//! assert_eq!(secret.resolve().await?["API_KEY"], "k-123");
//!
//! // A variable that is not set is an error that names it.
//! let err = Secret::from_local_environ(["NOT_SET_ANYWHERE"]).unwrap_err();
//! assert!(err.to_string().contains("NOT_SET_ANYWHERE"));
//! # Ok(()) }
//! ```
//!
//! ## From a .env file
//!
//! `from_dotenv(path)` looks for `.env` in `path` (a file's directory, or a
//! directory) and then upwards, and reads it exactly as python-dotenv does.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let _server = latchkey::testing::start_server_for_examples()?;
//! # let project = tempfile::tempdir()?;
//! # std::fs::create_dir(project.path().join("src"))?;
//! # std::fs::write(project.path().join("src/main.rs"), "")?;
//! # std::fs::write(project.path().join(".env"), "USERNAME=ada\n")?;
//! # std::fs::write(project.path().join(".env-dev"), "MODE=dev\n")?;
//! # std::env::set_current_dir(project.path())?;
//! use latchkey::Secret;
//!
//! // Modal's `from_dotenv(__file__)`: the .env of this source file's project.
//! let secret = Secret::from_dotenv("src/main.rs")?;
//! assert_eq!(secret.resolve().await?["USERNAME"], "ada");
//!
//! // Another file name, looked for from the current directory.
//! let dev = Secret::from_dotenv_with(None, ".env-dev")?;
//! assert_eq!(dev.resolve().await?["MODE"], "dev");
//! # Ok(()) }
//! ```
//!
//! ## A named secret
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let _server = latchkey::testing::start_server_for_examples()?;
//! # latchkey::Secret::objects()
//! #     .create("my-secret", [("API_KEY", "k"), ("SECRET_TOKEN", "t")])
//! #     .await?;
//! use latchkey::{Error, Secret};
//!
//! let secret = Secret::from_name("my-secret");
//!
//! // Required keys are checked by the server when the secret is resolved.
//! let secret = Secret::from_name("my-secret").required_keys(["API_KEY", "SECRET_TOKEN"]);
//! let env = secret.resolve().await?;
//! assert_eq!(env["API_KEY"], "k");
//!
//! let strict = Secret::from_name("my-secret").required_keys(["DATABASE_URL"]);
//! match strict.resolve().await {
//!     Err(Error::MissingKeys { keys, .. }) => assert_eq!(keys, ["DATABASE_URL"]),
//!     other => panic!("{other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! Several secrets on one process: later ones override earlier ones, key by
//! key ([`Secret::resolve_all`], [`merge`]).
//!
//! # Managing named secrets
//!
//! ## Create a named secret
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let _server = latchkey::testing::start_server_for_examples()?;
//! # latchkey::Client::from_env()?.environments().create("dev").await?;
//! use latchkey::Secret;
//!
//! let contents = [("MY_KEY", "my-value"), ("MY_OTHER_KEY", "my-other-value")];
//! Secret::objects().create("my-secret", contents).await?;
//!
//! // In another environment than the active one:
//! Secret::objects().create("my-secret", contents).environment_name("dev").await?;
//!
//! // An existing secret is an error, unless allow_existing makes this a no-op:
//! assert!(Secret::objects().create("my-secret", contents).await.unwrap_err().is_already_exists());
//! Secret::objects().create("my-secret", contents).allow_existing(true).await?;
//! # Ok(()) }
//! ```
//!
//! ## List secrets
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let _server = latchkey::testing::start_server_for_examples()?;
//! # latchkey::Client::from_env()?.environments().create("dev").await?;
//! # latchkey::Secret::objects().create("a", [("K", "v")]).await?;
//! # latchkey::Secret::objects().create("b", [("K", "v")]).await?;
//! use latchkey::Secret;
//!
//! let secrets = Secret::objects().list().await?;
//! let names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
//! assert_eq!(names, ["b", "a"]); // newest first
//!
//! let dev_secrets = Secret::objects().list().environment_name("dev").await?;
//! assert!(dev_secrets.is_empty());
//!
//! let secrets = Secret::objects().list().max_objects(10).created_before("2025-01-01").await?;
//! assert!(secrets.is_empty());
//! # Ok(()) }
//! ```
//!
//! ## Delete a secret
//!
//! Deletion is irreversible.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let _server = latchkey::testing::start_server_for_examples()?;
//! # latchkey::Client::from_env()?.environments().create("dev").await?;
//! # latchkey::Secret::objects().create("my-secret", [("K", "v")]).await?;
//! # latchkey::Secret::objects().create("my-secret", [("K", "v")]).environment_name("dev").await?;
//! use latchkey::Secret;
//!
//! Secret::objects().delete("my-secret").await?;
//! Secret::objects().delete("my-secret").environment_name("dev").await?;
//! // No error for a secret that does not exist:
//! Secret::objects().delete("my-secret").allow_missing(true).await?;
//! # Ok(()) }
//! ```
//!
//! # Working with secret instances
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let _server = latchkey::testing::start_server_for_examples()?;
//! # latchkey::Secret::objects().create("my-secret", [("UPDATED_KEY", "old"), ("OTHER", "o")]).await?;
//! use latchkey::Secret;
//!
//! let secret = Secret::from_name("my-secret");
//! let info = secret.info().await?;
//! println!("Created at: {}", info.created_at);
//! println!("Created by: {}", info.created_by);
//! assert_eq!(info.created_by, "admin");
//!
//! // Like dict.update(): keys not mentioned are left unchanged.
//! secret.update([("NEW_KEY", "new-value"), ("UPDATED_KEY", "updated-value")]).await?;
//! let env = secret.resolve().await?;
//! assert_eq!(env["UPDATED_KEY"], "updated-value");
//! assert_eq!(env["OTHER"], "o");
//!
//! // A `None` value removes its key.
//! secret.update([("OTHER", None::<&str>)]).await?;
//! assert_eq!(secret.info().await?.keys, ["NEW_KEY", "UPDATED_KEY"]);
//! # Ok(()) }
//! ```
//!
//! # Versions
//!
//! Every change of a named secret makes a new version; the server keeps the
//! latest ones (`latchkey serve --keep-versions`, 20 by default). A program
//! can pin one, read the history (who changed which keys, never a value) and
//! roll back, which makes a new version with an old one's contents:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let _server = latchkey::testing::start_server_for_examples()?;
//! use latchkey::{Secret, VersionAction};
//!
//! Secret::objects().create("api", [("KEY", "old")]).await?;
//! let api = Secret::from_name("api");
//! api.update([("KEY", "new")]).await?;
//!
//! // Version 1's values, whatever the current version is.
//! assert_eq!(api.clone().version(1).resolve().await?["KEY"], "old");
//!
//! let history = api.history().await?;
//! assert_eq!(history[0].keys_changed, Some(vec!["KEY".to_owned()]));
//! assert_eq!(history[0].created_by, "admin");
//!
//! let info = api.rollback(1).await?;
//! assert_eq!((info.version, &api.resolve().await?["KEY"][..]), (3, "old"));
//! assert_eq!(api.history().await?[0].action, VersionAction::RolledBack { to: 1 });
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! Every call returns [`Error`], whose variants map the server's answers
//! ([`Error::NotFound`], [`Error::MissingKeys`], ...) and carry its message.

#![warn(missing_docs)]

pub mod app;
mod audit;
pub mod blocking;
mod client;
mod config;
mod environments;
mod error;
mod objects;
pub mod profile;
mod secret;
#[cfg(feature = "testing")]
pub mod testing;
mod time;
mod tokens;
mod versions;

pub use app::{App, Function, FunctionCall, FunctionError, Isolation};
pub use audit::{
    Audit, AuditActor, AuditEvent, AuditHead, AuditPage, AuditQuery, AuditVerdict, ReadSecret,
    SecretExposure, VersionReaders,
};
pub use client::{Client, WhoAmI, CA_CERT_VAR};
pub use config::{Config, ConfigSource, DEFAULT_SERVER_URL};
pub use environments::{DeleteEnvironment, EnvironmentInfo, Environments};
pub use error::{Error, Result};
/// The contents of a secret: environment variable names to values, sorted.
pub use latchkey_core::EnvDict;
pub use objects::{
    BoxFuture, CreateSecret, CreatedSecret, DeleteSecret, ListSecrets, SecretObjects,
};
pub use profile::{Profile, ProfileFile};
pub use secret::{merge, EnvValue, Resolved, Secret, SecretInfo, UpdateSecret};
pub use time::IntoTimestamp;
// Shown as core's type, not inlined: the docs of its `strftime` link to
// `jiff::fmt::strtime`, which rustdoc cannot resolve and writes out, without
// a warning, as a dead href; inlined here, that was the one broken link of
// this crate's docs. (The link itself is latchkey-core's to fix.)
#[doc(no_inline)]
pub use time::Timestamp;
pub use tokens::{CreateToken, NewToken, Role, TokenInfo, TokenSecret, Tokens};
pub use versions::{Rollback, SecretHistory, VersionAction, VersionInfo};
