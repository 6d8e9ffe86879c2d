//! The behaviour every [`Store`] adapter must show, as one suite.
//!
//! Each check is a function that takes a fresh, empty store (the replica
//! checks: two handles on one fresh database) and panics with a message
//! naming what broke. An adapter's tests run every check as a test of its
//! own with [`conformance_tests!`](crate::conformance_tests) and
//! [`conformance_replica_tests!`](crate::conformance_replica_tests), so a
//! failure names its check and the others still run. The suite is part of
//! the library (not `#[cfg(test)]`) so that every backend's crate or test
//! runs the same code unchanged.

/// One `#[tokio::test]` per check of the suite, in a module
/// `conformance_suite`: `$open` names an `async fn` returning a guard (kept
/// until the test ends: a temporary directory, a test database) and a new,
/// empty store.
#[macro_export]
macro_rules! conformance_tests {
    ($open:ident) => {
        $crate::conformance_tests!(@checks $open;
            bootstrap,
            environments,
            tokens,
            tokens_expire,
            tokens_last_used_to_the_minute,
            tokens_rotate_with_grace,
            secrets_create_and_read,
            secrets_update,
            lookups_follow_writes,
            secrets_list_paging,
            secrets_anonymous_and_sweep,
            environment_delete_with_secrets,
            environment_names_and_the_default,
            secrets_in_an_unknown_environment,
            long_input_is_echoed_shortened,
            environments_by_id,
            versions_history_and_rollback,
            writes_keep_to_the_token_environments,
            creates_name_their_environment,
            versions_are_destroyed_past_the_limit,
            versions_gapless_under_concurrent_writers,
            writes_arriving_together,
            audit_log_chain,
            audit_record_of_many_events,
        );
    };
    (@checks $open:ident; $($check:ident,)*) => {
        mod conformance_suite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (guard, store) = super::$open().await;
                    $crate::conformance::$check(&store).await;
                    $crate::Store::close(&store).await;
                    drop(guard);
                }
            )*
        }
    };
}

/// One `#[tokio::test]` per check that holds when several servers share one
/// database, in a module `conformance_replicas`: `$open` names an `async fn`
/// returning a guard and two independent stores on one new, empty database.
#[macro_export]
macro_rules! conformance_replica_tests {
    ($open:ident) => {
        $crate::conformance_replica_tests!(@checks $open;
            replicas_read_your_writes,
            replicas_lookups_follow_writes,
            replicas_last_admin_token,
            replicas_concurrent_updates,
            replicas_concurrent_creates,
            replicas_paging_while_writing,
            replicas_sweep,
            replicas_versions_gapless,
            replicas_paging_while_many_write,
            replicas_environment_changes,
        );
    };
    (@checks $open:ident; $($check:ident,)*) => {
        mod conformance_replicas {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (guard, a, b) = super::$open().await;
                    $crate::conformance::$check(&a, &b).await;
                    $crate::Store::close(&a).await;
                    $crate::Store::close(&b).await;
                    drop(guard);
                }
            )*
        }
    };
}

use futures::future::join_all;
use latchkey_core::{ids, time::now_micros, EnvDict, ErrorKind};

/// Who the checks act as, for the audit log: the server itself.
fn audit() -> AuditEntry {
    AuditEntry::server()
}

use crate::{
    audit::AuditEntry, crypto::hash_token_secret, EnvironmentUpdate, NewSecret, NewToken,
    OnConflict, Revision, Role, Secret, SecretKind, Store,
};

/// The admin token the suite bootstraps with.
pub fn admin_token() -> NewToken {
    NewToken {
        id: ids::new_id(ids::TOKEN_ID),
        workspace_id: ids::new_id(ids::WORKSPACE),
        name: "admin".to_owned(),
        role: Role::Admin,
        environments: None,
        secret_hash: hash_token_secret("as-conformance"),
        expires_at: None,
    }
}

