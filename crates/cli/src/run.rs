//! `latchkey run`: runs a command with secrets in its environment.
//!
//! Sources (`--secret`, `--env-file`, `--local`, `--set`) are applied in the
//! order they are given, later ones overriding earlier ones key by key, as
//! Modal does with `secrets=[a, b]`. Everything that can fail (the command is
//! not found, a file cannot be read, a secret is unknown or lacks a required
//! key) fails before the command starts, with exit code 1.
//!
//! `--secret NAME@N` resolves the kept version N rather than the current
//! one. `--lock FILE` records the version each `--secret` resolved in a
//! lockfile (see [`crate::lock`]), written once every secret has resolved
//! and before the command starts; `--locked FILE` resolves exactly the
//! versions of a lockfile, in its place among the other sources.
//!
//! # Why spawn and wait rather than `exec`
//!
//! `exec` would hand the process over to the command, so signals would reach
//! it directly; but then `--mask` could not filter its output, and a command
//! killed by a signal would show as latchkey killed by that signal rather
//! than the promised exit code 128+signal. So in every mode latchkey spawns
//! the command (directly, no shell), waits for it and exits with its code.
//! While it waits, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent
//! to latchkey are forwarded to the command. A signal the terminal sends to
//! the whole foreground process group (Ctrl-C, hang-up) has already reached
//! the command, which shares latchkey's process group, so it is not sent a
//! second time.
//!
//! The signals are blocked and read from a `signalfd` (no handler, no unsafe
//! code). A blocked mask is inherited by a child and across exec, and
//! resetting it between fork and exec would need unsafe code, so the command
//! is started through `latchkey run --internal-exec` (hidden), which
//! unblocks them and execs the command in place: same pid, no shell.

use std::{
    collections::BTreeSet,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context};
use clap::{ArgMatches, Args, FromArgMatches};
use latchkey::{Client, EnvDict, Resolved, Secret};
use nix::{
    sys::{
        signal::{kill, SigSet, Signal},
        signalfd::SignalFd,
    },
    unistd::{getpgid, getpgrp, Pid},
};

use crate::{
    lock::{Lockfile, Pin},
    mask::{Masker, MASK_MIN_CHARS},
    output::usage,
};

/// The signals forwarded to the command.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// `si_code` of a signal sent by the kernel (e.g. the terminal driver).
const SI_KERNEL: i32 = 0x80;

/// The flags of `latchkey run`, as clap parses them. No `Debug`: `--set`
/// holds values.
#[derive(Args)]
#[command(after_help = "Examples:
  latchkey run --secret db:DATABASE_URL -- ./server --port 8080
  latchkey run --secret db --env-file .env --set MODE=dev -- npm start
  latchkey run --secret db@3 -- ./migrate.sh        # version 3 of db
  latchkey run --lock secrets.lock --secret db --secret api:TOKEN -- ./deploy.sh
  latchkey run --locked secrets.lock -- ./deploy.sh # exactly the locked versions
  latchkey run --isolate --mask --secret api -- env")]
