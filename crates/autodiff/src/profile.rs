//! Where a step's time goes, op by op: calls, seconds and FLOPs for each op's forward and
//! backward, filled in by a [`crate::Tape`] that has a profile switched on, and by the trainer
//! for the work outside the tape (batch assembly, the optimizer).

/// Which half of an op a row measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Forward,
    Backward,
    /// Work outside the tape.
    Other,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Backward => "backward",
            Phase::Other => "-",
        }
    }
}

/// One op in one phase, summed over every call.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileRow {
    pub name: &'static str,
    pub phase: Phase,
    pub calls: u64,
    pub seconds: f64,
    pub flops: u64,
    /// Bytes moved to or from memory at the least ([`crate::Backward::bytes`]).
    pub bytes: u64,
}

/// A profile: rows in the order they were first seen, and the steps they add up to.
///
/// When a step runs on several threads at once (the trainer's shards), each thread keeps its own
/// profile and [`Profile::merge`] adds them: row times are then thread-seconds, `busy_seconds`
/// is the thread-seconds of everything profiled, and `step_seconds` stays wall-clock time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    pub rows: Vec<ProfileRow>,
    pub steps: u64,
    /// Wall-clock time of the steps.
    pub step_seconds: f64,
    /// Time the threads spent in profiled work, summed over threads (the share column's 100%).
    pub busy_seconds: f64,
}

impl Profile {
    pub fn record(&mut self, name: &'static str, phase: Phase, seconds: f64, flops: u64, bytes: u64) {
        let row = match self.rows.iter().position(|r| r.name == name && r.phase == phase) {
            Some(i) => &mut self.rows[i],
            None => {
                self.rows.push(ProfileRow { name, phase, calls: 0, seconds: 0.0, flops: 0, bytes: 0 });
                self.rows.last_mut().expect("just pushed")
            }
        };
        row.calls += 1;
        row.seconds += seconds;
        row.flops += flops;
        row.bytes += bytes;
    }

    /// Adds another thread's profile of the same steps: rows by name and phase, busy time.
    pub fn merge(&mut self, other: Profile) {
        for r in other.rows {
            let i = match self.rows.iter().position(|s| s.name == r.name && s.phase == r.phase) {
                Some(i) => i,
                None => {
                    self.rows.push(ProfileRow { calls: 0, seconds: 0.0, flops: 0, bytes: 0, ..r });
                    self.rows.len() - 1
                }
            };
            self.rows[i].calls += r.calls;
            self.rows[i].seconds += r.seconds;
            self.rows[i].flops += r.flops;
            self.rows[i].bytes += r.bytes;
        }
        self.busy_seconds += other.busy_seconds;
    }

    /// The table: op, phase, calls, thread-ms, share of the busy time, GFLOP/s per thread and,
    /// given the per-thread FMA roof in GFLOP/s, that rate's fraction of it; slowest first.
    pub fn table(&self, roof_gflops: Option<f64>) -> String {
        let mut rows = self.rows.clone();
        rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        let mut out = format!(
            "{:<22} {:<9} {:>9} {:>11} {:>7} {:>9} {:>8}\n",
            "op", "phase", "calls", "thread ms", "share", "GFLOP/s", "of roof"
        );
        let total = self.busy_seconds.max(1e-12);
        let mut covered = 0.0;
        for r in &rows {
            covered += r.seconds;
            let rate = (r.flops > 0).then(|| r.flops as f64 / r.seconds.max(1e-12) / 1e9);
            let gflops = rate.map_or("-".into(), |g| format!("{g:.1}"));
            let of_roof = match (rate, roof_gflops) {
                (Some(g), Some(roof)) => format!("{:.0}%", 100.0 * g / roof),
                _ => "-".into(),
            };
            out.push_str(&format!(
                "{:<22} {:<9} {:>9} {:>11.1} {:>6.1}% {:>9} {:>8}\n",
                r.name,
                r.phase.name(),
                r.calls,
                r.seconds * 1e3,
                100.0 * r.seconds / total,
                gflops,
                of_roof
            ));
        }
        let steps = self.steps.max(1) as f64;
        out.push_str(&format!(
            "{} steps, {:.2} ms per step (wall clock), {:.2} thread-ms per step busy; the rows cover {:.1}% of that\n",
            self.steps,
            1e3 * self.step_seconds / steps,
            1e3 * self.busy_seconds / steps,
            100.0 * covered / total
        ));
        if let Some(roof) = roof_gflops {
            out.push_str(&format!("of roof: the op's GFLOP/s per thread against one thread's measured FMA peak, {roof:.1} GFLOP/s\n"));
        }
        out
    }
}
