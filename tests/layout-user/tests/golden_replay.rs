//! The golden step records whose config equals one of this crate's layouts, replayed
//! through the generated builders: every array must match Megatron's, and every byte and
//! step info must match the runtime's own fill (`RuntimeDims`) of the same input.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use std::collections::BTreeMap;

use attention_layout::layout::same_dims;
use attention_layout::{
    Geometry, Layout, MetadataView, RuntimeDims, StepError, StepInfo, StepInput,
};
use attention_layout_cli::golden::{self, StepBuilder};
use layout_user::*;

/// Embedded, so the test does not depend on paths at run time.
const GOLDEN: &str = include_str!("../../../testdata/megatron-public.jsonl");

/// Drives a generated builder through its own API (`fill`, `metadata`).
macro_rules! step_builder {
    ($($builder:ty),* $(,)?) => {$(
        impl StepBuilder for Driven<$builder> {
            fn fill_step(&mut self, input: &StepInput<'_>) -> Result<StepInfo, StepError> {
                self.0.fill(input).map(|m| *m.info())
            }
            fn step_view(&self) -> MetadataView<'_> {
                self.0.metadata().view()
            }
            fn step_bytes(&self) -> &[u8] {
                self.0.metadata().bytes()
            }
        }
    )*};
}

/// A generated builder, wrapped so this test can implement the replay's trait for it.
struct Driven<B>(B);

step_builder!(
    HybridSmallBuilder,
    HybridEagerBuilder,
    HybridSpec2Builder,
    HybridDecodeGraphsBuilder,
    MhaGraphs4Builder,
    HybridLinearTp2Builder,
);

/// The builder of the layout equal to `g` (every capacity, offset and bucket), if any,
/// counting hits per layout type.
fn builder_for(
    g: &Geometry,
    hits: &mut BTreeMap<&'static str, usize>,
) -> Option<Box<dyn StepBuilder>> {
    let rt = RuntimeDims::new(g.clone());
    let mut found: Option<Box<dyn StepBuilder>> = None;
    macro_rules! try_layout {
        ($($layout:ident => $builder:ty),* $(,)?) => {$(
            if same_dims(&rt, &$layout::dims()) {
                *hits.entry(stringify!($layout)).or_default() += 1;
                assert!(found.is_none(), "a record matches two layouts");
                found = Some(Box::new(Driven(<$builder>::new())));
            }
        )*};
    }
    try_layout!(
        HybridSmall => HybridSmallBuilder,
        HybridEager => HybridEagerBuilder,
        HybridSpec2 => HybridSpec2Builder,
        HybridDecodeGraphs => HybridDecodeGraphsBuilder,
        MhaGraphs4 => MhaGraphs4Builder,
        HybridLinearTp2 => HybridLinearTp2Builder,
    );
    found
}

#[test]
fn golden_steps_replay_through_the_generated_builders() {
    let mut hits = BTreeMap::new();
    let report = golden::replay_with(GOLDEN, |g| builder_for(g, &mut hits));
    for m in &report.mismatches {
        eprintln!("{m}");
    }
    assert_eq!(
        report.failed(),
        0,
        "{} mismatching records",
        report.failed()
    );
    println!("replayed through generated builders: {hits:?}");
    // Every layout of this crate met its records (8 each in the public file): the inline
    // attribute, `config =` with and without overrides, and build.rs.
    let want: BTreeMap<&str, usize> = [
        "HybridSmall",
        "HybridEager",
        "HybridSpec2",
        "HybridDecodeGraphs",
        "MhaGraphs4",
        "HybridLinearTp2",
    ]
    .into_iter()
    .map(|k| (k, 8))
    .collect();
    assert_eq!(hits, want);
    assert_eq!(report.passed(), 48);
}

#[test]
fn a_builder_of_another_layout_is_caught() {
    // HybridSmall's records through HybridEager's builder (no graphs): the padded shapes
    // differ from Megatron's, and the buffer from the runtime's.
    let report = golden::replay_with(GOLDEN, |g| {
        let rt = RuntimeDims::new(g.clone());
        same_dims(&rt, &HybridSmall::dims())
            .then(|| Box::new(Driven(HybridEagerBuilder::new())) as Box<dyn StepBuilder>)
    });
    assert_eq!(report.passed() + report.failed(), 8);
    assert!(report.failed() > 0);
    assert!(
        report
            .mismatches
            .iter()
            .any(|m| m.field == "padded_batch_dimensions")
    );
}
