//! Ctrl-C during training: the first SIGINT asks the loop to stop after the current batch (the
//! trainer then writes a checkpoint and prints the resume command); a second one ends the process
//! at once with `_exit`, which is safe because checkpoints are only ever renamed into place.
//!
//! A closed output pipe (`pmixer selftest | head -1`): Rust starts programs with SIGPIPE ignored,
//! so every later `println!` would panic on the write's EPIPE error; [`default_sigpipe`] restores
//! the default, under which the process ends quietly, as `cat` or `ls` do (checkpoints are only
//! ever renamed into place, so nothing saved is lost).
//!
//! Only `signal(2)` and `_exit(2)` from the C library are needed, declared here directly; the
//! handler does nothing but an atomic increment (and `_exit`), both async-signal-safe.

use std::sync::atomic::{AtomicUsize, Ordering};

static HITS: AtomicUsize = AtomicUsize::new(0);

#[cfg(unix)]
mod unix {
    use super::{Ordering, HITS};

    const SIGINT: i32 = 2;
    const SIGPIPE: i32 = 13;
    /// `SIG_DFL`, the default disposition.
    const DEFAULT: usize = 0;

    extern "C" {
        /// `handler` is a function's address, or `SIG_DFL`.
        fn signal(signum: i32, handler: usize) -> usize;
        fn _exit(code: i32) -> !;
    }

    extern "C" fn on_sigint(_: i32) {
        if HITS.fetch_add(1, Ordering::SeqCst) >= 1 {
            // SAFETY: _exit is async-signal-safe and never returns.
            unsafe { _exit(130) }
        }
    }

    pub fn install() {
        // SAFETY: installs a handler that only touches an atomic and calls _exit.
        unsafe {
            signal(SIGINT, on_sigint as extern "C" fn(i32) as usize);
        }
    }

    pub fn default_sigpipe() {
        // SAFETY: restores the default disposition; no handler of ours is involved.
        unsafe {
            signal(SIGPIPE, DEFAULT);
        }
    }
}

/// Lets a closed output pipe end the process quietly instead of making every print panic (a
/// no-op where there are no signals).
pub fn default_sigpipe() {
    #[cfg(unix)]
    unix::default_sigpipe();
}

/// Routes SIGINT to [`interrupted`] from now on (a no-op where there are no signals).
pub fn install() {
    #[cfg(unix)]
    unix::install();
}

/// Whether Ctrl-C has been pressed since [`install`].
pub fn interrupted() -> bool {
    HITS.load(Ordering::SeqCst) > 0
}