struct RawRunArgs {
    /// A named secret, optionally at a kept version and with keys it must
    /// hold: NAME, NAME@VERSION, NAME:KEY,KEY,... or NAME@VERSION:KEY,...
    /// (keys checked by the server). Repeatable.
    #[arg(long = "secret", value_name = "NAME[@VERSION][:KEY,KEY...]")]
    secret: Vec<String>,
    /// Write the version each --secret resolved to FILE (a lockfile, no
    /// values), once every secret has resolved and before the command runs.
    #[arg(long, value_name = "FILE", conflicts_with = "locked")]
    lock: Option<PathBuf>,
    /// Resolve exactly the versions that FILE (written by --lock) records,
    /// in its place among the other sources; a version that is no longer
    /// kept, a deleted secret or environment is an error and nothing runs.
    #[arg(long, value_name = "FILE")]
    locked: Option<PathBuf>,
    /// Variables from a dotenv file. Repeatable.
    #[arg(long = "env-file", value_name = "PATH")]
    env_file: Vec<PathBuf>,
    /// Copy this variable from the caller's environment. Repeatable.
    #[arg(long = "local", value_name = "KEY")]
    local: Vec<String>,
    /// Set KEY to VALUE. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The environment of the named secrets (default: the client's).
    #[arg(long = "env", value_name = "E")]
    env: Option<String>,
    /// Give the command only PATH, HOME, LANG, TERM, USER and the secrets,
    /// not the caller's environment.
    #[arg(long)]
    isolate: bool,
    /// Replace every secret value (of 4 characters or more) in the
    /// command's stdout and stderr with *****.
    #[arg(long)]
    mask: bool,
    /// Internal: the second step of starting the command. latchkey starts
    /// itself with this flag and the command's final environment; it
    /// unblocks the forwarded signals (a blocked mask is inherited across
    /// exec and the standard library does not reset it) and execs the
    /// command, giving it ARG0 as its name.
    #[arg(long = "internal-exec", hide = true, value_name = "ARG0")]
    internal_exec: Option<OsString>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// One source of variables, in command-line order.
#[derive(Clone, PartialEq, Eq)]
enum Source {
    Secret(String),
    EnvFile(PathBuf),
    Local(String),
    Set(String),
    Locked(PathBuf),
}

/// Names what a source is without the value of `--set KEY=VALUE`.
impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Secret(spec) => f.debug_tuple("Secret").field(spec).finish(),
            Source::EnvFile(path) => f.debug_tuple("EnvFile").field(path).finish(),
            Source::Local(key) => f.debug_tuple("Local").field(key).finish(),
            Source::Locked(path) => f.debug_tuple("Locked").field(path).finish(),
            Source::Set(pair) => {
                let key = pair.split_once('=').map_or(pair.as_str(), |(k, _)| k);
                write!(f, "Set({key:?}=<hidden>)")
            }
        }
    }
}

/// The arguments of `latchkey run`: clap's flags plus the order in which the
/// sources were given, which clap's derive does not keep across flags.
pub(crate) struct RunArgs {
    raw: RawRunArgs,
    sources: Vec<Source>,
}

impl FromArgMatches for RunArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let raw = RawRunArgs::from_arg_matches(matches)?;
        let mut indexed: Vec<(usize, Source)> = Vec::new();
        let mut collect = |id: &str, make: &dyn Fn(usize) -> Source| {
            if let Some(indices) = matches.indices_of(id) {
                for (n, index) in indices.enumerate() {
                    indexed.push((index, make(n)));
                }
            }
        };
        collect("secret", &|n| Source::Secret(raw.secret[n].clone()));
        collect("env_file", &|n| Source::EnvFile(raw.env_file[n].clone()));
        collect("local", &|n| Source::Local(raw.local[n].clone()));
        collect("set", &|n| Source::Set(raw.set[n].clone()));
        collect("locked", &|_| {
            Source::Locked(raw.locked.clone().unwrap_or_default())
        });
        indexed.sort_by_key(|(index, _)| *index);
        let sources = indexed.into_iter().map(|(_, s)| s).collect();
        Ok(Self { raw, sources })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for RunArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        RawRunArgs::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        RawRunArgs::augment_args_for_update(cmd)
    }
}

/// Runs the command; on success this does not return: the process exits
/// with the command's code. An `Err` means nothing was run.
pub(crate) fn run(args: &RunArgs) -> anyhow::Result<()> {
    if let Some(arg0) = &args.raw.internal_exec {
        return exec_unblocked(arg0, &args.raw.command);
    }
    let program = find_program(&args.raw.command[0])?;
    let layers = sources_to_layers(&args.sources, args.raw.env.as_deref())?;
    let named_flags = layers.iter().any(|l| matches!(l.origin, Origin::Flag(_)));
    if args.raw.lock.is_some() && !named_flags {
        return Err(usage(
            "nothing to lock: --lock records the versions of --secret sources, and none is given",
        ));
    }
    let resolved = resolve(&layers, args.raw.env.as_deref())?;
    if let Some(path) = &args.raw.lock {
        lockfile_of(&layers, &resolved).write(path)?;
    }
    let layers: Vec<EnvDict> = resolved.into_iter().map(|r| r.values).collect();
    let mask_values = if args.raw.mask {
        values_to_mask(&layers)
    } else {
        Vec::new()
    };
    let env = latchkey::merge(layers);

    // Started through `latchkey run --internal-exec`: see `exec_unblocked`.
    let mut command = Command::new(std::env::current_exe().context("cannot find latchkey itself")?);
    command
        .arg("run")
        .arg("--internal-exec")
        .arg(&args.raw.command[0])
        .arg("--")
        .arg(&program)
        .args(&args.raw.command[1..]);
    if args.raw.isolate {
        // The same base as the SDK's function containers.
        command.env_clear().envs(latchkey_launch::base_env());
    }
    command.envs(&env);
    drop(env);

    let code = supervise(command, &program, mask_values)?;
    std::process::exit(code)
}

