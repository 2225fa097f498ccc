//! Ctrl-C during training: the first SIGINT asks the loop to stop after the current batch (the
//! trainer then writes a checkpoint and prints the resume command); a second one ends the process
//! at once with `_exit`, which is safe because checkpoints are only ever renamed into place.
//!
//! Only `signal(2)` and `_exit(2)` from the C library are needed, declared here directly; the
//! handler does nothing but an atomic increment (and `_exit`), both async-signal-safe.

use std::sync::atomic::{AtomicUsize, Ordering};

static HITS: AtomicUsize = AtomicUsize::new(0);

#[cfg(unix)]
mod unix {
    use super::{Ordering, HITS};

    const SIGINT: i32 = 2;

    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
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
            signal(SIGINT, on_sigint);
        }
    }
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
