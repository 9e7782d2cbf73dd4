//! A bucket table chosen by `tune` (the bundled `nemotron-h-8b-tuned`), compiled by
//! `#[attention_layout]` and run through the CUDA backend.
//!
//! * CPU (every machine): the attribute compiles the tuned table into the layout's
//!   constants, equal to what the bundled file derives at run time.
//! * GPU (`#[ignore = "needs a CUDA device"]`, failing without one): the CUDA backend
//!   captures one graph per bucket of the tuned table, and `simulate`'s engine loop on
//!   the traffic the table was tuned for (held-out seed 2) runs through it with every
//!   step compared byte for byte with the builder the attribute generated; every bucket
//!   is replayed at least once.
//!
//! Run on a GPU machine: `cargo test --release --features attention-layout/cuda --test
//! cuda_tuned -- --include-ignored` (`AL_GPU_STEPS` sets the arrival steps, default 2,000).

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

#[path = "../../runtime/tests/support/mod.rs"]
mod support;

use attention_layout::layout::same_dims;
use attention_layout::{Geometry, Layout, LayoutSpec, RuntimeDims};

/// The bundled layout whose `[graphs]` section `tune` wrote.
#[attention_layout_macros::attention_layout(config = "../layouts/nemotron-h-8b-tuned.toml")]
pub struct NemotronH8bTuned;

fn bundled_geometry() -> Geometry {
    let src = attention_layout::layouts::bundled("nemotron-h-8b-tuned").unwrap();
    Geometry::new(&LayoutSpec::from_toml_str(src, "nemotron-h-8b-tuned").unwrap()).unwrap()
}

#[test]
fn the_attribute_compiles_the_tuned_table_into_the_layout() {
    let g = bundled_geometry();
    assert!(g.spec.graphs.buckets.is_some(), "an explicit table");
    assert_eq!(NemotronH8bTuned::BUCKETS, g.buckets.as_slice());
    assert!(NemotronH8bTuned::BUCKETS.len() <= 32);
    assert!(same_dims(
        &NemotronH8bTuned::dims(),
        &RuntimeDims::new(g.clone())
    ));
    assert_eq!(
        NemotronH8bTuned::cuda_source().unwrap(),
        attention_layout::codegen::emit_cuda::cuda_source(&g)
    );
    // The generated builder pads to the tuned table: a full decode step lands in its
    // full decode bucket.
    let mut b = NemotronH8bTunedBuilder::new();
    let blocks: Vec<[i32; 1]> = (0..256).map(|i| [i]).collect();
    let rows: Vec<_> = blocks
        .iter()
        .enumerate()
        .map(|(i, bl)| attention_layout::RequestRow::decode(1, 5, bl, i as i32))
        .collect();
    let m = b
        .fill(&attention_layout::StepInput {
            rows: &rows,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        m.info().padded,
        attention_layout::BatchDims::new(256, 0, 256)
    );
    assert!(m.info().graphed());
}

#[cfg(feature = "cuda")]
mod gpu {
    use std::collections::BTreeSet;

    use attention_layout::backend::BackendError;
    use attention_layout::cuda::{CudaBackend, FillMode};
    use attention_layout::{Layout, MetadataBackend, RuntimeDims, StepInfo, StepInput};
    use attention_layout_cli::simulate::{self, SimConfig};

    use super::support::gpu::{backend, compare_step, require_device};
    use super::{NemotronH8bTuned, NemotronH8bTunedBuilder};

    /// The CUDA backend, each step checked against the generated builder.
    struct Checked {
        gpu: CudaBackend,
        host: NemotronH8bTunedBuilder,
        dims: RuntimeDims,
        steps: u64,
        graphed: u64,
        replayed: BTreeSet<u32>,
    }

    impl MetadataBackend for Checked {
        fn name(&self) -> String {
            format!("{}, checked against the generated builder", self.gpu.name())
        }

        fn step(&mut self, input: &StepInput<'_>) -> Result<StepInfo, BackendError> {
            let what = format!("nemotron-h-8b-tuned step {}", self.steps);
            let want = *self
                .host
                .fill(input)
                .unwrap_or_else(|e| panic!("{what}: the generated builder refused: {e}"))
                .info();
            let got = self.gpu.step(input)?;
            assert_eq!(want, got, "{what}: step info");
            let snap = self.gpu.download()?;
            compare_step(
                &what,
                &self.host.metadata().view(),
                &snap.view(&self.dims),
                input.token_ids.is_none(),
            );
            assert_eq!(self.gpu.last_step_graphed(), got.graphed(), "{what}");
            if let Some(b) = got.bucket {
                self.graphed += 1;
                self.replayed.insert(b);
            }
            self.steps += 1;
            Ok(got)
        }

        fn step_agreed(
            &mut self,
            _: &StepInput<'_>,
            _: &attention_layout::AgreedShape,
        ) -> Result<StepInfo, BackendError> {
            panic!("a one-rank simulate never asks for an agreed step")
        }

        fn synchronize(&mut self) -> Result<(), BackendError> {
            self.gpu.synchronize()
        }

        fn bytes_copied_last_step(&self) -> usize {
            self.gpu.bytes_copied_last_step()
        }

        fn reset_residency(&mut self) {
            self.gpu.reset_residency();
        }
    }

    fn steps() -> u64 {
        std::env::var("AL_GPU_STEPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2000)
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn every_bucket_of_a_tuned_table_is_captured_replayed_and_exact() {
        require_device();
        let dims = RuntimeDims::new(NemotronH8bTuned::geometry().unwrap());
        let gpu = backend(&dims, FillMode::Device, true);
        assert_eq!(
            gpu.report().graphs,
            NemotronH8bTuned::BUCKETS.len() * CudaBackend::STAGING_SLOTS,
            "one graph per bucket and staging slot"
        );
        let mut checked = Checked {
            gpu,
            host: NemotronH8bTunedBuilder::new(),
            dims: dims.clone(),
            steps: 0,
            graphed: 0,
            replayed: BTreeSet::new(),
        };
        let config = SimConfig {
            seed: 2,
            steps: steps(),
            ..SimConfig::default()
        };
        let report = simulate::run(&config, &dims, &mut checked, &mut |_| {})
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{report}");
        assert_eq!(report.padding.inconsistent_steps, 0);
        assert_eq!(checked.steps, report.steps);
        assert_eq!(checked.graphed, report.graphed_steps);
        assert_eq!(
            checked.replayed.len(),
            NemotronH8bTuned::BUCKETS.len(),
            "buckets never replayed: {:?}",
            (0..NemotronH8bTuned::BUCKETS.len() as u32)
                .filter(|b| !checked.replayed.contains(b))
                .collect::<Vec<_>>()
        );
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
#[ignore = "needs a CUDA device"]
fn gpu_tests_need_the_cuda_feature() {
    panic!("built without the `cuda` feature: build with `--features attention-layout/cuda`");
}
