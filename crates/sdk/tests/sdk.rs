//! Every SDK call and its errors, against the real `latchkey` binary
//! (`LATCHKEY_BIN`, else `target/debug/latchkey`: `cargo build -p latchkey-cli`).

use std::collections::HashMap;

use latchkey::{
    blocking::Wait, testing, Client, Config, ConfigSource, EnvDict, Error, Profile, ProfileFile,
    Role, Secret, Timestamp, VersionAction,
};

fn server() -> (testing::TestServer, Client) {
    let server = testing::start_server().expect("start the latchkey binary");
    let client = server.client().unwrap();
    (server, client)
}

fn dict(pairs: &[(&str, &str)]) -> EnvDict {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn create_info_update_resolve_delete() {
    let (_server, client) = server();
    let objects = client.secrets();

    let created = objects
        .create("db", [("URL", "pg://x"), ("USER", "me")])
        .await
        .unwrap();
    assert!(created.created);
    assert_eq!(created.info.name, "db");
    assert_eq!(created.info.environment_name, "main");
    assert_eq!(created.info.keys, ["URL", "USER"]);
    assert_eq!(created.info.created_by, "admin");
    assert!(created.info.id.starts_with("st-"));

    let err = objects.create("db", [("URL", "y")]).await.unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists { message } if message.contains("db")),
        "{err:?}"
    );
    let kept = objects
        .create("db", [("URL", "y")])
        .allow_existing(true)
        .await
        .unwrap();
    assert!(!kept.created);
    let db = Secret::from_name("db");
    assert_eq!(db.resolve_with(&client).await.unwrap()["URL"], "pg://x");
    objects
        .create("db", [("URL", "y"), ("USER", "me")])
        .overwrite(true)
        .await
        .unwrap();
    assert_eq!(db.resolve_with(&client).await.unwrap()["URL"], "y");
    let err = objects
        .create("db", [("A", "1")])
        .allow_existing(true)
        .overwrite(true)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }));

    // Bad input is refused with the server's message, and writes nothing.
    let err = objects.create("bad name", [("A", "1")]).await.unwrap_err();
    assert!(matches!(&err, Error::Invalid { message } if message.contains("Invalid Secret name")));
    let err = objects.create("x", [("1A", "v")]).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }));
    let err = objects
        .create("x", [("A", "1")])
        .required_keys(["B"])
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::MissingKeys { keys, .. } if keys == &["B"]));
    assert!(Secret::from_name("x")
        .info_with(&client)
        .await
        .unwrap_err()
        .is_not_found());

    // info, with required keys.
    let info = db.info_with(&client).await.unwrap();
    assert_eq!(info.keys, ["URL", "USER"]);
    let err = Secret::from_name("db")
        .required_keys(["URL", "PASSWORD", "PORT"])
        .info_with(&client)
        .await
        .unwrap_err();
    match err {
        Error::MissingKeys { keys, message } => {
            assert_eq!(keys, ["PASSWORD", "PORT"]);
            assert_eq!(message, "Secret is missing key(s): PASSWORD, PORT");
        }
        e => panic!("{e:?}"),
    }

    // update merges like dict.update; None removes.
    let after = db
        .update_with(&client, [("USER", None), ("PORT", Some("5432"))])
        .await
        .unwrap();
    assert_eq!(after.keys, ["PORT", "URL"]);
    assert_eq!(
        db.resolve_with(&client).await.unwrap(),
        dict(&[("PORT", "5432"), ("URL", "y")])
    );
    let err = db
        .update_with(&client, [("bad key", "v")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }));
    let err = Secret::from_name("nope")
        .update_with(&client, [("A", "1")])
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::NotFound { message } if message == "Secret 'nope' not found"));

    // resolve records the use; a refused resolve does not.
    let before = db.info_with(&client).await.unwrap().last_used_at;
    let refused = Secret::from_name("db")
        .required_keys(["NOPE"])
        .resolve_with(&client)
        .await;
    assert!(matches!(refused, Err(Error::MissingKeys { .. })));
    assert_eq!(db.info_with(&client).await.unwrap().last_used_at, before);
    db.resolve_with(&client).await.unwrap();
    let used = db.info_with(&client).await.unwrap().last_used_at.unwrap();
    assert!(used > info.created_at);

    // A local secret has no server-side info.
    let err = Secret::from_dict([("A", "1")])
        .info_with(&client)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }));

    // delete, allow_missing.
    assert!(objects.delete("db").await.unwrap());
    assert!(objects.delete("db").await.unwrap_err().is_not_found());
    assert!(!objects.delete("db").allow_missing(true).await.unwrap());
    let err = objects
        .delete("db")
        .allow_missing(true)
        .environment_name("nowhere")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { message } if message.contains("nowhere")),
        "{err:?}"
    );
}

