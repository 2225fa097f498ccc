//! Ops that only move values: reshape (the head's squeeze), 2-D transpose (undoing the (H, B, W)
//! layout in the head), and concatenation along the last axis.

use crate::{slots, Backward, Grad, Inputs, Pool, Tape, Tensor, Var};
use pmixer_kernels::{simd, Real};

/// Same values, new shape (e.g. the squeeze (H, B, 1) → (H, B)).
/// Backward: `dx += dy`.
pub fn reshape<T: Real>(t: &mut Tape<T>, x: Var, shape: &[usize]) -> Var {
    let mut y = t.take(t.value(x).len());
    y.copy_from_slice(t.value(x));
    t.push(Tensor::new(shape, y), &[x], Reshape)
}

struct Reshape;
impl<T: Real> Backward<T> for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }

    fn backward(&self, _: &Inputs<T>, dy: &[T], d: &mut [Option<Grad<T>>], _: &mut Pool<T>) {
        let [dx] = slots(d);
        if let Some(dx) = dx {
            dx.add(dy);
        }
    }
}

/// `y[c, r] = x[r, c]` for x of shape [R, C].
/// Backward: `dx[r, c] += dy[c, r]`.
pub fn transpose<T: Real>(t: &mut Tape<T>, x: Var) -> Var {
    let &[r, c] = t.shape(x) else { panic!("transpose: expected a matrix, got {:?}", t.shape(x)) };
    let mut y = t.take(r * c);
    let xv = t.value(x);
    for i in 0..r {
        for j in 0..c {
            y[j * r + i] = xv[i * c + j];
        }
    }
    t.push(Tensor::new(&[c, r], y), &[x], Transpose { r, c })
}

struct Transpose {
    r: usize,
    c: usize,
}
impl<T: Real> Backward<T> for Transpose {
    fn name(&self) -> &'static str {
        "transpose"
    }

    fn backward(&self, _: &Inputs<T>, dy: &[T], d: &mut [Option<Grad<T>>], _: &mut Pool<T>) {
        let [dx] = slots(d);
        if let Some(dx) = dx {
            let dx = dx.acc();
            for i in 0..self.r {
                for j in 0..self.c {
                    dx[i * self.c + j] += dy[j * self.r + i];
                }
            }
        }
    }
}

/// `y[n, :] = [a[n, :], b[n, :]]` for a [N, P] and b [N, Q]: y is [N, P+Q].
/// Backward: `da[n, :] += dy[n, ..P]`, `db[n, :] += dy[n, P..]`.
pub fn concat<T: Real>(t: &mut Tape<T>, a: Var, b: Var) -> Var {
    let (&[n, p], &[n2, q]) = (t.shape(a), t.shape(b)) else { panic!("concat: expected two matrices") };
    assert!(n == n2 && p > 0 && q > 0, "concat: shapes [{n}, {p}] and [{n2}, {q}]");
    let mut y = t.take(n * (p + q));
    for ((row, ra), rb) in
        y.chunks_exact_mut(p + q).zip(t.value(a).chunks_exact(p)).zip(t.value(b).chunks_exact(q))
    {
        row[..p].copy_from_slice(ra);
        row[p..].copy_from_slice(rb);
    }
    t.push(Tensor::new(&[n, p + q], y), &[a, b], Concat { p, q })
}

struct Concat {
    p: usize,
    q: usize,
}
impl<T: Real> Backward<T> for Concat {
    fn name(&self) -> &'static str {
        "concat"
    }

    fn backward(&self, _: &Inputs<T>, dy: &[T], d: &mut [Option<Grad<T>>], _: &mut Pool<T>) {
        let (p, q) = (self.p, self.q);
        let [da, db] = slots(d);
        let (mut da, mut db) = (da.as_mut().map(Grad::acc), db.as_mut().map(Grad::acc));
        for (n, row) in dy.chunks_exact(p + q).enumerate() {
            if let Some(da) = &mut da {
                simd::add_assign(&mut da[n * p..(n + 1) * p], &row[..p]);
            }
            if let Some(db) = &mut db {
                simd::add_assign(&mut db[n * q..(n + 1) * q], &row[p..]);
            }
        }
    }
}

/// `y = x[i]` (flat index), a scalar: the one logit a saliency map differentiates.
/// Backward: `dx[i] += dy`.
pub fn pick<T: Real>(t: &mut Tape<T>, x: Var, i: usize) -> Var {
    assert!(i < t.value(x).len(), "pick: index {i} out of range");
    let mut y = t.take(1);
    y[0] = t.value(x)[i];
    t.push(Tensor::new(&[1], y), &[x], Pick { i })
}

struct Pick {
    i: usize,
}
impl<T: Real> Backward<T> for Pick {
    fn name(&self) -> &'static str {
        "pick"
    }

    fn backward(&self, _: &Inputs<T>, dy: &[T], d: &mut [Option<Grad<T>>], _: &mut Pool<T>) {
        let [dx] = slots(d);
        if let Some(dx) = dx {
            dx.acc()[self.i] += dy[0];
        }
    }
}
