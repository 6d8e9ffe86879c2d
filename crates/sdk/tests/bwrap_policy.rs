//! `Isolation::Bwrap` runs a function under the sandboxes' hardened policy
//! (issue 11): before, it kept every capability (the caller often is root in
//! a container) and left `/home`, `/root`, `/run`, the data dir and
//! `~/.latchkey.toml` readable.
//!
//! `harness = false`, like `functions`: every container is this program
//! started again. Skipped where `bwrap` is missing or cannot create
//! namespaces.

use std::path::Path;

use latchkey::{App, Isolation};

/// What the function sees of what it must not see.
fn probe(_: ()) -> Vec<String> {
    let read = |path: &Path| match std::fs::read_to_string(path) {
        Ok(text) => format!("read {} bytes: {text}", text.len()),
        Err(e) => format!("unreadable: {e}"),
    };
    let listing = |dir: &str| match std::fs::read_dir(dir) {
        Ok(entries) => entries.count().to_string(),
        Err(e) => format!("unreadable: {e}"),
    };
    let home = std::env::var("HOME").unwrap_or_default();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap_or("CapEff: ?")
        .to_owned();
    let data_dir = Path::new(&home).join("share/latchkey");
    vec![
        cap_eff,
        read(&Path::new(&home).join(".latchkey.toml")),
        read(&Path::new(&home).join("notes.txt")),
        read(&data_dir.join("master.key")),
        listing("/home"),
        listing("/root"),
    ]
}

fn main() {
    let app = App::new("bwrap-policy-test");
    let probe = app.function("probe", probe).isolation(Isolation::Bwrap);
    app.run_container_if_requested();

    if latchkey_launch::find_in_path("bwrap", std::env::var_os("PATH").unwrap_or_default())
        .is_none()
    {
        println!("skipped: no bwrap");
        return;
    }
    // A home outside the private /tmp (the old policy hid /tmp already),
    // holding a client config and the default data dir.
    let home = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    std::fs::write(
        home.path().join(".latchkey.toml"),
        "token_secret = 'as-secret'\n",
    )
    .unwrap();
    std::fs::write(home.path().join("notes.txt"), "visible\n").unwrap();
    let data_dir = home.path().join("share/latchkey");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(data_dir.join("master.key"), "key-material\n").unwrap();
    // Single-threaded still: nothing else reads the environment yet.
    std::env::set_var("HOME", home.path());
    std::env::set_var("XDG_DATA_HOME", home.path().join("share"));
    std::env::remove_var("LATCHKEY_CONFIG_PATH");
    std::env::remove_var("LATCHKEY_DATA_DIR");

    let seen = match probe.remote(()) {
        Ok(seen) => seen,
        Err(e) if e.to_string().contains("Creating new namespace failed") => {
            println!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let [cap_eff, config, notes, key, home_dir, root_dir] = seen.as_slice() else {
        panic!("{seen:?}");
    };
    assert_eq!(cap_eff, "CapEff:\t0000000000000000", "{seen:?}");
    assert!(!config.contains("as-secret"), "{seen:?}");
    assert!(!key.contains("key-material"), "{seen:?}");
    // The whole home is hidden, wherever it lives.
    assert!(notes.starts_with("unreadable"), "{seen:?}");
    assert_eq!(home_dir, "0", "/home is empty: {seen:?}");
    assert_eq!(root_dir, "0", "/root is empty: {seen:?}");
    println!("bwrap_policy: 1 passed");
}