#[tokio::test]
async fn list_pages_newest_first_and_filters() {
    let (_server, client) = server();
    let objects = client.secrets();
    let mut infos = Vec::new();
    for i in 0..23 {
        infos.push(
            objects
                .create(format!("s{i:02}"), [("K", "v")])
                .await
                .unwrap()
                .info,
        );
    }
    let newest_first: Vec<String> = infos.iter().rev().map(|i| i.name.clone()).collect();
    let names =
        |list: Vec<latchkey::SecretInfo>| list.into_iter().map(|s| s.name).collect::<Vec<_>>();

    assert_eq!(names(objects.list().await.unwrap()), newest_first);
    assert_eq!(
        names(objects.list().page_size(5).await.unwrap()),
        newest_first
    );
    assert_eq!(
        names(objects.list().page_size(4).max_objects(10).await.unwrap()),
        newest_first[..10]
    );
    assert!(objects.list().max_objects(0).await.unwrap().is_empty());

    // created_before: a Timestamp, its text, a SystemTime, a date.
    let cut = infos[10].created_at;
    let older: Vec<String> = newest_first[13..].to_vec();
    assert_eq!(
        names(objects.list().created_before(cut).await.unwrap()),
        older
    );
    assert_eq!(
        names(
            objects
                .list()
                .created_before(cut.to_string())
                .page_size(3)
                .await
                .unwrap()
        ),
        older
    );
    assert_eq!(
        names(
            objects
                .list()
                .created_before(std::time::SystemTime::from(cut))
                .await
                .unwrap()
        ),
        older
    );
    assert!(objects
        .list()
        .created_before("2025-01-01")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        objects
            .list()
            .created_before(Timestamp::now().as_micros() / 1_000_000 + 60)
            .await
            .unwrap()
            .len(),
        23
    );
    let err = objects
        .list()
        .created_before("next tuesday")
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Invalid { message } if message.contains("next tuesday")));

    // Per environment.
    client.environments().create("dev").await.unwrap();
    objects
        .create("only-dev", [("K", "v")])
        .environment_name("dev")
        .await
        .unwrap();
    assert_eq!(
        names(objects.list().environment_name("dev").await.unwrap()),
        ["only-dev"]
    );
    let dev = client.with_environment(Some("dev"));
    assert_eq!(names(dev.secrets().list().await.unwrap()), ["only-dev"]);
    assert!(objects
        .list()
        .environment_name("nope")
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn resolve_all_merges_later_over_earlier() {
    let (_server, client) = server();
    client
        .secrets()
        .create("base", [("A", "base"), ("B", "base")])
        .await
        .unwrap();
    client.environments().create("prod").await.unwrap();
    client
        .secrets()
        .create("over", [("B", "prod"), ("C", "prod")])
        .environment_name("prod")
        .await
        .unwrap();
    let secrets = [
        Secret::from_name("base").required_keys(["A"]),
        Secret::from_dict([("C", Some("dict")), ("D", None)]),
        Secret::from_name("over").environment_name("prod"),
    ];
    let env = Secret::resolve_all_with(&client, &secrets).await.unwrap();
    assert_eq!(env, dict(&[("A", "base"), ("B", "prod"), ("C", "prod")]));

    // Every secret resolves, or nothing is returned.
    let err = Secret::resolve_all_with(
        &client,
        &[
            Secret::from_name("base"),
            Secret::from_name("over")
                .environment_name("prod")
                .required_keys(["Z"]),
        ],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::MissingKeys { .. }), "{err:?}");
    let err = Secret::resolve_all_with(&client, &[Secret::from_name("ghost")])
        .await
        .unwrap_err();
    assert!(err.is_not_found());

    // Local-only secrets need no server at all.
    let env = Secret::resolve_all(&[
        Secret::from_dict([("X", "1")]),
        Secret::from_dict([("X", "2")]),
    ])
    .await
    .unwrap();
    assert_eq!(env, dict(&[("X", "2")]));
}

