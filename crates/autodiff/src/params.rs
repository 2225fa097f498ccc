//! One flat buffer holding every parameter of a model, with named, shaped views into it.
//!
//! Because the parameters are one slice, an optimizer step is one loop over it, a checkpoint is
//! one write of it, and the gradients are a second slice of the same length and layout.

use pmixer_kernels::Real;

/// A named view into [`Params`]: `data[offset .. offset + len]`, row-major `shape`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub len: usize,
}

/// The handle of one parameter, as returned by [`Params::add`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub usize);

/// Every parameter of a model in one flat buffer.
#[derive(Clone, Debug, Default)]
pub struct Params<T> {
    pub data: Vec<T>,
    specs: Vec<ParamSpec>,
}

impl<T: Real> Params<T> {
    pub fn new() -> Self {
        Params { data: Vec::new(), specs: Vec::new() }
    }

    /// Appends a zero-filled parameter. Names must be unique.
    pub fn add(&mut self, name: impl Into<String>, shape: &[usize]) -> ParamId {
        let name = name.into();
        assert!(self.find(&name).is_none(), "duplicate parameter name {name}");
        let len = shape.iter().product();
        let offset = self.data.len();
        self.data.resize(offset + len, T::ZERO);
        self.specs.push(ParamSpec { name, shape: shape.to_vec(), offset, len });
        ParamId(self.specs.len() - 1)
    }

    pub fn spec(&self, id: ParamId) -> &ParamSpec {
        &self.specs[id.0]
    }

    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.specs.iter().position(|s| s.name == name).map(ParamId)
    }

    pub fn get(&self, id: ParamId) -> &[T] {
        let s = &self.specs[id.0];
        &self.data[s.offset..s.offset + s.len]
    }

    pub fn get_mut(&mut self, id: ParamId) -> &mut [T] {
        let s = &self.specs[id.0];
        &mut self.data[s.offset..s.offset + s.len]
    }

    /// Total number of scalars.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The same layout in another scalar type (e.g. an `f32` model as `f64` for a gradient check).
    pub fn cast<U: Real>(&self) -> Params<U> {
        Params {
            data: self.data.iter().map(|&x| U::from_f64(x.to_f64())).collect(),
            specs: self.specs.clone(),
        }
    }
}