/// The last step before the command: the signals `supervise` blocked are
/// unblocked (the mask is inherited across exec, and the standard library
/// does not reset it in a child; doing it between fork and exec would take
/// unsafe code), then this process becomes the command, keeping its pid.
fn exec_unblocked(arg0: &std::ffi::OsStr, command: &[OsString]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    forwarded_set()
        .thread_unblock()
        .context("cannot unblock signals")?;
    let err = Command::new(&command[0])
        .arg0(arg0)
        .args(&command[1..])
        .exec();
    Err(anyhow::Error::new(err).context(format!("cannot run {}", command[0].to_string_lossy())))
}

fn forwarded_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in FORWARDED {
        set.add(signal);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// The program to run: `name` itself when it holds a `/`, else the first
/// executable `name` in the caller's `PATH`.
fn find_program(name: &std::ffi::OsStr) -> anyhow::Result<PathBuf> {
    let shown = name.to_string_lossy();
    if name.is_empty() {
        bail!("no command given");
    }
    let path = Path::new(name);
    if path.components().count() > 1 || shown.contains('/') {
        if latchkey_launch::is_executable(path) {
            return Ok(path.to_path_buf());
        }
        bail!("command not found or not executable: {shown}");
    }
    latchkey_launch::find_in_path(name, std::env::var_os("PATH").unwrap_or_default())
        .with_context(|| format!("command not found: {shown} (not in PATH)"))
}

/// `--secret NAME[@VERSION][:KEY,KEY...]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SecretSpec {
    name: String,
    version: Option<i64>,
    keys: Vec<String>,
}

impl SecretSpec {
    /// Reads a `--secret` argument; a mistake is a usage error naming it.
    /// Keys cannot hold ':' or '@' and names cannot hold '@', so the first
    /// ':' ends the name and version, and the last '@' before it starts the
    /// version.
    fn parse(spec: &str) -> anyhow::Result<SecretSpec> {
        let fail = |why: String| {
            usage(format!(
                "--secret '{}': {why}",
                latchkey_core::rules::echo(spec)
            ))
        };
        let (head, keys) = match spec.split_once(':') {
            Some((head, keys)) => (
                head,
                keys.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            ),
            None => (spec, Vec::new()),
        };
        if let Some((key, version)) = keys.iter().find_map(|k| k.split_once('@')) {
            return Err(fail(format!(
                "put the version before the keys: {head}@{version}:{key}"
            )));
        }
        let (name, version) = match head.rsplit_once('@') {
            None => (head, None),
            Some((name, "")) => {
                return Err(fail(format!(
                    "no version after '@' (expected {}@VERSION, e.g. {0}@3)",
                    if name.is_empty() { "NAME" } else { name }
                )))
            }
            Some((name, version)) => (
                name,
                Some(
                    latchkey_core::rules::parse_version(version)
                        .map_err(|e| fail(e.message().to_owned()))?,
                ),
            ),
        };
        if name.is_empty() {
            let before = if version.is_some() || head.contains('@') {
                '@'
            } else {
                ':'
            };
            return Err(fail(format!("no secret name before '{before}'")));
        }
        Ok(SecretSpec {
            name: name.to_owned(),
            version,
            keys,
        })
    }
}

/// Where a layer of variables comes from: what `--lock` records and what
/// an error names.
enum Origin {
    /// `--secret`.
    Flag(SecretSpec),
    /// An entry of the `--locked` file.
    Pinned { file: PathBuf, pin: Pin },
    /// `--env-file`, `--local`, `--set`.
    Local,
}

/// A source, ready to resolve.
struct Layer {
    secret: Secret,
    origin: Origin,
}

