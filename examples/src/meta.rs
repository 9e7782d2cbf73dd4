//! Reading the coalesced buffer the way a kernel does: a field is a typed array at the
//! geometry's byte offset. [`MetaBytes`] does it on the host (bounds-checked: a read outside
//! a field's capacity is an error, where a kernel would read a neighbouring field), and
//! [`cuda_header`] writes the same offsets as CUDA C constants for the kernels.

use std::fmt::Write as _;

use attention_layout::{Dims, Field, RuntimeDims, codegen::Dtype};

use crate::Result;

/// The metadata bytes of one step and the layout that says where each field lives.
#[derive(Debug, Clone, Copy)]
pub struct MetaBytes<'a> {
    bytes: &'a [u8],
    dims: &'a RuntimeDims,
}

impl<'a> MetaBytes<'a> {
    /// Views `bytes` (a whole host buffer, as copied to the device) through `dims`.
    pub fn new(bytes: &'a [u8], dims: &'a RuntimeDims) -> Self {
        Self { bytes, dims }
    }

    fn read<const N: usize>(&self, f: Field, i: usize) -> Result<[u8; N]> {
        let fl = self
            .dims
            .geometry()
            .field(f)
            .ok_or_else(|| format!("the layout has no field {}", f.name()))?;
        if fl.dtype.size() != N {
            return Err(format!("{} is not a {N}-byte field", f.name()).into());
        }
        if i >= fl.elems {
            return Err(
                format!("index {i} is outside {} (capacity {})", f.name(), fl.elems).into(),
            );
        }
        let at = fl.offset + i * N;
        let b = self
            .bytes
            .get(at..at + N)
            .ok_or_else(|| format!("{} element {i} lies past the buffer", f.name()))?;
        Ok(b.try_into()?)
    }

    /// Element `i` of an i32 field.
    pub fn i32(&self, f: Field, i: usize) -> Result<i32> {
        Ok(i32::from_ne_bytes(self.read::<4>(f, i)?))
    }

    /// Element `i` of an i64 field.
    pub fn i64(&self, f: Field, i: usize) -> Result<i64> {
        Ok(i64::from_ne_bytes(self.read::<8>(f, i)?))
    }

    /// Element `i` of `mamba_batch_indices_decode`, in the layout's index type.
    pub fn decode_index(&self, i: usize) -> Result<i64> {
        if self.dims.decode_index_i64() {
            self.i64(Field::MambaBatchIndicesDecode, i)
        } else {
            self.i32(Field::MambaBatchIndicesDecode, i).map(i64::from)
        }
    }
}

/// The CUDA C name of a field's offset constant: `OFF_` and the upper-case field name.
pub fn offset_name(f: Field) -> String {
    format!("OFF_{}", f.name().to_ascii_uppercase())
}

/// A CUDA C prelude for `dims`: integer typedefs (NVRTC has no standard headers here), one
/// `OFF_*` / `CAP_*` constant per field with a `static_assert` on its alignment, the
/// layout's capacities, and typed field accessors.
pub fn cuda_header(dims: &RuntimeDims) -> String {
    let g = dims.geometry();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "// Generated from the layout geometry ({}): byte offsets of the coalesced buffer.",
        g.spec.name.as_deref().unwrap_or("unnamed")
    );
    s.push_str("typedef int i32;\ntypedef long long i64;\ntypedef unsigned char u8;\n");
    for f in &g.fields {
        let name = offset_name(f.field);
        let _ = writeln!(s, "#define {name} {}", f.offset);
        let _ = writeln!(
            s,
            "#define CAP_{} {}",
            f.field.name().to_ascii_uppercase(),
            f.elems
        );
        let _ = writeln!(
            s,
            "static_assert({name} % {} == 0, \"{} is misaligned\");",
            f.dtype.size(),
            f.field.name()
        );
    }
    let consts = [
        ("MAX_REQUESTS", dims.max_requests() as i64),
        ("MAX_TOKENS", dims.max_tokens() as i64),
        ("MAX_SEQ_LEN", dims.max_seq_len() as i64),
        ("BLOCK_SIZE", dims.block_size() as i64),
        ("NKV", dims.block_table_width() as i64),
        ("NUM_BLOCKS", g.facts.kv_pool_blocks as i64),
        ("DUMMY_BLOCK", i64::from(dims.dummy_block())),
        ("SPEC_TOKENS", dims.speculative_tokens() as i64),
        ("CHUNK_SIZE", dims.chunk_size() as i64),
        ("D_CONV", dims.conv_width() as i64),
        ("DECODE_INDEX_I64", i64::from(dims.decode_index_i64())),
    ];
    for (k, v) in consts {
        let _ = writeln!(s, "#define {k} {v}");
    }
    s.push_str(
        "__device__ __forceinline__ const i32* field_i32(const u8* meta, int off) {\n  \
         return reinterpret_cast<const i32*>(meta + off);\n}\n\
         __device__ __forceinline__ const i64* field_i64(const u8* meta, int off) {\n  \
         return reinterpret_cast<const i64*>(meta + off);\n}\n",
    );
    s
}

/// The dtype of a field in a layout (for tests and messages).
pub fn field_dtype(dims: &RuntimeDims, f: Field) -> Option<Dtype> {
    dims.geometry().field(f).map(|l| l.dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layouts;

    #[test]
    fn header_has_every_offset() {
        for l in layouts::mamba().unwrap() {
            let h = cuda_header(&l.dims);
            for f in &l.dims.geometry().fields {
                let line = format!("#define {} {}\n", offset_name(f.field), f.offset);
                assert!(h.contains(&line), "{line}");
            }
        }
        let l = &layouts::attention().unwrap()[0];
        let h = cuda_header(&l.dims);
        assert!(h.contains("#define NKV 8\n"));
        assert!(h.contains("#define DUMMY_BLOCK 64\n"));
        assert!(!h.contains("OFF_MAMBA"));
    }

    #[test]
    fn reads_are_bounds_checked() {
        let l = &layouts::attention().unwrap()[0];
        let meta = attention_layout::HostMetadata::new(l.dims.clone());
        let m = MetaBytes::new(meta.bytes(), &l.dims);
        assert_eq!(m.i32(Field::MhaBlockTable, 0).unwrap(), 64);
        assert!(m.i32(Field::MhaCuQuerySeqLengths, 9).is_err());
        assert!(m.i64(Field::MhaCuQuerySeqLengths, 0).is_err());
        assert!(m.i32(Field::MambaSeqIdx, 0).is_err());
        assert_eq!(
            field_dtype(&l.dims, Field::TokenToBlockIdx),
            Some(Dtype::I64)
        );
    }
}
