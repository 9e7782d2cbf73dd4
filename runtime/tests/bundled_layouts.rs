//! Every bundled layout loads, validates and derives a geometry.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use attention_layout::layouts::BUNDLED;
use attention_layout::{Geometry, LayoutSpec};

#[test]
fn every_bundled_layout_validates() {
    for (name, src) in BUNDLED {
        let spec = LayoutSpec::from_toml_str(src, name).unwrap_or_else(|e| panic!("{e}"));
        let g = Geometry::new(&spec).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(spec.name.as_deref(), Some(*name));
        assert!(g.facts.total_bytes > 0);
        println!(
            "{name}: {} bytes, {} buckets, KV pool {} blocks",
            g.facts.total_bytes,
            g.buckets.len(),
            g.facts.kv_pool_blocks
        );
    }
}
