//! A short fuzzing run of each target in the test suite (the long runs are in the issue notes):
//! it must execute, find new behaviours beyond the seeds, and find no panic.

#[test]
fn each_target_runs_without_panics() {
    std::panic::set_hook(Box::new(|_| {}));
    for (name, target) in [
        ("idx", pmixer_fuzz::idx as pmixer_fuzz::Target),
        ("cifar", pmixer_fuzz::cifar),
        ("checkpoint", pmixer_fuzz::checkpoint),
    ] {
        let seeds = pmixer_fuzz::seeds(name);
        assert!(seeds.iter().any(|s| target(s).is_ok()), "{name}: a seed must load");
        let n = seeds.len();
        let report = pmixer_fuzz::fuzz(target, seeds, 1.0, 7);
        let _ = std::panic::take_hook();
        assert!(report.execs > 100, "{name}: only {} executions", report.execs);
        assert!(report.corpus > n && report.outcomes > 3, "{name}: no new behaviour found");
        assert!(report.panics.is_empty(), "{name}: {:?}", report.panics.first().map(|p| &p.0));
        std::panic::set_hook(Box::new(|_| {}));
    }
}
