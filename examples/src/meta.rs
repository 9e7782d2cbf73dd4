//! Reading the coalesced buffer the way a kernel does: a field is a typed array at the
//! geometry's byte offset. [`MetaBytes`] does it on the host (bounds-checked: a read outside
//! a field's capacity is an error, where a kernel would read a neighbouring field), and
//! [`cuda_header`] gives the kernels the same offsets through the layout's public facts
//! header (the one the fill kernels include).

use attention_layout::codegen::{Dtype, emit_cuda};
use attention_layout::{Dims, Field, RuntimeDims};

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

    /// Element `i` of a u8 field.
    pub fn u8(&self, f: Field, i: usize) -> Result<u8> {
        Ok(u8::from_ne_bytes(self.read::<1>(f, i)?))
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

/// The CUDA C prelude of the example kernels for `dims`: the layout's public facts header
/// (`emit_cuda::facts_header`, the one the fill kernels include: every fact as `AL_<FACT>`,
/// every field's `AL_OFF_` / `AL_CAP_` / `AL_SIZE_` with `static_assert`s), then the
/// examples' own short type names and typed field accessors.
pub fn cuda_header(dims: &RuntimeDims) -> String {
    let mut s = emit_cuda::facts_header(dims.geometry());
    s.push_str(
        "typedef al_i32 i32;\ntypedef al_i64 i64;\ntypedef al_u8 u8;\n\
         __device__ __forceinline__ const i32* field_i32(const u8* meta, al_u32 off) {\n  \
         return reinterpret_cast<const i32*>(meta + off);\n}\n\
         __device__ __forceinline__ const i64* field_i64(const u8* meta, al_u32 off) {\n  \
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
            assert!(h.starts_with(&emit_cuda::facts_header(l.dims.geometry())));
            for f in &l.dims.geometry().fields {
                let line = format!(
                    "constexpr al_u32 AL_OFF_{} = {}u,",
                    f.field.const_name(),
                    f.offset
                );
                assert!(h.contains(&line), "{line}");
            }
        }
        let l = &layouts::attention().unwrap()[0];
        let h = cuda_header(&l.dims);
        assert!(h.contains("constexpr al_u32 AL_BLOCK_TABLE_WIDTH = 8u;"));
        assert!(h.contains("constexpr al_i32 AL_DUMMY_BLOCK = 64;"));
        assert!(h.contains("AL_CAP_MAMBA_SEQ_IDX = 0u"));
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
