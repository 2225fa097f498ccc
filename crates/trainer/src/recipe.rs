//! Training recipes: what a run adds to the original's plain Adam on fixed images.
//!
//! `seed` is the original notebook's (no augmentation, no smoothing, Adam at a constant rate):
//! its runs keep their bits. `strong` adds, each also a flag of its own:
//!
//! * **augmentation**, in the batch assembly ([`augment_row`]): a random crop of the image
//!   padded by `crop_pad` zero pixels on each side (a shift of −pad…+pad pixels in each
//!   direction) and, where asked, a horizontal flip. In the folded CIFAR layout (32 × 96, each
//!   pixel's R, G, B side by side) a flip reverses the order of the 32 pixels of a row and keeps
//!   each pixel's channels in order; optionally **cutout**, a square of `cutout` pixels a side
//!   zeroed at a random place (DeVries & Taylor, 2017); optionally **CutMix** (Yun et al.,
//!   2019): with probability `cutmix`, a box of another training image (itself cropped and
//!   flipped) pasted over the image, the target then the two labels weighted by their areas.
//!   Each sample's draw ([`Draw`]) is a hash of (seed, epoch, sample index) ([`draw`]): the same
//!   on any thread count and on a resumed run, with nothing to save but the epoch;
//! * **label smoothing** ε: the target is (1 − ε)·onehot + ε/C, or (1 − ε)·(the CutMix mix of
//!   two onehots) + ε/C (`ops::softmax_cross_entropy_mixed`);
//! * **AdamW**: decoupled weight decay λ on the kernels (not biases, not gates),
//!   p ← p − η_t·λ·p before Adam's step, η_t the scheduled rate;
//! * a **schedule** ([`Recipe::lr_at`]): linear warmup to the base rate over `warmup_epochs`,
//!   then cosine decay towards 0, reached just after the last step (or a constant rate);
//! * optionally **test-time flips**: the classifier's test logits are the mean of the image's and
//!   its mirror image's (`train::evaluate`), in the run's test passes and in `pmixer eval`.

use crate::train::DatasetKind;
use pmixer_model::{Arch, Task};
use std::ops::Range;

/// How the learning rate moves over a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    /// Linear warmup, then cosine decay towards 0, reached just after the run's last step.
    Cosine,
}

impl Schedule {
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Cosine => "cosine",
        }
    }

    pub fn parse(s: &str) -> Option<Schedule> {
        [Schedule::Constant, Schedule::Cosine].into_iter().find(|k| k.name() == s)
    }
}

/// Everything a recipe sets beyond the original's training (recorded in the checkpoint).
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    /// "seed" or "strong", for the record.
    pub name: String,
    /// Zero pixels padded on each side before the random crop (0: no crop).
    pub crop_pad: usize,
    /// Random horizontal flips (half the samples).
    pub flip: bool,
    /// Side of the square of pixels zeroed at a random place in each image after the crop and
    /// flip (cutout; 0: none). The square may reach past the image's edge.
    pub cutout: usize,
    /// The probability that an image gets a CutMix box from another image (0: never).
    pub cutmix: f64,
    /// Label smoothing ε in [0, 1).
    pub label_smoothing: f64,
    /// AdamW's decoupled weight decay λ on the kernels (0: plain Adam).
    pub weight_decay: f64,
    /// Epochs of linear warmup (with the cosine schedule).
    pub warmup_epochs: f64,
    pub schedule: Schedule,
    /// Evaluate on each test image and its mirror image, averaging the logits.
    pub test_flip: bool,
}

/// The error of `--test-flip` on an autoencoder.
pub const TEST_FLIP_NEEDS_A_CLASSIFIER: &str = "--test-flip: only a classifier's logits can be averaged";

/// The recipes' names, for `--recipe`.
pub const RECIPES: [&str; 2] = ["seed", "strong"];

/// A recipe's training defaults that the flags of the original also set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Defaults {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
}

impl Recipe {
    /// The original notebook's training: nothing added.
    pub fn seed() -> Recipe {
        Recipe {
            name: "seed".into(),
            crop_pad: 0,
            flip: false,
            cutout: 0,
            cutmix: 0.0,
            label_smoothing: 0.0,
            weight_decay: 0.0,
            warmup_epochs: 0.0,
            schedule: Schedule::Constant,
            test_flip: false,
        }
    }

