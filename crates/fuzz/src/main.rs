//! `pmixer-fuzz <idx|cifar|checkpoint> [--seconds N] [--seed S] [--crashes DIR]`: see the
//! library docs. Exits non-zero if any input made a parser panic.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: pmixer-fuzz <idx|cifar|checkpoint> [--seconds N] [--seed S] [--crashes DIR]";
    let Some(name) = args.first().cloned() else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let target: pmixer_fuzz::Target = match name.as_str() {
        "idx" => pmixer_fuzz::idx,
        "cifar" => pmixer_fuzz::cifar,
        "checkpoint" => pmixer_fuzz::checkpoint,
        _ => {
            eprintln!("unknown target {name:?}\n{usage}");
            return ExitCode::from(2);
        }
    };
    let (mut seconds, mut seed, mut crashes) = (60.0, 1u64, std::path::PathBuf::from("fuzz-crashes"));
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next();
        let ok = match (flag.as_str(), value) {
            ("--seconds", Some(v)) => v.parse().map(|v| seconds = v).is_ok(),
            ("--seed", Some(v)) => v.parse().map(|v| seed = v).is_ok(),
            ("--crashes", Some(v)) => {
                crashes = v.into();
                true
            }
            _ => false,
        };
        if !ok {
            eprintln!("bad argument {flag:?}\n{usage}");
            return ExitCode::from(2);
        }
    }
    // Panics are findings, reported below; keep the default hook from printing each one.
    std::panic::set_hook(Box::new(|_| {}));
    let report = pmixer_fuzz::fuzz(target, pmixer_fuzz::seeds(&name), seconds, seed);
    println!("target: {name}");
    println!("seconds: {seconds}");
    println!("executions: {}", report.execs);
    println!("executions_per_s: {:.0}", report.execs as f64 / seconds);
    println!("corpus: {}", report.corpus);
    println!("distinct_outcomes: {}", report.outcomes);
    println!("panics: {}", report.panics.len());
    if report.panics.is_empty() {
        return ExitCode::SUCCESS;
    }
    let _ = std::fs::create_dir_all(&crashes);
    for (i, (msg, input)) in report.panics.iter().enumerate().take(20) {
        let path = crashes.join(format!("{name}-{i}.bin"));
        let _ = std::fs::write(&path, input);
        println!("panic {i}: {msg} (input saved to {})", path.display());
    }
    ExitCode::FAILURE
}
