//! Layouts known at compile time: the [`Layout`] trait that `#[attention_layout]` (and the
//! build-script entry) implements with constants, and [`ConstDims`], the [`Dims`] of such a
//! layout, so the runtime's fill is monomorphized with every capacity and offset folded in.
//!
//! This module is also what generated code imports (as `al`): the types it names and the
//! `const fn` checks its compile-time assertions call.

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

/// The whole of field `f` in `bytes` (a layout's buffer) as `T`s; empty if the buffer is
/// too short or misaligned, which the generated assertions and the buffer's allocation
/// rule out.
#[inline]
pub fn field_slice<T: bytemuck::Pod>(bytes: &[u8], f: FieldLayout) -> &[T] {
    bytes
        .get(f.offset..f.end())
        .and_then(|b| bytemuck::try_cast_slice(b).ok())
        .unwrap_or(&[])
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
// `const fn`s for provided constants and for the assertions of generated code. They walk
// slices with patterns (no indexing), so they are total.

/// `FIELD_OFFSETS` of a field table.
pub const fn field_offsets(fields: &[FieldLayout]) -> [usize; FIELD_COUNT] {
    field_table(fields, false)
}

/// `FIELD_ELEMS` of a field table.
pub const fn field_elems(fields: &[FieldLayout]) -> [usize; FIELD_COUNT] {
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

/// Whether field `f` holds `elems` elements of `dtype`.
pub const fn holds(f: FieldLayout, elems: usize, dtype: Dtype) -> bool {
    f.elems == elems && f.dtype as u8 == dtype as u8
}

/// Whether `fields` lists every field of the model, each once, in buffer order
/// ([`Field::ALL`], without the Mamba fields when `has_mamba` is false).
pub const fn fields_in_buffer_order(fields: &[FieldLayout], has_mamba: bool) -> bool {
    let want = if has_mamba {
        FIELD_COUNT
    } else {
        Field::MambaBatchIndicesDecode.index()
    };
    if fields.len() != want {
        return false;
    }
    let mut i = 0;
    let mut rest = fields;
    while let [f, tail @ ..] = rest {
        if f.field.index() != i {
            return false;
        }
        i += 1;
        rest = tail;
    }
    true
}

/// Whether `fields` are packed as SEMANTICS §9 packs them: each starts at the previous
/// field's end rounded up to its own alignment (the first at 0), and the last ends at
/// `total`. (The only pads this allows are the ones §9 has: before the i64 decode indices
/// and before the appended i64 fields.)
pub const fn fields_packed(fields: &[FieldLayout], total: usize) -> bool {
    let mut end = 0usize;
    let mut rest = fields;
    while let [f, tail @ ..] = rest {
        if f.offset != end.next_multiple_of(f.dtype.size()) {
            return false;
        }
        end = f.end();
        rest = tail;
    }
    end == total
}

/// End of the last field of Megatron's own layout (before the appended fields).
pub const fn megatron_bytes(fields: &[FieldLayout]) -> usize {
    let mut end = 0;
    let mut rest = fields;
    while let [f, tail @ ..] = rest {
        if !f.field.is_appended() {
            end = f.end();
        }
        rest = tail;
    }
    end
}

/// The gap before the Mamba decode indices (0 when the layout has none).
pub const fn mamba_pad(fields: &[FieldLayout]) -> usize {
    let mut end = 0;
    let mut rest = fields;
    while let [f, tail @ ..] = rest {
        if matches!(f.field, Field::MambaBatchIndicesDecode) {
            return f.offset.saturating_sub(end);
        }
        end = f.end();
        rest = tail;
    }
    0
}

/// Whether `buckets` is strictly ascending in `(tokens, prefill, decode)` order.
pub const fn buckets_ascending(buckets: &[BatchDims]) -> bool {
    let mut rest = buckets;
    while let [a, b, ..] = rest {
        let less = a.tokens < b.tokens
            || (a.tokens == b.tokens
                && (a.prefill < b.prefill || (a.prefill == b.prefill && a.decode < b.decode)));
        if !less {
            return false;
        }
        if let [_, tail @ ..] = rest {
            rest = tail;
        }
    }
    true
}

/// Whether every bucket is a valid batch shape (SEMANTICS §2) of at most `max_tokens`
/// tokens: `0 < t <= T`, `p + d <= R`, `p + d(s+1) <= t <= pS + d(s+1)`.
pub const fn buckets_valid(
    buckets: &[BatchDims],
    max_requests: usize,
    max_tokens: usize,
    max_seq_len: usize,
    speculative_tokens: usize,
) -> bool {
    let mut rest = buckets;
    while let [b, tail @ ..] = rest {
        let (t, p, d) = (b.tokens as u128, b.prefill as u128, b.decode as u128);
        let dt = d * (speculative_tokens as u128 + 1);
        if t == 0
            || t > max_tokens as u128
            || p + d > max_requests as u128
            || t < p + dt
            || t > p * max_seq_len as u128 + dt
        {
            return false;
        }
        rest = tail;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dims::RuntimeDims;

    fn geometry() -> Geometry {
        let spec = LayoutSpec::from_toml_str(
            "model = \"hybrid\"\nmax_requests = 8\nmax_tokens = 64\nmax_seq_len = 32\n\
             block_size = 4\n[mamba]\nchunk_size = 4\nconv_width = 4\n",
            "t.toml",
        )
        .unwrap();
        Geometry::new(&spec).unwrap()
    }

    #[test]
    fn the_const_checks_accept_a_derived_geometry() {
        let g = geometry();
        assert!(fields_in_buffer_order(&g.fields, true));
        assert!(fields_packed(&g.fields, g.facts.total_bytes));
        assert_eq!(megatron_bytes(&g.fields), g.facts.megatron_bytes);
        assert_eq!(mamba_pad(&g.fields), g.facts.mamba_pad);
        assert!(buckets_ascending(&g.buckets));
        assert!(buckets_valid(&g.buckets, 8, 64, 32, 0));
        let rt = RuntimeDims::new(g.clone());
        let offsets = field_offsets(&g.fields);
        for f in Field::ALL {
            assert_eq!(offsets[f.index()], rt.field_offset(*f));
        }
    }

    #[test]
    fn the_const_checks_reject_broken_tables() {
        let g = geometry();
        let mut fields = g.fields.clone();
        fields[3].offset += 4;
        assert!(!fields_packed(&fields, g.facts.total_bytes));
        fields.swap(1, 2);
        assert!(!fields_in_buffer_order(&fields, true));
        assert!(!fields_in_buffer_order(&g.fields, false));
        let mut b = g.buckets.clone();
        b.swap(0, 1);
        assert!(!buckets_ascending(&b));
        assert!(!buckets_valid(&g.buckets, 8, 32, 32, 0));
        assert!(!buckets_valid(&[BatchDims::new(3, 0, 4)], 8, 64, 32, 0));
    }
}