/// The sources as SDK secrets, in order; `--secret` arguments are checked,
/// and local files, variables and the lockfile read, before any request.
fn sources_to_layers(sources: &[Source], environment: Option<&str>) -> anyhow::Result<Vec<Layer>> {
    let mut layers = Vec::with_capacity(sources.len());
    for source in sources {
        match source {
            Source::Secret(text) => {
                let spec = SecretSpec::parse(text)?;
                let mut secret = Secret::from_name(&spec.name).required_keys(spec.keys.clone());
                if let Some(e) = environment {
                    secret = secret.environment_name(e);
                }
                if let Some(v) = spec.version {
                    secret = secret.version(v);
                }
                layers.push(Layer {
                    secret,
                    origin: Origin::Flag(spec),
                });
            }
            Source::Locked(path) => {
                for pin in Lockfile::read(path)?.pins {
                    layers.push(Layer {
                        secret: pin.secret(),
                        origin: Origin::Pinned {
                            file: path.clone(),
                            pin,
                        },
                    });
                }
            }
            Source::EnvFile(path) => layers.push(Layer {
                secret: read_env_file(path)?,
                origin: Origin::Local,
            }),
            Source::Local(key) => layers.push(Layer {
                secret: Secret::from_local_environ([key])?,
                origin: Origin::Local,
            }),
            Source::Set(pair) => match pair.split_once('=') {
                Some((key, value)) => layers.push(Layer {
                    secret: Secret::from_dict([(key, value)]),
                    origin: Origin::Local,
                }),
                // Not echoed: text without '=' may be a value typed without its key.
                None => bail!("a --set argument has no '=': expected KEY=VALUE"),
            },
        }
    }
    Ok(layers)
}

/// The lockfile of what `--secret` sources resolved, in command-line order.
fn lockfile_of(layers: &[Layer], resolved: &[Resolved]) -> Lockfile {
    let pins = layers
        .iter()
        .zip(resolved)
        .filter_map(|(layer, resolved)| match (&layer.origin, &resolved.info) {
            (Origin::Flag(spec), Some(info)) => Some(Pin {
                environment: info.environment_name.clone(),
                name: info.name.clone(),
                id: info.id.clone(),
                version: info.version,
                required_keys: spec.keys.clone(),
            }),
            _ => None,
        })
        .collect();
    Lockfile { pins }
}

fn read_env_file(path: &Path) -> anyhow::Result<Secret> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read env file {}", path.display()))?,
    );
    let entries = latchkey_core::dotenv::parse_with_process_env(&text)
        .map_err(|e| anyhow::anyhow!("env file {}: {e}", path.display()))?;
    Ok(Secret::from_dict(latchkey_core::dotenv::into_env_dict(
        entries,
    )))
}

