//! The tape: values in the order they were computed, and for each op a node that knows how to
//! send its output's gradient back to its inputs.
//!
//! An op is a forward function (computes its output, pushes it with [`Tape::push`]) and a type
//! implementing [`Backward`]; the tape never needs to know which ops exist. [`Tape::backward`]
//! walks the nodes in reverse, and each node sends its inputs' gradients into their buffers, one
//! per value: the first op to reach a value *writes* its buffer, later ones *add* into it
//! ([`Grad`], in `grad.rs`).
//!
//! Buffers come from a [`Pool`] (`pool.rs`) and go back to it when the tape is finished
//! ([`Tape::into_pool`]), with the tape's own bookkeeping; profiling hooks in at two places
//! ([`Tape::push`] and [`Tape::backward_from`]). Neither changes a value.

use crate::grad::Grad;
use crate::params::{ParamId, Params};
use crate::pool::Pool;
use crate::profile::{Phase, Profile};
use crate::tensor::Tensor;
use pmixer_kernels::bf16::Precision;
use pmixer_kernels::{simd, Real};
use std::any::Any;
use std::ops::{Index, Range};
use std::time::Instant;

/// What a tape records: per value its data (or parameter), whether it needs a gradient and the
/// gradient so far; per node its inputs, output and op.
struct Record<T> {
    values: Vec<Value<T>>,
    needs_grad: Vec<bool>,
    grads: Vec<Vec<T>>,
    nodes: Vec<Node>,
    node_inputs: Vec<Var>,
    ops: Vec<Box<dyn Backward<T>>>,
}

impl<T> Default for Record<T> {
    fn default() -> Self {
        Record {
            values: Vec::new(),
            needs_grad: Vec::new(),
            grads: Vec::new(),
            nodes: Vec::new(),
            node_inputs: Vec::new(),
            ops: Vec::new(),
        }
    }
}

/// A finished tape's record, emptied with its capacity kept, its op boxes (last op first) and
/// the backward pass's list of gradient slots, for the next tape to reuse (carried by the
/// [`Pool`]).
pub(crate) struct Spare<T> {
    record: Record<T>,
    boxes: Vec<Box<dyn Backward<T>>>,
    bufs: Vec<Option<(Vec<T>, bool)>>,
}

impl<T> Default for Spare<T> {
    fn default() -> Self {
        Spare { record: Record::default(), boxes: Vec::new(), bufs: Vec::new() }
    }
}

/// A value on the tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var(usize);

/// The most inputs an op takes (the gated axis MLP: x, four weights, the two tensors it keeps,
/// the residual and the gate).
pub const MAX_INPUTS: usize = 9;

/// The values of a node's inputs, in order: `inputs[i]` is input i's data.
pub struct Inputs<'a, T> {
    values: &'a [Value<T>],
    params: &'a Params<T>,
    vars: &'a [Var],
}

impl<T: Real> Inputs<'_, T> {
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
}

impl<'a, T: Real> Inputs<'a, T> {
    /// The inputs' data, to be named by destructuring: `let [x, g] = inputs.array();` (N is the
    /// node's number of inputs).
    pub fn array<const N: usize>(&self) -> [&'a [T]; N] {
        assert_eq!(self.vars.len(), N, "a node with {} inputs read as {N}", self.vars.len());
        std::array::from_fn(|i| data(self.values, self.params, self.vars[i]))
    }
}

/// An op's gradient slots, to be named by destructuring: `let [dx, dg] = slots(d);` (N is the
/// node's number of inputs).
pub fn slots<'s, 'a, T, const N: usize>(
    d: &'s mut [Option<Grad<'a, T>>],
) -> &'s mut [Option<Grad<'a, T>>; N] {
    let n = d.len();
    d.try_into().unwrap_or_else(|_| panic!("a node with {n} inputs read as {N}"))
}

impl<T: Real> Index<usize> for Inputs<'_, T> {
    type Output = [T];
    fn index(&self, i: usize) -> &[T] {
        data(self.values, self.params, self.vars[i])
    }
}

