//! Readers for the raw dataset files: IDX (MNIST's format) and the CIFAR-10 binary format, plain
//! or gzipped (recognised by the gzip magic bytes, not the file name).
//!
//! Images stay `u8` in memory (60,000 MNIST images are 47 MB as u8, 188 MB as f32) and become
//! f32 ÷ 255 one batch at a time, in the (H, B, W) layout the kernels use ([`Dataset::fill_batch`]).
//! A CIFAR record (label, then 1,024 red, 1,024 green, 1,024 blue bytes) becomes a 32×96 image
//! in HWC order: pixel (r, c), channel k goes to row r, column 3c + k, which is what the
//! original's `Reshape([32, 96])` of a (32, 32, 3) image does.
//!
//! Every size a header claims is checked against the file's real length before anything is
//! allocated from it, and every error names the file and what is wrong with it.

use byteorder::{BigEndian, ByteOrder};
use flate2::read::MultiGzDecoder;
use pmixer_autodiff::ops::Target;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Both datasets have ten classes.
pub const CLASSES: usize = 10;

/// The most bytes a gzipped file may expand to (the largest real file, a CIFAR batch, is 30 MB).
const MAX_INFLATED: u64 = 1 << 30;

/// A problem with one input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    pub path: PathBuf,
    pub msg: String,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.msg)
    }
}

impl std::error::Error for DataError {}

fn err<T>(path: &Path, msg: impl Into<String>) -> Result<T, DataError> {
    Err(DataError { path: path.to_path_buf(), msg: msg.into() })
}

/// A labelled set of H×W u8 images.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub h: usize,
    pub w: usize,
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.h * self.w;
        &self.images[i * n..(i + 1) * n]
    }

    /// Writes images `idx` as f32 ÷ 255 into `x` in (H, B, W) layout:
    /// `x[(h·B + b)·W + w] = image_b[h·W + w] / 255`, and their labels into `labels`.
    pub fn fill_batch(&self, idx: &[usize], x: &mut [f32], labels: &mut Vec<usize>) {
        let (h, w, b) = (self.h, self.w, idx.len());
        assert_eq!(x.len(), h * b * w);
        labels.clear();
        for (bi, &i) in idx.iter().enumerate() {
            let img = self.image(i);
            for r in 0..h {
                let dst = &mut x[(r * b + bi) * w..(r * b + bi + 1) * w];
                for (d, &s) in dst.iter_mut().zip(&img[r * w..(r + 1) * w]) {
                    *d = s as f32 * (1.0 / 255.0);
                }
            }
            labels.push(self.labels[i] as usize);
        }
    }
}

impl Dataset {
    /// [`Dataset::fill_batch`] with each sample augmented as its draw says
    /// ([`crate::recipe::augment_row`]: shifted, padded with zeros, optionally flipped, mixed
    /// with a box of another image and cut), and its target (the label, or CutMix's two labels
    /// weighted by area) in `targets`.
    pub fn fill_batch_augmented(
        &self,
        idx: &[usize],
        channels: usize,
        draw: impl Fn(usize) -> crate::recipe::Draw,
        x: &mut [f32],
        targets: &mut Vec<Target>,
    ) {
        let (h, w, b) = (self.h, self.w, idx.len());
        assert_eq!(x.len(), h * b * w);
        targets.clear();
        for (bi, &i) in idx.iter().enumerate() {
            let d = draw(i);
            for r in 0..h {
                let dst = &mut x[(r * b + bi) * w..(r * b + bi + 1) * w];
                crate::recipe::augment_row(|j| self.image(j), i, (h, w, channels), &d, r, dst);
            }
            let y = self.labels[i] as usize;
            targets.push(match d.mix {
                Some(m) => Target { a: y, b: self.labels[m.partner] as usize, share: m.share },
                None => Target::label(y),
            });
        }
    }
}

/// Reads a file whole, inflating it if it starts with the gzip magic (1f 8b).
pub fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    if path.is_dir() {
        return err(path, "is a directory, expected a data file");
    }
    let raw = std::fs::read(path).or_else(|e| err(path, format!("cannot read: {e}")))?;
    decode(path, raw)
}

