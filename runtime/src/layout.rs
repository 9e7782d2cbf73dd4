//! Layouts known at compile time: the [`Layout`] trait that `#[attention_layout]` (and the
//! build-script entry) implements with constants, and [`ConstDims`], the [`Dims`] of such a
//! layout, so the runtime's fill is monomorphized with every capacity and offset folded in.
//!
//! Generated code imports these items, and the helpers only it calls, through a hidden
//! path (`attention_layout::__private`, as `al`), which is not public API.

use std::fmt;
use std::marker::PhantomData;

pub use attention_layout_codegen::{
    BatchDims, Dtype, FIELD_COUNT, Facts, Field, FieldLayout, Geometry, LayoutSpec, ModelKind,
    SpecError,
};

pub use crate::dims::Dims;
pub use crate::error::StepError;
pub use crate::fill::StepInfo;
pub use crate::metadata::{HostMetadata, MetadataView};
pub use crate::step::StepInput;

/// A layout whose every number is a constant: what `#[attention_layout(...)]` generates.
///
/// The required constants are the layout's capacities, its field table and bucket table;
/// the provided ones are derived from them. Generated implementations check every
/// relation between them with compile-time assertions.
pub trait Layout: 'static {
    /// The layout's name (the spec's `name`, else the type's).
    const NAME: &'static str;
    /// The spec the layout was generated from, as TOML (inline overrides merged).
    const SPEC_TOML: &'static str;
    /// The model kind.
    const MODEL: ModelKind;
    /// Every number of the layout: capacities, derived sizes and switches.
    const FACTS: Facts;
    /// Every field the layout has, in buffer order.
    const FIELDS: &'static [FieldLayout];
    /// The CUDA-graph buckets, ascending.
    const BUCKETS: &'static [BatchDims];

    /// Byte offset of every field, indexed by [`Field::index`] (0 for absent fields).
    const FIELD_OFFSETS: [usize; FIELD_COUNT] = field_offsets(Self::FIELDS);
    /// Capacity of every field in elements, indexed by [`Field::index`] (0 for absent
    /// fields).
    const FIELD_ELEMS: [usize; FIELD_COUNT] = field_elems(Self::FIELDS);

    /// The layout's [`Dims`]: constants, so the fill is specialized to this layout.
    fn dims() -> ConstDims<Self>
    where
        Self: Sized,
    {
        ConstDims::new()
    }

    /// The spec, read back from [`Layout::SPEC_TOML`].
    fn spec() -> Result<LayoutSpec, SpecError> {
        LayoutSpec::from_toml_str(Self::SPEC_TOML, Self::NAME)
    }

    /// The geometry derived again from the spec (what a layout read at run time would
    /// have; tests compare it with the constants).
    fn geometry() -> Result<Geometry, SpecError> {
        Geometry::new(&Self::spec()?)
    }

    /// The CUDA C source of the layout's fill kernels (one entry point per bucket), built
    /// from the spec: the facts header, the staging ABI, the fill body and the entries
    /// (`attention_layout_codegen::emit_cuda::cuda_source`). Not a constant, so generated
    /// code does not carry the whole source in every expansion.
    fn cuda_source() -> Result<String, SpecError> {
        Ok(attention_layout_codegen::emit_cuda::cuda_source(
            &Self::geometry()?,
        ))
    }
}

/// The [`Dims`] of a [`Layout`]: every method returns one of `L`'s constants.
pub struct ConstDims<L: ?Sized>(PhantomData<fn() -> L>);

impl<L: ?Sized> ConstDims<L> {
    /// The dims of `L` (a zero-sized value).
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<L: ?Sized> Clone for ConstDims<L> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<L: ?Sized> Copy for ConstDims<L> {}
impl<L: ?Sized> Default for ConstDims<L> {
    fn default() -> Self {
        Self::new()
    }
}
impl<L: ?Sized> PartialEq for ConstDims<L> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<L: ?Sized> Eq for ConstDims<L> {}
impl<L: Layout + ?Sized> fmt::Debug for ConstDims<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConstDims<{}>", L::NAME)
    }
}

impl<L: Layout + ?Sized> Dims for ConstDims<L> {
    #[inline]
    fn facts(&self) -> &Facts {
        &L::FACTS
    }
    #[inline]
    fn field_offset(&self, f: Field) -> usize {
        L::FIELD_OFFSETS.get(f.index()).copied().unwrap_or(0)
    }
    #[inline]
    fn field_elems(&self, f: Field) -> usize {
        L::FIELD_ELEMS.get(f.index()).copied().unwrap_or(0)
    }
    #[inline]
    fn buckets(&self) -> &[BatchDims] {
        L::BUCKETS
    }
}

/// Whether two [`Dims`] describe the same layout: every fact, field and bucket.
pub fn same_dims<A: Dims + ?Sized, B: Dims + ?Sized>(a: &A, b: &B) -> bool {
    a.facts() == b.facts()
        && Field::ALL.iter().all(|&f| {
            a.field_offset(f) == b.field_offset(f) && a.field_elems(f) == b.field_elems(f)
        })
        && a.buckets() == b.buckets()
}

// ---------------------------------------------------------------------------------------
// `const fn`s for the provided constants (the ones generated assertions call are in
// `crate::__private`). They walk slices with patterns (no indexing), so they are total.

/// `FIELD_OFFSETS` of a field table.
pub(crate) const fn field_offsets(fields: &[FieldLayout]) -> [usize; FIELD_COUNT] {
    field_table(fields, false)
}

/// `FIELD_ELEMS` of a field table.
pub(crate) const fn field_elems(fields: &[FieldLayout]) -> [usize; FIELD_COUNT] {
    field_table(fields, true)
}

const fn field_table(fields: &[FieldLayout], elems: bool) -> [usize; FIELD_COUNT] {
    let mut out = [0; FIELD_COUNT];
    let mut rest = fields;
    while let [f, tail @ ..] = rest {
        let i = f.field.index();
        if i < FIELD_COUNT {
            // In range: checked on the line above.
            #[allow(
                clippy::indexing_slicing,
                reason = "in range: checked on the line above"
            )]
            {
                out[i] = if elems { f.elems } else { f.offset };
            }
        }
        rest = tail;
    }
    out
}
