//! The Modal gRPC API of the real binary: authentication, errors, bad input.

use latchkey_proto::api::{self, SecretGetOrCreateRequest};
use tonic::Code;

use crate::harness::Server;

fn create(name: &str, pairs: &[(&str, &str)]) -> SecretGetOrCreateRequest {
    SecretGetOrCreateRequest {
        deployment_name: name.to_owned(),
        object_creation_type: api::ObjectCreationType::CreateFailIfExists as i32,
        env_dict: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

fn lookup(name: &str, required: &[&str]) -> SecretGetOrCreateRequest {
    SecretGetOrCreateRequest {
        deployment_name: name.to_owned(),
        required_keys: required.iter().map(|k| (*k).to_owned()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn authentication_is_required_and_explained() {
    let server = Server::start();
    for (id, secret) in [
        ("", ""),
        ("ak-nope", "as-nope"),
        (server.admin_token().0.as_str(), "as-wrong"),
    ] {
        let mut client = server.client_with(id, secret).await;
        let status = client.client_hello(()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(
            status.message().contains("admin-token"),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("latchkey token create"),
            "{}",
            status.message()
        );
        // A caller without a token learns nothing of the server's files.
        let data_dir = server.data_dir().display().to_string();
        assert!(
            !status.message().contains(&data_dir) && !status.message().contains("/tmp"),
            "the message names a path: {}",
            status.message()
        );
        let status = client
            .secret_list(api::SecretListRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let mut client = server.client().await;
    let hello = client.client_hello(()).await.unwrap().into_inner();
    assert_eq!(hello.image_builder_version, "2025.06");
    let info = client
        .token_info_get(api::TokenInfoGetRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.token_name.as_str(), info.workspace_name.as_str()),
        ("admin", "default")
    );
}

#[tokio::test]
async fn rpcs_we_do_not_serve_answer_unimplemented_with_their_name() {
    let server = Server::start();
    let channel = tonic::transport::Channel::from_shared(server.url().to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    for path in [
        "/modal.client.ModalClient/AppDeploymentHistory",
        "/modal.other.Elsewhere/Thing",
    ] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let status = grpc
            .unary::<(), (), _>(
                tonic::Request::new(()),
                http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
        let rpc = path.trim_start_matches('/');
        assert_eq!(
            status.message(),
            format!("latchkey does not implement the RPC {rpc}")
        );
    }
}

#[tokio::test]
async fn create_lookup_update_delete() {
    let server = Server::start();
    let mut c = server.client().await;
    let made = c
        .secret_get_or_create(create("app", &[("A", "1"), ("B", "2")]))
        .await
        .unwrap()
        .into_inner();
    let meta = made.metadata.unwrap();
    assert_eq!(
        (meta.name.as_str(), meta.keys.as_slice()),
        ("app", &["A".to_owned(), "B".to_owned()][..])
    );
    assert_eq!(meta.environment_name, "main");
    assert_eq!(meta.creation_info.unwrap().created_by, "admin");

    let status = c
        .secret_get_or_create(create("app", &[]))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::AlreadyExists, "Secret 'app' already exists")
    );

    let status = c
        .secret_get_or_create(lookup("app", &["C", "A", "D"]))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::FailedPrecondition, "Secret is missing key(s): C, D")
    );
    let status = c
        .secret_get_or_create(lookup("nope", &[]))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "Secret 'nope' not found")
    );
    let found = c
        .secret_get_or_create(lookup("app", &["A"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.secret_id, made.secret_id);

    c.secret_update(api::SecretUpdateRequest {
        secret_id: made.secret_id.clone(),
        updates: vec![
            api::secret_update_request::Update {
                key: "A".into(),
                value: None,
            },
            api::secret_update_request::Update {
                key: "C".into(),
                value: Some("3".into()),
            },
        ],
    })
    .await
    .unwrap();
    let info = c
        .secret_get_info(api::SecretGetInfoRequest {
            secret_id: made.secret_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.metadata.unwrap().keys, ["B", "C"]);

    // Overwrite keeps the id; create-if-missing returns the existing one unchanged.
    let mut over = create("app", &[("Z", "9")]);
    over.object_creation_type = api::ObjectCreationType::CreateOverwriteIfExists as i32;
    let over = c.secret_get_or_create(over).await.unwrap().into_inner();
    assert_eq!(
        (
            over.secret_id.as_str(),
            over.metadata.unwrap().keys.as_slice()
        ),
        (made.secret_id.as_str(), &["Z".to_owned()][..])
    );
    let mut keep = create("app", &[("Y", "8")]);
    keep.object_creation_type = api::ObjectCreationType::CreateIfMissing as i32;
    let kept = c.secret_get_or_create(keep).await.unwrap().into_inner();
    assert_eq!(kept.metadata.unwrap().keys, ["Z"]);

    c.secret_delete(api::SecretDeleteRequest {
        secret_id: made.secret_id.clone(),
    })
    .await
    .unwrap();
    let status = c
        .secret_delete(api::SecretDeleteRequest {
            secret_id: made.secret_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        format!("Secret '{}' not found", made.secret_id)
    );
}

#[tokio::test]
async fn bad_input_names_the_problem_and_changes_nothing() {
    let server = Server::start();
    let mut c = server.client().await;
    let long_value = "v".repeat(32_769);
    let many: Vec<(String, String)> = (0..1001)
        .map(|i| (format!("K{i}"), String::new()))
        .collect();
    let mut too_many = create("many", &[]);
    too_many.env_dict = many.into_iter().collect();
    let mut in_env = create("x", &[("A", "1")]);
    in_env.environment_name = "nowhere".into();
    let mut bad_env = create("x", &[("A", "1")]);
    bad_env.environment_name = "-bad".into();
    let mut anon_named = create("x", &[]);
    anon_named.object_creation_type = api::ObjectCreationType::Ephemeral as i32;
    let mut app_owned = create("", &[]);
    app_owned.object_creation_type = api::ObjectCreationType::AnonymousOwnedByApp as i32;
    let mut bad_type = create("x", &[]);
    bad_type.object_creation_type = 42;
    let mut lookup_with_values = lookup("x", &[]);
    lookup_with_values.env_dict = [("A".to_owned(), "1".to_owned())].into();

    let cases: Vec<(SecretGetOrCreateRequest, Code, &str)> = vec![
        (
            create("bad name", &[("A", "1")]),
            Code::InvalidArgument,
            "Invalid Secret name: 'bad name'",
        ),
        (
            create(&"n".repeat(65), &[]),
            Code::InvalidArgument,
            "longer than 64",
        ),
        (
            create("ap-0123456789abcdefghijkl", &[]),
            Code::InvalidArgument,
            "app id",
        ),
        (
            create("x", &[("1A", "v")]),
            Code::InvalidArgument,
            "Invalid key '1A'",
        ),
        (
            create("x", &[("A", "nul\0here")]),
            Code::InvalidArgument,
            "NUL",
        ),
        (
            create("x", &[("A", &long_value)]),
            Code::InvalidArgument,
            "32769 characters",
        ),
        (too_many, Code::InvalidArgument, "at most 1000 keys"),
        (in_env, Code::NotFound, "Environment 'nowhere' not found"),
        (
            bad_env,
            Code::InvalidArgument,
            "Invalid environment name: '-bad'",
        ),
        (anon_named, Code::InvalidArgument, "cannot have a name"),
        (app_owned, Code::InvalidArgument, "needs an app_id"),
        (bad_type, Code::InvalidArgument, "object_creation_type 42"),
        (
            lookup_with_values,
            Code::InvalidArgument,
            "cannot carry values",
        ),
    ];
    for (request, code, needle) in cases {
        let status = c.secret_get_or_create(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{needle}: {status:?}");
        assert!(
            status.message().contains(needle),
            "want {needle:?} in {:?}",
            status.message()
        );
        assert!(
            !status.message().contains("nul\0here")
                && !status.message().contains(&long_value[..100])
        );
    }
    let listed = c
        .secret_list(api::SecretListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.items.is_empty(), "nothing was written: {listed:?}");

    for id in ["st-doesnotexist", "", "not-an-id"] {
        let status = c
            .secret_get_info(api::SecretGetInfoRequest {
                secret_id: id.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{id}");
        let status = c
            .secret_update(api::SecretUpdateRequest {
                secret_id: id.into(),
                updates: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{id}");
    }
    let made = c
        .secret_get_or_create(create("ok", &[("A", "1")]))
        .await
        .unwrap()
        .into_inner();
    let status = c
        .secret_update(api::SecretUpdateRequest {
            secret_id: made.secret_id.clone(),
            updates: vec![
                api::secret_update_request::Update {
                    key: "B".into(),
                    value: Some("2".into()),
                },
                api::secret_update_request::Update {
                    key: "bad-key".into(),
                    value: Some("3".into()),
                },
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let info = c
        .secret_get_info(api::SecretGetInfoRequest {
            secret_id: made.secret_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.metadata.unwrap().keys,
        ["A"],
        "a refused update writes nothing"
    );

    let status = c
        .secret_list(api::SecretListRequest {
            environment_name: String::new(),
            pagination: Some(api::ListPagination {
                max_objects: -1,
                created_before: 0.0,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn environments() {
    let server = Server::start();
    let mut c = server.client().await;
    c.environment_create(api::EnvironmentCreateRequest {
        name: "dev".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let status = c
        .environment_create(api::EnvironmentCreateRequest {
            name: "dev".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    let status = c
        .environment_create(api::EnvironmentCreateRequest {
            name: "en-x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let list = c.environment_list(()).await.unwrap().into_inner();
    let names: Vec<_> = list
        .items
        .iter()
        .map(|e| (e.name.as_str(), e.default))
        .collect();
    assert_eq!(names, [("main", true), ("dev", false)]);
    let got = c
        .environment_get_or_create(api::EnvironmentGetOrCreateRequest {
            deployment_name: String::new(),
            object_creation_type: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.metadata
            .unwrap()
            .settings
            .unwrap()
            .image_builder_version,
        "2025.06"
    );
    let made = c
        .environment_get_or_create(api::EnvironmentGetOrCreateRequest {
            deployment_name: "staging".into(),
            object_creation_type: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.metadata.unwrap().name, "staging");
    let renamed = c
        .environment_update(api::EnvironmentUpdateRequest {
            current_name: "staging".into(),
            name: Some("stage".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.name, "stage");
    c.environment_delete(api::EnvironmentDeleteRequest {
        name: "stage".into(),
    })
    .await
    .unwrap();
    let status = c
        .environment_delete(api::EnvironmentDeleteRequest {
            name: "main".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = c
        .environment_delete(api::EnvironmentDeleteRequest {
            name: "gone".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "Environment 'gone' not found")
    );
}