/// The backward half of an op: given the gradient `dy` of its output, send the gradient of each
/// input to `dinputs[i]` (`None` where that input needs no gradient), adding or writing as the
/// [`Grad`] says. Scratch space comes from `pool` and should be given back to it.
///
/// Ops are plain data (`Send + Sync`, `'static`); the tape keeps each in a box that the next tape reuses
/// for the op of the same type at the same position ([`AsAny`] finds the type).
pub trait Backward<T: Real>: AsAny + Send + Sync {
    fn backward(&self, inputs: &Inputs<T>, dy: &[T], dinputs: &mut [Option<Grad<T>>], pool: &mut Pool<T>);

    /// The op's name in profiles.
    fn name(&self) -> &'static str;

    /// FLOPs of the forward and of the backward, for profiles (0 where negligible).
    fn flops(&self) -> (u64, u64) {
        (0, 0)
    }

    /// Bytes the forward and the backward must move to or from memory at the least: every
    /// tensor they read or write that outlives the call, once (scratch that stays in cache not
    /// counted). With [`Backward::flops`] it places the op on a roofline (0 where negligible).
    fn bytes(&self) -> (u64, u64) {
        (0, 0)
    }

    /// The input, if any, whose gradient is the output's gradient unchanged (the skip of a
    /// residual `y = h + …`: dh += dy). The tape routes it itself: an input with no gradient yet
    /// takes over dy's buffer (no copy), otherwise dy is added in. The op receives no buffer for
    /// that input.
    fn pass_through(&self) -> Option<usize> {
        None
    }
}

/// An op as `Any`, so that a recycled box can be checked for the op's type and overwritten.
pub trait AsAny: Any {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<O: Any> AsAny for O {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

enum Value<T> {
    Owned(Tensor<T>),
    Param(ParamId),
}

/// An op's record: its inputs (a range of the tape's `node_inputs`) and its output; the op
/// itself is `ops[i]` for node i.
struct Node {
    inputs: Range<usize>,
    output: Var,
}

/// A recording of one forward pass over a model whose parameters live in `params`.
pub struct Tape<'p, T> {
    params: &'p Params<T>,
    params_need_grad: bool,
    rec: Record<T>,
    pool: Pool<T>,
    /// When profiling: the profile and the time of the last event (an op's forward is the time
    /// since the event before it).
    profile: Option<(Profile, Instant)>,
    /// What the axis-MLPs recorded from now on compute in.
    precision: Precision,
}

fn data<'a, T: Real>(values: &'a [Value<T>], params: &'a Params<T>, v: Var) -> &'a [T] {
    match &values[v.0] {
        Value::Owned(t) => &t.data,
        Value::Param(id) => params.get(*id),
    }
}

impl<'p, T: Real> Tape<'p, T> {
    /// A tape for training: parameters need gradients, so every op is recorded.
    pub fn new(params: &'p Params<T>) -> Self {
        Tape::with_pool(params, Pool::new(), true)
    }

    /// A tape for inference: parameters need no gradient, so ops on them record nothing and keep
    /// nothing for a backward pass (inputs that ask for a gradient still get one).
    pub fn no_grad(params: &'p Params<T>) -> Self {
        Tape::with_pool(params, Pool::new(), false)
    }

    /// A tape that takes its buffers from `pool` (see [`Tape::into_pool`]); `train` as in
    /// [`Tape::new`] versus [`Tape::no_grad`].
    pub fn with_pool(params: &'p Params<T>, mut pool: Pool<T>, train: bool) -> Self {
        let rec = std::mem::take(&mut pool.spare.record);
        Tape { params, params_need_grad: train, rec, pool, profile: None, precision: Precision::F32 }
    }

