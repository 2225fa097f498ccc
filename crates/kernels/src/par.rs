//! Work and span of a parallel computation, measured on any machine: what `pmixer bench --span`
//! uses to predict how a step would scale on more cores than this one has.
//!
//! A computation's **work** is the time all its pieces take one after another (what one core
//! would need); its **span** is the longest chain of pieces that must run in order (what
//! infinitely many cores would need). Brent's bound then says p cores need at most
//! work/p + span. Here every parallel region of a step hands its tasks a [`Region`], each task
//! times itself with [`Region::task`], and the region reports to the task (or the measured root)
//! that opened it:
//!
//! ```text
//! region:  work = Σ tasks' work          span = max tasks' span
//! task:    work = own + Σ its regions' work,   span = own + Σ its regions' span,
//!          own  = its wall time − its regions' wall time (the serial parts)
//! ```
//!
//! The bookkeeping lives in a per-thread stack of frames, one per running task: a nested region
//! adds to the frame on top of the thread that opened it. A thread waiting for a region may run
//! a stolen task meanwhile, but that task's frame goes on top and comes off before the wait
//! ends, so each region still reports to its own task. Off (the default) a task costs one atomic
//! load and nothing is allocated.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);

/// Seconds of work and span, and the wall time they were measured over.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WorkSpan {
    pub work: f64,
    pub span: f64,
    pub wall: f64,
}

thread_local! {
    /// The running tasks' frames on this thread: what their regions have reported so far.
    static FRAMES: RefCell<Vec<WorkSpan>> = const { RefCell::new(Vec::new()) };
}

/// Switches the accounting on or off for every thread.
pub fn set_enabled(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Runs `f` as the root of a measured computation (with the accounting on): its work and span,
/// its serial parts counted in both.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, WorkSpan) {
    FRAMES.with(|s| s.borrow_mut().push(WorkSpan::default()));
    let start = Instant::now();
    let r = f();
    let wall = start.elapsed().as_secs_f64();
    let nested = FRAMES.with(|s| s.borrow_mut().pop()).expect("the frame pushed above");
    let own = (wall - nested.wall).max(0.0);
    (r, WorkSpan { work: own + nested.work, span: own + nested.span, wall })
}

/// A parallel region being measured: its tasks' work summed, their spans' maximum.
#[derive(Default)]
pub struct Region {
    acc: Option<Mutex<(f64, f64)>>,
}

impl Region {
    /// Times one task of the region until the guard drops.
    pub fn task(&self) -> Task<'_> {
        match &self.acc {
            Some(acc) => {
                FRAMES.with(|s| s.borrow_mut().push(WorkSpan::default()));
                Task { region: Some((acc, Instant::now())) }
            }
            None => Task { region: None },
        }
    }
}

/// A running task of a [`Region`]; reports to it when dropped.
pub struct Task<'a> {
    region: Option<(&'a Mutex<(f64, f64)>, Instant)>,
}

impl Drop for Task<'_> {
    fn drop(&mut self) {
        if let Some((acc, start)) = self.region {
            let wall = start.elapsed().as_secs_f64();
            let nested = FRAMES.with(|s| s.borrow_mut().pop()).expect("the task's frame");
            let own = (wall - nested.wall).max(0.0);
            let mut a = acc.lock().unwrap_or_else(|e| e.into_inner());
            a.0 += own + nested.work;
            a.1 = a.1.max(own + nested.span);
        }
    }
}

/// Runs the parallel region `f`, whose tasks each call [`Region::task`] first; with the
/// accounting on and a measured task or root running on this thread, reports the region's work,
/// span and wall time to it.
pub fn region<R>(f: impl FnOnce(&Region) -> R) -> R {
    let measuring = enabled() && FRAMES.with(|s| !s.borrow().is_empty());
    if !measuring {
        return f(&Region::default());
    }
    let reg = Region { acc: Some(Mutex::new((0.0, 0.0))) };
    let start = Instant::now();
    let r = f(&reg);
    let wall = start.elapsed().as_secs_f64();
    let (work, span) = reg.acc.map_or((0.0, 0.0), |m| m.into_inner().unwrap_or_else(|e| e.into_inner()));
    FRAMES.with(|s| {
        if let Some(top) = s.borrow_mut().last_mut() {
            top.work += work;
            top.span += span;
            top.wall += wall;
        }
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::time::Duration;

    fn busy(ms: u64) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(ms) {}
    }

    #[test]
    fn work_and_span_of_nested_regions() {
        set_enabled(true);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        // Serial 10 ms, then 4 tasks of which one opens a region of two 20 ms tasks and waits
        // 5 ms itself: work = 10 + (3·10 + 5 + 40) = 85 ms; span = 10 + (5 + 20) = 35 ms.
        let (_, ws) = pool.install(|| {
            measure(|| {
                busy(10);
                region(|reg| {
                    (0..4).into_par_iter().for_each(|i| {
                        let _t = reg.task();
                        if i == 0 {
                            busy(5);
                            region(|inner| {
                                (0..2).into_par_iter().for_each(|_| {
                                    let _t = inner.task();
                                    busy(20);
                                })
                            });
                        } else {
                            busy(10);
                        }
                    })
                });
            })
        });
        set_enabled(false);
        // A busy-wait lasts at least its time, and longer when the machine preempts it: every
        // task is timed at its nominal length plus what preemption added, and all of that
        // together is the measured work's excess over 85 ms. So whatever the load, the span lies
        // between its nominal 35 ms and 35 ms plus that excess, and the tasks off the longest
        // chain (at least 3·10 + 20 ms) separate work from span. 10 ms of slack for the timing
        // itself.
        let excess = ws.work - 0.085;
        assert!(excess > -0.01, "{ws:?}");
        assert!(ws.span > 0.035 - 0.01 && ws.span < 0.035 + excess.max(0.0) + 0.01, "{ws:?}");
        assert!(ws.work - ws.span > 0.050 - 0.01, "{ws:?}");
        assert!(ws.wall >= ws.span - 1e-3, "{ws:?}");
    }
}
