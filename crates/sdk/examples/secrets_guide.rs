//! Every snippet of Modal's guide to secrets, in Rust with latchkey.
//!
//! Run it against a server whose token is in the environment
//! (`LATCHKEY_SERVER_URL`, `LATCHKEY_TOKEN_ID`, `LATCHKEY_TOKEN_SECRET`),
//! from a directory holding a `.env` (with `USERNAME`) and a `.env-dev`, with
//! `API_KEY` and `SECRET_TOKEN` set:
//!
//! ```sh
//! cargo run -p latchkey-sdk --example secrets_guide
//! ```
//!
//! Each `@app.function(secrets=[...])` becomes a function of an [`App`]:
//! its calls run in a fresh process (a container) whose environment holds
//! only those secrets and a minimal base.

use latchkey::{blocking::Wait, App, Client, Secret};

// Modal: @app.function(secrets=[modal.Secret.from_dict({"FOO": "bar"})])
//        def run(): print(os.environ["FOO"])  # prints "bar"
fn print_foo(_: ()) -> Result<(), std::env::VarError> {
    println!("{}", std::env::var("FOO")?);
    Ok(())
}

// API_KEY and SECRET_TOKEN from the local environment are now available.
fn print_api_key(_: ()) -> Result<(), std::env::VarError> {
    println!("{}", std::env::var("API_KEY")?);
    Ok(())
}

// Assumes USERNAME is defined in the .env file.
fn print_username(_: ()) -> Result<(), std::env::VarError> {
    println!("{}", std::env::var("USERNAME")?);
    Ok(())
}

/// The keys of the container's environment that do not come from its base.
fn secret_keys(_: ()) -> Vec<String> {
    let mut keys: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| !latchkey::app::BASE_ENV.contains(&k.as_str()))
        .collect();
    keys.sort();
    keys
}

pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    // app = modal.App()
    let app = App::new("secrets-guide");

    // The functions, registered before the container check below.
    let from_dict = app.function("from_dict", print_foo);
    let from_local = app.function("from_local_environ", print_api_key);
    let from_dotenv = app.function("from_dotenv", print_username);
    let from_dotenv_dev = app.function("from_dotenv_dev", secret_keys);
    let from_name = app.function("from_name", secret_keys);
    let from_name_required = app.function("from_name_required", secret_keys);

    // In a container, run the function asked for, and exit. Secrets are
    // attached after this: only the caller reads them (its local
    // environment, its .env files), and the container receives their values.
    app.run_container_if_requested();

    // From a dictionary.
    let from_dict = from_dict.secrets([Secret::from_dict([("FOO", "bar")])]);

    // From local environment variables.
    let from_local = from_local.secrets([Secret::from_local_environ(["API_KEY", "SECRET_TOKEN"])?]);

    // From a .env file: Modal's `from_dotenv(__file__)` finds the .env of
    // the script's project; this program's project is the current directory.
    let from_dotenv = from_dotenv.secrets([Secret::from_dotenv(".")?]);
    // Another file name.
    let from_dotenv_dev = from_dotenv_dev.secrets([Secret::from_dotenv_with(None, ".env-dev")?]);

    // From the dashboard: a named secret, with required keys checked by the
    // server when the container starts.
    let secret = Secret::from_name("my-secret");
    let from_name = from_name.secrets([secret]);
    let secret = Secret::from_name("my-secret").required_keys(["API_KEY", "SECRET_TOKEN"]);
    let from_name_required = from_name_required.secrets([secret]);

    // The environment "dev" used below (an error if it exists already).
    let _ = Client::from_env()?.environments().create("dev").wait();

    // Create a named secret.
    let contents = [("MY_KEY", "my-value"), ("MY_OTHER_KEY", "my-other-value")];
    Secret::objects().create("my-secret", contents).wait()?;
    Secret::objects()
        .create("my-secret", contents)
        .environment_name("dev")
        .wait()?;
    let again = Secret::objects().create("my-secret", contents).wait();
    println!(
        "create again: already exists = {}",
        again.is_err_and(|e| e.is_already_exists())
    );
    Secret::objects()
        .create("my-secret", contents)
        .allow_existing(true)
        .wait()?;

    // The functions.
    from_dict.remote(())?;
    from_local.remote(())?;
    from_dotenv.remote(())?;
    println!(".env-dev keys: {:?}", from_dotenv_dev.remote(())?);
    println!("my-secret keys: {:?}", from_name.remote(())?);
    match from_name_required.remote(()) {
        Err(e) => println!("required keys: {e}"),
        Ok(keys) => println!("required keys present: {keys:?}"),
    }

    // List secrets.
    let secrets = Secret::objects().list().wait()?;
    println!("{:?}", secrets.iter().map(|s| &s.name).collect::<Vec<_>>());
    let dev_secrets = Secret::objects().list().environment_name("dev").wait()?;
    println!(
        "dev: {:?}",
        dev_secrets.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let secrets = Secret::objects()
        .list()
        .max_objects(10)
        .created_before("2025-01-01")
        .wait()?;
    println!("before 2025: {}", secrets.len());

    // Get secret information.
    let secret = Secret::from_name("my-secret");
    let info = secret.info().wait()?;
    println!("Created at: {}", info.created_at);
    println!("Created by: {}", info.created_by);

    // Update a secret: merged like dict.update().
    secret
        .update([("NEW_KEY", "new-value"), ("UPDATED_KEY", "updated-value")])
        .wait()?;
    println!("after update: {:?}", secret.info().wait()?.keys);

    // Delete a secret (irreversible).
    Secret::objects().delete("my-secret").wait()?;
    Secret::objects()
        .delete("my-secret")
        .environment_name("dev")
        .wait()?;
    Secret::objects()
        .delete("my-secret")
        .allow_missing(true)
        .wait()?;
    println!("left: {}", Secret::objects().list().wait()?.len());
    Ok(())
}