    /// Makes the axis-MLPs recorded from now on compute in `precision` (`f32` unless set).
    /// bf16 needs `T = f32` and a CPU that has it ([`Precision::check`]); panics otherwise.
    pub fn set_precision(&mut self, precision: Precision) {
        if precision == Precision::Bf16 {
            assert!(T::is_f32(), "bf16 is for f32 tapes");
            precision.check().expect("bf16 on this CPU");
        }
        self.precision = precision;
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Times every op from now on into `profile`.
    pub fn enable_profile(&mut self, profile: Profile) {
        self.profile = Some((profile, Instant::now()));
    }

    /// The profile, if one was enabled.
    pub fn take_profile(&mut self) -> Option<Profile> {
        self.profile.take().map(|(p, _)| p)
    }

    /// Ends the tape, returning every buffer it owned to the pool, with its emptied lists and its
    /// op boxes for the next tape.
    pub fn into_pool(mut self) -> Pool<T> {
        let rec = &mut self.rec;
        for v in rec.values.drain(..) {
            if let Value::Owned(t) = v {
                self.pool.give(t.data);
            }
        }
        for g in rec.grads.drain(..) {
            self.pool.give(g);
        }
        rec.needs_grad.clear();
        rec.nodes.clear();
        rec.node_inputs.clear();
        // This tape's ops become the boxes to reuse, first op last (they are popped); the list
        // the boxes came from, emptied, becomes the next tape's list of ops.
        rec.ops.reverse();
        let ops = std::mem::take(&mut rec.ops);
        rec.ops = std::mem::replace(&mut self.pool.spare.boxes, ops);
        rec.ops.clear();
        self.pool.spare.record = self.rec;
        self.pool
    }

    /// A zero-filled buffer from the tape's pool, for an op's output.
    pub fn zeros(&mut self, len: usize) -> Vec<T> {
        self.pool.zeros(len)
    }

    /// A buffer from the tape's pool with unspecified contents, for an output the op overwrites
    /// in full.
    pub fn take(&mut self, len: usize) -> Vec<T> {
        self.pool.take(len)
    }

    /// Returns a buffer an op no longer needs to the tape's pool.
    pub fn give(&mut self, v: Vec<T>) {
        self.pool.give(v);
    }

    /// Keeps `data` on the tape for an op's backward pass: a leaf that needs no gradient, passed
    /// to the op's node as an extra input.
    pub fn keep(&mut self, data: Vec<T>) -> Var {
        let n = data.len();
        self.leaf(Value::Owned(Tensor::new(&[n], data)), false)
    }

    fn leaf(&mut self, value: Value<T>, needs_grad: bool) -> Var {
        self.rec.values.push(value);
        self.rec.needs_grad.push(needs_grad);
        self.rec.grads.push(Vec::new());
        Var(self.rec.values.len() - 1)
    }

    /// A parameter as a leaf (its data is borrowed, not copied). Its gradient is read back with
    /// [`Tape::param_grads`].
    pub fn param(&mut self, id: ParamId) -> Var {
        self.restart_clock();
        self.leaf(Value::Param(id), self.params_need_grad)
    }

    /// An input or constant as a leaf; `needs_grad` asks for its gradient (saliency maps).
    pub fn input(&mut self, t: Tensor<T>, needs_grad: bool) -> Var {
        self.restart_clock();
        self.leaf(Value::Owned(t), needs_grad)
    }

    /// When profiling, the next op's forward is timed from here (work between ops, such as
    /// making leaves, is not charged to an op).
    fn restart_clock(&mut self) {
        if let Some((_, last)) = &mut self.profile {
            *last = Instant::now();
        }
    }

    /// Records an op: `out` is its computed output, `op` its backward. Returns the output's
    /// handle. When no input needs a gradient the node is not kept (inference records nothing).
    pub fn push<O: Backward<T>>(&mut self, out: Tensor<T>, inputs: &[Var], op: O) -> Var {
        assert!(inputs.len() <= MAX_INPUTS, "an op with {} inputs (at most {MAX_INPUTS})", inputs.len());
        if let Some((p, last)) = &mut self.profile {
            let now = Instant::now();
            p.record(op.name(), Phase::Forward, (now - *last).as_secs_f64(), op.flops().0, op.bytes().0);
            *last = now;
        }
        let needs_grad = inputs.iter().any(|v| self.rec.needs_grad[v.0]);
        let output = self.leaf(Value::Owned(out), needs_grad);
        if needs_grad {
            let start = self.rec.node_inputs.len();
            self.rec.node_inputs.extend_from_slice(inputs);
            self.rec.nodes.push(Node { inputs: start..self.rec.node_inputs.len(), output });
            // The box the last tape used at this position, if it held the same type of op.
            let op: Box<dyn Backward<T>> = match self.pool.spare.boxes.pop() {
                Some(mut b) if (*b).as_any().is::<O>() => {
                    *(*b).as_any_mut().downcast_mut::<O>().expect("checked") = op;
                    b
                }
                _ => Box::new(op),
            };
            self.rec.ops.push(op);
        }
        output
    }

    /// Whether an op on these inputs will be recorded (so its forward should keep what the
    /// backward needs).
    pub fn records(&self, inputs: &[Var]) -> bool {
        inputs.iter().any(|v| self.rec.needs_grad[v.0])
    }

    pub fn value(&self, v: Var) -> &[T] {
        data(&self.rec.values, self.params, v)
    }

    pub fn shape(&self, v: Var) -> &[usize] {
        match &self.rec.values[v.0] {
            Value::Owned(t) => &t.shape,
            Value::Param(id) => &self.params.spec(*id).shape,
        }
    }

    /// The gradient of the last [`Tape::backward`]'s loss with respect to the leaf `v` (an input
    /// or a parameter), if one reached it. Gradients of intermediate values are recycled as soon
    /// as they have been propagated.
    pub fn grad(&self, v: Var) -> Option<&[T]> {
        let g = &self.rec.grads[v.0];
        (!g.is_empty()).then_some(g.as_slice())
    }

    /// Reverse-mode sweep from a scalar `loss`: d loss / d loss = 1, then every node in reverse
    /// order adds its inputs' gradients.
    pub fn backward(&mut self, loss: Var) {
        self.backward_from(loss, T::ONE)
    }

    /// The sweep for a loss that enters a larger total as `weight · loss`: it starts from
    /// d total / d loss = `weight`, so every gradient is the total's. (The trainer's shards: the
    /// batch's mean loss is Σ_s (n_s/B)·L_s.)
    ///
    /// For each node, last first: take its output's gradient dy (skip the node if none reached
    /// it), lend the op its inputs' gradient buffers, let it send its gradients, take the
    /// buffers back, and hand dy to the input it passes through unchanged, if any.
    pub fn backward_from(&mut self, loss: Var, weight: T) {
        assert_eq!(self.value(loss).len(), 1, "backward needs a scalar loss");
        let mut seed = self.pool.zeros(1);
        seed[0] = weight;
        self.rec.grads[loss.0] = seed;
        let mut bufs = std::mem::take(&mut self.pool.spare.bufs);
        for i in (0..self.rec.nodes.len()).rev() {
            let node = &self.rec.nodes[i];
            let dy = std::mem::take(&mut self.rec.grads[node.output.0]);
            if dy.is_empty() {
                continue;
            }
            let (inputs, through) = (node.inputs.clone(), self.rec.ops[i].pass_through());
            self.lend_grads(inputs.clone(), through, &mut bufs);
            self.run_backward(i, &dy, &mut bufs);
            self.return_grads(inputs.clone(), through, &mut bufs);
            self.pass_through(inputs, through, dy);
        }
        self.pool.spare.bufs = bufs;
    }

    /// Whether input slot `i` of the node whose inputs are `vars` repeats an earlier slot's value
    /// (x + x), so that the earlier slot holds the value's gradient buffer.
    fn repeats(vars: &[Var], through: Option<usize>, i: usize) -> bool {
        (0..i).any(|j| vars[j] == vars[i] && through != Some(j))
    }

    /// Takes each input's gradient buffer out of the tape into `bufs` for the op's call: `None`
    /// where the input needs no gradient or is passed through; otherwise the gradient so far, or
    /// a fresh (unzeroed) buffer if none has reached it yet, or for a repeated input's second
    /// slot.
    fn lend_grads(
        &mut self,
        inputs: Range<usize>,
        through: Option<usize>,
        bufs: &mut Vec<Option<(Vec<T>, bool)>>,
    ) {
        bufs.clear();
        let vars = &self.rec.node_inputs[inputs];
        for (i, v) in vars.iter().enumerate() {
            let len = data(&self.rec.values, self.params, *v).len();
            bufs.push(if !self.rec.needs_grad[v.0] || through == Some(i) {
                None
            } else if Self::repeats(vars, through, i) {
                Some((self.pool.take(len), true))
            } else {
                let g = std::mem::take(&mut self.rec.grads[v.0]);
                Some(match g.is_empty() {
                    true => (self.pool.take(len), true),
                    false => (g, false),
                })
            });
        }
    }

    /// Node `i`'s backward on the lent buffers (timed when profiling).
    fn run_backward(&mut self, i: usize, dy: &[T], bufs: &mut [Option<(Vec<T>, bool)>]) {
        let (node, op) = (&self.rec.nodes[i], &self.rec.ops[i]);
        let vars = &self.rec.node_inputs[node.inputs.clone()];
        let inputs = Inputs { values: &self.rec.values, params: self.params, vars };
        let mut dins: [Option<Grad<T>>; MAX_INPUTS] = Default::default();
        for (d, b) in dins.iter_mut().zip(bufs.iter_mut()) {
            *d = b.as_mut().map(|(g, fresh)| Grad::new(g, fresh));
        }
        let start = self.profile.is_some().then(Instant::now);
        op.backward(&inputs, dy, &mut dins[..vars.len()], &mut self.pool);
        if let (Some((p, _)), Some(start)) = (&mut self.profile, start) {
            let seconds = start.elapsed().as_secs_f64();
            p.record(op.name(), Phase::Backward, seconds, op.flops().1, op.bytes().1);
        }
    }

    /// Puts the lent buffers back as their inputs' gradients: a fresh buffer the op never wrote
    /// is zero-filled (it sent no gradient there), and a repeated input's buffer is added into
    /// the first slot's.
    fn return_grads(
        &mut self,
        inputs: Range<usize>,
        through: Option<usize>,
        bufs: &mut Vec<Option<(Vec<T>, bool)>>,
    ) {
        let vars = &self.rec.node_inputs[inputs];
        for (i, (v, buf)) in vars.iter().zip(bufs.drain(..)).enumerate() {
            let Some((mut buf, fresh)) = buf else { continue };
            if fresh {
                buf.fill(T::ZERO);
            }
            if Self::repeats(vars, through, i) {
                simd::add_assign(&mut self.rec.grads[v.0], &buf);
                self.pool.give(buf);
            } else {
                self.rec.grads[v.0] = buf;
            }
        }
    }

    /// The node's output gradient dy is complete and consumed: it becomes the pass-through
    /// input's gradient (taking over the buffer when that input has none yet), or its buffer is
    /// recycled, so that a backward pass holds only the gradients still to be propagated.
    fn pass_through(&mut self, inputs: Range<usize>, through: Option<usize>, dy: Vec<T>) {
        let vars = &self.rec.node_inputs[inputs];
        match through.map(|i| vars[i]).filter(|v| self.rec.needs_grad[v.0]) {
            Some(v) if self.rec.grads[v.0].is_empty() => self.rec.grads[v.0] = dy,
            Some(v) => {
                simd::add_assign(&mut self.rec.grads[v.0], &dy);
                self.pool.give(dy);
            }
            None => self.pool.give(dy),
        }
    }

    /// Adds every parameter leaf's gradient into `flat`, laid out like `Params::data`.
    pub fn param_grads(&self, flat: &mut [T]) {
        assert_eq!(flat.len(), self.params.len());
        for (value, g) in self.rec.values.iter().zip(&self.rec.grads) {
            if let (Value::Param(id), false) = (value, g.is_empty()) {
                let s = self.params.spec(*id);
                for (f, d) in flat[s.offset..s.offset + s.len].iter_mut().zip(g) {
                    *f += *d;
                }
            }
        }
    }
}