fn dict(pairs: &[(&str, &str)]) -> EnvDict {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A create, by the admin token, of the named secret `name` holding
/// `contents` in the environment `env` (its id, its name, or "" for the
/// default), keeping the default number of versions.
pub fn named(
    ws: &str,
    env: &str,
    name: &str,
    contents: EnvDict,
    on_conflict: OnConflict,
) -> NewSecret {
    NewSecret {
        workspace_id: ws.to_owned(),
        environment: env.to_owned(),
        environments: None,
        kind: SecretKind::Named(name.to_owned()),
        created_by: "admin".to_owned(),
        contents,
        on_conflict,
        keep_versions: KEEP,
        audit: audit(),
    }
}

/// Versions kept by the writes of these checks, unless one says otherwise.
const KEEP: u32 = crate::DEFAULT_KEEP_VERSIONS;

/// A write by the admin token.
fn revision() -> Revision {
    Revision::by("admin")
}

/// Bootstraps `store`, which must be new and empty; returns its admin token.
async fn setup(store: &dyn Store) -> NewToken {
    let admin = admin_token();
    assert!(
        store.bootstrap(&admin).await.unwrap(),
        "bootstrap of an empty store"
    );
    admin
}

/// A new store bootstraps once, then answers.
pub async fn bootstrap(store: &dyn Store) {
    let admin = setup(store).await;
    assert!(
        !store.bootstrap(&admin_token()).await.unwrap(),
        "second bootstrap is a no-op"
    );
    store.ping().await.expect("ping");
    let ws = admin.workspace_id.clone();
    assert_eq!(store.workspace(&ws).await.unwrap().name, "default");
}

/// Environments: the default, creation, listing, renaming, deletion.
pub async fn environments(store: &dyn Store) {
    let admin = setup(store).await;
    let ws = admin.workspace_id.as_str();
    let main = store.environment(ws, "").await.unwrap();
    assert_eq!((main.name.as_str(), main.is_default), ("main", true));
    assert_eq!(store.environment(ws, "main").await.unwrap(), main);
    let dev = store.create_environment(ws, "dev", &audit()).await.unwrap();
    let err = store
        .create_environment(ws, "dev", &audit())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err:?}");
    let listed = store.list_environments(ws).await.unwrap();
    assert_eq!(
        listed.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["main", "dev"],
        "default first"
    );
    let err = store.environment(ws, "nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.message(), "Environment 'nope' not found");
    assert_eq!(
        store
            .environment("ac-other", "main")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound,
        "another workspace sees nothing"
    );

    let renamed = store
        .update_environment(
            ws,
            "dev",
            &EnvironmentUpdate {
                name: Some("develop".to_owned()),
                webhook_suffix: Some("sfx".to_owned()),
            },
            &audit(),
        )
        .await
        .unwrap();
    assert_eq!(
        (renamed.id.as_str(), renamed.name.as_str()),
        (dev.id.as_str(), "develop")
    );
    assert_eq!(renamed.webhook_suffix, "sfx");
    let err = store
        .update_environment(
            ws,
            "develop",
            &EnvironmentUpdate {
                name: Some("main".to_owned()),
                webhook_suffix: None,
            },
            &audit(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::AlreadyExists,
        "rename onto a taken name"
    );
    assert_eq!(
        store
            .environment(ws, "develop")
            .await
            .unwrap()
            .webhook_suffix,
        "sfx"
    );

    let err = store
        .delete_environment(ws, "main", true, &audit())
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::FailedPrecondition,
        "the default cannot go"
    );
    store
        .delete_environment(ws, "develop", false, &audit())
        .await
        .unwrap();
    assert_eq!(
        store
            .delete_environment(ws, "develop", false, &audit())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

/// Tokens: creation, authentication, listing, revocation, the last admin.
pub async fn tokens(store: &dyn Store) {
    let admin = &setup(store).await;
    let found = store
        .token_for_auth(&admin.id, now_micros())
        .await
        .unwrap()
        .expect("admin token");
    let token = &found.token;
    assert_eq!((token.name.as_str(), token.role), ("admin", Role::Admin));
    assert_eq!(found.secret_hash, admin.secret_hash.to_vec());
    assert_eq!(token.expires_at, None, "the bootstrap admin never expires");
    assert_eq!(found.previous_secret_hash, None);
    let reader = NewToken {
        id: ids::new_id(ids::TOKEN_ID),
        name: "ci".to_owned(),
        role: Role::Reader,
        environments: Some(vec!["main".to_owned()]),
        ..admin.clone()
    };
    let created = store.create_token(&reader, &audit()).await.unwrap();
    assert_eq!(created.environments, Some(vec!["main".to_owned()]));
    let fetched = store
        .token_for_auth(&reader.id, now_micros())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetched.token, created);
    assert_eq!(
        store.list_tokens(&admin.workspace_id).await.unwrap().len(),
        2
    );
    store
        .revoke_token(&admin.workspace_id, &reader.id, &audit())
        .await
        .unwrap();
    assert!(
        store
            .token_for_auth(&reader.id, now_micros())
            .await
            .unwrap()
            .is_none(),
        "revoked"
    );
    assert_eq!(
        store
            .revoke_token(&admin.workspace_id, &reader.id, &audit())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert!(store
        .token_for_auth("ak-unknown", now_micros())
        .await
        .unwrap()
        .is_none());
    last_admin_token(store, store, &admin.workspace_id, &admin.id).await;
}

/// A token made with an expiry keeps it, listed and returned for
/// authentication (which decides; the store does not hide it).
pub async fn tokens_expire(store: &dyn Store) {
    let admin = &setup(store).await;
    let now = now_micros();
    let expiring = NewToken {
        id: ids::new_id(ids::TOKEN_ID),
        name: "short".to_owned(),
        expires_at: Some(now + 60_000_000),
        ..admin.clone()
    };
    let created = store.create_token(&expiring, &audit()).await.unwrap();
    assert_eq!(created.expires_at, Some(now + 60_000_000));
    assert!(!created.expired_at(now));
    assert!(created.expired_at(now + 60_000_000));
    let found = store
        .token_for_auth(&expiring.id, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.token, created);
    let listed = store.list_tokens(&admin.workspace_id).await.unwrap();
    assert_eq!(listed[1].expires_at, Some(now + 60_000_000));
    assert_eq!(listed[0].expires_at, None);
    // Past its expiry it is still found: authentication names the expiry.
    let later = store
        .token_for_auth(&expiring.id, now + 120_000_000)
        .await
        .unwrap()
        .unwrap();
    assert!(later.token.expired_at(now + 120_000_000));
}

/// A token's last use is recorded to the minute: a use within a minute of
/// the recorded one changes nothing.
pub async fn tokens_last_used_to_the_minute(store: &dyn Store) {
    let admin = &setup(store).await;
    let last_used = || async {
        store
            .token_for_auth(&admin.id, now_micros())
            .await
            .unwrap()
            .unwrap()
            .token
            .last_used_at
    };
    assert_eq!(last_used().await, None);
    let t0 = now_micros();
    store.mark_token_used(&admin.id, t0).await.unwrap();
    assert_eq!(last_used().await, Some(t0));
    store
        .mark_token_used(&admin.id, t0 + crate::LAST_USED_RESOLUTION - 1)
        .await
        .unwrap();
    assert_eq!(last_used().await, Some(t0), "within a minute: unchanged");
    let t1 = t0 + crate::LAST_USED_RESOLUTION;
    store.mark_token_used(&admin.id, t1).await.unwrap();
    assert_eq!(last_used().await, Some(t1));
    let listed = store.list_tokens(&admin.workspace_id).await.unwrap();
    assert_eq!(listed[0].last_used_at, Some(t1));
    // An unknown token is no error: nothing to record.
    store.mark_token_used("ak-unknown", t1).await.unwrap();
}

/// Rotation: a new secret for the same id; the previous one is returned for
/// authentication only while its grace period runs, and not at all without
/// one. Expired, revoked and other workspaces' tokens are refused.
pub async fn tokens_rotate_with_grace(store: &dyn Store) {
    let admin = &setup(store).await;
    let ws = admin.workspace_id.as_str();
    let ci = NewToken {
        id: ids::new_id(ids::TOKEN_ID),
        name: "ci".to_owned(),
        role: Role::Reader,
        secret_hash: hash_token_secret("as-one"),
        expires_at: Some(now_micros() + 3_600_000_000),
        ..admin.clone()
    };
    store.create_token(&ci, &audit()).await.unwrap();
    let now = now_micros();
    let until = now + 600_000_000;
    let rotated = store
        .rotate_token(
            ws,
            &ci.id,
            &hash_token_secret("as-two"),
            Some(until),
            &audit(),
        )
        .await
        .unwrap();
    assert_eq!(rotated.id, ci.id);
    assert_eq!(rotated.previous_secret_until, Some(until));
    assert_eq!(
        rotated.expires_at, ci.expires_at,
        "rotation keeps the expiry"
    );
    let found = store.token_for_auth(&ci.id, now).await.unwrap().unwrap();
    assert_eq!(found.secret_hash, hash_token_secret("as-two").to_vec());
    assert_eq!(
        found.previous_secret_hash,
        Some(hash_token_secret("as-one").to_vec())
    );
    assert_eq!(found.token.previous_secret_until, Some(until));
    // Once the grace period is over the previous secret is gone.
    let after = store.token_for_auth(&ci.id, until).await.unwrap().unwrap();
    assert_eq!(after.previous_secret_hash, None);
    assert_eq!(after.token.previous_secret_until, None);
    // A rotation without grace forgets the secret it replaces at once,
    // including the previous one still in its grace period.
    let rotated = store
        .rotate_token(ws, &ci.id, &hash_token_secret("as-three"), None, &audit())
        .await
        .unwrap();
    assert_eq!(rotated.previous_secret_until, None);
    let found = store.token_for_auth(&ci.id, now).await.unwrap().unwrap();
    assert_eq!(found.secret_hash, hash_token_secret("as-three").to_vec());
    assert_eq!(found.previous_secret_hash, None);
    // Another workspace's, unknown, revoked and expired tokens: refused.
    let err = store
        .rotate_token(
            "ac-other",
            &ci.id,
            &hash_token_secret("as-x"),
            None,
            &audit(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    let err = store
        .rotate_token(ws, "ak-unknown", &hash_token_secret("as-x"), None, &audit())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    let expired = NewToken {
        id: ids::new_id(ids::TOKEN_ID),
        name: "expired".to_owned(),
        expires_at: Some(now_micros() - 1),
        ..admin.clone()
    };
    store.create_token(&expired, &audit()).await.unwrap();
    let err = store
        .rotate_token(ws, &expired.id, &hash_token_secret("as-x"), None, &audit())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("expired at"), "{err}");
    store.revoke_token(ws, &ci.id, &audit()).await.unwrap();
    let err = store
        .rotate_token(ws, &ci.id, &hash_token_secret("as-x"), None, &audit())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    // Nothing of the refused rotations was written.
    let found = store
        .token_for_auth(&expired.id, now_micros())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.secret_hash, admin.secret_hash.to_vec());
}

/// The workspace's last active admin token cannot be revoked, even by two
/// revocations at once (through `a` and `b`) of its last two.
async fn last_admin_token(a: &dyn Store, b: &dyn Store, ws: &str, admin_id: &str) {
    // An admin limited to some environments may not manage tokens, so it
    // does not count: the last unlimited admin stays.
    let limited = NewToken {
        id: ids::new_id(ids::TOKEN_ID),
        workspace_id: ws.to_owned(),
        name: "limited-admin".to_owned(),
        role: Role::Admin,
        environments: Some(vec!["main".to_owned()]),
        secret_hash: hash_token_secret("as-limited"),
        expires_at: None,
    };
    a.create_token(&limited, &audit()).await.unwrap();
    let err = a.revoke_token(ws, admin_id, &audit()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err:?}");
    assert!(err.to_string().contains("last admin token"), "{err}");
    b.revoke_token(ws, &limited.id, &audit()).await.unwrap();
    for round in 0..10 {
        let second = NewToken {
            id: ids::new_id(ids::TOKEN_ID),
            workspace_id: ws.to_owned(),
            name: format!("admin-{round}"),
            role: Role::Admin,
            environments: None,
            secret_hash: hash_token_secret("as-second"),
            expires_at: None,
        };
        a.create_token(&second, &audit()).await.unwrap();
        let active = || async {
            b.list_tokens(ws)
                .await
                .unwrap()
                .into_iter()
                .filter(|t| {
                    t.role == Role::Admin && t.environments.is_none() && t.revoked_at.is_none()
                })
                .map(|t| t.id)
                .collect::<Vec<_>>()
        };
        let admins = active().await;
        assert_eq!(admins.len(), 2, "round {round}");
        let by = audit();
        let (first, other) = futures::join!(
            a.revoke_token(ws, &admins[0], &by),
            b.revoke_token(ws, &admins[1], &by)
        );
        let refused = [&first, &other]
            .iter()
            .filter(|r| {
                r.as_ref()
                    .is_err_and(|e| e.kind() == ErrorKind::FailedPrecondition)
            })
            .count();
        assert_eq!(
            (first.is_ok() as usize + other.is_ok() as usize, refused),
            (1, 1),
            "round {round}: exactly one of two concurrent revocations wins: {first:?} {other:?}"
        );
        assert_eq!(
            active().await.len(),
            1,
            "round {round}: one admin token is left"
        );
    }
}

/// Creating named secrets (every conflict rule) and reading them back.
pub async fn secrets_create_and_read(store: &dyn Store) {
    let admin = setup(store).await;
    let ws = admin.workspace_id.as_str();
    let env = store.environment(ws, "").await.unwrap().id;
    let first = dict(&[("A", "1"), ("B", "2")]);
    let (created, was_new) = store
        .create_secret(&named(ws, &env, "s1", first.clone(), OnConflict::Fail))
        .await
        .unwrap();
    assert!(was_new);
    assert_eq!(created.contents, first);
    assert_eq!(created.summary.keys, ["A", "B"]);
    assert_eq!(created.summary.name(), Some("s1"));
    assert_eq!(created.summary.created_by, "admin");
    assert_eq!(created.summary.last_used_at, None);
    let id = created.summary.id.clone();
    assert!(ids::has_shape(&id, ids::SECRET, ids::ID_RANDOM_LEN), "{id}");

    let err = store
        .create_secret(&named(
            ws,
            &env,
            "s1",
            dict(&[("X", "y")]),
            OnConflict::Fail,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(err.message(), "Secret 's1' already exists");

    let (same, was_new) = store
        .create_secret(&named(
            ws,
            &env,
            "s1",
            dict(&[("X", "y")]),
            OnConflict::ReturnExisting,
        ))
        .await
        .unwrap();
    assert!(!was_new);
    assert_eq!(
        (same.summary.id.as_str(), &same.contents),
        (id.as_str(), &first)
    );

    let replaced = dict(&[("C", "3")]);
    let (over, _) = store
        .create_secret(&named(
            ws,
            &env,
            "s1",
            replaced.clone(),
            OnConflict::Overwrite,
        ))
        .await
        .unwrap();
    assert_eq!(over.summary.id, id, "overwrite keeps the id");
    assert_eq!(over.summary.created_at, created.summary.created_at);
    assert_eq!(over.contents, replaced);

    assert_eq!(
        store.secret_by_name(ws, &env, "s1").await.unwrap().contents,
        replaced
    );
    assert_eq!(
        store.secret_by_id(ws, &id).await.unwrap().contents,
        replaced
    );
    let err = store.secret_by_name(ws, &env, "missing").await.unwrap_err();
    assert_eq!(
        (err.kind(), err.message()),
        (ErrorKind::NotFound, "Secret 'missing' not found")
    );
    assert_eq!(
        store
            .secret_by_id("ac-other", &id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound,
        "another workspace cannot read it"
    );

    store
        .mark_used(ws, std::slice::from_ref(&id), 1234)
        .await
        .unwrap();
    assert_eq!(
        store
            .secret_by_id(ws, &id)
            .await
            .unwrap()
            .summary
            .last_used_at,
        Some(1234)
    );

    store.delete_secret(ws, &id, &audit(), None).await.unwrap();
    let err = store.secret_by_id(ws, &id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        store
            .delete_secret(ws, &id, &audit(), None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    // The name is free again.
    store
        .create_secret(&named(ws, &env, "s1", first, OnConflict::Fail))
        .await
        .unwrap();

    // Concurrent creates, some refused: each answer is its own, and the
    // refused ones take nothing with them (SQLite commits them together).
    let attempts = (0..24).map(|i| {
        let env = env.clone();
        let name = if i % 4 == 0 {
            "s1".to_owned()
        } else {
            format!("group-{i}")
        };
        async move {
            let result = store
                .create_secret(&named(
                    ws,
                    &env,
                    &name,
                    dict(&[("I", &i.to_string())]),
                    OnConflict::Fail,
                ))
                .await;
            (name, i, result)
        }
    });
    for (name, i, result) in join_all(attempts).await {
        if name == "s1" {
            assert_eq!(
                result.unwrap_err().kind(),
                ErrorKind::AlreadyExists,
                "{name}"
            );
        } else {
            let (secret, created) = result.unwrap();
            assert!(created);
            assert_eq!(
                secret.contents,
                dict(&[("I", &i.to_string())]),
                "{name} got its own answer"
            );
            let stored = store.secret_by_name(ws, &env, &name).await.unwrap();
            assert_eq!(stored.contents, secret.contents);
        }
    }
}

/// Updates merge key by key and make a new version.
pub async fn secrets_update(store: &dyn Store) {
    let admin = setup(store).await;
    let ws = admin.workspace_id.as_str();
    let env = store.environment(ws, "").await.unwrap().id;
    let (s, _) = store
        .create_secret(&named(
            ws,
            &env,
            "upd",
            dict(&[("KEEP", "k"), ("CHANGE", "old"), ("DROP", "d")]),
            OnConflict::Fail,
        ))
        .await
        .unwrap();
    let id = s.summary.id;
    let updated = store
        .update_secret(
            ws,
            &id,
            &[
                ("CHANGE".to_owned(), Some("new".to_owned())),
                ("DROP".to_owned(), None),
                ("ADD".to_owned(), Some("a".to_owned())),
                ("NEVER_THERE".to_owned(), None),
            ],
            &revision(),
        )
        .await
        .unwrap();
    let expected = dict(&[("ADD", "a"), ("CHANGE", "new"), ("KEEP", "k")]);
    assert_eq!(updated.contents, expected);
    assert_eq!(updated.summary.version, s.summary.version + 1);
    assert_eq!(
        store.secret_by_id(ws, &id).await.unwrap().contents,
        expected
    );

    // Too many keys: refused, nothing written.
    let many: Vec<(String, Option<String>)> = (0..1000)
        .map(|i| (format!("K{i}"), Some(String::new())))
        .collect();
    let err = store
        .update_secret(ws, &id, &many, &revision())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err:?}");
    assert_eq!(
        store.secret_by_id(ws, &id).await.unwrap().contents,
        expected
    );

    // Concurrent updates of different keys all survive.
    let updates = (0..24).map(|i| {
        let id = id.clone();
        async move {
            store
                .update_secret(
                    ws,
                    &id,
                    &[(format!("C{i}"), Some(i.to_string()))],
                    &revision(),
                )
                .await
        }
    });
    for result in join_all(updates).await {
        result.unwrap();
    }
    let after = store.secret_by_id(ws, &id).await.unwrap().contents;
    for i in 0..24 {
        assert_eq!(
            after.get(&format!("C{i}")),
            Some(&i.to_string()),
            "update C{i} lost"
        );
    }
    assert_eq!(
        store
            .update_secret(ws, "st-missing", &[], &revision())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

/// Lookups by name (values and metadata), which an adapter may serve from
/// a cache, see every kind of write at once.
pub async fn lookups_follow_writes(store: &dyn Store) {
    let admin = setup(store).await;
    lookups_follow_writes_between(store, store, &admin.workspace_id, "one").await;
}

/// Writes made through `writer`, looked up through `reader`.
async fn lookups_follow_writes_between(
    reader: &dyn Store,
    writer: &dyn Store,
    ws: &str,
    tag: &str,
) {
    let value = |found: Option<Secret>, what: &str| {
        found
            .unwrap_or_else(|| panic!("{what}: the lookup found nothing"))
            .contents["V"]
            .clone()
    };
    // The metadata lookup, which may be answered without decrypting:
    // (version, keys, last_used_at).
    let summary = |env: String, what: &'static str| async move {
        let found = reader
            .secret_summary_in_environment(ws, &env, "look")
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: the metadata lookup found nothing"));
        (found.version, found.keys, found.last_used_at)
    };
    let keys = |k: &[&str]| k.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
    let env_name = format!("look-{tag}");
    let env = writer
        .create_environment(ws, &env_name, &audit())
        .await
        .unwrap();
    let write = |contents: &str, on_conflict| {
        named(ws, &env.id, "look", dict(&[("V", contents)]), on_conflict)
    };
    let (created, _) = writer
        .create_secret(&write("1", OnConflict::Fail))
        .await
        .unwrap();
    let id = created.summary.id;
    for _ in 0..2 {
        let found = reader.secret_in_environment(ws, &env_name, "look").await;
        assert_eq!(value(found.unwrap(), "created"), "1");
        assert_eq!(
            summary(env_name.clone(), "created").await,
            (1, keys(&["V"]), None)
        );
    }

    writer
        .update_secret(
            ws,
            &id,
            &[
                ("V".to_owned(), Some("2".to_owned())),
                ("W".to_owned(), Some("w".to_owned())),
            ],
            &revision(),
        )
        .await
        .unwrap();
    let found = reader.secret_in_environment(ws, &env_name, "look").await;
    assert_eq!(
        value(found.unwrap(), "updated"),
        "2",
        "an update is seen by the next lookup"
    );
    assert_eq!(
        summary(env_name.clone(), "updated").await,
        (2, keys(&["V", "W"]), None),
        "an update is seen by the next metadata lookup"
    );

    writer
        .create_secret(&write("3", OnConflict::Overwrite))
        .await
        .unwrap();
    assert_eq!(
        summary(env_name.clone(), "overwritten").await,
        (3, keys(&["V"]), None),
        "an overwrite is seen by the next metadata lookup"
    );
    let found = reader.secret_in_environment(ws, &env_name, "look").await;
    assert_eq!(
        value(found.unwrap(), "overwritten"),
        "3",
        "an overwrite is seen by the next lookup"
    );

    writer
        .mark_used(ws, std::slice::from_ref(&id), 1_234_567)
        .await
        .unwrap();
    assert_eq!(
        summary(env_name.clone(), "marked used").await,
        (3, keys(&["V"]), Some(1_234_567)),
        "last_used_at is seen by the next metadata lookup"
    );
    let found = reader.secret_in_environment(ws, &env_name, "look").await;
    assert_eq!(
        found.unwrap().expect("marked used").summary.last_used_at,
        Some(1_234_567),
        "last_used_at is seen by the next lookup"
    );
    // Kept to the minute: a use within a minute of the recorded one changes
    // nothing; a later one does.
    let half = crate::LAST_USED_RESOLUTION / 2;
    writer
        .mark_used(ws, std::slice::from_ref(&id), 1_234_567 + half)
        .await
        .unwrap();
    assert_eq!(
        summary(env_name.clone(), "used again").await.2,
        Some(1_234_567)
    );
    let later = 1_234_567 + crate::LAST_USED_RESOLUTION;
    writer
        .mark_used(ws, std::slice::from_ref(&id), later)
        .await
        .unwrap();
    assert_eq!(
        summary(env_name.clone(), "used a minute later").await.2,
        Some(later)
    );

    let renamed = format!("look-{tag}-renamed");
    writer
        .update_environment(
            ws,
            &env_name,
            &EnvironmentUpdate {
                name: Some(renamed.clone()),
                webhook_suffix: None,
            },
            &audit(),
        )
        .await
        .unwrap();
    let found = reader.secret_in_environment(ws, &env_name, "look").await;
    assert!(
        found.unwrap().is_none(),
        "found under its environment's old name"
    );
    let found = reader
        .secret_summary_in_environment(ws, &env_name, "look")
        .await;
    assert!(found.unwrap().is_none(), "metadata under the old name");
    let found = reader.secret_in_environment(ws, &renamed, "look").await;
    let found = found.unwrap().expect("found under the new name");
    assert_eq!(found.summary.environment_name, renamed);

    writer.delete_secret(ws, &id, &audit(), None).await.unwrap();
    let found = reader.secret_in_environment(ws, &renamed, "look").await;
    assert!(
        found.unwrap().is_none(),
        "a delete is seen by the next lookup"
    );
    let found = reader
        .secret_summary_in_environment(ws, &renamed, "look")
        .await;
    assert!(found.unwrap().is_none(), "metadata of a deleted secret");

    // The default environment is found by its name and by "".
    let default = writer.environment(ws, "").await.unwrap();
    let name = format!("look-default-{tag}");
    let (d, _) = writer
        .create_secret(&named(
            ws,
            &default.id,
            &name,
            dict(&[("V", "1")]),
            OnConflict::Fail,
        ))
        .await
        .unwrap();
    for env in ["", default.name.as_str(), ""] {
        let found = reader.secret_in_environment(ws, env, &name).await;
        assert_eq!(value(found.unwrap(), "default"), "1");
    }
    writer
        .update_secret(
            ws,
            &d.summary.id,
            &[("V".to_owned(), Some("2".to_owned()))],
            &revision(),
        )
        .await
        .unwrap();
    for env in ["", default.name.as_str()] {
        let found = reader.secret_in_environment(ws, env, &name).await;
        assert_eq!(value(found.unwrap(), "default, updated"), "2");
    }
    writer
        .delete_secret(ws, &d.summary.id, &audit(), None)
        .await
        .unwrap();
    for env in ["", default.name.as_str()] {
        let found = reader.secret_in_environment(ws, env, &name).await;
        assert!(found.unwrap().is_none(), "deleted, found in '{env}'");
    }

    // Deleting an environment with its secrets.
    let (_, _) = writer
        .create_secret(&named(
            ws,
            &env.id,
            "look",
            dict(&[("V", "4")]),
            OnConflict::Fail,
        ))
        .await
        .unwrap();
    let found = reader.secret_in_environment(ws, &renamed, "look").await;
    assert_eq!(value(found.unwrap(), "recreated"), "4");
    writer
        .delete_environment(ws, &renamed, true, &audit())
        .await
        .unwrap();
    let found = reader.secret_in_environment(ws, &renamed, "look").await;
    assert!(found.unwrap().is_none(), "found in a deleted environment");
}

/// Paging by creation time returns every secret once, newest first, also
/// those created concurrently.
pub async fn secrets_list_paging(store: &dyn Store) {
    let admin = setup(store).await;
    let ws = admin.workspace_id.as_str();
    let env = fill_paging(store, ws).await;
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.list_secrets(ws, &env, before, 37).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 37);
        assert!(
            page.windows(2).all(|w| w[0].created_at > w[1].created_at),
            "newest first, unique"
        );
        before = Some(page.last().unwrap().created_at);
        seen.extend(page.into_iter().map(|s| s.name().unwrap().to_owned()));
    }
    assert_eq!(seen.len(), PAGING_SECRETS, "every secret once");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no repeats");
    assert_eq!(seen.last().unwrap(), "p000", "oldest last");
    let first = store.list_secrets(ws, &env, None, 1).await.unwrap();
    assert_eq!(first[0].keys, Vec::<String>::new());
    assert_eq!(first[0].environment_name, "paging");
}

/// How many named secrets [`fill_paging`] creates.
const PAGING_SECRETS: usize = 276;

/// Creates the environment `paging` holding [`PAGING_SECRETS`] named
/// secrets, 16 of them created concurrently; returns its id.
async fn fill_paging(store: &dyn Store, ws: &str) -> String {
    let env = store
        .create_environment(ws, "paging", &audit())
        .await
        .unwrap()
        .id;
    let total = PAGING_SECRETS - 16;
    for i in 0..total {
        store
            .create_secret(&named(
                ws,
                &env,
                &format!("p{i:03}"),
                dict(&[("I", "x")]),
                OnConflict::Fail,
            ))
            .await
            .unwrap();
    }
    // Concurrent creations still get unique creation times.
    let extra = (0..16).map(|i| {
        let env = env.clone();
        async move {
            store
                .create_secret(&named(
                    ws,
                    &env,
                    &format!("q{i:02}"),
                    EnvDict::new(),
                    OnConflict::Fail,
                ))
                .await
        }
    });
    for r in join_all(extra).await {
        r.unwrap();
    }
    env
}

/// Anonymous secrets are never listed and are swept after their time.
pub async fn secrets_anonymous_and_sweep(store: &dyn Store) {
    let admin = setup(store).await;
    let ws = admin.workspace_id.as_str();
    let env = store.environment(ws, "").await.unwrap().id;
    let now = now_micros();
    let make = |expires_at, app_id: Option<&str>| NewSecret {
        workspace_id: ws.to_owned(),
        environment: env.clone(),
        environments: None,
        kind: SecretKind::Anonymous {
            app_id: app_id.map(str::to_owned),
            expires_at,
        },
        created_by: "admin".to_owned(),
        contents: dict(&[("ANON", "v")]),
        on_conflict: OnConflict::Fail,
        keep_versions: KEEP,
        audit: audit(),
    };
    let (expired, _) = store.create_secret(&make(now - 1, None)).await.unwrap();
    let (alive, _) = store
        .create_secret(&make(now + 3_600_000_000, Some("ap-x")))
        .await
        .unwrap();
    let listed = store.list_secrets(ws, &env, None, 1000).await.unwrap();
    assert!(
        listed
            .iter()
            .all(|s| s.id != expired.summary.id && s.id != alive.summary.id),
        "anonymous secrets are never listed"
    );
    assert_eq!(store.sweep_expired(now).await.unwrap(), 1);
    assert_eq!(
        store
            .secret_by_id(ws, &expired.summary.id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    let kept = store.secret_by_id(ws, &alive.summary.id).await.unwrap();
    assert_eq!(kept.summary.name(), None);
    assert_eq!(kept.contents, dict(&[("ANON", "v")]));
}

/// An environment holding secrets is deleted only with them.
pub async fn environment_delete_with_secrets(store: &dyn Store) {
    let admin = setup(store).await;
    let ws = admin.workspace_id.as_str();
    fill_paging(store, ws).await;
    let err = store
        .delete_environment(ws, "paging", false, &audit())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("holds 276 secret(s)"),
        "{}",
        err.message()
    );
    store
        .delete_environment(ws, "paging", true, &audit())
        .await
        .unwrap();
    assert_eq!(
        store.environment(ws, "paging").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// Bootstraps two replicas' stores (`a` and `b`: two independent handles
/// on the same new, empty database) at once: one workspace is created.
/// Returns it and its default environment.
async fn setup_replicas(a: &dyn Store, b: &dyn Store) -> (String, String) {
    let (admin_a, admin_b) = (admin_token(), admin_token());
    let (first, second) = futures::join!(a.bootstrap(&admin_a), b.bootstrap(&admin_b));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(first ^ second, "concurrent bootstraps create one workspace");
    let ws = if first {
        admin_a.workspace_id
    } else {
        admin_b.workspace_id
    };
    let env = b.environment(&ws, "").await.unwrap().id;
    (ws, env)
}

/// A lookup on one replica sees the writes of the other at once.
pub async fn replicas_lookups_follow_writes(a: &dyn Store, b: &dyn Store) {
    let (ws, _) = setup_replicas(a, b).await;
    lookups_follow_writes_between(b, a, &ws, "replicas").await;
}

/// Two revocations at once, through two replicas, of the last two admins.
pub async fn replicas_last_admin_token(a: &dyn Store, b: &dyn Store) {
    let (ws, _) = setup_replicas(a, b).await;
    let admin = b
        .list_tokens(&ws)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.role == Role::Admin && t.revoked_at.is_none())
        .expect("an admin token");
    last_admin_token(a, b, &ws, &admin.id).await;
}

/// A write through one replica is what the next read on the other returns.
pub async fn replicas_read_your_writes(a: &dyn Store, b: &dyn Store) {
    let (ws, env) = setup_replicas(a, b).await;
    let (ws, env) = (ws.as_str(), env.as_str());
    for round in 0..20 {
        let name = format!("ryw{round}");
        let value = format!("v{round}");
        let (created, _) = a
            .create_secret(&named(
                ws,
                env,
                &name,
                dict(&[("V", &value)]),
                OnConflict::Fail,
            ))
            .await
            .unwrap();
        assert_eq!(
            b.secret_by_name(ws, env, &name).await.unwrap().contents["V"],
            value,
            "a write on one handle is seen by the next read on the other"
        );
        b.update_secret(
            ws,
            &created.summary.id,
            &[("W".to_owned(), Some(value.clone()))],
            &revision(),
        )
        .await
        .unwrap();
        assert_eq!(
            a.secret_by_id(ws, &created.summary.id)
                .await
                .unwrap()
                .contents["W"],
            value
        );
        a.delete_secret(ws, &created.summary.id, &audit(), None)
            .await
            .unwrap();
        assert_eq!(
            b.secret_by_name(ws, env, &name).await.unwrap_err().kind(),
            ErrorKind::NotFound,
            "a delete is seen at once"
        );
    }
}

/// Concurrent updates of different keys through two replicas all survive.
pub async fn replicas_concurrent_updates(a: &dyn Store, b: &dyn Store) {
    let (ws, env) = setup_replicas(a, b).await;
    let (ws, env) = (ws.as_str(), env.as_str());
    let (s, _) = a
        .create_secret(&named(ws, env, "shared", EnvDict::new(), OnConflict::Fail))
        .await
        .unwrap();
    let id = s.summary.id;
    let updates = (0..40).map(|i| {
        let store = if i % 2 == 0 { a } else { b };
        let id = id.clone();
        async move {
            store
                .update_secret(
                    ws,
                    &id,
                    &[(format!("K{i}"), Some(i.to_string()))],
                    &revision(),
                )
                .await
        }
    });
    for result in join_all(updates).await {
        result.unwrap();
    }
    let after = b.secret_by_id(ws, &id).await.unwrap();
    assert_eq!(after.contents.len(), 40, "every update survives");
    assert_eq!(after.summary.version, 41);
}

/// Two creates of one name through two replicas: one wins, one AlreadyExists.
pub async fn replicas_concurrent_creates(a: &dyn Store, b: &dyn Store) {
    let (ws, env) = setup_replicas(a, b).await;
    let (ws, env) = (ws.as_str(), env.as_str());
    for round in 0..10 {
        let name = format!("race{round}");
        let make = |v: &str| named(ws, env, &name, dict(&[("BY", v)]), OnConflict::Fail);
        let (na, nb) = (make("a"), make("b"));
        let (ra, rb) = futures::join!(a.create_secret(&na), b.create_secret(&nb));
        let oks = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(oks, 1, "exactly one of two concurrent creates succeeds");
        let err = ra.err().or(rb.err()).unwrap();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err:?}");
        assert_eq!(err.message(), format!("Secret '{name}' already exists"));

        let name = format!("race-existing{round}");
        let make = |v: &str| {
            named(
                ws,
                env,
                &name,
                dict(&[("BY", v)]),
                OnConflict::ReturnExisting,
            )
        };
        let (na, nb) = (make("a"), make("b"));
        let (ra, rb) = futures::join!(a.create_secret(&na), b.create_secret(&nb));
        let ((sa, new_a), (sb, new_b)) = (ra.unwrap(), rb.unwrap());
        assert!(new_a ^ new_b, "one creates, the other finds it");
        assert_eq!(sa.summary.id, sb.summary.id);
        assert_eq!(sa.contents, sb.contents);
    }
}

/// Paging through one replica stays exact while the other creates.
pub async fn replicas_paging_while_writing(a: &dyn Store, b: &dyn Store) {
    let (ws, _) = setup_replicas(a, b).await;
    let ws = ws.as_str();
    let env = a.create_environment(ws, "busy", &audit()).await.unwrap().id;
    let before: Vec<String> = (0..120).map(|i| format!("old{i:03}")).collect();
    for name in &before {
        a.create_secret(&named(ws, &env, name, EnvDict::new(), OnConflict::Fail))
            .await
            .unwrap();
    }
    let writer = async {
        for i in 0..120 {
            b.create_secret(&named(
                ws,
                &env,
                &format!("new{i:03}"),
                EnvDict::new(),
                OnConflict::Fail,
            ))
            .await
            .unwrap();
        }
    };
    let reader = async {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = a.list_secrets(ws, &env, cursor, 7).await.unwrap();
            let Some(last) = page.last() else { break };
            assert!(
                page.windows(2).all(|w| w[0].created_at > w[1].created_at),
                "newest first, unique"
            );
            cursor = Some(last.created_at);
            seen.extend(page.iter().map(|s| s.name().unwrap().to_owned()));
            tokio::task::yield_now().await;
        }
        seen
    };
    let ((), seen) = futures::join!(writer, reader);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no secret listed twice");
    for name in &before {
        assert!(
            seen.contains(name),
            "{name} was lost while another handle wrote"
        );
    }
    assert_eq!(
        a.list_secrets(ws, &env, None, 1000).await.unwrap().len(),
        240
    );
    a.delete_environment(ws, "busy", true, &audit())
        .await
        .unwrap();
}

/// Two replicas sweeping at once remove every expired secret once.
pub async fn replicas_sweep(a: &dyn Store, b: &dyn Store) {
    let (ws, env) = setup_replicas(a, b).await;
    let (ws, env) = (ws.as_str(), env.as_str());
    let now = now_micros();
    for _ in 0..30 {
        a.create_secret(&NewSecret {
            workspace_id: ws.to_owned(),
            environment: env.to_owned(),
            environments: None,
            kind: SecretKind::Anonymous {
                app_id: None,
                expires_at: now - 1,
            },
            created_by: "admin".to_owned(),
            contents: dict(&[("A", "1")]),
            on_conflict: OnConflict::Fail,
            keep_versions: KEEP,
            audit: audit(),
        })
        .await
        .unwrap();
    }
    let (ra, rb) = futures::join!(a.sweep_expired(now), b.sweep_expired(now));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    // The second sweep either waited and found nothing, or skipped its turn.
    let after = a.sweep_expired(now).await.unwrap() + b.sweep_expired(now).await.unwrap();
    assert_eq!(ra + rb + after, 30, "every expired secret removed once");
}

/// The empty name means the default environment for reads only: updating or
/// deleting the environment "" finds nothing (and changes nothing), while
/// the default environment is found, updated and refused deletion by its own
/// name, also after a rename.
pub async fn environment_names_and_the_default(store: &dyn Store) {
    let admin = setup(store).await;
    let ws = admin.workspace_id.as_str();
    let main = store.environment(ws, "").await.unwrap();
    let (secret, _) = store
        .create_secret(&named(
            ws,
            &main.id,
            "s",
            dict(&[("A", "1")]),
            OnConflict::Fail,
        ))
        .await
        .unwrap();

    let update = EnvironmentUpdate {
        name: Some("renamed".to_owned()),
        webhook_suffix: Some("x".to_owned()),
    };
    let err = store
        .update_environment(ws, "", &update, &audit())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    assert_eq!(err.message(), "Environment '' not found");
    let err = store
        .delete_environment(ws, "", true, &audit())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    assert_eq!(err.message(), "Environment '' not found");
    assert_eq!(
        store.environment(ws, "").await.unwrap(),
        main,
        "an update or delete of '' changes nothing"
    );

    // The default by its own name.
    let suffixed = store
        .update_environment(
            ws,
            "main",
            &EnvironmentUpdate {
                name: None,
                webhook_suffix: Some("hook".to_owned()),
            },
            &audit(),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            suffixed.id.as_str(),
            suffixed.is_default,
            suffixed.webhook_suffix.as_str()
        ),
        (main.id.as_str(), true, "hook")
    );
    let primary = store
        .update_environment(
            ws,
            "main",
            &EnvironmentUpdate {
                name: Some("primary".to_owned()),
                webhook_suffix: None,
            },
            &audit(),
        )
        .await
        .unwrap();
    assert!(primary.is_default);
    assert_eq!(store.environment(ws, "").await.unwrap(), primary);
    assert_eq!(store.environment(ws, "primary").await.unwrap(), primary);
    let err = store.environment(ws, "main").await.unwrap_err();
    assert_eq!(err.message(), "Environment 'main' not found");
    for env in ["", "primary"] {
        let found = store
            .secret_in_environment(ws, env, "s")
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("found through '{env}'"));
        assert_eq!(found.summary.id, secret.summary.id);
    }
    assert!(store
        .secret_in_environment(ws, "main", "s")
        .await
        .unwrap()
        .is_none());
    let err = store
        .delete_environment(ws, "primary", true, &audit())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err:?}");
    assert_eq!(
        err.message(),
        "Environment 'primary' is the workspace's default and cannot be deleted"
    );
}

/// Creating a named secret in an environment the workspace does not have
/// is NotFound, naming the environment, whatever the conflict rule; nothing
/// is written.
pub async fn secrets_in_an_unknown_environment(store: &dyn Store) {
    let admin = setup(store).await;
    let ws = admin.workspace_id.as_str();
    let main = store.environment(ws, "").await.unwrap();
    for on_conflict in [
        OnConflict::Fail,
        OnConflict::ReturnExisting,
        OnConflict::Overwrite,
    ] {
        let err = store
            .create_secret(&named(
                ws,
                "en-missing",
                "s",
                dict(&[("A", "1")]),
                on_conflict,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{on_conflict:?}: {err:?}");
        assert_eq!(err.message(), "Environment 'en-missing' not found");
    }
    // An environment that exists, named with another workspace.
    let err = store
        .create_secret(&named(
            "ac-other",
            &main.id,
            "s",
            dict(&[("A", "1")]),
            OnConflict::Fail,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    assert!(store
        .list_secrets(ws, &main.id, None, 10)
        .await
        .unwrap()
        .is_empty());
}

/// What a caller sent is echoed shortened in NotFound messages: a 100 KB id
/// in a gRPC status would drop the client's whole HTTP/2 connection.
pub async fn long_input_is_echoed_shortened(store: &dyn Store) {
    let admin = setup(store).await;
    let ws = admin.workspace_id.as_str();
    let env = store.environment(ws, "").await.unwrap().id;
    let long = "x".repeat(100_000);
    let short = |what: &str, err: latchkey_core::Error| {
        assert_eq!(err.kind(), ErrorKind::NotFound, "{what}: {err:?}");
        assert!(
            err.message().len() < 200,
            "{what}: a message of {} bytes",
            err.message().len()
        );
    };
    short(
        "secret by id",
        store.secret_by_id(ws, &long).await.unwrap_err(),
    );
    short(
        "secret by name",
        store.secret_by_name(ws, &env, &long).await.unwrap_err(),
    );
    short(
        "update",
        store
            .update_secret(ws, &long, &[], &revision())
            .await
            .unwrap_err(),
    );
    short(
        "delete",
        store
            .delete_secret(ws, &long, &audit(), None)
            .await
            .unwrap_err(),
    );
    short(
        "environment",
        store.environment(ws, &long).await.unwrap_err(),
    );
    short(
        "environment update",
        store
            .update_environment(ws, &long, &EnvironmentUpdate::default(), &audit())
            .await
            .unwrap_err(),
    );
    short(
        "token",
        store.revoke_token(ws, &long, &audit()).await.unwrap_err(),
    );
    short(
        "create in an unknown environment",
        store
            .create_secret(&named(ws, &long, "n", EnvDict::new(), OnConflict::Fail))
            .await
            .unwrap_err(),
    );
}

/// Wherever an environment is named, its id is taken too (Modal's client
/// resolves references by name or id).
pub async fn environments_by_id(store: &dyn Store) {
    let admin = setup(store).await;
    let ws = admin.workspace_id.as_str();
    let env = store
        .create_environment(ws, "by-id", &audit())
        .await
        .unwrap();
    assert_eq!(store.environment(ws, &env.id).await.unwrap(), env);
    store
        .create_secret(&named(
            ws,
            &env.id,
            "s",
            dict(&[("V", "1")]),
            OnConflict::Fail,
        ))
        .await
        .unwrap();
    for reference in [env.name.as_str(), env.id.as_str()] {
        let found = store
            .secret_in_environment(ws, reference, "s")
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("looked up in {reference}"));
        assert_eq!(found.contents["V"], "1");
        let summary = store
            .secret_summary_in_environment(ws, reference, "s")
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("metadata looked up in {reference}"));
        assert_eq!(summary.environment_name, "by-id");
    }
    let renamed = store
        .update_environment(
            ws,
            &env.id,
            &EnvironmentUpdate {
                name: Some("renamed".to_owned()),
                webhook_suffix: None,
            },
            &audit(),
        )
        .await
        .unwrap();
    assert_eq!(
        (renamed.id.as_str(), renamed.name.as_str()),
        (env.id.as_str(), "renamed")
    );
    let other = store
        .create_environment(ws, "other", &audit())
        .await
        .unwrap();
    assert!(
        store
            .secret_in_environment(ws, &other.id, "s")
            .await
            .unwrap()
            .is_none(),
        "another environment's id finds nothing of this one"
    );
    store
        .delete_environment(ws, &env.id, true, &audit())
        .await
        .unwrap();
    assert_eq!(
        store.environment(ws, &env.id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

// --- versions -----------------------------------------------------------

/// A write by `author` that keeps `keep` versions.
fn by(author: &str, keep: u32) -> Revision {
    Revision {
        author: author.to_owned(),
        keep_versions: keep,
        audit: audit(),
        expected_version: None,
        environments: None,
    }
}

/// Bootstraps `store`; returns the workspace's id and its default
/// environment's.
async fn default_environment(store: &dyn Store) -> (String, String) {
    let admin = setup(store).await;
    let env = store.environment(&admin.workspace_id, "").await.unwrap().id;
    (admin.workspace_id, env)
}

/// Creates the named secret `name` holding `pairs`; returns its id.
async fn create_named(
    store: &dyn Store,
    ws: &str,
    env: &str,
    name: &str,
    pairs: &[(&str, &str)],
) -> String {
    let new = named(ws, env, name, dict(pairs), OnConflict::Fail);
    store.create_secret(&new).await.unwrap().0.summary.id
}

/// The version numbers of a secret's whole history, newest first.
async fn version_numbers(store: &dyn Store, ws: &str, id: &str) -> Vec<i64> {
    store
        .secret_history(ws, id, None, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect()
}

/// The workspace, its default environment (id and name), and a new
/// environment "prod".
async fn main_and_prod(store: &dyn Store) -> (String, String, String, crate::Environment) {
    let (ws, main) = default_environment(store).await;
    let main_name = store.environment(&ws, "").await.unwrap().name;
    let prod = store
        .create_environment(&ws, "prod", &audit())
        .await
        .unwrap();
    (ws, main, main_name, prod)
}

/// A write for a token limited to some environments refuses a secret of
/// another in its own transaction: an update, a rollback or a delete by id
/// of a secret elsewhere is PermissionDenied (naming the token and the environment) and
/// changes nothing, a secret that is not there is still NotFound, and a
/// secret in an allowed environment is written.
pub async fn writes_keep_to_the_token_environments(store: &dyn Store) {
    let (ws, main, main_name, prod) = main_and_prod(store).await;
    let ws = ws.as_str();
    let there = create_named(store, ws, &prod.id, "db", &[("A", "1")]).await;
    let here = create_named(store, ws, &main, "db", &[("A", "1")]).await;
    let limited = Some(vec![main_name]);
    let revision = Revision {
        environments: limited.clone(),
        ..Revision::by("ci")
    };
    let change = [("A".to_owned(), Some("2".to_owned()))];
    let denied = |e: latchkey_core::Error| {
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e:?}");
        assert!(
            e.message().contains("may not use environment 'prod'"),
            "{e:?}"
        );
    };
    denied(
        store
            .update_secret(ws, &there, &change, &revision)
            .await
            .unwrap_err(),
    );
    assert!(store
        .update_secret(ws, &there, &change, &revision)
        .await
        .unwrap_err()
        .message()
        .contains("Token 'ci'"));
    denied(
        store
            .delete_secret(ws, &there, &audit(), limited.as_deref())
            .await
            .unwrap_err(),
    );
    store
        .update_secret(ws, &there, &change, &Revision::by("admin"))
        .await
        .unwrap();
    denied(
        store
            .rollback_secret(ws, &there, 1, &revision)
            .await
            .unwrap_err(),
    );
    let kept = store.secret_by_id(ws, &there).await.unwrap();
    assert_eq!(
        (kept.summary.version, kept.contents["A"].as_str()),
        (2, "2"),
        "refused writes changed nothing"
    );

    let missing = ids::new_id(ids::SECRET);
    for err in [
        store
            .update_secret(ws, &missing, &change, &revision)
            .await
            .unwrap_err(),
        store
            .delete_secret(ws, &missing, &audit(), limited.as_deref())
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    }

    let written = store
        .update_secret(ws, &here, &change, &revision)
        .await
        .unwrap();
    assert_eq!(written.contents["A"], "2");
    store
        .delete_secret(ws, &here, &audit(), limited.as_deref())
        .await
        .unwrap();
    assert_eq!(
        store.secret_by_id(ws, &here).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// A create names its environment as requests do (its name, its id, or ""
/// for the default), and the create's own transaction finds it: creates
/// that name one environment in different ways, arriving together, find
/// each other's names; an unknown name is NotFound; a token limited to
/// other environments is refused whichever way it names this one. Refused
/// creates write nothing.
pub async fn creates_name_their_environment(store: &dyn Store) {
    let (ws, main, main_name, prod) = main_and_prod(store).await;
    let ws = ws.as_str();
    let create = |reference: &str, name: &str| {
        named(ws, reference, name, dict(&[("A", "1")]), OnConflict::Fail)
    };
    for (reference, name, expected) in [
        ("prod", "by-name", &prod.id),
        (prod.id.as_str(), "by-id", &prod.id),
        ("", "by-default", &main),
        (main_name.as_str(), "by-main", &main),
    ] {
        let (secret, _) = store.create_secret(&create(reference, name)).await.unwrap();
        assert_eq!(&secret.summary.environment_id, expected, "{reference:?}");
        let env = store.environment(ws, expected).await.unwrap();
        assert_eq!(secret.summary.environment_name, env.name, "{reference:?}");
    }

    let (by_name, by_id) = (create("prod", "twice"), create(&prod.id, "twice"));
    let both = futures::join!(store.create_secret(&by_name), store.create_secret(&by_id));
    let kinds = [&both.0, &both.1].map(|r| r.as_ref().map(drop).map_err(|e| e.kind()));
    assert!(
        kinds.contains(&Ok(())) && kinds.contains(&Err(ErrorKind::AlreadyExists)),
        "one create of a name wins however it names the environment: {kinds:?}"
    );

    let err = store
        .create_secret(&create("nope", "lost"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    assert_eq!(err.message(), "Environment 'nope' not found");

    let limited = |reference: &str, name: &str| NewSecret {
        environments: Some(vec![main_name.clone()]),
        ..create(reference, name)
    };
    for reference in ["prod", prod.id.as_str()] {
        let err = store
            .create_secret(&limited(reference, "denied"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err:?}");
        assert_eq!(
            err.message(),
            "Token 'admin' may not use environment 'prod'",
            "{reference:?}"
        );
    }
    let names = |env: &str| {
        let env = env.to_owned();
        async move {
            let mut names: Vec<String> = store
                .list_secrets(ws, &env, None, 100)
                .await
                .unwrap()
                .into_iter()
                .filter_map(|s| s.name().map(str::to_owned))
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(names(&prod.id).await, ["by-id", "by-name", "twice"]);
    store.create_secret(&limited("", "allowed")).await.unwrap();
    assert_eq!(names(&main).await, ["allowed", "by-default", "by-main"]);
}

/// Every change makes a version with its author, action and key-level
/// changes; old versions read back; rollback makes a new version with an
/// old one's contents; compare-and-swap refuses a stale write and writes
/// nothing.
pub async fn versions_history_and_rollback(store: &dyn Store) {
    let (ws, env) = default_environment(store).await;
    let ws = ws.as_str();
    let v1 = dict(&[("A", "1"), ("B", "2")]);
    let (s, _) = store
        .create_secret(&named(ws, &env, "hist", v1.clone(), OnConflict::Fail))
        .await
        .unwrap();
    let id = s.summary.id;
    assert_eq!(s.summary.version, 1);
    // v2: A changed, B removed, C added.
    let changes = [
        ("A".to_owned(), Some("10".to_owned())),
        ("B".to_owned(), None),
        ("C".to_owned(), Some("3".to_owned())),
    ];
    let v2 = store
        .update_secret(ws, &id, &changes, &by("deployer", KEEP))
        .await
        .unwrap();
    assert_eq!(v2.summary.version, 2);
    // v3: an overwrite by another token.
    let mut overwrite = named(ws, &env, "hist", dict(&[("Z", "z")]), OnConflict::Overwrite);
    overwrite.created_by = "ci".to_owned();
    let (v3, created) = store.create_secret(&overwrite).await.unwrap();
    assert!(!created);
    assert_eq!(v3.summary.version, 3);
    assert_eq!(v3.summary.created_by, "admin", "the secret's creator stays");
    // v4: rollback to 1.
    let v4 = store
        .rollback_secret(ws, &id, 1, &by("oncall", KEEP))
        .await
        .unwrap();
    assert_eq!(v4.summary.version, 4);
    assert_eq!(v4.contents, v1, "a rollback restores version 1's contents");
    let current = store
        .secret_in_environment(ws, "", "hist")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.contents, v1, "lookups see the rolled-back contents");
    assert_eq!(current.summary.version, 4);

    let history = store.secret_history(ws, &id, None, 100).await.unwrap();
    let summary: Vec<_> = history
        .iter()
        .map(|v| (v.version, v.action.to_string(), v.created_by.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (4, "rolled back to 1".to_owned(), "oncall"),
            (3, "overwritten".to_owned(), "ci"),
            (2, "updated".to_owned(), "deployer"),
            (1, "created".to_owned(), "admin"),
        ]
    );
    let changes_of = |n: i64| {
        history
            .iter()
            .find(|v| v.version == n)
            .unwrap()
            .changes
            .clone()
    };
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let v2_changes = changes_of(2).expect("version 1 is kept, so the changes are known");
    assert_eq!(v2_changes.added, names(&["C"]));
    assert_eq!(v2_changes.removed, names(&["B"]));
    assert_eq!(v2_changes.changed, names(&["A"]));
    let v1_changes = changes_of(1).unwrap();
    assert_eq!(v1_changes.added, names(&["A", "B"]));
    let v4_changes = changes_of(4).unwrap();
    assert_eq!(v4_changes.added, names(&["A", "B"]));
    assert_eq!(v4_changes.removed, names(&["Z"]));
    assert!(history
        .windows(2)
        .all(|w| w[0].created_at >= w[1].created_at));
    assert_eq!(history[1].keys, names(&["Z"]));

    // Old versions read back, with their own keys and record.
    let (old, record) = store.secret_version(ws, &id, 2).await.unwrap();
    assert_eq!(old.contents, dict(&[("A", "10"), ("C", "3")]));
    assert_eq!(old.summary.version, 2);
    assert_eq!(old.summary.keys, names(&["A", "C"]));
    assert_eq!(record.created_by, "deployer");

    // Paging: versions below `before`, at most `limit`.
    let page = store.secret_history(ws, &id, Some(4), 2).await.unwrap();
    assert_eq!(page.iter().map(|v| v.version).collect::<Vec<_>>(), [3, 2]);

    // Refusals write nothing.
    let err = store
        .rollback_secret(ws, &id, 4, &revision())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("at version 4 already"), "{err:?}");
    let err = store
        .rollback_secret(ws, &id, 99, &revision())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    assert!(
        err.message().contains("'hist' has no version 99")
            && err.message().contains("versions 1 to 4 are kept"),
        "{err:?}"
    );
    let err = store.secret_version(ws, &id, 0).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    let stale = Revision {
        expected_version: Some(3),
        ..revision()
    };
    let err = store
        .update_secret(ws, &id, &[("N".to_owned(), Some("n".to_owned()))], &stale)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("at version 4, not 3"), "{err:?}");
    let err = store.rollback_secret(ws, &id, 2, &stale).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err:?}");
    assert_eq!(version_numbers(store, ws, &id).await, [4, 3, 2, 1]);
    let fresh = Revision {
        expected_version: Some(4),
        ..revision()
    };
    let v5 = store
        .update_secret(ws, &id, &[("N".to_owned(), Some("n".to_owned()))], &fresh)
        .await
        .unwrap();
    assert_eq!(
        v5.summary.version, 5,
        "the expected version is current: written"
    );

    // A list shows the current keys, read without decrypting.
    let listed = store.list_secrets(ws, &env, None, 10).await.unwrap();
    assert_eq!(listed[0].keys, names(&["A", "B", "N"]));
    assert_eq!(listed[0].version, 5);

    // Deleting the secret destroys its history.
    store.delete_secret(ws, &id, &audit(), None).await.unwrap();
    let err = store.secret_history(ws, &id, None, 10).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    let err = store.secret_version(ws, &id, 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
}

/// Past the limit, the oldest versions are destroyed; what is kept is
/// always the newest `keep`, and a destroyed version is refused naming
/// the kept ones. Another workspace sees none of it.
pub async fn versions_are_destroyed_past_the_limit(store: &dyn Store) {
    let (ws, env) = default_environment(store).await;
    let ws = ws.as_str();
    let id = create_named(store, ws, &env, "kept", &[("V", "0")]).await;
    for i in 1..=5 {
        store
            .update_secret(
                ws,
                &id,
                &[("V".to_owned(), Some(i.to_string()))],
                &by("admin", 3),
            )
            .await
            .unwrap();
    }
    assert_eq!(version_numbers(store, ws, &id).await, [6, 5, 4]);
    let err = store.secret_version(ws, &id, 3).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    assert!(
        err.message().contains("versions 4 to 6 are kept"),
        "{err:?}"
    );
    let err = store
        .rollback_secret(ws, &id, 1, &by("admin", 3))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    let (v4, _) = store.secret_version(ws, &id, 4).await.unwrap();
    assert_eq!(v4.contents, dict(&[("V", "3")]));
    // The oldest kept version's changes are still known: they were
    // recorded when it was made.
    let history = store.secret_history(ws, &id, None, 10).await.unwrap();
    assert!(history.iter().all(|v| v.changes.is_some()));

    // Keeping one: only the current version survives a write.
    store
        .rollback_secret(ws, &id, 4, &by("admin", 1))
        .await
        .unwrap();
    assert_eq!(version_numbers(store, ws, &id).await, [7]);
    let err = store.secret_version(ws, &id, 6).await.unwrap_err();
    assert!(err.message().contains("only version 7 is kept"), "{err:?}");
    let current = store.secret_by_id(ws, &id).await.unwrap();
    assert_eq!(current.contents, dict(&[("V", "3")]));

    // Another workspace: the secret and its versions are not there.
    let other = ids::new_id(ids::WORKSPACE);
    for err in [
        store
            .secret_history(&other, &id, None, 10)
            .await
            .unwrap_err(),
        store
            .secret_version(&other, &id, 7)
            .await
            .map(drop)
            .unwrap_err(),
        store
            .rollback_secret(&other, &id, 7, &revision())
            .await
            .map(drop)
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    }
}

/// Writers that update one secret at once (`writers` × `rounds`, through
/// `stores` in turn) all survive, and its versions are numbered 1, 2, 3...
/// without a gap or a repeat.
async fn versions_without_gaps(stores: &[&dyn Store], ws: &str, env: &str, writers: usize) {
    const ROUNDS: usize = 4;
    let (s, _) = stores[0]
        .create_secret(&named(ws, env, "gapless", EnvDict::new(), OnConflict::Fail))
        .await
        .unwrap();
    let id = s.summary.id;
    let tasks = (0..writers).map(|w| {
        let store = stores[w % stores.len()];
        let id = id.clone();
        async move {
            for round in 0..ROUNDS {
                let key = format!("W{w}_{round}");
                store
                    .update_secret(ws, &id, &[(key, Some(round.to_string()))], &by("w", 1000))
                    .await
                    .unwrap();
            }
        }
    });
    join_all(tasks).await;
    let total = i64::try_from(writers * ROUNDS).unwrap() + 1;
    let numbers = version_numbers(stores[0], ws, &id).await;
    assert_eq!(
        numbers,
        (1..=total).rev().collect::<Vec<_>>(),
        "versions numbered without gaps"
    );
    let last = stores[stores.len() - 1]
        .secret_by_id(ws, &id)
        .await
        .unwrap();
    assert_eq!(
        last.contents.len(),
        writers * ROUNDS,
        "every update survives"
    );
    assert_eq!(last.summary.version, total);
    // Each version holds one key more than the one before it.
    let history = stores[0]
        .secret_history(ws, &id, None, 10_000)
        .await
        .unwrap();
    for v in &history {
        assert_eq!(v.keys.len() as i64, v.version - 1, "version {}", v.version);
        if v.version > 1 {
            assert_eq!(v.changes.as_ref().unwrap().added.len(), 1);
        }
    }
}

/// 16 concurrent writers of one secret: gapless versions.
pub async fn versions_gapless_under_concurrent_writers(store: &dyn Store) {
    let (ws, env) = default_environment(store).await;
    let ws = ws.as_str();
    versions_without_gaps(&[store], ws, &env, 16).await;
}

/// Writes that arrive together (an adapter may commit them as one group)
/// act as if made one after another: of creates of one name, one wins;
/// overwrites and updates of one secret each make a version, gapless; a
/// delete wins over the updates after it; a compare-and-swap loses to the
/// write before it; a create in an unknown environment fails alone. The
/// audit chain stays intact and holds one event per change.
pub async fn writes_arriving_together(store: &dyn Store) {
    use crate::audit::{AuditFilter, Verdict};
    const N: usize = 8;
    let (ws, env) = default_environment(store).await;
    let (ws, env) = (ws.as_str(), env.as_str());
    let kept = create_named(store, ws, env, "kept", &[("A", "1")]).await;
    let doomed = create_named(store, ws, env, "doomed", &[("A", "1")]).await;
    let cas = create_named(store, ws, env, "cas", &[("A", "1")]).await;
    create_named(store, ws, env, "over", &[("A", "1")]).await;
    let head = store.audit_head().await.unwrap();

    // N creates of `name` at once, the i-th holding `key` = i.
    let burst = |name: &'static str, key: &'static str, on_conflict: OnConflict| {
        join_all((0..N).map(move |i| {
            let new = named(ws, env, name, dict(&[(key, &i.to_string())]), on_conflict);
            async move { store.create_secret(&new).await }
        }))
    };
    let creates = burst("same", "BY", OnConflict::Fail);
    let finds = burst("found", "BY", OnConflict::ReturnExisting);
    let overwrites = burst("over", "V", OnConflict::Overwrite);
    let updates = join_all((0..N).map(|i| {
        let change = vec![(format!("K{i}"), Some(i.to_string()))];
        let kept = kept.clone();
        async move { store.update_secret(ws, &kept, &change, &revision()).await }
    }));
    let doomed_ops = async {
        let change = vec![("B".to_owned(), Some("2".to_owned()))];
        let (revision, audit) = (revision(), audit());
        futures::join!(
            store.update_secret(ws, &doomed, &change, &revision),
            store.delete_secret(ws, &doomed, &audit, None),
            store.update_secret(ws, &doomed, &change, &revision),
        )
    };
    let swaps = join_all((0..2).map(|i| {
        let change = vec![("A".to_owned(), Some(format!("swap{i}")))];
        let revision = Revision {
            expected_version: Some(1),
            ..revision()
        };
        let cas = cas.clone();
        async move { store.update_secret(ws, &cas, &change, &revision).await }
    }));
    let lost = named(ws, "en-none", "lost", EnvDict::new(), OnConflict::Fail);
    let unknown = store.create_secret(&lost);
    let (creates, finds, overwrites, updates, (before, deleted, after), swaps, unknown) =
        futures::join!(creates, finds, overwrites, updates, doomed_ops, swaps, unknown);

    let won = creates.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "one of {N} creates of a name wins");
    for lost in creates.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(lost.kind(), ErrorKind::AlreadyExists, "{lost:?}");
    }
    let finds: Vec<(Secret, bool)> = finds.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        finds.iter().filter(|(_, new)| *new).count(),
        1,
        "one create, the rest find it"
    );
    assert!(finds
        .iter()
        .all(|(s, _)| s.summary.id == finds[0].0.summary.id && s.contents == finds[0].0.contents));

    let mut versions: Vec<i64> = overwrites
        .iter()
        .map(|r| {
            let (secret, new) = r.as_ref().unwrap();
            assert!(!new, "an overwrite of an existing name is not new");
            secret.summary.version
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (2..=1 + N as i64).collect::<Vec<_>>(),
        "each overwrite makes a version"
    );

    let mut versions: Vec<i64> = updates
        .iter()
        .map(|r| r.as_ref().unwrap().summary.version)
        .collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (2..=1 + N as i64).collect::<Vec<_>>(),
        "each update makes a version"
    );
    let kept_now = store.secret_by_id(ws, &kept).await.unwrap();
    assert_eq!(
        kept_now.contents.len(),
        N + 1,
        "every update's key survives: {:?}",
        kept_now.summary.keys
    );
    assert_eq!(
        version_numbers(store, ws, &kept).await,
        (1..=1 + N as i64).rev().collect::<Vec<_>>()
    );

    deleted.unwrap();
    for update in [&before, &after] {
        if let Err(e) = update {
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e:?}");
        }
    }
    let gone = store.secret_by_id(ws, &doomed).await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);

    assert_eq!(
        swaps.iter().filter(|r| r.is_ok()).count(),
        1,
        "one compare-and-swap wins"
    );
    let lost = swaps.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(lost.kind(), ErrorKind::FailedPrecondition, "{lost:?}");

    let unknown = unknown.unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound, "{unknown:?}");
    assert!(
        unknown.message().contains("en-none"),
        "{}",
        unknown.message()
    );

    let mut names: Vec<String> = store
        .list_secrets(ws, env, None, 100)
        .await
        .unwrap()
        .iter()
        .map(|s| s.name().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["cas", "found", "kept", "over", "same"]);

    // One event per change: 1 + 1 creates, N overwrites, N updates, the
    // delete and the updates of `doomed` that came before it, one swap.
    let changes = 2 + 2 * N + 1 + [&before, &after].iter().filter(|r| r.is_ok()).count() + 1;
    let events = store
        .audit_events(
            ws,
            &AuditFilter {
                after: Some(head.seq),
                ..AuditFilter::default()
            },
            1000,
        )
        .await
        .unwrap();
    assert_eq!(
        events.len(),
        changes,
        "{:?}",
        events.iter().map(|e| &e.entry.action).collect::<Vec<_>>()
    );
    assert!(
        events.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "gapless numbers"
    );
    assert!(matches!(
        store.audit_verify().await.unwrap(),
        Verdict::Intact { .. }
    ));
}

/// 16 concurrent writers of one secret through two replicas: gapless versions.
pub async fn replicas_versions_gapless(a: &dyn Store, b: &dyn Store) {
    let (ws, env) = setup_replicas(a, b).await;
    versions_without_gaps(&[a, b], &ws, &env, 16).await;
}

/// A secret whose current ciphertext no longer opens (`damage` alters the
/// stored bytes of the given secret's versions): its environment still
/// lists, the secret still deletes, and reading its values names it.
pub async fn damaged_ciphertext<F, Fut>(store: &dyn Store, damage: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (ws, env) = default_environment(store).await;
    let ws = ws.as_str();
    let bad = create_named(store, ws, &env, "damaged", &[("K", "s3cr3t-value")]).await;
    create_named(store, ws, &env, "fine", &[("OK", "1")]).await;
    damage(bad.clone()).await;
    let listed = store.list_secrets(ws, &env, None, 10).await.unwrap();
    let names: Vec<_> = listed.iter().filter_map(|s| s.name()).collect();
    assert_eq!(names, ["fine", "damaged"], "the environment still lists");
    assert_eq!(
        listed[1].keys,
        ["K"],
        "with the keys, read without decrypting"
    );
    let summary = store
        .secret_summary_in_environment(ws, "", "damaged")
        .await
        .unwrap()
        .expect("the metadata lookup answers");
    assert_eq!(summary.keys, ["K"]);
    let err = store
        .secret_in_environment(ws, "", "damaged")
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::FailedPrecondition,
        "not retried: {err:?}"
    );
    assert!(
        err.message()
            .contains("Secret 'damaged' version 1 cannot be decrypted"),
        "{err:?}"
    );
    assert!(!err.message().contains("s3cr3t"), "{err:?}");
    // An overwrite replaces it (its changes are then unknown).
    let (replaced, _) = store
        .create_secret(&named(
            ws,
            &env,
            "damaged",
            dict(&[("K", "w")]),
            OnConflict::Overwrite,
        ))
        .await
        .unwrap();
    assert_eq!(replaced.summary.version, 2);
    let history = store.secret_history(ws, &bad, None, 10).await.unwrap();
    assert_eq!(history[0].changes, None);
    store.delete_secret(ws, &bad, &audit(), None).await.unwrap();
    assert!(store
        .secret_in_environment(ws, "", "damaged")
        .await
        .unwrap()
        .is_none());
}

// --- migration from a store without versions ------------------------------

/// What a store of the first schema (before versions were kept) holds, as
/// seeded by [`Unversioned::seed_sql`], for [`history_after_migration`].
#[derive(Debug, Clone)]
pub struct Unversioned {
    /// The workspace.
    pub workspace_id: String,
    /// A secret never changed: version 1.
    pub created_id: String,
    /// A secret changed twice: its row says version 3.
    pub updated_id: String,
}

impl Default for Unversioned {
    fn default() -> Self {
        Self::new()
    }
}

impl Unversioned {
    /// New ids.
    pub fn new() -> Self {
        Unversioned {
            workspace_id: ids::new_id(ids::WORKSPACE),
            created_id: ids::new_id(ids::SECRET),
            updated_id: ids::new_id(ids::SECRET),
        }
    }

    /// The contents of both secrets.
    pub fn contents() -> EnvDict {
        dict(&[("API_KEY", "k-1"), ("DB_URL", "postgres://db")])
    }

    /// SQL that fills a database of the first schema: a workspace, its
    /// default environment, and the two secrets sealed under `keyring` as
    /// that schema stored them. `blob` writes a byte string as a literal
    /// of the backend's dialect.
    pub fn seed_sql(&self, keyring: &crate::crypto::Keyring, blob: fn(&[u8]) -> String) -> String {
        let ws = &self.workspace_id;
        let env = ids::new_id(ids::ENVIRONMENT);
        let now = now_micros();
        let mut sql = format!(
            "INSERT INTO workspaces (id, name, created_at) VALUES ('{ws}', 'default', {now});\n\
             INSERT INTO environments (id, workspace_id, name, is_default, created_at) \
             VALUES ('{env}', '{ws}', 'main', TRUE, {now});\n"
        );
        for (i, (id, version)) in [(&self.created_id, 1), (&self.updated_id, 3)]
            .into_iter()
            .enumerate()
        {
            let sealed = keyring.seal(
                crate::crypto::Binding {
                    workspace_id: ws,
                    secret_id: id,
                    version,
                },
                &Self::contents(),
            );
            sql += &format!(
                "INSERT INTO secrets (id, workspace_id, environment_id, name, created_at, created_by, \
                 version, key_id, wrapped_key, ciphertext) VALUES ('{id}', '{ws}', '{env}', \
                 'old-{i}', {}, 'founder', {version}, '{}', {}, {});\n",
                now + i as i64,
                sealed.key_id,
                blob(&sealed.wrapped_key),
                blob(&sealed.ciphertext),
            );
        }
        sql
    }
}

/// A store migrated from the first schema keeps every secret's contents as
/// its current version: version 1 as `created` with its keys added, a
/// later version with its author and changes unknown. Lists show the keys;
/// the next change numbers on.
pub async fn history_after_migration(store: &dyn Store, old: &Unversioned) {
    let ws = old.workspace_id.as_str();
    let env = store.environment(ws, "").await.unwrap().id;
    let keys = ["API_KEY", "DB_URL"];
    for id in [&old.created_id, &old.updated_id] {
        let secret = store.secret_by_id(ws, id).await.unwrap();
        assert_eq!(secret.contents, Unversioned::contents(), "contents kept");
    }
    let listed = store.list_secrets(ws, &env, None, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|s| s.keys == keys), "{listed:?}");

    let created = store
        .secret_history(ws, &old.created_id, None, 10)
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].version, 1);
    assert_eq!(created[0].action, crate::VersionAction::Created);
    assert_eq!(created[0].created_by, "founder");
    assert_eq!(created[0].changes.as_ref().unwrap().added, keys);

    let updated = store
        .secret_history(ws, &old.updated_id, None, 10)
        .await
        .unwrap();
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0].version, 3);
    assert_eq!(updated[0].action, crate::VersionAction::Updated);
    assert_eq!(updated[0].created_by, "", "the author was never recorded");
    assert_eq!(
        updated[0].changes, None,
        "what version 3 changed is not known"
    );
    assert_eq!(updated[0].keys, keys);

    let next = store
        .update_secret(
            ws,
            &old.updated_id,
            &[("NEW".to_owned(), Some("n".to_owned()))],
            &revision(),
        )
        .await
        .unwrap();
    assert_eq!(next.summary.version, 4);
    let (v3, _) = store.secret_version(ws, &old.updated_id, 3).await.unwrap();
    assert_eq!(v3.contents, Unversioned::contents());
}

