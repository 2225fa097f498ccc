//! Writers for small files in the formats the readers take (IDX and CIFAR-10 binary, plain or
//! gzipped), and a synthetic labelled image set whose classes are easy to tell apart. Tests build
//! their inputs with these instead of depending on the real datasets, and `bench --synthetic`
//! times steps on such images.

use crate::data::{Dataset, CIFAR_SIDE, CLASSES};
use flate2::write::GzEncoder;
use flate2::Compression;
use pmixer_model::Rng;
use rand::RngCore;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path`, gzipped when `gz`.
pub fn write(path: &Path, bytes: &[u8], gz: bool) -> std::io::Result<()> {
    if gz {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(bytes)?;
        std::fs::write(path, enc.finish()?)
    } else {
        std::fs::write(path, bytes)
    }
}

/// The bytes of an idx3 file of `n` images of h×w.
pub fn idx_images(n: usize, h: usize, w: usize, pixels: &[u8]) -> Vec<u8> {
    assert_eq!(pixels.len(), n * h * w);
    let mut out = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// The bytes of an idx1 file of labels.
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 1];
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

/// The bytes of a CIFAR-10 binary batch holding `images` (each 32×96 HWC, as the reader
/// returns them) with their labels: the reader's conversion, undone.
pub fn cifar_batch(images: &[u8], labels: &[u8]) -> Vec<u8> {
    let plane = CIFAR_SIDE * CIFAR_SIDE;
    assert_eq!(images.len(), labels.len() * 3 * plane);
    let mut out = Vec::with_capacity(labels.len() * (1 + 3 * plane));
    for (img, &label) in images.chunks_exact(3 * plane).zip(labels) {
        out.push(label);
        for k in 0..3 {
            out.extend((0..plane).map(|p| img[3 * p + k]));
        }
    }
    out
}

/// `n` noisy h×w images whose class is written in them: class k brightens row band k and column
/// band k, so a small model separates them within an epoch or two.
pub fn synthetic(n: usize, h: usize, w: usize, seed: u64) -> Dataset {
    let mut r = Rng::seed(seed);
    let mut images = Vec::with_capacity(n * h * w);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let k = (r.next_u32() as usize + i) % CLASSES;
        for y in 0..h {
            for x in 0..w {
                let on = y * CLASSES / h == k || x * CLASSES / w == k;
                let noise = (r.next_u32() >> 26) as u8;
                images.push(if on { 180 + noise } else { noise });
            }
        }
        labels.push(k as u8);
    }
    Dataset { h, w, images, labels }
}

/// An IDX dataset directory (MNIST file names) with `train` and `test` synthetic h×w images.
pub fn write_idx_dir(
    dir: &Path,
    train: usize,
    test: usize,
    h: usize,
    w: usize,
    gz: bool,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let ext = if gz { ".gz" } else { "" };
    for (prefix, n, seed) in [("train", train, 1), ("t10k", test, 2)] {
        let d = synthetic(n, h, w, seed);
        write(&dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), &idx_images(n, h, w, &d.images), gz)?;
        write(&dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), &idx_labels(&d.labels), gz)?;
    }
    Ok(())
}

/// A CIFAR-10 directory with five training batches of `per_batch` synthetic 32×96 images and a
/// test batch of `test`; batches alternate between plain and gzipped.
pub fn write_cifar_dir(dir: &Path, per_batch: usize, test: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let (h, w) = (CIFAR_SIDE, 3 * CIFAR_SIDE);
    for i in 1..=5 {
        let d = synthetic(per_batch, h, w, 10 + i as u64);
        let gz = i % 2 == 0;
        let name = format!("data_batch_{i}.bin{}", if gz { ".gz" } else { "" });
        write(&dir.join(name), &cifar_batch(&d.images, &d.labels), gz)?;
    }
    let d = synthetic(test, h, w, 20);
    write(&dir.join("test_batch.bin.gz"), &cifar_batch(&d.images, &d.labels), true)
}
