//! What a trained model shows: autoencoder reconstructions, saliency maps, and predictions.

use crate::data::Dataset;
use crate::png::{self, Image};
use pmixer_autodiff::ops;
use pmixer_autodiff::{Params, Tape, Tensor, Var};
use pmixer_kernels::Real;
use pmixer_model::{Model, Task};

/// The model's output for one image (u8, H×W): logits (classifier) or the reconstruction.
pub fn forward_one(model: &Model, params: &Params<f32>, image: &[u8]) -> Vec<f32> {
    // One image: (H, 1, W) is the image's own row-major layout.
    let x: Vec<f32> = image.iter().map(|&p| p as f32 / 255.0).collect();
    model.infer(params, &x, 1, &mut pmixer_model::InferBuffers::default())
}

/// Softmax probabilities of logits ([`pmixer_autodiff::ops::softmax_row`]).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let mut p = logits.to_vec();
    pmixer_autodiff::ops::softmax_row(&mut p);
    p
}

/// Five test inputs (top row) above their reconstructions (bottom row), each pixel 3×3.
pub fn reconstructions(model: &Model, params: &Params<f32>, test: &Dataset, rgb: bool) -> Image {
    let (h, w) = (test.h, test.w);
    let (cw, scale, pad) = (if rgb { w / 3 } else { w }, 3, 4);
    let n = test.len().min(5);
    let mut grid =
        Image::new(pad + n * (cw * scale + pad), pad + 2 * (h * scale + pad), if rgb { 3 } else { 1 });
    grid.pixels.fill(255);
    for i in 0..n {
        let input = test.image(i);
        let output: Vec<u8> = forward_one(model, params, input)
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        let x = pad + i * (cw * scale + pad);
        grid.blit(&png::from_dataset(input, h, w, rgb), x, pad, scale);
        grid.blit(&png::from_dataset(&output, h, w, rgb), x, 2 * pad + h * scale, scale);
    }
    grid
}

/// The value of `f` at `x` and its gradient with respect to `x`: what a saliency map shows, for
/// any scalar function recorded on a tape.
pub fn input_gradient<T: Real>(
    params: &Params<T>,
    x: Tensor<T>,
    f: impl Fn(&mut Tape<T>, Var) -> Var,
) -> (T, Vec<T>) {
    let mut tape = Tape::no_grad(params);
    let xv = tape.input(x, true);
    let y = f(&mut tape, xv);
    tape.backward(y);
    let g = tape.grad(xv).map_or_else(|| vec![T::ZERO; tape.value(xv).len()], <[T]>::to_vec);
    (tape.value(y)[0], g)
}

/// A saliency map: the predicted class, its probability, and |∂ logit(predicted) / ∂ pixel| for
/// every pixel of the H×W input (for CIFAR, the largest over a pixel's three channels, so the
/// map is H×(W/3)).
pub fn saliency(model: &Model, params: &Params<f32>, image: &[u8], rgb: bool) -> (usize, f32, Image) {
    assert_eq!(model.arch.task, Task::Classify, "saliency needs a classifier");
    let (h, w) = (model.arch.h, model.arch.w);
    let probs = softmax(&forward_one(model, params, image));
    let pred = crate::train::argmax(&probs);
    let x: Vec<f32> = image.iter().map(|&p| p as f32 / 255.0).collect();
    let (_, g) = input_gradient(params, Tensor::new(&[h, 1, w], x), |t, xv| {
        let logits = model.forward(t, xv);
        ops::pick(t, logits, pred)
    });
    let mag: Vec<f32> = if rgb {
        g.chunks_exact(3).map(|c| c.iter().fold(0.0f32, |m, v| m.max(v.abs()))).collect()
    } else {
        g.iter().map(|v| v.abs()).collect()
    };
    let top = mag.iter().fold(1e-30f32, |m, &v| m.max(v));
    let cw = if rgb { w / 3 } else { w };
    let mut map = Image::new(cw, h, 3);
    for (i, &v) in mag.iter().enumerate() {
        map.set(i % cw, i / cw, png::heat(v / top));
    }
    (pred, probs[pred], map)
}

/// The image and its saliency map side by side, 4× enlarged.
pub fn saliency_picture(image: &[u8], h: usize, w: usize, rgb: bool, map: &Image) -> Image {
    let scale = 4;
    let pic = png::from_dataset(image, h, w, rgb);
    let mut out = Image::new(3 * 4 + 2 * pic.width * scale, 2 * 4 + h * scale, 3);
    out.pixels.fill(255);
    out.blit(&pic, 4, 4, scale);
    out.blit(map, 8 + pic.width * scale, 4, scale);
    out
}