/// Each layer's values, in order. The server checks named secrets' required
/// keys and records their use (`last_used_at`); a locked secret must still
/// be the one that was locked. The runtime is dropped before returning, so
/// that no thread of it outlives the resolution: signals must then reach
/// only the thread that forwards them.
fn resolve(layers: &[Layer], environment: Option<&str>) -> anyhow::Result<Vec<Resolved>> {
    let client = if layers.iter().any(|l| l.secret.name().is_some()) {
        let client = Client::from_env()?;
        Some(match environment {
            Some(e) => client.with_environment(Some(e)),
            None => client,
        })
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let resolved = runtime.block_on(async {
        let mut resolved = Vec::with_capacity(layers.len());
        for Layer { secret, origin } in layers {
            let what = || match origin {
                Origin::Flag(spec) => format!("secret '{}'", spec.name),
                Origin::Pinned { file, pin } => {
                    format!("lockfile {}: {}", file.display(), pin.label())
                }
                Origin::Local => "local secret".to_owned(),
            };
            let layer = match &client {
                Some(client) => secret.resolve_detailed_with(client).await,
                // A local secret never contacts the server.
                None => secret.resolve_detailed().await,
            }
            .with_context(what)?;
            if let (Origin::Pinned { pin, .. }, Some(info)) = (origin, &layer.info) {
                if info.id != pin.id {
                    bail!(
                        "{}: the secret was deleted and created again since it was \
                         locked (locked id {}, now {}); lock it again with --lock",
                        what(),
                        pin.id,
                        info.id
                    );
                }
            }
            resolved.push(layer);
        }
        anyhow::Ok(resolved)
    })?;
    drop(runtime);
    Ok(resolved)
}

/// Every value of every layer (overridden ones too) long enough to mask.
fn values_to_mask(layers: &[EnvDict]) -> Vec<Vec<u8>> {
    let set: BTreeSet<&str> = layers
        .iter()
        .flat_map(|layer| layer.values())
        .map(String::as_str)
        .filter(|v| v.chars().count() >= MASK_MIN_CHARS)
        .collect();
    set.into_iter().map(|v| v.as_bytes().to_vec()).collect()
}

/// Starts the command, forwards signals, filters its output if asked, and
/// returns the exit code to exit with.
fn supervise(mut command: Command, program: &Path, mask: Vec<Vec<u8>>) -> anyhow::Result<i32> {
    // Blocked before the command and the output threads start, so that
    // every thread of this process inherits the mask and the signals wait
    // in the signalfd. SIGCHLD tells that the command has ended.
    let set = forwarded_set();
    set.thread_block().context("cannot block signals")?;
    let signals = SignalFd::new(&set).context("cannot create a signalfd")?;

    let masking = !mask.is_empty();
    if masking {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);

    let mut pumps = Vec::new();
    if masking {
        let matcher = std::sync::Arc::new(Masker::new(&mask));
        if let Some(out) = child.stdout.take() {
            let m = matcher.clone();
            pumps.push(std::thread::spawn(move || {
                m.pump(out, std::io::stdout());
            }));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(std::thread::spawn(move || {
                matcher.pump(err, std::io::stderr());
            }));
        }
    }
    drop(mask);

    let status = loop {
        if let Some(status) = child.try_wait().context("cannot wait for the command")? {
            break status;
        }
        let Some(info) = signals.read_signal().context("cannot read signals")? else {
            continue;
        };
        let Ok(signal) = Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)) else {
            continue;
        };
        if signal == Signal::SIGCHLD {
            continue;
        }
        // The terminal signals the whole foreground process group: the
        // command got it already unless it left our group.
        let from_terminal = info.ssi_code == SI_KERNEL;
        let same_group = getpgid(Some(pid)).is_ok_and(|g| g == getpgrp());
        if !(from_terminal && same_group) {
            let _ = kill(pid, signal);
        }
    };
    for pump in pumps {
        let _ = pump.join();
    }
    Ok(latchkey_launch::Exit::of(status).shell_code(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_source_never_shows_a_set_value() {
        let shown = format!("{:?}", Source::Set("TOKEN=hunter2-value".to_owned()));
        assert!(shown.contains("TOKEN"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(
            format!("{:?}", Source::Local("HOME".to_owned())),
            "Local(\"HOME\")"
        );
    }

    #[test]
    fn secret_specs_name_a_version_and_keys() {
        let spec = |text: &str| SecretSpec::parse(text).map_err(|e| e.to_string());
        let ok = |name: &str, version: Option<i64>, keys: &[&str]| {
            Ok(SecretSpec {
                name: name.to_owned(),
                version,
                keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            })
        };
        assert_eq!(spec("db"), ok("db", None, &[]));
        assert_eq!(spec("db:A, B,"), ok("db", None, &["A", "B"]));
        assert_eq!(spec("db.prod@3"), ok("db.prod", Some(3), &[]));
        assert_eq!(spec("db@12:A,B"), ok("db", Some(12), &["A", "B"]));
        // Names cannot hold '@': the last one starts the version.
        assert_eq!(spec("a@b@2"), ok("a@b", Some(2), &[]));

        for (text, needle) in [
            ("db@", "no version after '@'"),
            ("db@:A", "no version after '@'"),
            ("db@0", "Invalid version 0: versions are numbered from 1"),
            ("db@-2", "Invalid version -2"),
            ("db@latest", "Invalid version 'latest'"),
            ("@3", "no secret name before '@'"),
            (":A", "no secret name before ':'"),
            ("db:A@3", "put the version before the keys: db@3:A"),
        ] {
            let e = spec(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(e.starts_with(&format!("--secret '{text}': ")), "{e}");
        }
    }
}
