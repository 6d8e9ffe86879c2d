//! Runs `examples/secrets_guide.rs` (every snippet of Modal's guide to
//! secrets) against a real server and checks its output.
//!
//! The example is compiled into this test (`harness = false`), which runs
//! itself with `--run-guide` so that the example's containers, started from
//! the current executable with the same arguments, find their way back.

#[path = "../examples/secrets_guide.rs"]
mod guide;

use std::process::Command;

fn main() {
    if std::env::args().any(|a| a == "--run-guide") {
        if let Err(e) = guide::main() {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        return;
    }
    let server = latchkey::testing::start_server().unwrap();
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join(".env"), "USERNAME=ada\n").unwrap();
    std::fs::write(project.path().join(".env-dev"), "MODE=dev\n").unwrap();
    let config = server.config();
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("--run-guide")
        .current_dir(project.path())
        .env("LATCHKEY_SERVER_URL", config.server_url())
        .env("LATCHKEY_TOKEN_ID", config.token_id())
        .env("LATCHKEY_TOKEN_SECRET", config.token_secret())
        .env("LATCHKEY_CONFIG_PATH", project.path().join("none.toml"))
        .env_remove("LATCHKEY_ENVIRONMENT")
        .env_remove("LATCHKEY_PROFILE")
        .env("API_KEY", "k-123")
        .env("SECRET_TOKEN", "t-456")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let expected_start = [
        "create again: already exists = true",
        "bar",
        "k-123",
        "ada",
        ".env-dev keys: [\"MODE\"]",
        "my-secret keys: [\"MY_KEY\", \"MY_OTHER_KEY\"]",
        "required keys: function 'from_name_required': Secret is missing key(s): API_KEY, SECRET_TOKEN",
        "[\"my-secret\"]",
        "dev: [\"my-secret\"]",
        "before 2025: 0",
    ];
    assert_eq!(&lines[..expected_start.len()], &expected_start, "{stdout}");
    assert!(lines[10].starts_with("Created at: 20"), "{stdout}");
    assert_eq!(lines[11], "Created by: admin");
    assert_eq!(
        lines[12],
        "after update: [\"MY_KEY\", \"MY_OTHER_KEY\", \"NEW_KEY\", \"UPDATED_KEY\"]"
    );
    assert_eq!(lines[13], "left: 0");
    println!("secrets_guide: ok");
}