/// An environment renamed or deleted through one replica is what the next
/// request on the other finds, though that one looked it up just before.
pub async fn replicas_environment_changes(a: &dyn Store, b: &dyn Store) {
    let (ws, _) = setup_replicas(a, b).await;
    let ws = ws.as_str();
    let created = a.create_environment(ws, "staging", &audit()).await.unwrap();
    for _ in 0..2 {
        assert_eq!(b.environment(ws, "staging").await.unwrap(), created);
        assert_eq!(b.environment(ws, &created.id).await.unwrap(), created);
    }
    let update = EnvironmentUpdate {
        name: Some("preprod".to_owned()),
        webhook_suffix: Some("hook".to_owned()),
    };
    let renamed = a
        .update_environment(ws, "staging", &update, &audit())
        .await
        .unwrap();
    let err = b.environment(ws, "staging").await.unwrap_err();
    assert_eq!(err.message(), "Environment 'staging' not found");
    // A create finds the environment by name in its own transaction: the
    // old name is gone at once on every replica, the new one is there.
    let by_old_name = named(ws, "staging", "early", EnvDict::new(), OnConflict::Fail);
    let err = b.create_secret(&by_old_name).await.unwrap_err();
    assert_eq!(err.message(), "Environment 'staging' not found");
    let by_new_name = named(ws, "preprod", "early", EnvDict::new(), OnConflict::Fail);
    let (early, _) = b.create_secret(&by_new_name).await.unwrap();
    assert_eq!(
        (
            early.summary.environment_id.as_str(),
            early.summary.environment_name.as_str()
        ),
        (created.id.as_str(), "preprod")
    );
    assert_eq!(b.environment(ws, "preprod").await.unwrap(), renamed);
    assert_eq!(b.environment(ws, &created.id).await.unwrap(), renamed);
    a.delete_environment(ws, "preprod", true, &audit())
        .await
        .unwrap();
    for name in ["preprod", created.id.as_str()] {
        let err = b.environment(ws, name).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    }
    for reference in [created.id.as_str(), "preprod"] {
        let new = named(ws, reference, "late", EnvDict::new(), OnConflict::Fail);
        let err = b.create_secret(&new).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    }
}

