//! The dataset readers on hand-built files, valid and malformed: every bad file is an error that
//! names the file and the problem, never a panic, and no header is trusted before it is checked
//! against the file's length.

use pmixer::data::{self, Dataset, CIFAR_RECORD};
use pmixer::testdata::{cifar_batch, idx_images, idx_labels, synthetic, write};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pmixer-readers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `bytes` to `dir/name` and returns the reader's error for it as images.
fn image_error(dir: &Path, name: &str, bytes: &[u8], gz: bool) -> String {
    let p = dir.join(name);
    write(&p, bytes, gz).unwrap();
    let e = data::read_idx_images(&p).unwrap_err();
    assert_eq!(e.path, p);
    let msg = e.to_string();
    assert!(msg.starts_with(p.to_str().unwrap()), "{msg}");
    msg
}

#[test]
fn idx_images_round_trip_plain_and_gzipped() {
    let dir = scratch("ok");
    let d = synthetic(7, 5, 3, 1);
    for gz in [false, true] {
        let p = dir.join(format!("imgs{gz}"));
        write(&p, &idx_images(7, 5, 3, &d.images), gz).unwrap();
        let (n, h, w, px) = data::read_idx_images(&p).unwrap();
        assert_eq!((n, h, w), (7, 5, 3));
        assert_eq!(px, d.images);
    }
    let p = dir.join("labels");
    write(&p, &idx_labels(&d.labels), true).unwrap();
    assert_eq!(data::read_idx_labels(&p).unwrap(), d.labels);
}

#[test]
fn malformed_idx_files_are_rejected_with_the_cause() {
    let dir = scratch("bad-idx");
    let good = idx_images(2, 3, 4, &[1; 24]);
    let mut wrong_magic = good.clone();
    wrong_magic[0] = 0x50;
    let mut float_type = good.clone();
    float_type[2] = 0x0d;
    let mut two_dims = good.clone();
    two_dims[3] = 2;
    let mut more_images = good.clone();
    more_images[4..8].copy_from_slice(&1000u32.to_be_bytes());
    // 2³¹ × 2³¹ pixels: must be refused from the header, not allocated.
    let mut absurd = vec![0, 0, 8, 3];
    for d in [1u32, 1 << 31, 1 << 31] {
        absurd.extend_from_slice(&d.to_be_bytes());
    }
    let zero = idx_images(0, 3, 4, &[]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "file is empty"),
        ("short", vec![0, 0, 8], "truncated IDX header"),
        ("header", good[..10].to_vec(), "truncated IDX header"),
        ("magic", wrong_magic, "wrong magic"),
        ("type", float_type, "element type 0x0d is not supported"),
        ("dims", two_dims, "2 dimensions, expected 3"),
        ("count", more_images, "only 24 bytes follow"),
        ("truncated", good[..good.len() - 5].to_vec(), "truncated?"),
        ("absurd", absurd, "only 0 bytes follow"),
        ("zero", zero, "zero images"),
        ("trailing", [good.clone(), vec![9]].concat(), "but 25 bytes follow"),
    ];
    for (name, bytes, want) in cases {
        for gz in [false, true] {
            let msg = image_error(&dir, name, &bytes, gz);
            assert!(msg.contains(want), "{name} (gz {gz}): {msg}");
        }
    }
}

#[test]
fn broken_gzip_streams_are_reported_as_such() {
    let dir = scratch("gz");
    let p = dir.join("a.gz");
    write(&p, &idx_images(20, 8, 8, &[3; 1280]), true).unwrap();
    let gz = std::fs::read(&p).unwrap();
    let mut corrupt = gz.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    corrupt[mid + 1] ^= 0x55;
    for (name, bytes) in [("trunc.gz", gz[..gz.len() - 9].to_vec()), ("corrupt.gz", corrupt)] {
        let q = dir.join(name);
        std::fs::write(&q, bytes).unwrap();
        let msg = data::read_idx_images(&q).unwrap_err().to_string();
        assert!(msg.contains(name) && (msg.contains("gzip") || msg.contains("IDX")), "{msg}");
    }
}