#[tokio::test]
async fn environments_are_managed() {
    let (_server, client) = server();
    let envs = client.environments();
    let list = envs.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].is_default && list[0].name == "main");

    let dev = envs.create("dev").await.unwrap();
    assert!(!dev.is_default && dev.id.starts_with("en-"));
    assert!(envs.create("dev").await.unwrap_err().is_already_exists());
    assert!(matches!(
        envs.create("-bad").await,
        Err(Error::Invalid { .. })
    ));

    let staging = envs.rename("dev", "staging").await.unwrap();
    assert_eq!(staging.name, "staging");
    assert!(envs.rename("dev", "x").await.unwrap_err().is_not_found());
    let with_suffix = envs.set_webhook_suffix("staging", "stg").await.unwrap();
    assert_eq!(with_suffix.webhook_suffix, "stg");

    client
        .secrets()
        .create("s", [("A", "1")])
        .environment_name("staging")
        .await
        .unwrap();
    let err = envs.delete("staging").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::FailedPrecondition { .. } | Error::Invalid { .. }
        ),
        "{err:?}"
    );
    envs.delete("staging").with_secrets(true).await.unwrap();
    assert!(envs.delete("staging").await.unwrap_err().is_not_found());
    assert!(envs.delete("main").with_secrets(true).await.is_err());
    assert_eq!(envs.list().await.unwrap().len(), 1);

    // Only admins manage environments.
    let dev_token = client
        .tokens()
        .create("developer", Role::Developer)
        .await
        .unwrap();
    let as_dev = Client::new(dev_token.config(client.server_url())).unwrap();
    let err = as_dev.environments().create("mine").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
}

#[tokio::test]
async fn tokens_and_whoami() {
    let (server, client) = server();
    let me = client.whoami().await.unwrap();
    assert_eq!(me.workspace_name, "default");
    assert_eq!(
        (me.token.name.as_str(), me.token.role),
        ("admin", Role::Admin)
    );

    client.environments().create("dev").await.unwrap();
    let ci = client
        .tokens()
        .create("ci", Role::Reader)
        .environments(["dev"])
        .await
        .unwrap();
    assert!(ci.secret.expose().starts_with("as-"));
    assert!(
        !format!("{ci:?}").contains(ci.secret.expose()),
        "Debug hides the secret"
    );
    assert_eq!(
        ci.info.environments.as_deref(),
        Some(&["dev".to_owned()][..])
    );

    let listed = client.tokens().list().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .any(|t| t.id == ci.info.id && t.role == Role::Reader));

    // The new token works, within its limits.
    let as_ci = Client::new(ci.config(server.url())).unwrap();
    assert_eq!(as_ci.whoami().await.unwrap().token.name, "ci");
    client
        .secrets()
        .create("s", [("A", "1")])
        .environment_name("dev")
        .await
        .unwrap();
    let env = Secret::from_name("s")
        .environment_name("dev")
        .resolve_with(&as_ci)
        .await
        .unwrap();
    assert_eq!(env["A"], "1");
    let err = as_ci.secrets().list().await.unwrap_err();
    assert!(
        matches!(&err, Error::PermissionDenied { message } if message.contains("main")),
        "{err:?}"
    );
    let err = as_ci
        .secrets()
        .create("t", [("A", "1")])
        .environment_name("dev")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }));
    assert!(matches!(
        as_ci.tokens().list().await,
        Err(Error::PermissionDenied { .. })
    ));
    assert!(matches!(
        client.tokens().create("bad name", Role::Reader).await,
        Err(Error::Invalid { .. })
    ));
    assert!(client
        .tokens()
        .create("x", Role::Reader)
        .environments(["nope"])
        .await
        .unwrap_err()
        .is_not_found());

    // Revoked: the token stops working at once.
    client.tokens().revoke(&ci.info.id).await.unwrap();
    let err = as_ci.whoami().await.unwrap_err();
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err:?}");
    assert!(client
        .tokens()
        .revoke(&ci.info.id)
        .await
        .unwrap_err()
        .is_not_found());
    let err = client.tokens().revoke(&me.token.id).await.unwrap_err();
    assert!(
        matches!(&err, Error::FailedPrecondition { message } if message.contains("last admin")),
        "{err:?}"
    );

    assert_eq!("Developer".parse::<Role>().unwrap(), Role::Developer);
    assert!("root".parse::<Role>().is_err());
}

#[tokio::test]
async fn transport_config_and_authentication_errors() {
    let (server, client) = server();
    let wrong = Client::new(Config::new(
        server.url(),
        client.config().token_id(),
        "as-wrong",
    ))
    .unwrap();
    let err = wrong.whoami().await.unwrap_err();
    match &err {
        Error::Unauthenticated { message } => assert!(!message.contains("as-wrong"), "{message}"),
        e => panic!("{e:?}"),
    }
    assert_eq!(err.code(), "unauthenticated");

    // Nothing listens on a port we just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = Client::new(Config::new(
        format!("http://127.0.0.1:{port}"),
        "ak-x",
        "as-x",
    ))
    .unwrap();
    let err = down.whoami().await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    let err = Client::new(Config::new("ftp://x", "ak-x", "as-x")).unwrap_err();
    assert!(matches!(err, Error::Config { .. }));
    assert!(!format!("{client:?}").contains(client.config().token_secret()));
}