    /// The recipe `name` for a dataset (its defaults depend on the image size: CIFAR-sized images
    /// get flips, a 4-pixel crop, CutMix on every image and test-time flips, MNIST-sized ones
    /// a 2-pixel crop and nothing else: digits are not mirror-symmetric), with the epochs, batch
    /// size and rate it trains with unless flags say otherwise.
    pub fn named(name: &str, dataset: DatasetKind) -> Result<(Recipe, Defaults), String> {
        let original = Defaults { epochs: 10, batch_size: 64, lr: 1e-3 };
        match name {
            "seed" => Ok((Recipe::seed(), original)),
            "strong" => {
                let cifar = dataset == DatasetKind::Cifar10;
                let recipe = Recipe {
                    name: "strong".into(),
                    crop_pad: if cifar { 4 } else { 2 },
                    flip: cifar,
                    cutout: 0,
                    cutmix: if cifar { 1.0 } else { 0.0 },
                    label_smoothing: 0.1,
                    weight_decay: 0.05,
                    warmup_epochs: 1.0,
                    schedule: Schedule::Cosine,
                    test_flip: cifar,
                };
                let defaults = match cifar {
                    true => Defaults { epochs: 110, batch_size: 128, lr: 2e-3 },
                    false => Defaults { epochs: 40, batch_size: 128, lr: 2e-3 },
                };
                Ok((recipe, defaults))
            }
            _ => Err(format!("unknown recipe {name:?} (expected {})", RECIPES.join(" or "))),
        }
    }

    /// Whether the batch assembly has anything to do.
    pub fn augments(&self) -> bool {
        self.crop_pad > 0 || self.flip || self.cutout > 0 || self.cutmix > 0.0
    }

    /// Checks the recipe against the run (`epochs` of a model `arch` over images of `channels`
    /// values a pixel): each problem named by its flag.
    pub fn check(&self, epochs: usize, arch: &Arch, channels: usize) -> Result<(), String> {
        let (h, w_pixels) = (arch.h, arch.w / channels);
        if self.test_flip && arch.task != Task::Classify {
            return Err(TEST_FLIP_NEEDS_A_CLASSIFIER.into());
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(format!("--label-smoothing must be in [0, 1), not {}", self.label_smoothing));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(format!("--weight-decay must be a finite number ≥ 0, not {}", self.weight_decay));
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs.is_finite()) {
            return Err(format!("--warmup-epochs must be a finite number ≥ 0, not {}", self.warmup_epochs));
        }
        if self.schedule == Schedule::Cosine && self.warmup_epochs >= epochs as f64 {
            return Err(format!(
                "--warmup-epochs {} is not shorter than the run ({epochs} epochs)",
                self.warmup_epochs
            ));
        }
        if self.crop_pad >= h.min(w_pixels) {
            return Err(format!("--crop-pad {} is not smaller than the {h}×{w_pixels} image", self.crop_pad));
        }
        if !(0.0..=1.0).contains(&self.cutmix) {
            return Err(format!("--cutmix must be a probability in [0, 1], not {}", self.cutmix));
        }
        if self.cutout > h.min(w_pixels) {
            return Err(format!("--cutout {} is larger than the {h}×{w_pixels} image", self.cutout));
        }
        Ok(())
    }

    /// The learning rate of step `t` (counted from 0) of a run of `total` steps with
    /// `per_epoch` steps an epoch, for base rate `lr`: constant, or a linear warmup to `lr`
    /// ((t + 1)/warmup of it) then a half cosine from `lr` towards 0, reached at step `total`.
    pub fn lr_at(&self, lr: f64, t: u64, per_epoch: usize, total: u64) -> f64 {
        if self.schedule == Schedule::Constant {
            return lr;
        }
        let warmup = (self.warmup_epochs * per_epoch as f64).round() as u64;
        if t < warmup {
            return lr * (t + 1) as f64 / warmup as f64;
        }
        let span = total.saturating_sub(warmup).max(1) as f64;
        let progress = ((t - warmup) as f64 / span).min(1.0);
        lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }

    /// The metadata a checkpoint records.
    pub fn to_metadata(&self) -> Vec<(&'static str, String)> {
        vec![
            ("train.recipe", self.name.clone()),
            ("train.crop_pad", self.crop_pad.to_string()),
            ("train.flip", self.flip.to_string()),
            ("train.cutout", self.cutout.to_string()),
            ("train.cutmix", format!("{:e}", self.cutmix)),
            ("train.label_smoothing", format!("{:e}", self.label_smoothing)),
            ("train.weight_decay", format!("{:e}", self.weight_decay)),
            ("train.warmup_epochs", format!("{:e}", self.warmup_epochs)),
            ("train.schedule", self.schedule.name().to_string()),
            ("train.test_flip", self.test_flip.to_string()),
        ]
    }

    /// The recipe a checkpoint records; the seed recipe for checkpoints from before recipes.
    pub fn from_metadata(get: impl Fn(&str) -> Option<String>) -> Result<Recipe, String> {
        let Some(name) = get("train.recipe") else { return Ok(Recipe::seed()) };
        let field = |k: &str| get(k).ok_or_else(|| format!("no {k:?} in the metadata"));
        let num = |k: &str| -> Result<f64, String> {
            field(k)?.parse().map_err(|_| format!("metadata {k:?} is not a number"))
        };
        Ok(Recipe {
            name,
            crop_pad: field("train.crop_pad")?
                .parse()
                .map_err(|_| "metadata \"train.crop_pad\" is not a count")?,
            flip: field("train.flip")? == "true",
            // Recorded since cutout exists; none before.
            cutout: get("train.cutout")
                .map_or(Ok(0), |v| v.parse().map_err(|_| "metadata \"train.cutout\" is not a count"))?,
            // Recorded since CutMix exists; none before.
            cutmix: get("train.cutmix").map_or(Ok(0.0), |_| num("train.cutmix"))?,
            label_smoothing: num("train.label_smoothing")?,
            weight_decay: num("train.weight_decay")?,
            warmup_epochs: num("train.warmup_epochs")?,
            schedule: Schedule::parse(&field("train.schedule")?).ok_or("unknown train.schedule")?,
            // Recorded since test-time flips exist; none before.
            test_flip: get("train.test_flip").is_some_and(|v| v == "true"),
        })
    }
}

