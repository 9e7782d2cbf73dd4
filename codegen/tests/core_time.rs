//! Time of the codegen library's part of an expansion (read and check the spec, derive the
//! geometry and buckets, emit the items), optimized, for every bundled layout. The macro
//! adds attribute parsing and runs unoptimized by default; see BENCHMARKS.md. Run with
//! `cargo test --release -p attention-layout-codegen --features emit --test core_time --
//! --ignored --nocapture`.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use std::time::{Duration, Instant};

use attention_layout_codegen::bundled::BUNDLED;
use attention_layout_codegen::emit_cuda;
use attention_layout_codegen::emit_rust::{self, Names};
use attention_layout_codegen::load::{self, Source};

#[test]
#[ignore = "timing; run in release"]
fn core_time() {
    let ty = proc_macro2::Ident::new("Model", proc_macro2::Span::call_site());
    let vis = quote::quote!(pub);
    for (name, text) in BUNDLED {
        let mut times: Vec<Duration> = (0..31)
            .map(|_| {
                let start = Instant::now();
                let l = load::load_file(Source { name, text }).unwrap();
                let cuda = emit_cuda::cuda_source(&l.geometry);
                let out = emit_rust::emit_layout(
                    Names { ty: &ty, vis: &vis },
                    &l.geometry,
                    &l.spec_toml(),
                    &cuda,
                );
                let t = start.elapsed();
                assert!(!out.is_empty());
                t
            })
            .collect();
        times.sort();
        println!(
            "{name:>16}: median {:.3} ms, min {:.3} ms",
            times[15].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3
        );
    }
}
