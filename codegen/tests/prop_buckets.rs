//! Property tests of bucket generation, matching and eager padding (docs/SEMANTICS.md §2–§3)
//! over random parameters, against plain restatements of the rules:
//!
//! * every generated bucket is valid (§2), the list is strictly ascending, decode-only
//!   buckets have `t = d·(s+1) ≤ R·(s+1)`, and (exponential ladders) token counts are
//!   multiples of `tp`;
//! * `match_bucket` returns exactly the lexicographically smallest applicable bucket of a
//!   linear scan, on the generated lists and on arbitrary sorted lists;
//! * eager padding never pads below the real shape, never above `R` requests, and (for
//!   `T` a multiple of the token rounder) never above `T` tokens; decode-only padding stays
//!   decode-only;
//! * ladders are descending and bounded by their maximum; exponential ones are no longer
//!   than requested, linear ones evenly spaced.
//!
//! 256 cases per property by default; `PROPTEST_CASES=N` for a long run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use attention_layout_codegen::buckets::{
    BatchDims, BucketParams, Distribution, attention_dims, build_buckets, eager_padding, is_valid,
    ladder, match_bucket,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn dist() -> impl Strategy<Value = Distribution> {
    prop_oneof![Just(Distribution::Exponential), Just(Distribution::Linear)]
}

prop_compose! {
    fn params()(
        tp in 1u32..=8,
        graphs in prop_oneof![
            1 => Just(None),
            3 => Just(Some(-1i64)),
            3 => (1i64..=40).prop_map(Some),
        ],
        r in 1u32..=64,
        t in 1u32..=1024,
        s in 1u32..=2048,
        spec in 0u32..=4,
        mixed in 0u32..=8,
        non_decode in any::<bool>(),
        cg in 0u32..=1100,
        distribution in dist(),
    ) -> BucketParams {
        BucketParams {
            tensor_parallel: tp,
            num_cuda_graphs: graphs,
            cg_max: cg,
            mixed_prefill_count: mixed,
            max_requests: r,
            max_tokens: t,
            max_seq_len: s,
            non_decode_graphs: non_decode,
            speculative_tokens: spec,
            distribution,
        }
    }
}

fn real_dims(p: &BucketParams) -> impl Strategy<Value = BatchDims> + use<> {
    (
        0..=p.max_tokens + 5,
        0..=p.max_requests + 1,
        0..=p.max_requests + 1,
    )
        .prop_map(|(t, f, d)| BatchDims::new(t, f, d))
}

/// §3.3, restated.
fn applicable(real: BatchDims, b: BatchDims, strict: bool) -> bool {
    b.tokens >= real.tokens
        && if real.prefill == 0 {
            b.prefill == 0 && b.decode >= real.decode
        } else if strict {
            b.prefill >= real.prefill && b.decode >= real.decode
        } else {
            b.prefill >= real.prefill
                && u64::from(b.prefill) + u64::from(b.decode)
                    >= u64::from(real.prefill) + u64::from(real.decode)
        }
}

