//! What training shows: the PNG files decode (chunks, CRCs, pixels), curves.svg is well-formed
//! XML with one polyline per curve, saliency is the true input gradient, and the `saliency` and
//! `predict` commands work on files the tests write.

use pmixer::png::Image;
use pmixer::testdata;
use pmixer::train::{EpochRecord, Metrics};
use pmixer::visual::input_gradient;
use pmixer_autodiff::{ops, Params, Tensor};
use pmixer_model::Task;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// CRC-32 (ISO-HDLC, as PNG uses), bit by bit: independent of the encoder's flate2 `Crc`.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// Decodes what `Image::encode` writes: checks the signature, every chunk's CRC and the IHDR,
/// inflates the IDAT data and removes the filter bytes.
fn decode_png(bytes: &[u8]) -> Image {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let (mut pos, mut idat, mut header, mut chunks) = (8, Vec::new(), None, Vec::new());
    while pos < bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let data = &bytes[pos + 8..pos + 8 + len];
        let crc = u32::from_be_bytes(bytes[pos + 8 + len..pos + 12 + len].try_into().unwrap());
        assert_eq!(crc, crc32(&bytes[pos + 4..pos + 8 + len]), "CRC of {}", String::from_utf8_lossy(kind));
        chunks.push(String::from_utf8_lossy(kind).into_owned());
        match kind {
            b"IHDR" => {
                let w = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
                let h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(data[8], 8, "bit depth");
                assert_eq!(&data[10..], &[0, 0, 0]);
                header = Some((w, h, if data[9] == 2 { 3 } else { 1 }));
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        pos += 12 + len;
    }
    assert_eq!(chunks, ["IHDR", "IDAT", "IEND"]);
    let (w, h, c) = header.unwrap();
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(idat.as_slice()).read_to_end(&mut raw).unwrap();
    assert_eq!(raw.len(), h * (1 + w * c));
    let mut pixels = Vec::new();
    for row in raw.chunks_exact(1 + w * c) {
        assert_eq!(row[0], 0, "filter type");
        pixels.extend_from_slice(&row[1..]);
    }
    Image { width: w, height: h, channels: c, pixels }
}

#[test]
fn png_files_decode_to_the_pixels_written() {
    for channels in [1, 3] {
        let mut img = Image::new(7, 5, channels);
        for (i, p) in img.pixels.iter_mut().enumerate() {
            *p = (i * 37 % 256) as u8;
        }
        assert_eq!(decode_png(&img.encode()), img);
    }
}

/// A strict little XML check: every tag closed in order, attributes quoted. Returns the names
/// of the elements in document order.
fn xml_elements(doc: &str) -> Vec<String> {
    let body = doc.strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n").expect("XML declaration");
    let (mut stack, mut names, mut rest) = (Vec::<String>::new(), Vec::new(), body);
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("unclosed tag") + open;
        let tag = &rest[open + 1..close];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
        } else {
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name = tag.split_whitespace().next().unwrap().to_string();
            let attrs = &tag[name.len()..];
            assert_eq!(attrs.matches('"').count() % 2, 0, "unbalanced quotes in <{name}>");
            assert!(
                !attrs.contains('<') && !attrs.contains('&') || attrs.contains("&amp;"),
                "unescaped text in <{name}>"
            );
            names.push(name.clone());
            if !self_closing {
                stack.push(name);
            }
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed elements {stack:?}");
    names
}

#[test]
fn curves_svg_is_well_formed_with_one_polyline_per_curve() {
    let history: Vec<EpochRecord> = (1..=4)
        .map(|e| EpochRecord {
            epoch: e,
            train: Metrics { loss: 1.0 / e as f64, metric: 0.9 + 0.01 * e as f64 },
            test: Metrics { loss: 1.2 / e as f64, metric: 0.88 + 0.01 * e as f64 },
            seconds: 1.0,
            samples_per_s: 100.0,
            lr: 1e-3,
        })
        .collect();
    let svg = pmixer::svg::curves(Task::Classify, "mnist <classify> & co", &history);
    let names = xml_elements(&svg);
    assert_eq!(names[0], "svg");
    assert_eq!(names.iter().filter(|n| *n == "polyline").count(), 4);
    for line in svg.lines().filter(|l| l.starts_with("<polyline")) {
        let points = line.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(points.split_whitespace().count(), 4, "{line}");
    }
    assert!(
        svg.contains(">accuracy</text>") && svg.contains(">epoch</text>") && svg.contains(">loss</text>")
    );
}

#[test]
fn saliency_of_a_linear_function_is_its_known_gradient() {
    // f(x) = (x·K + c)[j] for x of 2×3 values: ∂f/∂x = K[:, j].
    let mut p = Params::<f64>::new();
    let (k, c) = (p.add("k", &[6, 4]), p.add("c", &[4]));
    for (i, v) in p.data.iter_mut().enumerate() {
        *v = (i as f64 * 0.37).sin();
    }
    let x: Vec<f64> = (0..6).map(|i| i as f64 * 0.1 - 0.2).collect();
    for j in 0..4 {
        let (value, g) = input_gradient(&p, Tensor::new(&[2, 1, 3], x.clone()), |t, xv| {
            let flat = ops::reshape(t, xv, &[1, 6]);
            let (kv, cv) = (t.param(k), t.param(c));
            let y = ops::dense(t, flat, kv, cv);
            ops::pick(t, y, j)
        });
        let kd = p.get(k);
        let want: f64 = p.get(c)[j] + (0..6).map(|f| x[f] * kd[f * 4 + j]).sum::<f64>();
        assert!((value - want).abs() < 1e-12);
        for f in 0..6 {
            assert!((g[f] - kd[f * 4 + j]).abs() < 1e-12, "∂f/∂x[{f}]");
        }
    }
}

fn pmixer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pmixer")).args(args).output().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pmixer-pictures-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn runs_write_curves_and_reconstructions_and_classifiers_explain_themselves() {
    let dir = scratch("cli");
    let cifar = dir.join("cifar");
    testdata::write_cifar_dir(&cifar, 12, 10).unwrap();
    let ae = dir.join("ae");
    ok(&pmixer(&[
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        s(&cifar),
        "--task",
        "autoencode",
        "--layers",
        "1",
        "--epochs",
        "2",
        "--batch-size",
        "20",
        "--out",
        s(&ae),
    ]));
    let grid = decode_png(&std::fs::read(ae.join("reconstructions.png")).unwrap());
    // Five 32×32 colour images (HWC unfolded) at 3× with 4-pixel gaps, in two rows.
    assert_eq!((grid.width, grid.height, grid.channels), (4 + 5 * (96 + 4), 4 + 2 * (96 + 4), 3));
    let svg = std::fs::read_to_string(ae.join("curves.svg")).unwrap();
    assert_eq!(xml_elements(&svg).iter().filter(|n| *n == "polyline").count(), 4);
    assert!(svg.contains(">rmse</text>"));

    let mnist = dir.join("mnist");
    testdata::write_idx_dir(&mnist, 256, 20, 10, 12, true).unwrap();
    let cls = dir.join("cls");
    ok(&pmixer(&["train", "--data-dir", s(&mnist), "--layers", "1", "--epochs", "1", "--out", s(&cls)]));
    let ck = cls.join("checkpoint.safetensors");
    let pic = dir.join("s.png");
    let out = ok(&pmixer(&["saliency", "--checkpoint", s(&ck), "--index", "3", "--out", s(&pic)]));
    assert!(out.contains("image 3 (label") && out.contains("predicted class"), "{out}");
    let map = decode_png(&std::fs::read(&pic).unwrap());
    assert_eq!((map.width, map.height), (3 * 4 + 2 * 12 * 4, 2 * 4 + 10 * 4));
    let err = pmixer(&["saliency", "--checkpoint", s(&ck), "--index", "20"]);
    assert!(String::from_utf8_lossy(&err.stderr)
        .contains("--index 20 is out of range: the test set has 20 images"));

    // predict: a PGM file and a record of the IDX file give the same answer for the same image.
    let d = testdata::synthetic(1, 10, 12, 9);
    let pgm = dir.join("one.pgm");
    std::fs::write(&pgm, [b"P5\n# made by a test\n12 10\n255\n".as_slice(), &d.images].concat()).unwrap();
    let idx = dir.join("one-idx3");
    testdata::write(&idx, &testdata::idx_images(1, 10, 12, &d.images), false).unwrap();
    let out = ok(&pmixer(&["predict", "--checkpoint", s(&ck), s(&pgm), &format!("{}:0", s(&idx))]));
    let answers: Vec<&str> = out.lines().map(|l| l.rsplit(": ").next().unwrap()).collect();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0], answers[1], "{out}");
    assert_eq!(answers[0].split(", ").count(), 3, "top 3: {out}");
    // --logits: every class's logit, in class order, whose softmax gives the printed top 3.
    let line = ok(&pmixer(&["predict", "--logits", "--checkpoint", s(&ck), s(&pgm)]));
    let logits: Vec<f32> =
        line.trim().rsplit(": logits ").next().unwrap().split(' ').map(|v| v.parse().unwrap()).collect();
    assert_eq!(logits.len(), 10, "{line}");
    let total: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
    let mut order: Vec<usize> = (0..10).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let top: Vec<String> =
        order[..3].iter().map(|&c| format!("{c} ({:.4})", (logits[c] as f64).exp() / total)).collect();
    assert_eq!(top.join(", "), answers[0], "{line}");
    // Wrong size and malformed images are clear errors.
    let small = dir.join("small.pgm");
    std::fs::write(&small, b"P5 2 2 255\n\x00\x01\x02\x03").unwrap();
    let err =
        String::from_utf8_lossy(&pmixer(&["predict", "--checkpoint", s(&ck), s(&small)]).stderr).into_owned();
    assert!(err.contains("the model takes 10×12 inputs") && err.contains("gives 2×2"), "{err}");
    std::fs::write(&small, b"P5 2 2 65535\n\x00\x01").unwrap();
    let err =
        String::from_utf8_lossy(&pmixer(&["predict", "--checkpoint", s(&ck), s(&small)]).stderr).into_owned();
    assert!(err.contains("small.pgm: maxval 65535 is not supported"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
