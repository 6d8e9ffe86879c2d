//! What the targets that drive the real server (`api`, `grpc`) share: one
//! runtime and one bootstrapped service per process, over SQLite in a temp
//! dir, put back as it was after every input that changed it, so that an
//! input does the same thing whatever ran before it (which is what lets
//! libFuzzer minimize a crash).
//!
//! Starting a service takes far longer than one input, so it is made once;
//! only when the store's token list (which keeps revoked tokens) has grown
//! past [`MAX_TOKENS`] is it started afresh.

use std::{
    path::PathBuf,
    sync::{Mutex, MutexGuard, OnceLock, PoisonError},
};

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use latchkey_service::{testing::TestService, EnvironmentUpdate, Role, Service};

/// A token's id and secret.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) id: String,
    pub(crate) secret: String,
}

/// The service and what every input starts from: the workspace `default`,
/// its environment `main` with no secret, the admin token, a reader token,
/// and a developer token limited to `main` (which also keeps `main` from
/// being renamed: a rename would lock that token out).
pub(crate) struct World {
    pub(crate) test: TestService,
    /// Which service this is: 1 for the first, counting up each time one
    /// is started afresh (whatever a target builds over it must be too).
    pub(crate) generation: u64,
    pub(crate) admin: Credentials,
    pub(crate) reader: Credentials,
    pub(crate) limited: Credentials,
    /// The id of `main` (`en-...`): requests may name an environment by id.
    pub(crate) main_id: String,
    main_suffix: String,
    /// Token secrets that no answer may show.
    secrets: Vec<String>,
    secret_finder: Option<AhoCorasick>,
}

/// Past this many tokens (revoked ones stay listed) the service is started
/// afresh, so that listing tokens stays cheap.
const MAX_TOKENS: usize = 200;