fn scan(real: BatchDims, list: &[BatchDims], strict: bool) -> Option<BatchDims> {
    list.iter()
        .copied()
        .filter(|&b| applicable(real, b, strict))
        .min()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_buckets_hold_their_rules(p in params()) {
        let list = build_buckets(&p);
        if p.num_cuda_graphs.is_none() {
            prop_assert!(list.is_empty());
        }
        prop_assert!(list.windows(2).all(|w| w[0] < w[1]), "not strictly ascending");
        let s1 = p.speculative_tokens + 1;
        for b in &list {
            prop_assert!(is_valid(*b, p.max_requests, p.max_seq_len, p.speculative_tokens), "{:?}", b);
            if b.prefill == 0 {
                prop_assert_eq!(b.tokens, b.decode * s1, "decode bucket {:?}", b);
                prop_assert!(b.tokens <= p.max_requests * s1);
            }
            if p.distribution == Distribution::Exponential {
                prop_assert_eq!(b.tokens % p.tensor_parallel, 0, "{:?} with tp {}", b, p.tensor_parallel);
            }
        }
        if !p.non_decode_graphs || p.mixed_prefill_count == 0 {
            prop_assert!(list.iter().all(|b| b.prefill == 0), "non-decode bucket without non-decode graphs");
        }
    }

    #[test]
    fn match_is_the_smallest_applicable_bucket(
        (p, reals) in params().prop_flat_map(|p| {
            let reals = proptest::collection::vec(real_dims(&p), 1..16);
            (Just(p), reals)
        }),
        strict in any::<bool>(),
    ) {
        let list = build_buckets(&p);
        for real in reals {
            let got = match_bucket(real, &list, strict);
            prop_assert_eq!(got, scan(real, &list, strict), "real {:?}", real);
            let attn = attention_dims(real, got);
            prop_assert_eq!(attn.tokens, real.tokens);
            prop_assert_eq!(attn.requests(), real.requests());
            if let Some(b) = got {
                prop_assert!(attn.decode <= b.decode || real.decode <= b.decode);
            }
        }
    }

    #[test]
    fn match_on_arbitrary_sorted_lists(
        mut list in proptest::collection::vec((0u32..40, 0u32..6, 0u32..6), 0..30),
        reals in proptest::collection::vec((0u32..45, 0u32..7, 0u32..7), 1..10),
        strict in any::<bool>(),
    ) {
        list.sort();
        list.dedup();
        let list: Vec<BatchDims> = list.into_iter().map(|(t, p, d)| BatchDims::new(t, p, d)).collect();
        for (t, f, d) in reals {
            let real = BatchDims::new(t, f, d);
            prop_assert_eq!(match_bucket(real, &list, strict), scan(real, &list, strict));
        }
    }

    #[test]
    fn eager_padding_covers_the_real_shape(
        p in params(),
        shapes in proptest::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 1..16),
    ) {
        let rounder = 64u32.div_ceil(p.tensor_parallel) * p.tensor_parallel;
        let s1 = p.speculative_tokens + 1;
        // T as the spec requires it: a multiple of the rounder, at least R·(s+1).
        let t = p.max_tokens.max(p.max_requests * s1).div_ceil(rounder) * rounder;
        for (f, d, extra) in shapes {
            // Only shapes a validated step can have: N <= R, tokens <= T, each prefill at
            // least one token, each decode s + 1.
            let f = f % (p.max_requests + 1);
            let d = d % (p.max_requests - f + 1);
            let min_tokens = f + d * s1;
            if min_tokens > t {
                continue;
            }
            let extra = if f > 0 { extra % (t - min_tokens + 1) } else { 0 };
            let real = BatchDims::new(min_tokens + extra, f, d);
            let padded = eager_padding(real, p.max_requests, t, p.tensor_parallel, p.speculative_tokens);
            prop_assert!(padded.tokens >= real.tokens, "{:?} -> {:?}", real, padded);
            prop_assert!(padded.decode >= real.decode && padded.prefill >= real.prefill);
            prop_assert!(padded.requests() <= p.max_requests);
            prop_assert!(padded.tokens <= t, "{:?} -> {:?} over T = {}", real, padded, t);
            if real.prefill == 0 {
                prop_assert_eq!(padded.prefill, 0);
            } else {
                prop_assert_eq!(padded.decode, real.decode);
                prop_assert_eq!(padded.tokens % rounder, 0);
            }
        }
    }

    #[test]
    fn ladders_are_descending_and_bounded(
        tp in 1u32..=8,
        n in prop_oneof![Just(-1i64), 1i64..=40],
        max in 1u32..=5000,
        d in dist(),
    ) {
        let l = ladder(tp, n, max, d);
        prop_assert!(!l.is_empty());
        prop_assert!(l.windows(2).all(|w| w[0] > w[1]), "{:?}", l);
        // Halving steps are floored at 2 (rounded up to tp), so a tiny maximum can still
        // get that entry, as in Megatron.
        let floor = 2u32.div_ceil(tp) * tp;
        prop_assert!(l.iter().all(|&x| x <= max.max(floor)), "{:?} over {}", l, max);
        // Exponential ladders are trimmed to n. Linear ones are `step, 2·step, … < M` plus
        // M with `step = 2·ceil(floor(M/n)/2)` (rounded to tp), which can exceed n entries
        // (as in Megatron): check the spacing instead.
        if n >= 1 && d == Distribution::Exponential {
            prop_assert!(l.len() as i64 <= n, "{} entries for n = {}", l.len(), n);
        }
        if n > 1 && d == Distribution::Linear && l.len() > 2 {
            let step = l[l.len() - 1];
            prop_assert!(l[1..].windows(2).all(|w| w[0] - w[1] == step), "{:?}", l);
        }
        if d == Distribution::Exponential && max / tp * tp >= floor {
            prop_assert_eq!(l[0], max / tp * tp);
        }
    }
}
