//! Permissions the service layer enforces for every interface, over a real
//! SQLite store.

use latchkey_core::{EnvDict, ErrorKind};
use latchkey_service::{testing::TestService, Caller, EnvironmentUpdate, Role, Service};

async fn service() -> (Service, Caller, TestService) {
    let t = TestService::start().await;
    (t.service().clone(), t.admin().clone(), t)
}

async fn token(t: &TestService, role: Role, envs: Option<Vec<String>>) -> Caller {
    t.caller(&format!("t-{}", role.as_str()), role, envs).await
}

#[tokio::test]
async fn a_token_limited_to_environments_cannot_reach_beyond_them() {
    let (service, admin, t) = service().await;
    service.create_environment(&admin, "prod").await.unwrap();
    let limited = token(&t, Role::Admin, Some(vec!["main".to_owned()])).await;

    let denied = |r: Result<(), latchkey_core::Error>| {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e:?}");
        assert!(
            e.message().contains("limited to some environments"),
            "{e:?}"
        );
    };
    denied(
        service
            .create_token(&limited, "wider", Role::Admin, None, None)
            .await
            .map(drop),
    );
    denied(service.list_tokens(&limited).await.map(drop));
    denied(service.revoke_token(&limited, &admin.token().id).await);
    denied(
        service
            .create_environment(&limited, "other")
            .await
            .map(drop),
    );
    denied(service.delete_environment(&limited, "prod", true).await);
    denied(
        service
            .update_environment(
                &limited,
                "prod",
                EnvironmentUpdate {
                    name: Some("main2".into()),
                    webhook_suffix: None,
                },
            )
            .await
            .map(drop),
    );
    assert_eq!(
        service
            .environment(&limited, "prod")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    assert!(
        service.environment(&admin, "prod").await.is_ok(),
        "prod survives"
    );
}

#[tokio::test]
async fn renaming_an_environment_that_tokens_are_limited_to_is_refused() {
    let (service, admin, t) = service().await;
    service.create_environment(&admin, "dev").await.unwrap();
    token(&t, Role::Developer, Some(vec!["dev".to_owned()])).await;
    let rename = |from: &'static str, to: &'static str| {
        let service = service.clone();
        let admin = admin.clone();
        async move {
            service
                .update_environment(
                    &admin,
                    from,
                    EnvironmentUpdate {
                        name: Some(to.into()),
                        webhook_suffix: None,
                    },
                )
                .await
        }
    };
    let e = rename("dev", "x").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.message().contains("t-developer"), "{e:?}");
    service.create_environment(&admin, "prod").await.unwrap();
    assert_eq!(
        rename("prod", "dev").await.unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(rename("prod", "staging").await.unwrap().name, "staging");
}

#[tokio::test]
async fn a_reader_may_read_but_not_write_even_anonymously() {
    let (service, admin, t) = service().await;
    let reader = token(&t, Role::Reader, None).await;
    let contents: EnvDict = [("A".to_owned(), "1".to_owned())].into();
    let e = service
        .create_anonymous_secret(&reader, "", contents.clone(), None, &[])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    service
        .create_secret(
            &admin,
            "",
            "s",
            contents,
            latchkey_service::CreateMode::Fail,
            &[],
        )
        .await
        .unwrap();
    assert!(service
        .lookup_secret(&reader, "", "s", &["A".to_owned()])
        .await
        .is_ok());
}

/// Sandboxes follow the roles of secrets (issue 11 moved these checks out of
/// the gRPC layer): starting code with values, stopping it and attaching to
/// it is developer work; a limited token sees only its environments; values
/// merge in order, and only named secrets are recorded as used.
#[tokio::test]
async fn sandbox_permissions_and_values_follow_the_service_rules() {
    use latchkey_service::sandboxes::{SandboxAction, SandboxSecret};

    let (service, admin, t) = service().await;
    service.create_environment(&admin, "prod").await.unwrap();
    let reader = token(&t, Role::Reader, None).await;
    let developer = token(&t, Role::Developer, None).await;
    let limited = token(&t, Role::Admin, Some(vec!["main".into()])).await;
    for action in [
        SandboxAction::Create,
        SandboxAction::Terminate,
        SandboxAction::Attach,
    ] {
        let e = reader.may_sandbox(action).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e:?}");
        assert!(e.message().contains("sandboxes"), "{e:?}");
        developer.may_sandbox(action).unwrap();
        admin.may_sandbox(action).unwrap();
    }
    reader.may_see_sandbox("prod").unwrap();
    limited.may_see_sandbox("main").unwrap();
    assert_eq!(
        limited.may_see_sandbox("prod").unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );

    let dict = |pairs: &[(&str, &str)]| -> EnvDict {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let (stored, _) = service
        .create_secret(
            &admin,
            "prod",
            "db",
            dict(&[("A", "stored"), ("B", "stored")]),
            latchkey_service::CreateMode::Fail,
            &[],
        )
        .await
        .unwrap();
    let id = stored.summary.id.as_str();
    let sources = || {
        [
            SandboxSecret::Inline(dict(&[("A", "first"), ("C", "first")])),
            SandboxSecret::Stored(id),
            SandboxSecret::Stored(id),
            SandboxSecret::Inline(dict(&[("B", "last")])),
        ]
    };
    let secrets = service
        .sandbox_secrets(&developer, sources())
        .await
        .unwrap();
    assert_eq!(
        secrets.env,
        dict(&[("A", "stored"), ("B", "last"), ("C", "first")])
    );
    assert_eq!(secrets.named, [id]);
    let shown = format!("{secrets:?}");
    assert!(
        !shown.contains("stored") && !shown.contains("last"),
        "{shown}"
    );
    // A token limited to main cannot put prod's values into a process.
    assert_eq!(
        service
            .sandbox_secrets(&limited, sources())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    // Inline values follow the rules of every secret.
    let e = service
        .sandbox_secrets(&developer, [SandboxSecret::Inline(dict(&[("1BAD", "x")]))])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e:?}");
}

