//! The emitted CUDA fill kernels, compiled for the CPU with the host C++ compiler
//! (`support/cuda_shim.h`: one OS thread per CUDA thread) and fed by the staging builder,
//! write exactly the host fill's bytes into every field's live prefix, step after step of
//! a random workload (requests arrive, grow, pause, get holes and finish; steps with and
//! without residency, token ids and intermediate offsets; bucket and eager entries; one to
//! three blocks per launch).
//!
//! This is the GPU-free half of the device-fill tests: it checks the kernels' logic and
//! the staging format. `cuda_equivalence.rs` runs the same comparison on a GPU.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

mod support;

use attention_layout::devfill::{self, StagingBuilder};
use attention_layout::fill::{self, FillState};
use attention_layout::{Dims, Field, HostMetadata, MetadataView};
use support::workload::Workload;
use support::{layouts, shim};

#[derive(Default, Debug)]
struct Coverage {
    graphed: u32,
    eager: u32,
    compact: u32,
    overflow: u32,
    patches: u64,
    changes: u64,
    gathered: u64,
    uploaded: u64,
    prefill_steps: u32,
}

fn run_layout(name: &str, src: &str, steps: usize, seed: u64, bucket_entries: bool) -> Coverage {
    let Some(cxx) = shim::compiler() else {
        eprintln!("skipped {name}: no C++ compiler (set CXX)");
        return Coverage::default();
    };
    let dims = layouts::dims(src);
    let g = dims.geometry().clone();
    let harness = shim::build(&cxx, name, &g, bucket_entries);
    let mut cpu = HostMetadata::new(dims.clone());
    let mut trace = shim::Trace::new(cpu.bytes(), dims.max_requests() * dims.block_table_width());
    let mut builder = StagingBuilder::new(&dims);
    let mut plan_state = FillState::new(&dims);
    let mut staging = vec![0u128; builder.capacity() / 16 + 1];
    let mut expected = Vec::new();
    let mut layout_of_step: Vec<Vec<(Field, usize)>> = Vec::new();
    let mut infos = Vec::new();
    let mut w = Workload::new(&dims, seed, layouts::knobs(name));
    let mut cov = Coverage::default();
    let debug: Option<usize> = std::env::var("AL_DEBUG_STEP")
        .ok()
        .and_then(|s| s.parse().ok());
    for step in 0..steps {
        let st = w.step();
        if let Some(d) = debug
            && step + 8 >= d
            && step <= d
        {
            eprintln!(
                "--- step {step}: residency {} changes {:?}",
                st.residency, st.changes
            );
            for (i, r) in st.rows.iter().enumerate() {
                eprintln!(
                    "  row {i} res {} {:?} q {} kv {} blocks {:?}",
                    st.resident_rows[i], r.0, r.1, r.2, r.3
                );
            }
        }
        let rows = st.rows();
        let input = st.input(&rows);
        let plan = fill::plan_step(&dims, &input, &mut plan_state)
            .unwrap_or_else(|e| panic!("{name} step {step}: workload produced a bad step: {e}"));
        let info = devfill::complete_info(&dims, &input, plan.info());
        let cpu_info = *cpu.fill(&input).unwrap();
        assert_eq!(info, cpu_info, "{name} step {step}: step info");
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut staging);
        let staged = builder
            .build(&input, &info, bytes)
            .unwrap_or_else(|e| panic!("{name} step {step}: {e}"));
        let entry = match (bucket_entries, info.bucket) {
            (true, Some(b)) => b + 1,
            _ => 0,
        };
        if info.graphed() {
            cov.graphed += 1;
        } else {
            cov.eager += 1;
        }
        if let Some(d) = debug
            && step + 8 >= d
            && step <= d
        {
            eprintln!("  staged {staged:?} info {:?} {:?}", info.real, info.padded);
        }
        cov.compact += u32::from(staged.compact);
        cov.overflow += u32::from(staged.compact && st.residency);
        cov.patches += u64::from(staged.patches);
        cov.changes += u64::from(staged.changes);
        cov.gathered += u64::from(staged.gathered_rows);
        cov.uploaded += u64::from(staged.uploaded_rows);
        cov.prefill_steps += u32::from(info.padded.prefill > 0);
        let view = cpu.view();
        let mut ranges = Vec::new();
        let mut lens = Vec::new();
        for &f in Field::ALL {
            if let Some(live) = view.live_bytes(f) {
                ranges.push((dims.field_offset(f) as u32, live.len() as u32));
                lens.push((f, live.len()));
                expected.extend_from_slice(live);
            }
        }
        let grid = 1 + (step % 3) as u32;
        trace.launch(entry, grid, &bytes[..staged.bytes], &ranges);
        layout_of_step.push(lens);
        infos.push(info);
    }
    let got = trace.run(&harness, name);
    assert_eq!(got.len(), expected.len(), "{name}: output length");
    let mut at = 0;
    for (step, lens) in layout_of_step.iter().enumerate() {
        for &(f, len) in lens {
            let (e, o) = (&expected[at..at + len], &got[at..at + len]);
            if e != o {
                // Rebuild both views of this field to name the first differing element.
                let mut eb = vec![0u8; dims.total_bytes()];
                let mut ob = vec![0u8; dims.total_bytes()];
                let off = dims.field_offset(f);
                eb[off..off + len].copy_from_slice(e);
                ob[off..off + len].copy_from_slice(o);
                let ev = MetadataView::from_parts(&dims, &eb, &infos[step]);
                let ov = MetadataView::from_parts(&dims, &ob, &infos[step]);
                let d = ev.first_difference(&ov).unwrap();
                panic!(
                    "{name} step {step} ({:?} real, {:?} padded): {d}",
                    infos[step].real, infos[step].padded
                );
            }
            at += len;
        }
    }
    shim::clean(&harness);
    println!("{name}: {steps} steps, {cov:?}");
    cov
}

/// Steps per layout (`AL_SHIM_STEPS` overrides; the default keeps CI short).
fn steps() -> usize {
    std::env::var("AL_SHIM_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

#[test]
fn emitted_kernels_match_the_host_fill_on_every_test_layout() {
    let mut overflow = 0;
    for (i, (name, src)) in layouts::LAYOUTS.iter().enumerate() {
        let buckets = i % 2 == 0;
        let cov = run_layout(name, src, steps(), 0x5eed + i as u64, buckets);
        if shim::compiler().is_none() {
            return;
        }
        // The workload reaches every path of the staging builder and the kernels.
        assert!(cov.eager > 0, "{name}: no eager step");
        assert!(cov.compact > 0, "{name}: no compact step");
        assert!(cov.patches > 0, "{name}: no in-place patch");
        assert!(cov.changes > 0, "{name}: no resident change");
        assert!(cov.gathered > 0, "{name}: no gathered row");
        assert!(cov.uploaded > 0, "{name}: no uploaded row");
        assert!(cov.prefill_steps > 0, "{name}: no prefill step");
        let has_graphs = !layouts::dims(src).geometry().buckets.is_empty();
        assert_eq!(cov.graphed > 0, has_graphs, "{name}: graphed steps");
        overflow += cov.overflow;
    }
    assert!(overflow > 0, "no step overflowed the staging capacity");
}
