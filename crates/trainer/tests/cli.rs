//! The `pmixer` binary end to end, on small IDX and CIFAR files the tests write themselves.

use pmixer::testdata;
use pmixer_model::Checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn pmixer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pmixer")).args(args).output().expect("the pmixer binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pmixer-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The value of `key` in the epoch lines the trainer prints (`… key 0.1234 …`).
fn column(stdout: &str, key: &str) -> Vec<f64> {
    stdout
        .lines()
        .filter(|l| l.starts_with("epoch "))
        .map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == key).and_then(|_| words.next()).unwrap().parse().unwrap()
        })
        .collect()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "pmixer failed:\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn trains_on_idx_files_then_eval_reproduces_the_logged_test_metric() {
    let dir = scratch("idx");
    let data = dir.join("data");
    testdata::write_idx_dir(&data, 640, 200, 12, 10, true).unwrap();
    let run = dir.join("run");
    let out = pmixer(&[
        "train",
        "--data-dir",
        s(&data),
        "--layers",
        "2",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--lr",
        "0.01",
        "--out",
        s(&run),
    ]);
    assert_ok(&out);
    let stdout = text(&out.stdout);
    let loss = column(&stdout, "train_loss");
    assert_eq!(loss.len(), 3, "{stdout}");
    assert!(loss[2] < loss[0] * 0.8, "training loss did not fall: {loss:?}");
    // metrics.csv: a header and one line per epoch; its last test columns are what eval prints.
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "epoch,train_loss,train_accuracy,test_loss,test_accuracy,seconds,samples_per_s,lr");
    assert_eq!(lines.len(), 4);
    let last: Vec<&str> = lines[3].split(',').collect();
    let ck = run.join("checkpoint.safetensors");
    let ev = pmixer(&["eval", "--checkpoint", s(&ck), "--batch-size", "32"]);
    assert_ok(&ev);
    let evs = text(&ev.stdout);
    assert!(evs.contains(&format!("test_loss: {}\n", last[3])), "{evs} vs {}", lines[3]);
    assert!(evs.contains(&format!("test_accuracy: {}\n", last[4])), "{evs} vs {}", lines[3]);
    // The checkpoint parses and writes back to the very same bytes.
    let bytes = std::fs::read(&ck).unwrap();
    assert_eq!(Checkpoint::from_bytes(&bytes).unwrap().to_bytes(), bytes);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trains_a_cifar_autoencoder_from_mixed_plain_and_gzipped_batches() {
    let dir = scratch("cifar");
    let data = dir.join("cifar");
    testdata::write_cifar_dir(&data, 24, 30).unwrap();
    let run = dir.join("run");
    let out = pmixer(&[
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        s(&data),
        "--task",
        "autoencode",
        "--layers",
        "1",
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--lr",
        "0.003",
        "--out",
        s(&run),
    ]);
    assert_ok(&out);
    let rmse = column(&text(&out.stdout), "test_rmse");
    assert!(rmse[2] < rmse[0], "reconstruction error did not fall: {rmse:?}");
    let ev = pmixer(&["eval", "--checkpoint", s(&run.join("checkpoint.safetensors")), "--batch-size", "16"]);
    assert_ok(&ev);
    assert!(text(&ev.stdout).contains("test_rmse: "));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_interrupted_run_resumed_ends_with_the_same_checkpoint() {
    let dir = scratch("resume");
    let data = dir.join("data");
    testdata::write_idx_dir(&data, 300, 60, 8, 9, false).unwrap();
    // Shards of 8 (4 per batch): the resumed run must keep the recorded shard size, or its sums
    // would differ from the uninterrupted run's.
    let common =
        ["--data-dir", s(&data), "--layers", "2", "--batch-size", "32", "--seed", "5", "--shard", "8"];
    let (full, part) = (dir.join("full"), dir.join("part"));
    let run = |extra: &[&str]| {
        let mut args = vec!["train"];
        args.extend_from_slice(&common);
        args.extend_from_slice(extra);
        let out = pmixer(&args);
        assert_ok(&out);
    };
    run(&["--epochs", "3", "--out", s(&full)]);
    run(&["--epochs", "1", "--out", s(&part)]);
    let out = pmixer(&["train", "--resume", s(&part), "--epochs", "3"]);
    assert_ok(&out);
    assert!(text(&out.stderr).contains("resuming after epoch 1 of 3"));
    let a = std::fs::read(full.join("checkpoint.safetensors")).unwrap();
    let b = std::fs::read(part.join("checkpoint.safetensors")).unwrap();
    assert!(a == b, "the resumed run's checkpoint differs from the uninterrupted run's");
    let csv = std::fs::read_to_string(part.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn impossible_flags_are_usage_errors() {
    for (args, flag) in [
        (&["train", "--batch-size", "0"][..], "--batch-size"),
        (&["train", "--lr", "0"], "--lr"),
        (&["train", "--lr", "-1e-3"], "--lr"),
        (&["train", "--lr", "NaN"], "--lr"),
        (&["train", "--lr", "inf"], "--lr"),
        (&["train", "--threads", "0"], "--threads"),
        (&["train", "--dataset", "imagenet"], "--dataset"),
        (&["train", "--task", "segment"], "--task"),
        (&["train", "--optimizer", "lbfgs"], "--optimizer"),
        (&["train", "--epochs", "0"], "--epochs"),
        (&["train", "--shard", "0"], "--shard"),
        (&["train", "--resume", "runs/x", "--shard", "4"], "--shard"),
        (&["bench", "--shard", "0"], "--shard"),
    ] {
        let out = pmixer(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(flag) && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn missing_data_and_unwritable_run_directories_are_clear_errors() {
    let dir = scratch("errors");
    let out = pmixer(&["train", "--data-dir", s(&dir.join("nowhere")), "--out", s(&dir.join("run"))]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("nowhere") && err.contains("data directory not found"), "{err}");
    // A run directory inside a regular file cannot be created: refused before any training.
    let file = dir.join("file");
    std::fs::write(&file, b"x").unwrap();
    let out = pmixer(&["train", "--out", s(&file.join("run"))]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cannot create the run directory") && err.contains("file/run"), "{err}");
    // eval of something that is not a checkpoint.
    let out = pmixer(&["eval", "--checkpoint", s(&file)]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(s(&file)) && err.contains("shorter than the 8-byte header length"), "{err}");
    assert!(!err.contains("panicked"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn summary_prints_the_originals_parameter_counts() {
    for (args, total) in [
        (&["summary"][..], "Total params: 52,616"),
        (&["summary", "--dataset", "cifar10"], "Total params: 665,008"),
        (&["summary", "--task", "autoencode"], "Total params: 6,496"),
        (&["summary", "--dataset", "cifar10", "--task", "autoencode"], "Total params: 41,472"),
    ] {
        let out = pmixer(args);
        assert_ok(&out);
        let stdout = text(&out.stdout);
        assert!(stdout.contains(total) && stdout.contains("Forward FLOPs per sample"), "{stdout}");
    }
}

/// Trains one small epoch into `dir/run` and returns its checkpoint path.
fn one_epoch(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    testdata::write_idx_dir(&data, 128, 32, 6, 5, false).unwrap();
    let run = dir.join("run");
    let args = [
        "train",
        "--data-dir",
        s(&data),
        "--layers",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        s(&run),
    ];
    assert_ok(&pmixer(&args));
    run.join("checkpoint.safetensors")
}

#[test]
fn a_diverging_run_stops_naming_epoch_and_step_and_keeps_the_last_checkpoint() {
    let dir = scratch("diverge");
    let ck_path = one_epoch(&dir);
    // Poison the saved weights (as a diverging update would) and ask for more epochs.
    let mut ck = Checkpoint::load(&ck_path).unwrap();
    ck.tensors.iter_mut().find(|t| t.name == "mixer.0.row.dense1.kernel").unwrap().data[3] = f32::NAN;
    ck.metadata.insert("train.epochs".into(), "3".into());
    ck.save(&ck_path).unwrap();
    let before = std::fs::read(&ck_path).unwrap();
    let out = pmixer(&["train", "--resume", s(ck_path.parent().unwrap())]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("training diverged at epoch 2, step 1: the loss is"), "{err}");
    assert_eq!(std::fs::read(&ck_path).unwrap(), before, "the last checkpoint was changed");
    // A huge learning rate: caught at once, and no checkpoint of unusable weights is written.
    let run = dir.join("huge-lr");
    let out = pmixer(&[
        "train",
        "--data-dir",
        s(&dir.join("data")),
        "--layers",
        "1",
        "--optimizer",
        "sgd",
        "--lr",
        "1e30",
        "--out",
        s(&run),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("training diverged at epoch 1"), "{}", text(&out.stderr));
    assert!(!run.join("checkpoint.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_partial_temp_file_from_a_killed_write_does_not_stop_a_resume() {
    let dir = scratch("tmpfile");
    let ck_path = one_epoch(&dir);
    let run = ck_path.parent().unwrap();
    let mut ck = Checkpoint::load(&ck_path).unwrap();
    ck.metadata.insert("train.epochs".into(), "2".into());
    ck.save(&ck_path).unwrap();
    // What a kill in the middle of a checkpoint write leaves: half a temp file beside the target.
    let bytes = std::fs::read(&ck_path).unwrap();
    std::fs::write(run.join("checkpoint.safetensors.tmp"), &bytes[..bytes.len() / 2]).unwrap();
    let out = pmixer(&["train", "--resume", s(run)]);
    assert_ok(&out);
    assert!(Checkpoint::load(&ck_path).unwrap().metadata["train.epoch"] == "2");
    assert!(!run.join("checkpoint.safetensors.tmp").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_existing_run_is_never_overwritten_and_metrics_errors_are_reported() {
    let dir = scratch("clobber");
    let ck_path = one_epoch(&dir);
    let run = ck_path.parent().unwrap();
    let before = std::fs::read(&ck_path).unwrap();
    let out = pmixer(&["train", "--data-dir", s(&dir.join("data")), "--out", s(run)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already holds a run; continue it with --resume"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&ck_path).unwrap(), before);
    // metrics.csv replaced by something that cannot be written: the error is reported up front.
    let mut ck = Checkpoint::load(&ck_path).unwrap();
    ck.metadata.insert("train.epochs".into(), "2".into());
    ck.save(&ck_path).unwrap();
    std::fs::remove_file(run.join("metrics.csv")).unwrap();
    std::fs::create_dir(run.join("metrics.csv")).unwrap();
    let out = pmixer(&["train", "--resume", s(run)]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("metrics.csv: exists and is not a regular file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_rejects_checkpoints_that_do_not_fit_the_data() {
    let dir = scratch("mismatch");
    let ck_path = one_epoch(&dir);
    let other = dir.join("other");
    testdata::write_idx_dir(&other, 16, 16, 7, 5, false).unwrap();
    let out = pmixer(&["eval", "--checkpoint", s(&ck_path), "--data-dir", s(&other)]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("the model takes 6×5 images but") && err.contains("has 7×5"), "{err}");
    // A truncated checkpoint names the file and the cause.
    let bytes = std::fs::read(&ck_path).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let out = pmixer(&["eval", "--checkpoint", s(&cut)]);
    let err = text(&out.stderr);
    assert!(err.contains("cut.safetensors") && err.contains("truncated"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn interrupted_mid_epoch_and_resumed_equals_uninterrupted() {
    let dir = scratch("midepoch");
    let data = dir.join("data");
    testdata::write_idx_dir(&data, 300, 60, 8, 9, false).unwrap();
    let args = |out: &Path| -> Vec<String> {
        [
            "train",
            "--data-dir",
            s(&data),
            "--layers",
            "2",
            "--batch-size",
            "32",
            "--epochs",
            "2",
            "--out",
            s(out),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let (full, part) = (dir.join("full"), dir.join("part"));
    assert_ok(&Command::new(env!("CARGO_BIN_EXE_pmixer")).args(args(&full)).output().unwrap());
    // Interrupted after step 4 of the first epoch (of 10 steps).
    let out = Command::new(env!("CARGO_BIN_EXE_pmixer"))
        .args(args(&part))
        .env("PMIXER_INTERRUPT_AFTER_STEP", "4")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("interrupted at epoch 1, step 4") && err.contains("resume with: pmixer train --resume"),
        "{err}"
    );
    let ck = Checkpoint::load(&part.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.metadata["train.step_in_epoch"], "4");
    assert_ok(&pmixer(&["train", "--resume", s(&part)]));
    let a = std::fs::read(full.join("checkpoint.safetensors")).unwrap();
    let b = std::fs::read(part.join("checkpoint.safetensors")).unwrap();
    assert!(a == b, "resuming from the middle of an epoch changed the result");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts a 40-epoch run on 2,000 synthetic 28×28 images in `dir/run` and returns once its first
/// checkpoint exists: a run long enough to be interrupted.
#[cfg(unix)]
fn start_long_run(dir: &Path) -> (std::process::Child, PathBuf, Vec<String>) {
    let data = dir.join("data");
    testdata::write_idx_dir(&data, 2000, 100, 28, 28, false).unwrap();
    let run = dir.join("run");
    let args: Vec<String> =
        ["train", "--data-dir", s(&data), "--layers", "2", "--epochs", "40", "--threads", "1"]
            .iter()
            .map(|a| a.to_string())
            .collect();
    let child = Command::new(env!("CARGO_BIN_EXE_pmixer"))
        .args(&args)
        .args(["--out", s(&run)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !run.join("checkpoint.safetensors").exists() && t.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child, run, args)
}

fn sigint(child: &std::process::Child) {
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
}

#[cfg(unix)]
#[test]
fn ctrl_c_checkpoints_prints_the_resume_command_and_the_run_resumes_exactly() {
    let dir = scratch("sigint");
    let (child, run, args) = start_long_run(&dir);
    sigint(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("interrupted at epoch")
            && err.contains(&format!("resume with: pmixer train --resume {}", s(&run))),
        "{err}"
    );
    // The checkpoint is whole, and resuming finishes the run exactly as an uninterrupted one.
    let ck_path = run.join("checkpoint.safetensors");
    Checkpoint::load(&ck_path).unwrap();
    assert_ok(&pmixer(&["train", "--resume", s(&run)]));
    let full = dir.join("full");
    assert_ok(
        &Command::new(env!("CARGO_BIN_EXE_pmixer")).args(&args).args(["--out", s(&full)]).output().unwrap(),
    );
    assert!(std::fs::read(&ck_path).unwrap() == std::fs::read(full.join("checkpoint.safetensors")).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn profile_reports_each_op_forward_and_backward() {
    let dir = scratch("profile");
    let data = dir.join("data");
    testdata::write_idx_dir(&data, 128, 16, 6, 7, false).unwrap();
    let run = dir.join("run");
    let out = pmixer(&[
        "train",
        "--data-dir",
        s(&data),
        "--layers",
        "2",
        "--epochs",
        "1",
        "--profile",
        "--out",
        s(&run),
    ]);
    assert_ok(&out);
    let stdout = text(&out.stdout);
    for row in
        ["gated axis_mlp rows", "axis_mlp cols", "axis_mlp rows", "softmax_cross_entropy", "adam", "batch"]
    {
        assert!(stdout.contains(row), "no {row} row in:\n{stdout}");
    }
    // 2 steps × 2 shards of 32 samples × (2 layers + the head) calls of the column MLP, per
    // phase; the layers' row MLPs are gated (2 × 2 × 2 calls), the head's is not.
    for (op, calls) in [("axis_mlp cols", "12"), ("gated axis_mlp rows", "8")] {
        let line = stdout.lines().find(|l| l.starts_with(op) && l.contains("backward")).unwrap();
        let n = line.strip_prefix(op).unwrap().split_whitespace().nth(1);
        assert_eq!(n, Some(calls), "{line}");
    }
    assert!(stdout.contains("2 steps,") && stdout.contains("thread-ms per step busy"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[test]
fn a_second_ctrl_c_exits_at_once_and_the_last_checkpoint_stays_whole() {
    let dir = scratch("sigint2");
    let (child, run, _) = start_long_run(&dir);
    sigint(&child);
    sigint(&child);
    let out = child.wait_with_output().unwrap();
    // 130 when the second signal ended the process; 1 if the graceful stop finished first.
    assert!(matches!(out.status.code(), Some(130) | Some(1)), "{:?}", out.status);
    let ck = Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    assert!(pmixer::train::from_checkpoint(&ck).is_ok());
    assert_ok(&pmixer(&["train", "--resume", s(&run), "--epochs", "2"]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn training_is_bitwise_independent_of_the_thread_count() {
    // 300 images in batches of 64 (shards of 32, 32; the last batch 44 = 32 + 12), of 20 (one
    // shard each), and of 64 in shards of 5 (twelve of 5 and one of 4; the last batch 8 + 4):
    // every path through the shard split, on 1, 2 and 3 threads.
    let dir = scratch("threads");
    let data = dir.join("data");
    testdata::write_idx_dir(&data, 300, 50, 12, 10, false).unwrap();
    let mut first = Vec::new();
    for (batch, shard) in [("64", "32"), ("20", "32"), ("64", "5")] {
        let mut checkpoints = Vec::new();
        for threads in ["1", "2", "3"] {
            let run = dir.join(format!("run-{batch}-{shard}-{threads}"));
            #[rustfmt::skip]
            let args = ["train", "--data-dir", s(&data), "--layers", "3", "--epochs", "2", "--batch-size", batch,
                "--shard", shard, "--threads", threads, "--out", s(&run)];
            assert_ok(&pmixer(&args));
            checkpoints.push(std::fs::read(run.join("checkpoint.safetensors")).unwrap());
        }
        assert!(checkpoints[0] == checkpoints[1], "batch {batch}, shard {shard}: 1 and 2 threads differ");
        assert!(checkpoints[0] == checkpoints[2], "batch {batch}, shard {shard}: 1 and 3 threads differ");
        let ck = Checkpoint::from_bytes(&checkpoints[0]).unwrap();
        assert_eq!(ck.metadata["train.shard"], shard);
        first.push(ck);
    }
    // The shard size is part of the arithmetic: shards of 5 sum the gradients in another order.
    let weights = |ck: &Checkpoint| ck.tensor("mixer.0.row.dense1.kernel").unwrap().data.clone();
    assert!(weights(&first[0]) != weights(&first[2]), "shards of 5 and of 32 gave the same weights");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reader that stops early (`pmixer summary | head -1`) ends pmixer quietly: no panic about a
/// broken pipe, no backtrace. (The summary of 4,000 layers is about 280 KB, more than a pipe's
/// buffer holds, so pmixer is still writing when the reader goes.)
#[cfg(unix)]
#[test]
fn a_closed_output_pipe_ends_pmixer_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_pmixer"))
        .args(["summary", "--layers", "4000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the pmixer binary runs");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut first).unwrap();
    assert!(first.starts_with("Model: "), "first line: {first:?}");
    // The reader is dropped here: every later write meets a closed pipe.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

/// The strong recipe (crop, flip, cutout, CutMix, label smoothing, AdamW, warmup and cosine,
/// test-time flips) interrupted in the middle of an epoch and resumed ends with the checkpoint of
/// the uninterrupted run, on 1 thread or 3; its metrics log the scheduled rate; `eval` reports
/// its last test pass (with flips, as the run tested); and it differs from the seed recipe's run.
#[test]
fn a_strong_recipe_run_resumes_bitwise_and_is_independent_of_the_thread_count() {
    let dir = scratch("strong");
    let data = dir.join("data");
    testdata::write_idx_dir(&data, 300, 60, 8, 9, false).unwrap();
    #[rustfmt::skip]
    let args = |out: &Path, threads: &str, recipe: &str| -> Vec<String> {
        ["train", "--data-dir", s(&data), "--layers", "2", "--batch-size", "32", "--epochs", "3", "--recipe", recipe,
         "--flip", "--crop-pad", "2", "--cutout", "3", "--cutmix", "0.5", "--test-flip", "--warmup-epochs", "1", "--threads", threads, "--out", s(out)]
            .iter().map(|a| a.to_string()).collect()
    };
    let run = |out: &Path, threads: &str, recipe: &str, interrupt: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pmixer"));
        c.args(args(out, threads, recipe));
        if let Some(step) = interrupt {
            c.env("PMIXER_INTERRUPT_AFTER_STEP", step);
        }
        c.output().unwrap()
    };
    let (full, part, three, seed) = (dir.join("full"), dir.join("part"), dir.join("three"), dir.join("seed"));
    assert_ok(&run(&full, "2", "strong", None));
    assert_ok(&run(&three, "3", "strong", None));
    assert_ok(&run(&seed, "2", "seed", None));
    let out = run(&part, "1", "strong", Some("4"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_ok(&pmixer(&["train", "--resume", s(&part), "--threads", "2"]));
    let read = |d: &Path| std::fs::read(d.join("checkpoint.safetensors")).unwrap();
    assert!(read(&full) == read(&part), "the resumed strong run differs from the uninterrupted one");
    assert!(read(&full) == read(&three), "3 threads differ from 2");
    let ck = Checkpoint::from_bytes(&read(&full)).unwrap();
    assert_eq!(ck.metadata["train.recipe"], "strong");
    assert_eq!(ck.metadata["train.flip"], "true");
    assert_eq!(ck.metadata["train.cutmix"], "5e-1");
    let seed_ck = Checkpoint::from_bytes(&read(&seed)).unwrap();
    let w = |c: &Checkpoint| c.tensor("mixer.0.row.dense1.kernel").unwrap().data.clone();
    assert!(w(&ck) != w(&seed_ck));
    // The rate column: the end of warmup, then the cosine, near 0 at the last step.
    let csv = std::fs::read_to_string(full.join("metrics.csv")).unwrap();
    let lr = |line: &str| line.rsplit(',').next().unwrap().parse::<f64>().unwrap();
    let rates: Vec<f64> = csv.lines().skip(1).map(lr).collect();
    assert!(csv.starts_with("epoch,") && csv.lines().next().unwrap().ends_with(",lr"), "{csv}");
    assert!((rates[0] - 2e-3).abs() < 1e-12 && rates[1] < 2e-3 && rates[2] < 2e-5, "{rates:?}");
    let last: Vec<&str> = csv.lines().last().unwrap().split(',').collect();
    let ck = full.join("checkpoint.safetensors");
    let ev = text(&pmixer(&["eval", "--checkpoint", s(&ck), "--batch-size", "32"]).stdout);
    assert!(ev.contains(&format!("test_loss: {}\n", last[3])), "{ev} vs {last:?}");
    assert!(ev.contains(&format!("test_accuracy: {}\n", last[4])), "{ev} vs {last:?}");
    let plain = text(&pmixer(&["eval", "--checkpoint", s(&ck), "--no-test-flip"]).stdout);
    assert!(
        plain.contains("test_loss: ") && !plain.contains(&format!("test_loss: {}\n", last[3])),
        "{plain}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_recipe_settings_are_clear_errors() {
    let dir = scratch("badrecipe");
    let data = dir.join("data");
    testdata::write_idx_dir(&data, 40, 10, 8, 9, false).unwrap();
    for (extra, want) in [
        (&["--recipe", "fancy"][..], "unknown recipe \"fancy\""),
        (&["--label-smoothing", "1"], "--label-smoothing must be in [0, 1)"),
        (&["--label-smoothing", "-0.1"], "--label-smoothing must be in [0, 1)"),
        (&["--weight-decay", "-1"], "--weight-decay must be a finite number ≥ 0"),
        (
            &["--recipe", "strong", "--epochs", "1"],
            "--warmup-epochs 1 is not shorter than the run (1 epochs)",
        ),
        (&["--crop-pad", "8"], "--crop-pad 8 is not smaller than the 8×9 image"),
        (&["--cutout", "10"], "--cutout 10 is larger than the 8×9 image"),
        (&["--cutmix", "1.5"], "--cutmix must be a probability in [0, 1], not 1.5"),
        (&["--cutmix", "-0.5"], "--cutmix must be a probability in [0, 1], not -0.5"),
        (&["--test-flip", "--task", "autoencode"], "--test-flip: only a classifier's logits can be averaged"),
    ] {
        let mut args = vec!["train", "--data-dir", s(&data), "--layers", "1", "--out", s(&dir)];
        args.extend_from_slice(extra);
        let out = pmixer(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert!(err.contains(want) && !err.contains("panicked"), "{extra:?}: {err}");
    }
    let out = pmixer(&["train", "--schedule", "linear"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown schedule \"linear\""));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The strong recipe's CIFAR defaults (CutMix, test-time flips) serve the autoencoder too: its
/// test passes are plain, the flips being a classifier's.
#[test]
fn the_strong_recipe_trains_a_cifar_autoencoder() {
    let dir = scratch("strongae");
    let data = dir.join("cifar");
    testdata::write_cifar_dir(&data, 40, 20).unwrap();
    let run = dir.join("run");
    #[rustfmt::skip]
    let out = pmixer(&["train", "--recipe", "strong", "--dataset", "cifar10", "--data-dir", s(&data), "--task", "autoencode",
                       "--layers", "1", "--epochs", "2", "--batch-size", "20", "--out", s(&run)]);
    assert_ok(&out);
    let ck = Checkpoint::from_bytes(&std::fs::read(run.join("checkpoint.safetensors")).unwrap()).unwrap();
    assert_eq!(
        (ck.metadata["train.cutmix"].as_str(), ck.metadata["train.test_flip"].as_str()),
        ("1e0", "false")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--precision bf16`: recorded in the checkpoint; a resumed run continues in it and ends with the
/// uninterrupted run's checkpoint; 1 and 3 threads give the same checkpoint; `eval` tests in the
/// checkpoint's precision unless told otherwise (and reproduces the logged test metric); the
/// weights differ from an f32 run's. On a CPU without AVX512_BF16, the flag is a clear error.
#[test]
fn a_bf16_run_records_its_precision_resumes_in_it_and_is_independent_of_the_thread_count() {
    let dir = scratch("bf16");
    let data = dir.join("data");
    testdata::write_idx_dir(&data, 300, 60, 8, 9, false).unwrap();
    #[rustfmt::skip]
    let args = |out: &Path, threads: &str, epochs: &str, precision: &str| -> Vec<String> {
        ["train", "--data-dir", s(&data), "--layers", "2", "--batch-size", "32", "--epochs", epochs,
         "--threads", threads, "--precision", precision, "--out", s(out)].map(String::from).to_vec()
    };
    let run = |a: Vec<String>| pmixer(&a.iter().map(String::as_str).collect::<Vec<_>>());
    if pmixer::train::Precision::Bf16.check().is_err() {
        let out = run(args(&dir.join("none"), "1", "1", "bf16"));
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains("AVX512_BF16"), "{}", text(&out.stderr));
        return;
    }
    let (one, three, part, f32_run) = (dir.join("one"), dir.join("three"), dir.join("part"), dir.join("f32"));
    let out = run(args(&one, "1", "2", "bf16"));
    assert_ok(&out);
    assert_ok(&run(args(&three, "3", "2", "bf16")));
    assert_ok(&run(args(&part, "2", "1", "bf16")));
    assert_ok(&run(args(&f32_run, "2", "2", "f32")));
    assert_ok(&pmixer(&["train", "--resume", s(&part), "--epochs", "2"]));
    let read = |d: &Path| std::fs::read(d.join("checkpoint.safetensors")).unwrap();
    assert!(read(&one) == read(&three), "1 and 3 threads differ in bf16");
    assert!(read(&one) == read(&part), "the resumed bf16 run differs from the uninterrupted one");
    let ck = Checkpoint::from_bytes(&read(&one)).unwrap();
    assert_eq!(ck.metadata["train.precision"], "bf16");
    let weights = |ck: &Checkpoint| ck.tensor("mixer.0.row.dense1.kernel").unwrap().data.clone();
    assert!(weights(&ck) != weights(&Checkpoint::from_bytes(&read(&f32_run)).unwrap()));
    // eval in the checkpoint's precision gives the logged test accuracy; --precision f32 runs too.
    let logged = column(&text(&out.stdout), "test_accuracy");
    let ckpt = one.join("checkpoint.safetensors");
    let eval = pmixer(&["eval", "--checkpoint", s(&ckpt), "--data-dir", s(&data)]);
    assert_ok(&eval);
    let acc: f64 =
        text(&eval.stdout).lines().find_map(|l| l.strip_prefix("test_accuracy: ")).unwrap().parse().unwrap();
    assert!((acc - logged[1]).abs() < 1e-4, "eval {acc} against the logged {}", logged[1]);
    assert_ok(&pmixer(&["eval", "--checkpoint", s(&ckpt), "--data-dir", s(&data), "--precision", "f32"]));
    // A resumed run keeps the recorded precision: the flag is refused.
    let again = pmixer(&["train", "--resume", s(&one), "--epochs", "3", "--precision", "f32"]);
    assert!(
        !again.status.success() && text(&again.stderr).contains("--precision"),
        "{}",
        text(&again.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