/// A file's bytes as read: inflated if they start with the gzip magic (1f 8b), else as they are.
/// `path` only names the file in errors.
pub fn decode(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, DataError> {
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::new();
        let mut dec = MultiGzDecoder::new(raw.as_slice()).take(MAX_INFLATED + 1);
        if let Err(e) = dec.read_to_end(&mut out) {
            return err(path, format!("corrupt or truncated gzip stream: {e}"));
        }
        if out.len() as u64 > MAX_INFLATED {
            return err(path, format!("inflates to more than {MAX_INFLATED} bytes"));
        }
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX header: magic `00 00 08 nd` (unsigned bytes, `nd` dimensions), then `nd`
/// big-endian u32 sizes. Returns the dimensions and the payload, whose length must be exactly
/// their product.
fn parse_idx<'a>(
    path: &Path,
    bytes: &'a [u8],
    want_dims: usize,
) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    if bytes.is_empty() {
        return err(path, "file is empty");
    }
    if bytes.len() < 4 {
        return err(
            path,
            format!("truncated IDX header: {} bytes, the magic number alone is 4", bytes.len()),
        );
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return err(
            path,
            format!(
                "wrong magic 0x{:02x}{:02x}{:02x}{:02x}: not an IDX file",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        );
    }
    if bytes[2] != 0x08 {
        return err(
            path,
            format!("IDX element type 0x{:02x} is not supported (only 0x08, unsigned bytes)", bytes[2]),
        );
    }
    let nd = bytes[3] as usize;
    if nd != want_dims {
        return err(path, format!("IDX file has {nd} dimensions, expected {want_dims}"));
    }
    let header = 4 + 4 * nd;
    if bytes.len() < header {
        return err(path, format!("truncated IDX header: {} bytes, need {header}", bytes.len()));
    }
    let dims: Vec<usize> = (0..nd).map(|i| BigEndian::read_u32(&bytes[4 + 4 * i..]) as usize).collect();
    let payload = &bytes[header..];
    let claimed = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
    match claimed {
        Some(c) if c == payload.len() as u64 => Ok((dims, payload)),
        Some(c) if c > payload.len() as u64 => err(
            path,
            format!(
                "header claims dimensions {dims:?} ({c} bytes) but only {} bytes follow (truncated?)",
                payload.len()
            ),
        ),
        Some(c) => err(
            path,
            format!("header claims dimensions {dims:?} ({c} bytes) but {} bytes follow", payload.len()),
        ),
        None => err(path, format!("header dimensions {dims:?} overflow")),
    }
}

/// An idx3 file of u8 images: (count, rows, cols, pixels).
pub fn read_idx_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>), DataError> {
    parse_idx_images(path, &read_file(path)?)
}

/// [`read_idx_images`] on bytes already read and inflated.
pub fn parse_idx_images(path: &Path, bytes: &[u8]) -> Result<(usize, usize, usize, Vec<u8>), DataError> {
    let (dims, payload) = parse_idx(path, bytes, 3)?;
    let (n, h, w) = (dims[0], dims[1], dims[2]);
    if n == 0 {
        return err(path, "contains zero images");
    }
    if h == 0 || w == 0 {
        return err(path, format!("images of size {h}×{w}"));
    }
    Ok((n, h, w, payload.to_vec()))
}

/// An idx1 file of u8 labels, each checked to be below [`CLASSES`].
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    parse_idx_labels(path, &read_file(path)?)
}

/// [`read_idx_labels`] on bytes already read and inflated.
pub fn parse_idx_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, DataError> {
    let (_, payload) = parse_idx(path, bytes, 1)?;
    if payload.is_empty() {
        return err(path, "contains zero labels");
    }
    check_labels(path, payload)?;
    Ok(payload.to_vec())
}

fn check_labels(path: &Path, labels: &[u8]) -> Result<(), DataError> {
    match labels.iter().position(|&l| l as usize >= CLASSES) {
        Some(i) => {
            err(path, format!("label {} of record {i} is outside the class range 0..{CLASSES}", labels[i]))
        }
        None => Ok(()),
    }
}

/// The first of `names` (each tried plain and with `.gz`) that exists in `dir`.
fn find(dir: &Path, names: &[&str]) -> Result<PathBuf, DataError> {
    for name in names {
        for candidate in [dir.join(name), dir.join(format!("{name}.gz"))] {
            if candidate.exists() {
                return Ok(candidate);
            }
        }
    }
    err(
        &dir.join(names[0]),
        format!("not found (also tried .gz{})", if names.len() > 1 { " and other spellings" } else { "" }),
    )
}

/// One IDX split: images and labels, their counts checked to agree.
pub fn load_idx_pair(images: &Path, labels: &Path) -> Result<Dataset, DataError> {
    let (n, h, w, pixels) = read_idx_images(images)?;
    let lab = read_idx_labels(labels)?;
    if lab.len() != n {
        return err(labels, format!("has {} labels but {} has {n} images", lab.len(), images.display()));
    }
    Ok(Dataset { h, w, images: pixels, labels: lab })
}

/// MNIST (or any IDX set) from `dir`: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each optionally `.gz`.
pub fn load_idx_dir(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    if !dir.is_dir() {
        return err(dir, "data directory not found");
    }
    let train = load_idx_pair(
        &find(dir, &["train-images-idx3-ubyte", "train-images.idx3-ubyte"])?,
        &find(dir, &["train-labels-idx1-ubyte", "train-labels.idx1-ubyte"])?,
    )?;
    let test_images = find(dir, &["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"])?;
    let test =
        load_idx_pair(&test_images, &find(dir, &["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"])?)?;
    if (test.h, test.w) != (train.h, train.w) {
        return err(
            &test_images,
            format!("test images are {}×{} but training images are {}×{}", test.h, test.w, train.h, train.w),
        );
    }
    Ok((train, test))
}

/// CIFAR-10 geometry: 32×32 pixels, 3 channels, 1 + 3,072 bytes a record.
pub const CIFAR_SIDE: usize = 32;
pub const CIFAR_RECORD: usize = 1 + 3 * CIFAR_SIDE * CIFAR_SIDE;