/// SplitMix64's output function: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A hash's top 53 bits as a uniform number in [0, 1).
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A crop and flip: output (r, p) reads source (r + dy, p′ + dx), p′ = p mirrored when `flip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shift {
    /// The shift, each in −pad..=pad pixels.
    pub dy: isize,
    pub dx: isize,
    pub flip: bool,
}

/// A CutMix box: rows `rows.0..rows.1` and pixels `pixels.0..pixels.1` (inside the image) come
/// from training image `partner`, cropped and flipped by `shift` (the partner's own draw).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CutMix {
    pub partner: usize,
    pub shift: Shift,
    pub rows: (usize, usize),
    pub pixels: (usize, usize),
    /// The image's own label's weight in the target: 1 − the box's share of the image's area.
    pub share: f64,
}

/// One sample's augmentation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Draw {
    pub shift: Shift,
    /// The cutout square: its top-left output pixel (possibly outside the image) and its side.
    pub cut: Option<(isize, isize, usize)>,
    pub mix: Option<CutMix>,
}

impl Draw {
    /// No augmentation at all.
    pub const NONE: Draw = Draw { shift: Shift { dy: 0, dx: 0, flip: false }, cut: None, mix: None };
}

/// The hash a sample's draw comes from.
fn sample_hash(seed: u64, epoch: usize, sample: usize) -> u64 {
    mix(mix(mix(seed) ^ epoch as u64) ^ sample as u64)
}

/// The crop and flip of the sample whose hash is `r`.
fn shift_of(recipe: &Recipe, r: u64) -> Shift {
    let span = 2 * recipe.crop_pad as u64 + 1;
    let pad = recipe.crop_pad as isize;
    Shift {
        dy: (r % span) as isize - pad,
        dx: ((r >> 16) % span) as isize - pad,
        flip: recipe.flip && (r >> 63) == 1,
    }
}

/// One sample's augmentation for an image of `h` × `pixels` in a training set of `population`
/// images, drawn from a hash of (seed, epoch, sample index) alone.
///
/// The CutMix box follows Yun et al.: its share of the area 1 − λ with λ uniform in [0, 1), so
/// its sides are √(1 − λ) of the image's (rounded), its centre anywhere in the image; the parts
/// outside the image are cut off, and the target's weights are the areas actually pasted.
pub fn draw(
    recipe: &Recipe,
    seed: u64,
    epoch: usize,
    sample: usize,
    (h, pixels): (usize, usize),
    population: usize,
) -> Draw {
    let r = sample_hash(seed, epoch, sample);
    let shift = shift_of(recipe, r);
    // The cutout square's centre anywhere in the image, so that it may be cut by the edges.
    let c = mix(r);
    let side = recipe.cutout;
    let cut = (side > 0).then(|| {
        let (cy, cx) = ((c % h as u64) as isize, ((c >> 32) % pixels as u64) as isize);
        (cy - (side / 2) as isize, cx - (side / 2) as isize, side)
    });
    let m1 = mix(c);
    let mix = (unit(m1) < recipe.cutmix).then(|| {
        let m2 = mix(m1);
        let (m3, m4) = (mix(m2), mix(mix(m2)));
        let ratio = (1.0 - unit(m2)).sqrt();
        let span = |centre: u64, len: usize| {
            let side = (len as f64 * ratio).round() as isize;
            let start = (centre % len as u64) as isize - side / 2;
            (start.clamp(0, len as isize) as usize, (start + side).clamp(0, len as isize) as usize)
        };
        let (rows, cols) = (span(m3, h), span(m3 >> 32, pixels));
        let area = (rows.1 - rows.0) * (cols.1 - cols.0);
        let partner = (m4 % population as u64) as usize;
        CutMix {
            partner,
            shift: shift_of(recipe, sample_hash(seed, epoch, partner)),
            rows,
            pixels: cols,
            share: 1.0 - area as f64 / (h * pixels) as f64,
        }
    });
    Draw { shift, cut, mix }
}

/// Pixels `range` of row `r` of `img` (h rows of `w` values, `channels` values a pixel) shifted
/// as `s` says, as values ÷ 255 into `out` (`range.len()` pixels): 0 where the source is outside
/// the image (the zero padding of a crop).
fn shifted(
    img: &[u8],
    (h, w, channels): (usize, usize, usize),
    s: Shift,
    r: usize,
    range: Range<usize>,
    out: &mut [f32],
) {
    let sr = r as isize + s.dy;
    if !(0..h as isize).contains(&sr) {
        out.fill(0.0);
        return;
    }
    let src = &img[sr as usize * w..(sr as usize + 1) * w];
    let pixels = w / channels;
    for (p, dst) in range.zip(out.chunks_exact_mut(channels)) {
        let q = if s.flip { pixels - 1 - p } else { p } as isize + s.dx;
        if (0..pixels as isize).contains(&q) {
            let v = &src[q as usize * channels..(q as usize + 1) * channels];
            dst.iter_mut().zip(v).for_each(|(o, &v)| *o = v as f32 * (1.0 / 255.0));
        } else {
            dst.fill(0.0);
        }
    }
}

/// Row `r` of training image `sample` (`image(i)` gives image i: h rows of `w` values,
/// `channels` values a pixel) augmented as `d` says, as pixels ÷ 255 into `out` (w values):
/// `out[c]` is the source value at row r + dy, pixel p(c) + dx, where p mirrors the pixel when
/// flipping, and 0 outside the image (the zero padding of a crop); inside a CutMix box the same
/// from the partner image under its own shift; 0 inside the cutout square.
pub fn augment_row<'a>(
    image: impl Fn(usize) -> &'a [u8],
    sample: usize,
    geometry: (usize, usize, usize),
    d: &Draw,
    r: usize,
    out: &mut [f32],
) {
    let (_, w, channels) = geometry;
    let pixels = w / channels;
    shifted(image(sample), geometry, d.shift, r, 0..pixels, out);
    if let Some(m) = &d.mix {
        if (m.rows.0..m.rows.1).contains(&r) {
            let (a, b) = m.pixels;
            shifted(image(m.partner), geometry, m.shift, r, a..b, &mut out[a * channels..b * channels]);
        }
    }
    if let Some((y0, x0, side)) = d.cut {
        if (y0..y0 + side as isize).contains(&(r as isize)) {
            let (a, b) = (
                x0.clamp(0, pixels as isize) as usize,
                (x0 + side as isize).clamp(0, pixels as isize) as usize,
            );
            out[a * channels..b * channels].fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmixer_autodiff::ops::Target;

    /// The mirror image, nothing else.
    const MIRROR: Draw = Draw { shift: Shift { dy: 0, dx: 0, flip: true }, cut: None, mix: None };

    /// The image augmented whole, as u8 values again (× 255, exact for these pixels).
    fn augmented(img: &[u8], geometry: (usize, usize, usize), d: Draw) -> Vec<u8> {
        let (h, w, _) = geometry;
        let mut out = vec![0f32; h * w];
        for (r, row) in out.chunks_exact_mut(w).enumerate() {
            augment_row(|_| img, 0, geometry, &d, r, row);
        }
        out.iter().map(|&v| (v * 255.0).round() as u8).collect()
    }

    #[test]
    fn a_flip_reverses_the_pixels_of_a_row_and_keeps_each_pixels_colours() {
        // A 2 × 3-pixel RGB image, value = 100·row + 10·pixel + channel.
        let (h, pixels, ch) = (2, 3, 3);
        let img: Vec<u8> =
            (0..h * pixels * ch).map(|i| (100 * (i / 9) + 10 * (i % 9 / 3) + i % 3) as u8).collect();
        let out = augmented(&img, (h, pixels * ch, ch), MIRROR);
        for r in 0..h {
            for p in 0..pixels {
                for k in 0..ch {
                    assert_eq!(out[r * 9 + p * 3 + k] as usize, 100 * r + 10 * (pixels - 1 - p) + k);
                }
            }
        }
    }

    #[test]
    fn an_identity_draw_assembles_the_plain_batch_and_a_flip_mirrors_it() {
        let d = crate::testdata::synthetic(5, 4, 9, 1); // 4 × 3 RGB pixels a row
        let idx = [3, 0, 4];
        let (mut plain, mut aug, mut flipped) =
            (vec![0f32; 4 * 3 * 9], vec![1f32; 4 * 3 * 9], vec![0f32; 4 * 3 * 9]);
        let (mut l1, mut l2) = (Vec::new(), Vec::new());
        d.fill_batch(&idx, &mut plain, &mut l1);
        d.fill_batch_augmented(&idx, 3, |_| Draw::NONE, &mut aug, &mut l2);
        assert_eq!(
            plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            aug.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(l1.iter().map(|&y| Target::label(y)).collect::<Vec<_>>(), l2);
        d.fill_batch_augmented(&idx, 3, |_| MIRROR, &mut flipped, &mut l2);
        // (H, B, W) rows of 9 values: pixel p's channels come from pixel 2 − p.
        for row in 0..4 * 3 {
            for p in 0..3 {
                for k in 0..3 {
                    assert_eq!(flipped[row * 9 + p * 3 + k], plain[row * 9 + (2 - p) * 3 + k]);
                }
            }
        }
    }

    #[test]
    fn a_shift_moves_pixels_and_pads_with_zeros() {
        let img: Vec<u8> = (1..=12).collect(); // 3 × 4, one channel
                                               // out[r][c] = img[r + 1][c − 1]: the first column and the last row come from the padding.
        let shift = Draw { shift: Shift { dy: 1, dx: -1, flip: false }, ..Draw::NONE };
        assert_eq!(augmented(&img, (3, 4, 1), shift), vec![0, 5, 6, 7, 0, 9, 10, 11, 0, 0, 0, 0]);
        // A flip and a shift: out[r][c] = img[r][(3 − c) + 1].
        let flip = Draw { shift: Shift { dy: 0, dx: 1, flip: true }, ..Draw::NONE };
        assert_eq!(augmented(&img, (3, 4, 1), flip), vec![0, 4, 3, 2, 0, 8, 7, 6, 0, 12, 11, 10]);
        // A cutout of side 2 at (−1, 2): only row 0, pixels 2 and 3, are inside the image.
        let cut = Draw { cut: Some((-1, 2, 2)), ..Draw::NONE };
        assert_eq!(augmented(&img, (3, 4, 1), cut), vec![1, 2, 0, 0, 5, 6, 7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn draws_depend_on_seed_epoch_and_sample_only_and_stay_in_range() {
        let mut r = Recipe::named("strong", DatasetKind::Cifar10).unwrap().0;
        r.cutout = 8;
        let mut flips = 0;
        for s in 0..4000 {
            let d = draw(&r, 3, 2, s, (32, 32), 100);
            assert!(d.shift.dy.abs() <= 4 && d.shift.dx.abs() <= 4);
            let (y0, x0, side) = d.cut.unwrap();
            assert!(side == 8 && (-4..28).contains(&y0) && (-4..28).contains(&x0), "{d:?}");
            flips += d.shift.flip as usize;
            assert_eq!(draw(&r, 3, 2, s, (32, 32), 100), d);
        }
        assert!((1800..2200).contains(&flips), "{flips} flips of 4000");
        assert_ne!(
            (0..64).map(|s| draw(&r, 3, 2, s, (32, 32), 100)).collect::<Vec<_>>(),
            (0..64).map(|s| draw(&r, 3, 3, s, (32, 32), 100)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn cutmix_boxes_stay_inside_and_weigh_the_labels_by_area() {
        let mut r = Recipe::named("strong", DatasetKind::Cifar10).unwrap().0;
        r.cutmix = 0.5;
        let (mut mixed, mut shares) = (0, 0.0);
        for s in 0..4000 {
            let d = draw(&r, 7, 1, s, (32, 30), 50);
            let Some(m) = d.mix else { continue };
            mixed += 1;
            assert!(m.rows.0 <= m.rows.1 && m.rows.1 <= 32 && m.pixels.0 <= m.pixels.1 && m.pixels.1 <= 30);
            let area = (m.rows.1 - m.rows.0) * (m.pixels.1 - m.pixels.0);
            assert_eq!(m.share, 1.0 - area as f64 / (32.0 * 30.0));
            assert!(m.partner < 50);
            // The partner is cropped and flipped as its own draw says.
            assert_eq!(m.shift, draw(&r, 7, 1, m.partner, (32, 30), 50).shift);
            shares += m.share;
        }
        assert!((1800..2200).contains(&mixed), "{mixed} of 4000 mixed");
        // λ uniform, the box's area 1 − λ before the edges cut it: the mean share is above ½.
        let mean = shares / mixed as f64;
        assert!((0.5..0.75).contains(&mean), "mean share {mean}");
        r.cutmix = 0.0;
        assert!((0..500).all(|s| draw(&r, 7, 1, s, (32, 30), 50).mix.is_none()));
    }

    #[test]
    fn a_cutmix_box_holds_the_partners_shifted_pixels() {
        // Two 4 × 4 one-channel images: image 0 is 1..=16, image 1 is 101..=116.
        let images: Vec<Vec<u8>> = vec![(1..=16).collect(), (101..=116).collect()];
        let geometry = (4, 4, 1);
        let partner_shift = Shift { dy: 0, dx: 1, flip: false };
        let mix = CutMix { partner: 1, shift: partner_shift, rows: (1, 3), pixels: (0, 2), share: 0.75 };
        let d = Draw { mix: Some(mix), ..Draw::NONE };
        let mut out = [0f32; 16];
        for (r, row) in out.chunks_exact_mut(4).enumerate() {
            augment_row(|i| &images[i], 0, geometry, &d, r, row);
        }
        let got: Vec<u8> = out.iter().map(|&v| (v * 255.0).round() as u8).collect();
        // Rows 1 and 2, pixels 0 and 1 read image 1 at pixel + 1.
        #[rustfmt::skip]
        let want = vec![1, 2, 3, 4,  106, 107, 7, 8,  110, 111, 11, 12,  13, 14, 15, 16];
        assert_eq!(got, want);
    }

    #[test]
    fn the_batch_targets_name_both_labels_of_a_mixed_image() {
        let d = crate::testdata::synthetic(6, 4, 9, 1);
        let mut r = Recipe::named("strong", DatasetKind::Cifar10).unwrap().0;
        r.cutmix = 1.0;
        let idx = [5, 1, 2];
        let (mut x, mut targets) = (vec![0f32; 4 * 3 * 9], Vec::new());
        let draw_of = |i| draw(&r, 1, 0, i, (4, 3), 6);
        d.fill_batch_augmented(&idx, 3, draw_of, &mut x, &mut targets);
        for (t, &i) in targets.iter().zip(&idx) {
            let m = draw_of(i).mix.unwrap();
            let want = Target { a: d.labels[i] as usize, b: d.labels[m.partner] as usize, share: m.share };
            assert_eq!(*t, want);
        }
    }

    #[test]
    fn the_schedule_warms_up_linearly_then_decays_to_zero() {
        let r = Recipe::named("strong", DatasetKind::Mnist).unwrap().0;
        let (lr, per_epoch, total) = (2e-3, 10, 100);
        assert!((r.lr_at(lr, 0, per_epoch, total) - 2e-4).abs() < 1e-12);
        assert!((r.lr_at(lr, 9, per_epoch, total) - 2e-3).abs() < 1e-12);
        assert!((r.lr_at(lr, 10, per_epoch, total) - 2e-3).abs() < 1e-12);
        assert!((r.lr_at(lr, 55, per_epoch, total) - 1e-3).abs() < 1e-12);
        assert!(r.lr_at(lr, 99, per_epoch, total) < 2e-6);
        assert_eq!(Recipe::seed().lr_at(lr, 55, per_epoch, total), lr);
    }

    #[test]
    fn bad_settings_name_their_flag() {
        let mut r = Recipe::named("strong", DatasetKind::Mnist).unwrap().0;
        let arch = Arch { task: Task::Classify, h: 28, w: 28, classes: 10, layers: 1 };
        assert!(r.check(20, &arch, 1).is_ok());
        r.label_smoothing = 1.0;
        assert!(r.check(20, &arch, 1).unwrap_err().contains("--label-smoothing"));
        r.label_smoothing = -0.1;
        assert!(r.check(20, &arch, 1).unwrap_err().contains("--label-smoothing"));
        r.label_smoothing = 0.1;
        r.weight_decay = -1.0;
        assert!(r.check(20, &arch, 1).unwrap_err().contains("--weight-decay"));
        r.weight_decay = 0.0;
        assert!(r.check(1, &arch, 1).unwrap_err().contains("--warmup-epochs"));
        r.cutout = 29;
        assert!(r.check(20, &arch, 1).unwrap_err().contains("--cutout"));
        r.crop_pad = 28;
        assert!(r.check(20, &arch, 1).unwrap_err().contains("--crop-pad"));
        assert!(Recipe::named("fancy", DatasetKind::Mnist).unwrap_err().contains("unknown recipe"));
    }

    #[test]
    fn the_strong_defaults_depend_on_the_image_size() {
        let (cifar, long) = Recipe::named("strong", DatasetKind::Cifar10).unwrap();
        assert!(cifar.flip && cifar.crop_pad == 4 && cifar.cutmix == 1.0 && cifar.test_flip);
        assert_eq!(long.epochs, 110);
        let (mnist, short) = Recipe::named("strong", DatasetKind::Mnist).unwrap();
        assert!(!mnist.flip && mnist.crop_pad == 2 && mnist.cutmix == 0.0 && !mnist.test_flip);
        assert_eq!(short.epochs, 40);
    }

    #[test]
    fn the_recipe_round_trips_through_metadata_and_defaults_to_seed() {
        let mut r = Recipe::named("strong", DatasetKind::Cifar10).unwrap().0;
        r.cutout = 12;
        let meta: std::collections::BTreeMap<_, _> = r.to_metadata().into_iter().collect();
        assert_eq!(Recipe::from_metadata(|k| meta.get(k).cloned()).unwrap(), r);
        assert_eq!(Recipe::from_metadata(|_| None).unwrap(), Recipe::seed());
    }
}