#[test]
fn labels_are_checked() {
    let dir = scratch("labels");
    let p = dir.join("l");
    write(&p, &idx_labels(&[1, 2, 10, 3]), false).unwrap();
    let msg = data::read_idx_labels(&p).unwrap_err().to_string();
    assert!(msg.contains("label 10 of record 2 is outside the class range 0..10"), "{msg}");
    write(&p, &idx_labels(&[]), false).unwrap();
    assert!(data::read_idx_labels(&p).unwrap_err().to_string().contains("zero labels"));
}

#[test]
fn image_and_label_counts_must_agree() {
    let dir = scratch("pair");
    let (i, l) = (dir.join("i"), dir.join("l"));
    write(&i, &idx_images(3, 2, 2, &[0; 12]), false).unwrap();
    write(&l, &idx_labels(&[1, 2]), false).unwrap();
    let msg = data::load_idx_pair(&i, &l).unwrap_err().to_string();
    assert!(msg.contains("has 2 labels but") && msg.contains("has 3 images"), "{msg}");
}

#[test]
fn train_and_test_images_must_have_one_size() {
    let dir = scratch("sizes");
    for (prefix, h) in [("train", 6), ("t10k", 7)] {
        let d = synthetic(4, h, 5, 3);
        write(&dir.join(format!("{prefix}-images-idx3-ubyte")), &idx_images(4, h, 5, &d.images), false)
            .unwrap();
        write(&dir.join(format!("{prefix}-labels-idx1-ubyte")), &idx_labels(&d.labels), false).unwrap();
    }
    let msg = data::load_idx_dir(&dir).unwrap_err().to_string();
    assert!(msg.contains("test images are 7×5 but training images are 6×5"), "{msg}");
}

#[test]
fn missing_files_and_directories_in_place_of_files() {
    let dir = scratch("missing");
    let msg = data::load_idx_dir(&dir).unwrap_err().to_string();
    assert!(msg.contains("train-images-idx3-ubyte") && msg.contains("not found"), "{msg}");
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let msg = data::read_idx_images(&sub).unwrap_err().to_string();
    assert!(msg.contains("is a directory"), "{msg}");
    let msg = data::read_idx_images(&dir.join("absent")).unwrap_err().to_string();
    assert!(msg.contains("absent") && msg.contains("cannot read"), "{msg}");
}

#[test]
fn cifar_records_become_hwc_images() {
    let dir = scratch("cifar");
    // One record with distinct planes: pixel (r, c) of channel k is (k·64 + r + c) mod 256.
    let mut rec = vec![7u8];
    for k in 0..3 {
        for r in 0..32 {
            for c in 0..32 {
                rec.push(((k * 64 + r + c) % 256) as u8);
            }
        }
    }
    let p = dir.join("b.bin");
    std::fs::write(&p, &rec).unwrap();
    let mut d = Dataset { h: 32, w: 96, images: vec![], labels: vec![] };
    data::read_cifar_batch(&p, &mut d).unwrap();
    assert_eq!(d.labels, vec![7]);
    for (r, c, k) in [(0, 0, 0), (5, 9, 1), (31, 31, 2), (17, 3, 2)] {
        assert_eq!(d.images[r * 96 + 3 * c + k] as usize, (k * 64 + r + c) % 256, "({r}, {c}, {k})");
    }
    // The writer used by the tests is the reader's exact inverse.
    assert_eq!(cifar_batch(&d.images, &d.labels), rec);
}

#[test]
fn malformed_cifar_files_are_rejected() {
    let dir = scratch("bad-cifar");
    let d = synthetic(2, 32, 96, 4);
    let good = cifar_batch(&d.images, &d.labels);
    let mut bad_label = good.clone();
    bad_label[CIFAR_RECORD] = 12;
    for (name, bytes, want) in [
        ("empty.bin", vec![], "file is empty"),
        ("short.bin", good[..CIFAR_RECORD + 100].to_vec(), "not a multiple of the 3073-byte CIFAR record"),
        ("label.bin", bad_label, "label 12 of record 1 is outside the class range"),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, &bytes).unwrap();
        let mut out = Dataset { h: 32, w: 96, images: vec![], labels: vec![] };
        let msg = data::read_cifar_batch(&p, &mut out).unwrap_err().to_string();
        assert!(msg.contains(name) && msg.contains(want), "{msg}");
    }
    let msg = data::load_cifar_dir(&dir).unwrap_err().to_string();
    assert!(msg.contains("data_batch_1.bin") && msg.contains("not found"), "{msg}");
}
