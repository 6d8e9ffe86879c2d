//! Functions in containers (issue 4 §2), against a real server.
//!
//! `harness = false`: every container is this program started again, so
//! `main` registers the functions and calls `run_container_if_requested`
//! before anything else, as a user's program does.

use std::{collections::BTreeMap, time::Duration};

use latchkey::{app::FunctionError, blocking::Wait, App, Isolation, Secret};

fn env_of(keys: Vec<String>) -> BTreeMap<String, Option<String>> {
    keys.into_iter()
        .map(|k| {
            let v = std::env::var(&k).ok();
            (k, v)
        })
        .collect()
}

fn whole_env(_: ()) -> BTreeMap<String, String> {
    std::env::vars().collect()
}

fn add(args: (i64, i64)) -> i64 {
    args.0 + args.1
}

fn fails(message: String) -> Result<(), String> {
    Err(message)
}

#[allow(clippy::needless_pass_by_value)] // a function takes its argument by value
fn panics(message: String) {
    panic!("{message}");
}

fn crashes(code: i32) {
    std::process::exit(code);
}

fn sleeps(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn my_pid(_: ()) -> u32 {
    std::process::id()
}

fn main() {
    let app = App::new("functions-test");
    let env_of = app.function("env_of", |keys: Vec<String>| {
        serde_json::to_value(env_of(keys)).unwrap()
    });
    let whole_env = app.function("whole_env", |a: ()| {
        serde_json::to_value(whole_env(a)).unwrap()
    });
    let add = app.function("add", add);
    let fails = app.function("fails", fails);
    let panics = app.function("panics", panics);
    let crashes = app.function("crashes", crashes);
    let sleeps = app.function("sleeps", sleeps);
    let my_pid = app.function("my_pid", my_pid);
    app.run_container_if_requested();

    let server = latchkey::testing::start_server().unwrap();
    server.export_env();
    let client = server.client().unwrap();
    client
        .secrets()
        .create("named", [("A", "named-a"), ("B", "named-b"), ("N", "n")])
        .wait()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "B=dotenv-b\nD=dotenv-d\n").unwrap();
    std::env::set_var("LOCAL_ONLY", "local-value");
    std::env::set_var("CALLER_SECRET_VAR", "must-not-leak");

    let mut passed = 0;
    let mut check = |name: &str, f: &dyn Fn()| {
        print!("test {name} ... ");
        f();
        println!("ok");
        passed += 1;
    };

    check("arguments_and_results_cross_as_serde_values", &|| {
        assert_eq!(add.remote((2, 40)).unwrap(), 42);
        let call = add.spawn((1, 2)).unwrap();
        assert_eq!(call.get().unwrap(), 3);
        let rt = tokio::runtime::Runtime::new().unwrap();
        assert_eq!(
            rt.block_on(async { add.spawn((5, 5)).unwrap().await })
                .unwrap(),
            10
        );
    });

    check(
        "secrets_apply_in_order_and_nothing_of_the_caller_leaks",
        &|| {
            let f = app_fn_with(&whole_env, &dir);
            let env: BTreeMap<String, String> =
                serde_json::from_value(f.remote(()).unwrap()).unwrap();
            assert_eq!(env["A"], "named-a");
            assert_eq!(env["B"], "dotenv-b", "the dotenv secret comes later");
            assert_eq!(env["D"], "dict-d", "the dict secret comes last");
            assert_eq!(env["LOCAL_ONLY"], "local-value");
            for key in env.keys() {
                assert!(
                    [
                        "PATH",
                        "HOME",
                        "LANG",
                        "TERM",
                        "USER",
                        "A",
                        "B",
                        "D",
                        "N",
                        "LOCAL_ONLY"
                    ]
                    .contains(&key.as_str()),
                    "{key} leaked into the container"
                );
            }
            assert!(client
                .secrets()
                .list()
                .wait()
                .unwrap()
                .iter()
                .all(|s| s.last_used_at.is_some()));
        },
    );

    check(
        "required_keys_are_checked_before_the_container_starts",
        &|| {
            let f = env_of.clone().secrets(vec![
                Secret::from_name("named").required_keys(["A", "MISSING"])
            ]);
            match f.remote(vec!["A".into()]) {
                Err(FunctionError::Secret { source, .. }) => {
                    assert!(source.to_string().contains("MISSING"), "{source}")
                }
                other => panic!("{other:?}"),
            }
            let f = env_of
                .clone()
                .secrets(vec![Secret::from_name("no-such-secret")]);
            let err = f.remote(vec![]).unwrap_err();
            assert!(err.to_string().contains("no-such-secret"), "{err}");
            let f = env_of
                .clone()
                .secrets(vec![Secret::from_name("named").required_keys(["A"])]);
            let env = f
                .remote(vec!["A".into(), "CALLER_SECRET_VAR".into()])
                .unwrap();
            assert_eq!(env["A"], "named-a");
            assert!(env["CALLER_SECRET_VAR"].is_null());
        },
    );

    check(
        "errors_panics_crashes_and_timeouts_come_back_with_their_message",
        &|| {
            let err = fails.remote("no luck".into()).unwrap_err();
            assert!(matches!(&err, FunctionError::Failed { message, .. } if message == "no luck"));
            let err = panics.remote("boom at 42".into()).unwrap_err();
            assert!(
                matches!(&err, FunctionError::Panicked { message, .. } if message == "boom at 42")
            );
            let err = crashes.remote(3).unwrap_err();
            assert!(matches!(&err, FunctionError::Crashed { .. }), "{err:?}");
            assert!(err.to_string().contains("status 3"), "{err}");
            let slow = sleeps.clone().timeout(Duration::from_millis(300));
            let started = std::time::Instant::now();
            let err = slow.remote(30_000).unwrap_err();
            assert!(matches!(err, FunctionError::Timeout { .. }), "{err:?}");
            assert!(started.elapsed() < Duration::from_secs(10));
            slow.remote(10).unwrap();
        },
    );

    check("bwrap_gives_a_pid_namespace_and_a_read_only_host", &|| {
        let in_bwrap = my_pid.clone().isolation(Isolation::Bwrap);
        if which("bwrap") {
            // The container is the first process of its own PID namespace
            // (bwrap's init is pid 1, the program pid 2).
            assert!(in_bwrap.remote(()).unwrap() <= 3);
        } else {
            let err = in_bwrap.remote(()).unwrap_err();
            assert!(matches!(err, FunctionError::Isolation { .. }), "{err:?}");
            assert!(err.to_string().contains("bubblewrap"));
        }
    });

    println!("\n{passed} passed");
}

fn which(name: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(name).is_file())
}

/// The function with the secrets of the precedence test.
fn app_fn_with(
    f: &latchkey::Function<(), serde_json::Value>,
    dir: &tempfile::TempDir,
) -> latchkey::Function<(), serde_json::Value> {
    f.clone().secrets(vec![
        Secret::from_name("named").required_keys(["A"]),
        Secret::from_dotenv(dir.path()).unwrap(),
        Secret::from_local_environ(["LOCAL_ONLY"]).unwrap(),
        Secret::from_dict([("D", "dict-d")]),
    ])
}
