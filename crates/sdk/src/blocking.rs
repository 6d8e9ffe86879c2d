//! Synchronous use: every call of this crate, waited for.
//!
//! The API is async; rather than a second copy of it, this module runs any of
//! its futures and builders to completion on a small runtime of its own:
//!
//! ```no_run
//! use latchkey::{blocking::Wait, Secret};
//!
//! fn main() -> latchkey::Result<()> {
//!     Secret::objects().create("my-secret", [("A", "1")]).allow_existing(true).wait()?;
//!     let env = Secret::from_name("my-secret").resolve().wait()?;
//!     println!("{:?}", env.keys());
//!     Ok(())
//! }
//! ```
//!
//! Waiting from inside an async runtime works too (the future then runs on
//! another thread, so the runtime's thread is blocked but not deadlocked);
//! in async code, prefer `.await`.

use std::{
    future::{Future, IntoFuture},
    sync::OnceLock,
};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("latchkey-blocking")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start latchkey's blocking runtime: {e}"))
    })
}

/// Runs `future` to completion and returns its output.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        // Blocking a runtime's thread on the same runtime would deadlock, and
        // tokio forbids nesting: wait on a helper thread instead.
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime().block_on(future))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    } else {
        runtime().block_on(future)
    }
}

/// `.wait()`: the blocking form of `.await`, for every future and builder of
/// this crate.
pub trait Wait: IntoFuture {
    /// Runs the call to completion on this module's runtime.
    fn wait(self) -> Self::Output;
}

impl<F> Wait for F
where
    F: IntoFuture + Send,
    F::IntoFuture: Send,
    F::Output: Send,
{
    fn wait(self) -> Self::Output {
        block_on(self.into_future())
    }
}
