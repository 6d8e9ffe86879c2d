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
            .create_token(&limited, "wider", Role::Admin, None)
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