/// 16 writers on each of two replicas create into one environment while a
/// reader pages through it again and again: every pass lists each secret
/// at most once, newest first with unique creation times, and misses none
/// that was acknowledged before the pass began.
pub async fn replicas_paging_while_many_write(a: &dyn Store, b: &dyn Store) {
    paging_while_two_replicas_write(a, b, a).await;
}

/// [`replicas_paging_while_many_write`], with the pages read through
/// `reader` (a third replica, say).
pub async fn paging_while_two_replicas_write(a: &dyn Store, b: &dyn Store, reader: &dyn Store) {
    const PER_WRITER: usize = 12;
    let (ws, _) = setup_replicas(a, b).await;
    let ws = ws.as_str();
    let env = a
        .create_environment(ws, "crowd", &audit())
        .await
        .unwrap()
        .id;
    let acknowledged = std::sync::Mutex::new(Vec::<String>::new());
    let done = std::sync::atomic::AtomicBool::new(false);
    let writers = join_all((0..32).map(|w| {
        let (store, env, acknowledged) = (if w % 2 == 0 { a } else { b }, &env, &acknowledged);
        async move {
            for i in 0..PER_WRITER {
                let name = format!("w{w:02}-{i:02}");
                let new = named(ws, env, &name, EnvDict::new(), OnConflict::Fail);
                store.create_secret(&new).await.unwrap();
                acknowledged.lock().unwrap().push(name);
            }
        }
    }));
    let reader = async {
        let mut passes = 0;
        loop {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst);
            let before: Vec<String> = acknowledged.lock().unwrap().clone();
            let (mut seen, mut cursor) = (Vec::new(), None);
            loop {
                let page = reader.list_secrets(ws, &env, cursor, 25).await.unwrap();
                let Some(last) = page.last() else { break };
                assert!(
                    page.windows(2).all(|w| w[0].created_at > w[1].created_at),
                    "newest first, creation times unique"
                );
                assert!(
                    cursor.is_none_or(|c| page[0].created_at < c),
                    "pages do not overlap"
                );
                cursor = Some(last.created_at);
                seen.extend(page.iter().map(|s| s.name().unwrap().to_owned()));
            }
            let mut unique = seen.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                unique.len(),
                seen.len(),
                "pass {passes}: a secret listed twice"
            );
            for name in &before {
                assert!(
                    unique.binary_search(name).is_ok(),
                    "pass {passes}: {name} was acknowledged before the pass began, and missed"
                );
            }
            passes += 1;
            if finished {
                assert_eq!(
                    seen.len(),
                    32 * PER_WRITER,
                    "the last pass sees every secret"
                );
                return passes;
            }
        }
    };
    let writers = async {
        writers.await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let ((), passes) = futures::join!(writers, reader);
    assert!(passes >= 2, "the reader paged while the writers wrote");
}