/// Appends one CIFAR-10 binary batch file to `out`, converting each record to 32×96 HWC.
pub fn read_cifar_batch(path: &Path, out: &mut Dataset) -> Result<(), DataError> {
    parse_cifar_batch(path, &read_file(path)?, out)
}

/// [`read_cifar_batch`] on bytes already read and inflated.
pub fn parse_cifar_batch(path: &Path, bytes: &[u8], out: &mut Dataset) -> Result<(), DataError> {
    if bytes.is_empty() {
        return err(path, "file is empty");
    }
    if !bytes.len().is_multiple_of(CIFAR_RECORD) {
        return err(
            path,
            format!("length {} is not a multiple of the {CIFAR_RECORD}-byte CIFAR record", bytes.len()),
        );
    }
    let plane = CIFAR_SIDE * CIFAR_SIDE;
    let labels: Vec<u8> = bytes.chunks_exact(CIFAR_RECORD).map(|r| r[0]).collect();
    check_labels(path, &labels)?;
    out.images.reserve(bytes.len() / CIFAR_RECORD * 3 * plane);
    for rec in bytes.chunks_exact(CIFAR_RECORD) {
        let px = &rec[1..];
        for p in 0..plane {
            out.images.extend_from_slice(&[px[p], px[plane + p], px[2 * plane + p]]);
        }
    }
    out.labels.extend_from_slice(&labels);
    Ok(())
}

/// CIFAR-10 from `dir`: `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`, each
/// optionally `.gz`.
pub fn load_cifar_dir(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    if !dir.is_dir() {
        return err(dir, "data directory not found");
    }
    let empty = || Dataset { h: CIFAR_SIDE, w: 3 * CIFAR_SIDE, images: Vec::new(), labels: Vec::new() };
    let mut train = empty();
    for i in 1..=5 {
        read_cifar_batch(&find(dir, &[&format!("data_batch_{i}.bin")])?, &mut train)?;
    }
    let mut test = empty();
    read_cifar_batch(&find(dir, &["test_batch.bin"])?, &mut test)?;
    Ok((train, test))
}

/// A binary PGM (P5, grey) or PPM (P6, RGB) image with maxval 255: (width, height, channels,
/// pixels). Comments (`#` to the end of a line) are allowed in the header.
pub fn read_pnm(path: &Path) -> Result<(usize, usize, usize, Vec<u8>), DataError> {
    let bytes = read_file(path)?;
    let channels = match bytes.get(..2) {
        Some(b"P5") => 1,
        Some(b"P6") => 3,
        _ => return err(path, "not a binary PGM (P5) or PPM (P6) image"),
    };
    let mut pos = 2;
    let mut fields = [0usize; 3];
    for field in fields.iter_mut() {
        loop {
            match bytes.get(pos) {
                Some(b'#') => {
                    while bytes.get(pos).is_some_and(|&b| b != b'\n') {
                        pos += 1;
                    }
                }
                Some(b) if b.is_ascii_whitespace() => pos += 1,
                _ => break,
            }
        }
        let start = pos;
        while bytes.get(pos).is_some_and(u8::is_ascii_digit) && pos - start < 9 {
            pos += 1;
        }
        *field = match std::str::from_utf8(&bytes[start..pos]).ok().and_then(|s| s.parse().ok()) {
            Some(v) => v,
            None => return err(path, "malformed PNM header"),
        };
    }
    let [w, h, maxval] = fields;
    if maxval != 255 {
        return err(path, format!("maxval {maxval} is not supported (only 255)"));
    }
    if !bytes.get(pos).is_some_and(u8::is_ascii_whitespace) {
        return err(path, "malformed PNM header");
    }
    let data = &bytes[pos + 1..];
    if Some(data.len()) != w.checked_mul(h).and_then(|n| n.checked_mul(channels)) {
        return err(path, format!("header says {w}×{h} but {} bytes of pixels follow", data.len()));
    }
    Ok((w, h, channels, data.to_vec()))
}

/// Image `index` of an IDX image file or a CIFAR-10 batch (detected by the IDX magic), as the
/// trainer sees it: (H, W, pixels), CIFAR folded to 32×96.
pub fn read_record(path: &Path, index: usize) -> Result<(usize, usize, Vec<u8>), DataError> {
    let bytes = read_file(path)?;
    let (h, w, images) = if bytes.starts_with(&[0, 0, 8, 3]) {
        let (_, h, w, px) = parse_idx_images(path, &bytes)?;
        (h, w, px)
    } else {
        let mut d = Dataset { h: CIFAR_SIDE, w: 3 * CIFAR_SIDE, images: vec![], labels: vec![] };
        parse_cifar_batch(path, &bytes, &mut d)?;
        (d.h, d.w, d.images)
    };
    let n = images.len() / (h * w);
    if index >= n {
        return err(path, format!("has {n} images; there is no image {index}"));
    }
    Ok((h, w, images[index * h * w..(index + 1) * h * w].to_vec()))
}
