//! `pmixer`: see `pmixer --help`. With no arguments it trains the MNIST classifier from
//! `data/mnist`, as the original notebook did.

use clap::Parser;
use pmixer::cli::{self, Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    pmixer::signal::default_sigpipe();
    let command = Cli::parse().command;
    // No subcommand means `train` with every default.
    let command = command.or_else(|| Cli::parse_from(["pmixer", "train"]).command);
    let command = command.expect("`train` parses with defaults");
    if let Err(e) = pmixer_kernels::simd::requested() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let result = cli::in_pool(command.threads(), || match command {
        Command::Train(a) => cli::train(*a),
        Command::Eval(a) => cli::eval(a),
        Command::Summary(a) => cli::summary(a),
        Command::Bench(a) => pmixer::bench::run(a),
        Command::Saliency(a) => cli::saliency(a),
        Command::Predict(a) => cli::predict(a),
        Command::Selftest(a) => pmixer::selftest::run(a),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