#[tokio::test]
async fn configuration_from_profile_and_admin_token_file() {
    let (server, _) = server();
    let home = tempfile::tempdir().unwrap();
    let vars = |extra: &[(&str, String)]| {
        let mut map: HashMap<String, String> =
            HashMap::from([("HOME".to_owned(), home.path().display().to_string())]);
        for (k, v) in extra {
            map.insert((*k).to_owned(), v.clone());
        }
        move |name: &str| map.get(name).cloned()
    };

    // Zero-config: the default data dir's admin-token, server URL included.
    let data = home.path().join(".local/share/latchkey");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(
        server.data_dir().join("admin-token"),
        data.join("admin-token"),
    )
    .unwrap();
    let config = Config::from_env_with(&vars(&[])).unwrap();
    assert!(matches!(
        config.source(),
        ConfigSource::AdminTokenFile { .. }
    ));
    assert_eq!(config.server_url(), server.url());
    let client = Client::new(config).unwrap();
    assert_eq!(client.whoami().await.unwrap().token.name, "admin");

    // `latchkey login` writes a profile: it wins over the admin token file.
    let token = client
        .tokens()
        .create("laptop", Role::Developer)
        .await
        .unwrap();
    let path = home.path().join("profiles.toml");
    let mut file = ProfileFile::load(&path).unwrap();
    let mut profile =
        Profile::new(server.url(), &token.info.id, token.secret.expose()).with_environment("main");
    profile.active = true;
    file.insert("local", profile).unwrap();
    file.save().unwrap();
    let config = Config::from_env_with(&vars(&[(
        "LATCHKEY_CONFIG_PATH",
        path.display().to_string(),
    )]))
    .unwrap();
    assert!(matches!(config.source(), ConfigSource::Profile { name, .. } if name == "local"));
    assert_eq!(config.environment(), Some("main"));
    let client = Client::new(config).unwrap();
    assert_eq!(client.whoami().await.unwrap().token.name, "laptop");
}

#[test]
fn blocking_calls_and_the_shared_client() {
    let server = testing::start_server().unwrap();
    // The only test that sets the process-wide shared client.
    Client::set_shared(server.config()).unwrap();
    let created = Secret::objects().create("b", [("K", "v")]).wait().unwrap();
    assert!(created.created);
    let secret = Secret::from_name("b");
    assert_eq!(secret.info().wait().unwrap().keys, ["K"]);
    secret.update([("L", "w")]).wait().unwrap();
    assert_eq!(
        secret.resolve().wait().unwrap(),
        dict(&[("K", "v"), ("L", "w")])
    );
    assert_eq!(Secret::objects().list().wait().unwrap().len(), 1);
    let env = Secret::resolve_all(&[secret.clone(), Secret::from_dict([("K", "local")])])
        .wait()
        .unwrap();
    assert_eq!(env, dict(&[("K", "local"), ("L", "w")]));

    // `.wait()` inside a runtime does not deadlock.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = rt.block_on(async { Secret::objects().list().wait().unwrap().len() });
    assert_eq!(n, 1);

    assert!(Secret::objects().delete("b").wait().unwrap());
    assert!(secret.info().wait().unwrap_err().is_not_found());
}

