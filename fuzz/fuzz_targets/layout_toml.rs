//! TOML layout parsing: bytes -> `LayoutSpec::from_toml_str` -> `Geometry::new`.
//!
//! Checked: no panic and no hang on any input; every error renders (diagnostics are
//! located in the source, which walks the TOML spans); a geometry that derives is
//! self-consistent (fields in buffer order without overlap, inside the total, aligned to
//! their element size; buckets ascending and valid); and a small one builds host metadata
//! and fills an empty step.

#![no_main]

use attention_layout::codegen::buckets::is_valid;
use attention_layout::{Geometry, HostMetadata, LayoutSpec, RuntimeDims, StepInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let spec = match LayoutSpec::from_toml_str(src, "fuzz.toml") {
        Ok(spec) => spec,
        Err(e) => {
            assert!(!e.diagnostics.is_empty());
            let _ = e.to_string();
            return;
        }
    };
    let g = match Geometry::new(&spec) {
        Ok(g) => g,
        Err(e) => {
            let _ = e.locate("fuzz.toml", src).to_string();
            return;
        }
    };
    let mut end = 0;
    for f in &g.fields {
        assert!(
            f.offset >= end,
            "{:?} overlaps the field before it",
            f.field
        );
        assert_eq!(f.offset % f.dtype.size(), 0, "{:?} misaligned", f.field);
        end = f.end();
    }
    assert_eq!(end, g.facts.total_bytes);
    assert!(g.buckets.windows(2).all(|w| w[0] < w[1]));
    for b in &g.buckets {
        assert!(is_valid(
            *b,
            spec.max_requests,
            spec.max_seq_len,
            spec.speculative_tokens
        ));
    }
    if g.facts.total_bytes <= 1 << 16 {
        let mut meta = HostMetadata::new(RuntimeDims::new(g));
        let info = *meta
            .fill(&StepInput::default())
            .unwrap_or_else(|e| panic!("empty step rejected: {e}"));
        assert_eq!(info.real.tokens, 0);
    }
});
