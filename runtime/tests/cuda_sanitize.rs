//! GPU: the fill entry and the parameter entry run every bucket's shape at least once
//! (through graphs and eagerly, with and without parameter images), on steps shaped exactly
//! like each bucket, plus a short random workload
//! and a short steady decode sequence (delta steps, some keeping their rows: no request
//! scan), each result compared with the host fill. Small on purpose: this is the binary
//! to run under `compute-sanitizer` (memcheck, racecheck, synccheck, initcheck); see
//! `docs/DESIGN.md` ("Checking the kernels").

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

mod support;

#[cfg(feature = "cuda")]
mod gpu {
    use attention_layout::cuda::FillMode;
    use attention_layout::{Dims, HostMetadata, LayoutSpec, MetadataBackend, RuntimeDims};

    use super::support::gpu::{
        backend, backend_with_param_images, require_device, step_and_compare,
    };
    use super::support::layouts;
    use super::support::shaped::ShapedStep;
    use super::support::steady::{SteadyDriver, SteadyKnobs};
    use super::support::workload::Workload;

    fn every_bucket(name: &str, dims: &RuntimeDims) {
        // Graphs, graphs with the small images in the kernels' parameters (every bucket's
        // parameter entry), no graphs.
        for (graphs, params) in [(true, false), (true, true), (false, false)] {
            let mut gpu = if params {
                backend_with_param_images(dims)
            } else {
                backend(dims, FillMode::Device, graphs)
            };
            let mut cpu = HostMetadata::new(dims.clone());
            let buckets = dims.buckets().to_vec();
            let mut hit = 0;
            for (i, &b) in buckets.iter().enumerate() {
                let Some(shaped) = ShapedStep::new(dims, b) else {
                    continue;
                };
                let rows = shaped.rows();
                let input = shaped.input(&rows);
                let what = format!("{name} bucket {i} {b:?} graphs={graphs} params={params}");
                let replayed = step_and_compare(&what, &mut cpu, &mut gpu, &input);
                assert_eq!(cpu.info().bucket, Some(i as u32), "{what}: matched bucket");
                assert_eq!(replayed, graphs, "{what}: graph replay");
                hit += 1;
            }
            assert!(
                buckets.is_empty() || hit > 0,
                "{name}: no bucket could be shaped"
            );
            eprintln!(
                "{name} graphs={graphs} params={params}: {hit} of {} buckets launched",
                buckets.len()
            );
            // Eager launches, on a short random workload: a new engine, whose residency
            // view starts from an all -1 table (the bucket steps wrote rows it never
            // clears).
            gpu.reset_residency();
            let mut w = Workload::new(dims, 7, layouts::knobs(name));
            for k in 0..40 {
                let st = w.step();
                let rows = st.rows();
                let what = format!("{name} random step {k} graphs={graphs} params={params}");
                step_and_compare(&what, &mut cpu, &mut gpu, &st.input(&rows));
            }
            // Delta steps (the device advances its request table), after a new engine.
            gpu.reset_residency();
            let mut driver = SteadyDriver::new(dims, 11, SteadyKnobs::DEFAULT);
            let (mut delta, mut kept) = (0, 0);
            for k in 0..60 {
                let what = format!("{name} steady step {k} graphs={graphs} params={params}");
                driver.step(|input| step_and_compare(&what, &mut cpu, &mut gpu, input));
                delta += u32::from(gpu.last_staged().delta);
                kept += u32::from(gpu.last_staged().kept_rows);
            }
            assert!(delta > 0, "{name}: no delta step");
            // Steps without the request scan (each row's prefixes from the last fill's).
            assert!(kept > 0, "{name}: no step kept its rows");
        }
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn every_bucket_runs_with_and_without_graphs_and_parameter_images() {
        require_device();
        for (name, src) in layouts::LAYOUTS {
            every_bucket(name, &layouts::dims(src));
        }
        for name in ["nemotron-h-8b", "nemotron-h-8b-tuned"] {
            let src = attention_layout::layouts::bundled(name).unwrap();
            let spec = LayoutSpec::from_toml_str(src, name).unwrap();
            every_bucket(
                name,
                &RuntimeDims::new(attention_layout::Geometry::new(&spec).unwrap()),
            );
        }
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
#[ignore = "needs a CUDA device"]
fn gpu_tests_need_the_cuda_feature() {
    panic!("built without the `cuda` feature: build with `--features attention-layout/cuda`");
}