/// The runtime every input runs on: one thread, so that inputs run one
/// after the other and alone.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        use_private_temp_dir();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// The world, started on first use. Call it inside [`runtime`]'s `block_on`.
pub(crate) async fn world() -> MutexGuard<'static, World> {
    static WORLD: OnceLock<Mutex<World>> = OnceLock::new();
    if WORLD.get().is_none() {
        let world = World::start().await;
        let _ = WORLD.set(Mutex::new(world));
    }
    WORLD
        .get()
        .expect("set above")
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Temp dirs (the SQLite store) go to a directory of this process, on
/// tmpfs when there is one (every commit is fsynced, which tmpfs makes
/// free); those of earlier processes that are gone (a crash, a minimizing
/// run that stopped them) are removed.
fn use_private_temp_dir() {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    const PREFIX: &str = "latchkey-fuzz-";
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !PathBuf::from("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("{PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir for the fuzz target");
    // Read by `tempfile` through `std::env::temp_dir`; set before the
    // runtime or any other thread starts.
    std::env::set_var("TMPDIR", &dir);
}

impl World {
    async fn start() -> Self {
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let generation = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let test = TestService::start().await;
        let admin = Credentials {
            id: test.admin_token_id().to_owned(),
            secret: test.admin_token_secret().to_owned(),
        };
        let (token, secret) = test.token("fuzz-reader", Role::Reader, None).await;
        let reader = Credentials {
            id: token.id,
            secret: secret.to_string(),
        };
        let (token, secret) = test
            .token(
                "fuzz-limited",
                Role::Developer,
                Some(vec!["main".to_owned()]),
            )
            .await;
        let limited = Credentials {
            id: token.id,
            secret: secret.to_string(),
        };
        let main = test
            .service()
            .environment(test.admin(), "")
            .await
            .expect("the default environment");
        let mut world = Self {
            secrets: Vec::new(),
            secret_finder: None,
            main_id: main.id,
            main_suffix: main.webhook_suffix,
            admin,
            reader,
            limited,
            test,
            generation,
        };
        for secret in [&world.admin, &world.reader, &world.limited].map(|c| c.secret.clone()) {
            world.never_show(secret);
        }
        world
    }

    pub(crate) fn service(&self) -> &Service {
        self.test.service()
    }

    /// From now on, no answer may show `secret` (nor a long piece of it).
    pub(crate) fn never_show(&mut self, secret: String) {
        self.secrets.push(secret);
        self.secret_finder = None;
    }

    /// The token secret, if any, that `text` shows: a secret or any run of
    /// 12 of its characters (a shortened echo is a leak too), unless that
    /// run is in `sent` too (what the caller sent: libFuzzer learns the
    /// bytes the process compares, secrets included, and a request may
    /// well have its own text echoed).
    pub(crate) fn shown_secret(&mut self, text: &[u8], sent: &[u8]) -> Option<&str> {
        const PIECE: usize = 12;
        let secrets = &self.secrets;
        let finder = self.secret_finder.get_or_insert_with(|| {
            let pieces: Vec<&str> = secrets
                .iter()
                .flat_map(|s| (0..=s.len().saturating_sub(PIECE)).map(move |i| &s[i..i + PIECE]))
                .collect();
            // Built again only when a token is made: the NFA builds fastest.
            AhoCorasick::builder()
                .kind(Some(AhoCorasickKind::NoncontiguousNFA))
                .build(pieces)
                .expect("patterns")
        });
        let piece = finder
            .find_iter(text)
            .map(|found| &text[found.start()..found.end()])
            .find(|piece| !sent.windows(PIECE).any(|w| w == *piece))?;
        self.secrets
            .iter()
            .find(|s| s.as_bytes().windows(PIECE).any(|w| w == piece))
            .map(String::as_str)
    }

    /// Puts the store back as every input finds it: no secret, no other
    /// environment, `main` as it was, no token but the three above.
    pub(crate) async fn reset(&mut self) {
        let service = self.test.service().clone();
        let admin = self.test.admin().clone();
        let tokens = service.list_tokens(&admin).await.expect("list tokens");
        if tokens.len() > MAX_TOKENS {
            *self = World::start().await;
            return;
        }
        let keep = [&self.admin.id, &self.reader.id, &self.limited.id];
        for token in tokens {
            if token.revoked_at.is_none() && !keep.contains(&&token.id) {
                service
                    .revoke_token(&admin, &token.id)
                    .await
                    .expect("revoke a token an input made");
            }
        }
        if self.secrets.len() > 3 {
            self.secrets.truncate(3);
            self.secret_finder = None;
        }
        for env in service
            .list_environments(&admin)
            .await
            .expect("list environments")
        {
            if !env.is_default {
                service
                    .delete_environment(&admin, &env.name, true)
                    .await
                    .expect("delete an environment an input made");
                continue;
            }
            assert_eq!(env.id, self.main_id, "the default environment changed");
            // A token is limited to `main`: renaming it would lock that
            // token out, which the service refuses (DESIGN.md, tokens).
            assert_eq!(
                env.name, "main",
                "`main` was renamed although a token is limited to it"
            );
            if env.webhook_suffix != self.main_suffix {
                service
                    .update_environment(
                        &admin,
                        "main",
                        EnvironmentUpdate {
                            name: None,
                            webhook_suffix: Some(self.main_suffix.clone()),
                        },
                    )
                    .await
                    .expect("put main's suffix back");
            }
        }
        loop {
            let (_, secrets) = service
                .list_secrets(&admin, "", None, None)
                .await
                .expect("list secrets");
            if secrets.is_empty() {
                break;
            }
            for secret in secrets {
                service
                    .delete_secret(&admin, &secret.id)
                    .await
                    .expect("delete a secret an input made");
            }
        }
        // Anonymous secrets are not listed; those past their time go.
        service.sweep_expired().await.expect("sweep");
    }
}

/// `s` with every ASCII letter and digit replaced by another of its kind
/// (ROT13, digits shifted by 5): the same length, and valid wherever `s`
/// is. An answer that shows `s` for one input and `disguise(s)` for the
/// same input with `s` disguised shows what the caller sent.
pub(crate) fn disguise(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' => char::from(b'a' + (c as u8 - b'a' + 13) % 26),
            'A'..='Z' => char::from(b'A' + (c as u8 - b'A' + 13) % 26),
            '0'..='9' => char::from(b'0' + (c as u8 - b'0' + 5) % 10),
            c => c,
        })
        .collect()
}

/// Values shorter than this are not looked for in messages: they show up
/// in ordinary words.
pub(crate) const MIN_VALUE_CHARS: usize = 4;

/// Whether a message that contains `value` could be showing it (see
/// [`disguise`]): long enough, and changed by disguising.
pub(crate) fn worth_checking(value: &str, message: &str) -> bool {
    value.chars().count() >= MIN_VALUE_CHARS && disguise(value) != value && message.contains(value)
}

/// A byte string for a request: `$L` grows into 40,000 `L` (longer than any
/// key or value may be), so that short inputs reach the length limits.
pub(crate) fn expand(bytes: &[u8]) -> Vec<u8> {
    const LONG: usize = 40_000;
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(at) = rest.windows(2).position(|w| w == b"$L") {
        out.extend_from_slice(&rest[..at]);
        out.extend(std::iter::repeat_n(b'L', LONG));
        rest = &rest[at + 2..];
    }
    out.extend_from_slice(rest);
    out
}
