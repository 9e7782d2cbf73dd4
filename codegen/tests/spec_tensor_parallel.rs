//! `max_requests` must be a multiple of `tensor_parallel`, as Megatron asserts when it
//! builds a context; otherwise the eager padding of a decode step (which pads the request
//! count up to `max_requests` at most) gives token counts that are not multiples of `tp`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]
use attention_layout_codegen::buckets::eager_padding;
use attention_layout_codegen::{BatchDims, Geometry, LayoutSpec};

fn toml(r: u32, tp: u32) -> String {
    format!(
        "model = \"mha\"\nmax_requests = {r}\nmax_tokens = 64\nmax_seq_len = 32\nblock_size = 4\ntensor_parallel = {tp}\n"
    )
}

#[test]
fn max_requests_not_a_multiple_of_tensor_parallel_is_a_spec_error_naming_both_keys() {
    for (r, tp) in [(1, 2), (6, 4), (3, 2), (10, 4)] {
        let e = LayoutSpec::from_toml_str(&toml(r, tp), "t.toml").unwrap_err();
        assert_eq!(e.diagnostics.len(), 1, "R = {r}, tp = {tp}: {e}");
        let d = &e.diagnostics[0];
        assert_eq!(d.key.as_deref(), Some("max_requests"));
        // Located at the `max_requests` line of the file.
        assert_eq!(d.location.as_ref().map(|l| l.line), Some(2));
        let text = e.to_string();
        assert!(
            text.starts_with("t.toml:2:1: `max_requests`: must be a multiple of tensor_parallel"),
            "{text}"
        );
        assert!(text.contains(&format!("tensor_parallel = {tp}")), "{text}");
        assert!(text.contains(&format!("max_requests = {r}")), "{text}");
    }
}

#[test]
fn multiples_of_tensor_parallel_are_accepted() {
    for (r, tp) in [(2, 2), (8, 4), (4, 4), (12, 3), (7, 1)] {
        // max_tokens: the eager token rounder ceil(64 / tp) * tp.
        let t = 64u32.div_ceil(tp) * tp;
        let src = toml(r, tp).replace("max_tokens = 64", &format!("max_tokens = {t}"));
        let spec = LayoutSpec::from_toml_str(&src, "t.toml")
            .unwrap_or_else(|e| panic!("R = {r}, tp = {tp}: {e}"));
        Geometry::new(&spec).unwrap();
    }
}

/// What the rule prevents: with R = 6 and tp = 4, an eager decode-only step pads to the
/// request count 6, so its token count is not a multiple of tp.
#[test]
fn the_rule_keeps_eager_decode_padding_a_multiple_of_tensor_parallel() {
    let padded = eager_padding(BatchDims::new(5, 0, 5), 6, 64, 4, 0);
    assert_eq!(padded, BatchDims::new(6, 0, 6));
    assert!(!padded.tokens.is_multiple_of(4));
    let padded = eager_padding(BatchDims::new(5, 0, 5), 8, 64, 4, 0);
    assert_eq!(padded, BatchDims::new(8, 0, 8));
}