/// A token limited to some environments can neither update nor delete a
/// secret of another by its id, nor create one there (the store checks it
/// in the write's own transaction); the secret stays as it was, nothing is
/// created, and the same token writes in its own environment.
#[tokio::test]
async fn a_limited_token_cannot_write_a_secret_elsewhere_by_id() {
    let (service, admin, t) = service().await;
    service.create_environment(&admin, "prod").await.unwrap();
    let limited = token(&t, Role::Developer, Some(vec!["main".to_owned()])).await;
    let create = |env: &'static str| {
        let (service, admin) = (service.clone(), admin.clone());
        async move {
            let contents: EnvDict = [("A".to_owned(), "1".to_owned())].into();
            let (secret, _) = service
                .create_secret(
                    &admin,
                    env,
                    "db",
                    contents,
                    latchkey_service::CreateMode::Fail,
                    &[],
                )
                .await
                .unwrap();
            secret.summary.id
        }
    };
    let (there, here) = (create("prod").await, create("main").await);
    let change = [("A".to_owned(), Some("2".to_owned()))];
    let denied = |e: latchkey_core::Error| {
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e:?}");
        assert!(
            e.message()
                .contains("Token 't-developer' may not use environment 'prod'"),
            "{e:?}"
        );
    };
    denied(
        service
            .update_secret(&limited, &there, &change, None)
            .await
            .unwrap_err(),
    );
    denied(service.delete_secret(&limited, &there).await.unwrap_err());
    // Creates too, whichever way they name the environment, named or not.
    let prod_id = service.environment(&admin, "prod").await.unwrap().id;
    let contents: EnvDict = [("A".to_owned(), "1".to_owned())].into();
    for env in ["prod", prod_id.as_str()] {
        let mode = latchkey_service::CreateMode::Fail;
        denied(
            service
                .create_secret(&limited, env, "db2", contents.clone(), mode, &[])
                .await
                .unwrap_err(),
        );
        denied(
            service
                .create_anonymous_secret(&limited, env, contents.clone(), None, &[])
                .await
                .unwrap_err(),
        );
    }
    let (_, listed) = service
        .list_secrets(&admin, "prod", None, Some(10))
        .await
        .unwrap();
    assert_eq!(
        listed.len(),
        1,
        "only the admin's secret is in prod: {listed:?}"
    );
    let kept = service.secret(&admin, &there).await.unwrap();
    assert_eq!(
        (kept.summary.version, kept.contents["A"].as_str()),
        (1, "1")
    );

    let written = service
        .update_secret(&limited, &here, &change, None)
        .await
        .unwrap();
    assert_eq!(written.contents["A"], "2");
    service.delete_secret(&limited, &here).await.unwrap();
}

/// What a create that fails twice over answers: a named create names its
/// environment's problem before the missing keys (the environment was
/// resolved first), an anonymous one the missing keys first; and a token
/// limited to other environments is refused before the missing keys of a
/// named create. Nothing is created.
#[tokio::test]
async fn creates_that_fail_twice_report_as_before() {
    let (service, admin, t) = service().await;
    service.create_environment(&admin, "prod").await.unwrap();
    let limited = token(&t, Role::Developer, Some(vec!["main".to_owned()])).await;
    let contents: EnvDict = [("A".to_owned(), "1".to_owned())].into();
    let required = ["MISSING".to_owned()];
    let fail = latchkey_service::CreateMode::Fail;
    let named = |caller: &Caller, env: &'static str| {
        let (service, caller, contents) = (service.clone(), caller.clone(), contents.clone());
        let required = required.clone();
        async move {
            service
                .create_secret(&caller, env, "db", contents, fail, &required)
                .await
                .unwrap_err()
                .kind()
        }
    };
    assert_eq!(named(&admin, "nope").await, ErrorKind::NotFound);
    assert_eq!(named(&limited, "prod").await, ErrorKind::PermissionDenied);
    let anonymous = service
        .create_anonymous_secret(&admin, "nope", contents.clone(), None, &required)
        .await
        .unwrap_err();
    assert!(
        anonymous.message().contains("MISSING"),
        "the missing key first: {anonymous:?}"
    );
    let (_, listed) = service
        .list_secrets(&admin, "prod", None, Some(10))
        .await
        .unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}