/// The audit log: every write appends its event in its own transaction,
/// reads and refusals are appended through [`Store::record`], the chain
/// verifies, and retention keeps it verifiable from a checkpoint on. No
/// event holds a value.
/// One record of more events than one statement binds: the events are
/// inserted in several statements, the head moves to the last of them
/// (on PostgreSQL within the last insert), and the chain verifies.
pub async fn audit_record_of_many_events(store: &dyn Store) {
    use crate::audit::{Interface, Verdict};
    let (ws, _) = default_environment(store).await;
    let start = store.audit_head().await.unwrap();
    let count = 4_100;
    let entries: Vec<AuditEntry> = (0..count)
        .map(|i| {
            let mut entry = AuditEntry::new(Interface::Api, "secret.read");
            entry.workspace_id = Some(ws.clone());
            entry.detail = Some(format!("read {i}"));
            entry
        })
        .collect();
    let head = store.record(&entries).await.unwrap();
    assert_eq!(head.seq, start.seq + count, "one number per event, no gap");
    assert_eq!(
        store.audit_head().await.unwrap(),
        head,
        "the stored head is the last event's"
    );
    match store.audit_verify().await.unwrap() {
        Verdict::Intact { last, .. } => assert_eq!(last, head.seq),
        other => panic!("the chain should verify: {other:?}"),
    }
}