#[test]
fn versions_history_rollback_and_pinned_reads() {
    // Blocking (`.wait()`) throughout: the wrappers cover these builders too.
    let (_server, client) = server();
    client.secrets().create("s", [("A", "1")]).wait().unwrap();
    let s = Secret::from_name("s");
    for change in [
        ("A", Some("2")),
        ("A", Some("3")),
        ("B", Some("x")),
        ("B", None),
    ] {
        s.update_with(&client, [change]).wait().unwrap();
    }

    // Every page, newest first, whatever the page size.
    let history = s.history_with(&client).page_size(2).wait().unwrap();
    let numbers: Vec<i64> = history.iter().map(|v| v.version).collect();
    assert_eq!(numbers, [5, 4, 3, 2, 1]);
    assert_eq!(s.history_with(&client).wait().unwrap(), history);
    assert_eq!(history[4].action, VersionAction::Created);
    assert!(history[..4]
        .iter()
        .all(|v| v.action == VersionAction::Updated));
    assert_eq!(history[0].keys_removed, Some(vec!["B".to_owned()]));
    assert_eq!(history[1].keys_added, Some(vec!["B".to_owned()]));
    assert_eq!(history[2].keys_changed, Some(vec!["A".to_owned()]));
    assert_eq!(history[0].created_by, "admin");

    // A pinned version: its values, keys and record.
    let v2 = Secret::from_name("s").version(2);
    assert_eq!(v2.pinned_version(), Some(2));
    assert_eq!(
        v2.resolve_with(&client).wait().unwrap(),
        dict(&[("A", "2")])
    );
    let info = v2.info_with(&client).wait().unwrap();
    assert_eq!((info.version, info.keys.clone()), (2, vec!["A".to_owned()]));
    let record = info.version_info.unwrap();
    assert_eq!(record.version, 2);
    assert_eq!(record.keys_changed, Some(vec!["A".to_owned()]));
    assert_eq!(s.info_with(&client).wait().unwrap().version_info, None);
    let resolved = v2.resolve_detailed_with(&client).wait().unwrap();
    assert_eq!(resolved.info.as_ref().map(|i| i.version), Some(2));
    let resolved = s.resolve_detailed_with(&client).wait().unwrap();
    assert_eq!(resolved.info.as_ref().map(|i| i.version), Some(5));
    assert_eq!(resolved.values, dict(&[("A", "3")]));
    let err = v2
        .clone()
        .required_keys(["B"])
        .resolve_with(&client)
        .wait()
        .unwrap_err();
    assert!(
        matches!(&err, Error::MissingKeys { keys, .. } if keys == &["B"]),
        "{err:?}"
    );

    // Bad numbers fail before any request: even with no server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = Client::new(Config::new(
        format!("http://127.0.0.1:{port}"),
        "ak-x",
        "as-x",
    ))
    .unwrap();
    for err in [
        s.clone().version(0).resolve_with(&down).wait().unwrap_err(),
        s.clone().version(-1).info_with(&down).wait().unwrap_err(),
        s.rollback_with(&down, 0).wait().unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::Invalid { message } if message.starts_with("Invalid version")),
            "{err:?}"
        );
    }
    // Only named secrets have versions.
    let local = Secret::from_dict([("A", "1")]).version(3);
    assert_eq!(local.pinned_version(), None);
    for err in [
        local.history_with(&client).wait().unwrap_err(),
        local.rollback_with(&client, 1).wait().unwrap_err(),
        local.update_with(&client, [("A", "2")]).wait().unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::Invalid { message } if message.contains("Only a named secret")),
            "{err:?}"
        );
    }

    // Rollbacks: a new version; the current one and destroyed ones refused.
    let err = s.rollback_with(&client, 5).wait().unwrap_err();
    assert!(
        matches!(&err, Error::FailedPrecondition { message } if message.contains("at version 5 already")),
        "{err:?}"
    );
    let err = s.rollback_with(&client, 9).wait().unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { message } if message.contains("versions 1 to 5 are kept")),
        "{err:?}"
    );
    let info = s.rollback_with(&client, 1).wait().unwrap();
    assert_eq!(info.version, 6);
    assert_eq!(s.resolve_with(&client).wait().unwrap(), dict(&[("A", "1")]));
    let err = s
        .rollback_with(&client, 2)
        .expected_version(5)
        .wait()
        .unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition { .. }), "{err:?}");
    assert_eq!(
        s.rollback_with(&client, 2)
            .expected_version(6)
            .wait()
            .unwrap()
            .version,
        7
    );
    assert_eq!(
        s.history_with(&client).wait().unwrap()[0].action,
        VersionAction::RolledBack { to: 2 }
    );

    // Compare-and-swap updates.
    let err = s
        .update_with(&client, [("A", "lost")])
        .expected_version(6)
        .wait()
        .unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition { .. }), "{err:?}");
    let info = s
        .update_with(&client, [("A", "kept")])
        .expected_version(7)
        .wait()
        .unwrap();
    assert_eq!(info.version, 8);
    assert_eq!(
        s.resolve_with(&client).wait().unwrap(),
        dict(&[("A", "kept")])
    );

    // Debug never shows a value; a pinned secret travels as JSON.
    let pending = s.update_with(&client, [("TOKEN", "hunter2-value")]);
    assert!(!format!("{pending:?}").contains("hunter2"), "{pending:?}");
    assert!(format!("{pending:?}").contains("TOKEN"));
    let resolved = s.resolve_detailed_with(&client).wait().unwrap();
    assert!(!format!("{resolved:?}").contains("kept"), "{resolved:?}");
    let json = serde_json::to_string(&v2).unwrap();
    assert_eq!(serde_json::from_str::<Secret>(&json).unwrap(), v2);
    assert!(format!("{v2:?}").contains("version: Some(2)"), "{v2:?}");
}