pub async fn audit_log_chain(store: &dyn Store) {
    use crate::audit::{AuditFilter, Interface, Verdict};
    let (ws, env) = default_environment(store).await;
    let ws = ws.as_str();
    let start = store.audit_head().await.unwrap();
    let by = || {
        let mut entry = AuditEntry::new(Interface::Api, "");
        entry.workspace_id = Some(ws.to_owned());
        entry.client = Some("192.0.2.7".to_owned());
        entry
    };
    let new = |name: &str, value: &str| NewSecret {
        workspace_id: ws.to_owned(),
        environment: env.clone(),
        environments: None,
        kind: SecretKind::Named(name.to_owned()),
        created_by: "auditor".to_owned(),
        contents: EnvDict::from([("PASSWORD".to_owned(), value.to_owned())]),
        on_conflict: OnConflict::Overwrite,
        keep_versions: KEEP,
        audit: by(),
    };
    let (secret, _) = store
        .create_secret(&new("audited", "v4lue-one"))
        .await
        .unwrap();
    store
        .create_secret(&new("audited", "v4lue-two"))
        .await
        .unwrap();
    let revision = Revision {
        audit: by(),
        ..Revision::by("auditor")
    };
    let changes = [("PASSWORD".to_owned(), Some("v4lue-three".to_owned()))];
    store
        .update_secret(ws, &secret.summary.id, &changes, &revision)
        .await
        .unwrap();
    store
        .rollback_secret(ws, &secret.summary.id, 1, &revision)
        .await
        .unwrap();
    let read = store.secret_by_id(ws, &secret.summary.id).await.unwrap();
    store
        .record(&[by().action("secret.read").about(&read.summary)])
        .await
        .unwrap();
    store
        .create_environment(ws, "audited-env", &by())
        .await
        .unwrap();
    store
        .delete_environment(ws, "audited-env", false, &by())
        .await
        .unwrap();
    store
        .delete_secret(ws, &secret.summary.id, &by(), None)
        .await
        .unwrap();
    // A refused write appends nothing.
    let err = store
        .delete_secret(ws, &secret.summary.id, &by(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let events = store
        .audit_events(
            ws,
            &AuditFilter {
                after: Some(start.seq),
                ..AuditFilter::default()
            },
            100,
        )
        .await
        .unwrap();
    let seen: Vec<(&str, Option<i64>)> = events
        .iter()
        .map(|e| (e.entry.action.as_str(), e.entry.version))
        .collect();
    assert_eq!(
        seen,
        [
            ("secret.create", Some(1)),
            ("secret.overwrite", Some(2)),
            ("secret.update", Some(3)),
            ("secret.rollback", Some(4)),
            ("secret.read", Some(4)),
            ("environment.create", None),
            ("environment.delete", None),
            ("secret.delete", Some(4)),
        ]
    );
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (start.seq + 1..=start.seq + 8).collect::<Vec<_>>(),
        "gapless"
    );
    for e in &events {
        assert_eq!(e.entry.client.as_deref(), Some("192.0.2.7"));
        let text = format!("{e:?}");
        assert!(!text.contains("v4lue"), "an event shows a value: {text}");
    }
    assert_eq!(events[0].entry.secret_name.as_deref(), Some("audited"));
    assert_eq!(events[5].entry.environment.as_deref(), Some("audited-env"));
    let head = store.audit_head().await.unwrap();
    assert_eq!((head.seq, &head.mac), (events[7].seq, &events[7].mac));

    // Filters.
    let only = |filter: AuditFilter| async move {
        store
            .audit_events(ws, &filter, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.seq > start.seq)
            .count()
    };
    let reads = AuditFilter {
        action: Some("secret.read".to_owned()),
        ..AuditFilter::default()
    };
    assert_eq!(only(reads).await, 1);
    let named = AuditFilter {
        secret: Some("audited".to_owned()),
        ..AuditFilter::default()
    };
    assert_eq!(only(named).await, 6);
    let later = AuditFilter {
        since: Some(events[7].at + 1),
        ..AuditFilter::default()
    };
    assert_eq!(only(later).await, 0);
    // Another workspace sees none of them.
    assert!(store
        .audit_events("ac-another", &AuditFilter::default(), 100)
        .await
        .unwrap()
        .iter()
        .all(|e| e.entry.workspace_id.is_none()));

    let exposure = store.secret_exposure(ws, &secret.summary.id).await.unwrap();
    assert!(exposure.is_empty(), "a read without a token exposes nobody");

    assert!(matches!(
        store.audit_verify().await.unwrap(),
        Verdict::Intact { .. }
    ));

    // Retention: everything before the last event goes, after a checkpoint.
    let removed = store.audit_retain(events[7].at, &by()).await.unwrap();
    assert!(removed >= 7, "removed {removed}");
    match store.audit_verify().await.unwrap() {
        Verdict::Intact { first, last, .. } => {
            assert_eq!(
                first, events[7].seq,
                "the chain starts at the first kept event"
            );
            assert_eq!(last, events[7].seq + 1, "and ends at the checkpoint");
        }
        broken => panic!("after retention: {broken:?}"),
    }
    assert_eq!(store.audit_retain(events[7].at, &by()).await.unwrap(), 0);
}

/// What a test does to a store's database behind its back: runs one SQL
/// statement.
pub type Exec<'a> =
    &'a (dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Sync);

/// Editing, deleting or swapping event rows directly in the database makes
/// [`Store::audit_verify`] fail and name the first event touched; an event
/// that cannot be written (the trigger `fail_on`, `fail_off` installs and
/// removes) fails the write it records, which changes nothing, and a read.
pub async fn audit_tampering(store: &dyn Store, exec: Exec<'_>, fail_on: &str, fail_off: &str) {
    use crate::audit::Verdict;
    let (ws, env) = default_environment(store).await;
    let ws = ws.as_str();
    let id = create_named(store, ws, &env, "tampered", &[("A", "1")]).await;
    for i in 0..4 {
        let changes = [("A".to_owned(), Some(i.to_string()))];
        store
            .update_secret(ws, &id, &changes, &Revision::by("t"))
            .await
            .unwrap();
    }
    let head = store.audit_head().await.unwrap();
    let (a, b) = (head.seq - 3, head.seq - 1);
    let broken_at = || async {
        match store.audit_verify().await.unwrap() {
            Verdict::Broken { seq, reason } => {
                assert!(!reason.is_empty());
                Some(seq)
            }
            Verdict::Intact { .. } => None,
        }
    };
    assert_eq!(broken_at().await, None);

    exec(format!(
        "UPDATE audit_events SET outcome = 'denied' WHERE seq = {a}"
    ))
    .await;
    assert_eq!(broken_at().await, Some(a), "an edited event");
    exec(format!(
        "UPDATE audit_events SET outcome = 'ok' WHERE seq = {a}"
    ))
    .await;
    assert_eq!(broken_at().await, None, "put back");

    exec(format!(
        "UPDATE audit_events SET seq = 1000000 WHERE seq = {a}"
    ))
    .await;
    assert_eq!(broken_at().await, Some(a), "a deleted event");
    exec(format!(
        "UPDATE audit_events SET seq = {a} WHERE seq = 1000000"
    ))
    .await;

    exec(format!(
        "UPDATE audit_events SET seq = 1000000 WHERE seq = {a}"
    ))
    .await;
    exec(format!("UPDATE audit_events SET seq = {a} WHERE seq = {b}")).await;
    exec(format!(
        "UPDATE audit_events SET seq = {b} WHERE seq = 1000000"
    ))
    .await;
    assert_eq!(broken_at().await, Some(a), "two events swapped");
    exec(format!(
        "UPDATE audit_events SET seq = 1000000 WHERE seq = {a}"
    ))
    .await;
    exec(format!("UPDATE audit_events SET seq = {a} WHERE seq = {b}")).await;
    exec(format!(
        "UPDATE audit_events SET seq = {b} WHERE seq = 1000000"
    ))
    .await;
    assert_eq!(broken_at().await, None, "put back");

    exec(format!("DELETE FROM audit_events WHERE seq = {}", head.seq)).await;
    assert_eq!(
        broken_at().await,
        Some(head.seq),
        "the last event cut, the head left"
    );

    // Fail closed.
    exec(fail_on.to_owned()).await;
    let before = store.secret_by_id(ws, &id).await.unwrap();
    let changes = [("A".to_owned(), Some("never".to_owned()))];
    let err = store
        .update_secret(ws, &id, &changes, &Revision::by("t"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    let after = store.secret_by_id(ws, &id).await.unwrap();
    assert_eq!(
        after.summary.version, before.summary.version,
        "nothing changed"
    );
    assert_eq!(after.contents, before.contents);
    let read = AuditEntry::server()
        .action("secret.read")
        .about(&after.summary);
    let err = store.record(&[read]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    exec(fail_off.to_owned()).await;
}

/// Opens the store on the database under test with the given keyring (the
/// checks of a master-key rotation close and reopen it).
pub type OpenWith = Box<
    dyn Fn(
            crate::crypto::Keyring,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Box<dyn Store>, crate::OpenError>>>,
        > + Send
        + Sync,
>;

/// Creates `secrets` named secrets of `versions` versions each; returns (id, version, contents) of every version.
async fn versioned_secrets(
    store: &dyn Store,
    ws: &str,
    env: &str,
    secrets: usize,
    versions: i64,
) -> Vec<(String, i64, EnvDict)> {
    let mut all = Vec::new();
    for s in 0..secrets {
        let first = format!("s{s}-v1");
        let id = create_named(store, ws, env, &format!("rot-{s}"), &[("V", &first)]).await;
        all.push((id.clone(), 1, dict(&[("V", &first)])));
        for v in 2..=versions {
            let value = format!("s{s}-v{v}");
            let secret = store
                .update_secret(ws, &id, &[("V".to_owned(), Some(value))], &revision())
                .await
                .unwrap();
            all.push((id.clone(), v, secret.contents));
        }
    }
    all
}

/// Every version in `versions` reads back with its contents.
async fn all_versions_open(store: &dyn Store, ws: &str, versions: &[(String, i64, EnvDict)]) {
    for (id, version, contents) in versions {
        let (read, _) = store
            .secret_version(ws, id, *version)
            .await
            .unwrap_or_else(|e| panic!("version {version} of {id} opens: {e:?}"));
        assert_eq!(&read.contents, contents, "version {version} of {id}");
    }
}

/// The audit chain of `store`, opened with the new key alone, verifies.
async fn audit_intact_with_new_key(store: &dyn Store) {
    assert!(
        matches!(
            store.audit_verify().await.unwrap(),
            crate::audit::Verdict::Intact { .. }
        ),
        "the audit chain verifies with the new key alone"
    );
}

/// A master-key rotation: a store with secrets of several versions rotates
/// to a new key in small batches, reporting progress up to the total; then,
/// opened with the new key alone, every version opens (so no row is left
/// wrapped by the old key: a keyring opens a row only by the key its
/// `key_id` names) and the audit chain verifies (its key was rewrapped);
/// opened with the old key alone, it is refused as a wrong key. A second
/// rotation to the same key finds nothing left to do.
pub async fn master_key_rotation(open: OpenWith) {
    use crate::crypto::{Keyring, MasterKey};
    let old = MasterKey::generate();
    let store = open(Keyring::new(old.clone())).await.unwrap();
    let (ws, env) = default_environment(&*store).await;
    let versions = versioned_secrets(&*store, &ws, &env, 7, 3).await;
    let new = MasterKey::generate();
    let seen = std::sync::Mutex::new(Vec::new());
    let record = |p| seen.lock().unwrap().push(p);
    let report = store
        .rotate_master_key(new.clone(), 4, &record)
        .await
        .unwrap();
    assert_eq!((report.done, report.total), (21, 21), "{report:?}");
    let seen = seen.into_inner().unwrap();
    assert!(seen.len() >= 6, "progress after each batch: {seen:?}");
    assert_eq!((seen[0].done, seen[0].total), (0, 21), "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].done <= w[1].done),
        "progress only grows: {seen:?}"
    );
    // Still serving, under the new key: reads and a write.
    all_versions_open(&*store, &ws, &versions).await;
    let after = create_named(&*store, &ws, &env, "after", &[("A", "1")]).await;
    store.close().await;

    let err = open(Keyring::new(old.clone()))
        .await
        .err()
        .expect("the old key alone is refused");
    assert!(
        matches!(err, crate::OpenError::WrongMasterKey { .. }),
        "{err}"
    );
    let store = open(Keyring::new(new.clone())).await.unwrap();
    all_versions_open(&*store, &ws, &versions).await;
    assert_eq!(
        store.secret_by_id(&ws, &after).await.unwrap().contents,
        dict(&[("A", "1")])
    );
    audit_intact_with_new_key(&*store).await;
    let again = store
        .rotate_master_key(new.clone(), 4, &|_| {})
        .await
        .unwrap();
    assert_eq!((again.done, again.total), (0, 0), "nothing left: {again:?}");
    store.close().await;
}

/// Two replicas of one database, both opened with the new key and the old
/// one as previous (the second round of a rotation across replicas),
/// finish the same rotation at once: both succeed, each version is counted
/// by the one that rewrapped it, and then the new key alone opens every
/// version and verifies the audit chain while the old key alone is refused.
pub async fn master_key_rotation_by_two_replicas(open: OpenWith) {
    use crate::crypto::{Keyring, MasterKey};
    let old = MasterKey::generate();
    let store = open(Keyring::new(old.clone())).await.unwrap();
    let (ws, env) = default_environment(&*store).await;
    let versions = versioned_secrets(&*store, &ws, &env, 10, 3).await;
    store.close().await;
    let new = MasterKey::generate();
    let first = open(Keyring::rotating(new.clone(), old.clone()))
        .await
        .unwrap();
    let second = open(Keyring::rotating(new.clone(), old.clone()))
        .await
        .unwrap();
    let (a, b) = futures::join!(
        first.rotate_master_key(new.clone(), 3, &|_| {}),
        second.rotate_master_key(new.clone(), 3, &|_| {}),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.done + b.done,
        30,
        "each version rewrapped once: {a:?} {b:?}"
    );
    // The replicas go on serving, both keys still held by the second.
    all_versions_open(&*first, &ws, &versions).await;
    all_versions_open(&*second, &ws, &versions).await;
    first.close().await;
    second.close().await;
    let err = open(Keyring::new(old))
        .await
        .err()
        .expect("the old key alone is refused");
    assert!(
        matches!(err, crate::OpenError::WrongMasterKey { .. }),
        "{err}"
    );
    let store = open(Keyring::new(new)).await.unwrap();
    all_versions_open(&*store, &ws, &versions).await;
    audit_intact_with_new_key(&*store).await;
    store.close().await;
}

/// A rotation interrupted after some batches (here: the store closed and
/// reopened with both keys, as a server restarting from `master.key.new`
/// does) resumes with the rows still under the old key and finishes; a
/// rotation to a third key meanwhile is refused.
pub async fn master_key_rotation_resumes(open: OpenWith) {
    use crate::crypto::{Keyring, MasterKey};
    let old = MasterKey::generate();
    let store = open(Keyring::new(old.clone())).await.unwrap();
    let (ws, env) = default_environment(&*store).await;
    let versions = versioned_secrets(&*store, &ws, &env, 5, 2).await;
    let new = MasterKey::generate();
    // Stop after the second batch, as a crash would: the rotation's future
    // is polled by hand and dropped once it reported six rows.
    let reported = std::sync::atomic::AtomicU64::new(0);
    let record = |p: crate::RotationProgress| {
        reported.store(p.done, std::sync::atomic::Ordering::SeqCst);
    };
    {
        let mut rotation = std::pin::pin!(store.rotate_master_key(new.clone(), 3, &record));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while reported.load(std::sync::atomic::Ordering::SeqCst) < 6 {
            if let std::task::Poll::Ready(r) = futures::poll!(rotation.as_mut()) {
                panic!("the rotation should still run: {r:?}");
            }
            assert!(std::time::Instant::now() < deadline, "progress arrives");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    store.close().await;

    // Both keys open it: its key check is still the old one.
    let store = open(Keyring::rotating(new.clone(), old.clone()))
        .await
        .unwrap();
    all_versions_open(&*store, &ws, &versions).await;
    let err = store
        .rotate_master_key(MasterKey::generate(), 3, &|_| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err:?}");
    let report = store
        .rotate_master_key(new.clone(), 3, &|_| {})
        .await
        .unwrap();
    // Four rows were left, or one if the third batch, already handed to the
    // writer, committed.
    assert!(
        (1..=4).contains(&report.total) && report.done == report.total,
        "only the rows left: {report:?}"
    );
    store.close().await;
    let store = open(Keyring::new(new.clone())).await.unwrap();
    all_versions_open(&*store, &ws, &versions).await;
    store.close().await;
}

/// Reads and writes running while a rotation rewraps in batches all
/// succeed, and every version, old or written meanwhile, opens under the
/// new key alone afterwards.
pub async fn master_key_rotation_under_load(open: OpenWith) {
    use crate::crypto::{Keyring, MasterKey};
    let old = MasterKey::generate();
    let store: std::sync::Arc<dyn Store> = open(Keyring::new(old.clone())).await.unwrap().into();
    let (ws, env) = default_environment(&*store).await;
    let mut versions = versioned_secrets(&*store, &ws, &env, 40, 3).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = |n: usize| {
        let (store, ws, env, stop) = (store.clone(), ws.clone(), env.clone(), stop.clone());
        tokio::spawn(async move {
            let mut written = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || i < 5 {
                let s = (n * 7 + i) % 40;
                let read = store
                    .secret_in_environment(&ws, "", &format!("rot-{s}"))
                    .await
                    .unwrap_or_else(|e| panic!("a read during the rotation: {e:?}"));
                assert!(read.is_some());
                let id =
                    create_named(&*store, &ws, &env, &format!("load-{n}-{i}"), &[("L", "x")]).await;
                written.push((id, 1, dict(&[("L", "x")])));
                let value = format!("w{n}-{i}");
                let updated = store
                    .update_secret(
                        &ws,
                        &written[written.len() - 1].0,
                        &[("L".to_owned(), Some(value))],
                        &revision(),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("a write during the rotation: {e:?}"));
                written.push((updated.summary.id.clone(), 2, updated.contents));
                i += 1;
            }
            written
        })
    };
    let workers: Vec<_> = (0..3).map(load).collect();
    let new = MasterKey::generate();
    let report = store
        .rotate_master_key(new.clone(), 10, &|_| {})
        .await
        .unwrap();
    assert!(report.done >= 120, "{report:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in join_all(workers).await {
        versions.extend(w.unwrap());
    }
    store.close().await;
    drop(store);
    let store = open(Keyring::new(new)).await.unwrap();
    all_versions_open(&*store, &ws, &versions).await;
    store.close().await;
}
