//! Expert-parallel agreement over NCCL (feature `nccl`).
//!
//! * On every machine: without NCCL (or without a driver), every way into an NCCL group is a
//!   typed error, never a panic; where NCCL and a device are present, a one-rank group
//!   opens.
//! * GPU (`#[ignore = "needs a CUDA device"]`, failing without one): a one-rank NCCL group
//!   drives the CUDA backend's device fill step after step; each step's agreement equals
//!   the CPU rule's, and each step's metadata equals the host fill under the same
//!   agreement (other ranks are simulated by folding their shapes into the agreement, so
//!   forced buckets and forced eager steps occur). Prints the cost of the agreement per
//!   step for `BENCHMARKS.md`.
//! * Two GPUs (`#[ignore = "needs two CUDA devices"]`, failing with fewer): two ranks, one
//!   thread and one device each, agree over NCCL and build their steps; every step both
//!   agreed on the same shape (the CPU reduction of both local shapes) and the same bucket.

#![cfg(feature = "nccl")]
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

mod support;

use attention_layout::agree::AgreeError;
use attention_layout::cuda::nccl::{GroupId, NcclAgreement, nccl_present};

#[test]
fn without_nccl_every_way_into_a_group_is_a_typed_error() {
    let usable = nccl_present().is_ok() && attention_layout::cuda::probe(0).is_ok();
    match NcclAgreement::single(0) {
        Ok(g) => {
            assert!(usable, "an NCCL group without NCCL or a device");
            assert_eq!((g.rank(), g.ranks()), (0, 1));
        }
        Err(e @ AgreeError::NcclUnavailable(_)) => {
            assert!(nccl_present().is_err(), "NCCL present but: {e}");
            assert!(GroupId::new().is_err());
            eprintln!("{e}");
        }
        Err(e) => assert!(!usable, "NCCL and a device are present but: {e}"),
    }
    // Malformed groups are refused before NCCL is touched.
    let id = GroupId::from_bytes([0; 128]);
    for (rank, ranks) in [(0, 0), (2, 2), (0, usize::MAX)] {
        match NcclAgreement::join(0, rank, ranks, &id) {
            Err(AgreeError::GroupSize { .. }) => {}
            other => panic!("rank {rank} of {ranks}: {other:?}"),
        }
    }
    assert_eq!(GroupId::from_bytes([7; 128]).to_bytes(), [7; 128]);
}

mod gpu {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use attention_layout::agree::{AgreedShape, ShapeAgreement, in_process_group, step_shape};
    use attention_layout::cuda::nccl::{GroupId, NcclAgreement, nccl_version};
    use attention_layout::cuda::{CudaBackend, CudaOptions, FillMode};
    use attention_layout::{BatchDims, HostMetadata, MetadataBackend, RuntimeDims};

    use super::support::gpu::{compare_step, require_device};
    use super::support::layouts;
    use super::support::workload::{Rng, Workload};

    /// Median, mean and 99th percentile of durations, in microseconds.
    fn stats(mut d: Vec<Duration>) -> (f64, f64, f64) {
        d.sort();
        let us = |x: Duration| x.as_secs_f64() * 1e6;
        let n = d.len().max(1);
        let mean = d.iter().map(|&x| us(x)).sum::<f64>() / n as f64;
        (us(d[n / 2]), mean, us(d[(n * 99 / 100).min(n - 1)]))
    }

    fn print(what: &str, d: Vec<Duration>) {
        let count = d.len();
        let (p50, mean, p99) = stats(d);
        eprintln!(
            "BENCH ep-agreement | {what} | {count} steps | p50 {p50:.2} µs | mean {mean:.2} µs | p99 {p99:.2} µs"
        );
    }

    /// A shape another (simulated) rank might have this step: mostly decode-only, at
    /// times with a prefill, at times empty.
    fn phantom(rng: &mut Rng, dims: &RuntimeDims) -> BatchDims {
        let r = dims.geometry().facts.max_requests as u64;
        let s1 = dims.geometry().facts.speculative_tokens as u32 + 1;
        match rng.below(10) {
            0 => BatchDims::new(0, 0, 0),
            1 => BatchDims::new(1 + s1, 1, 1),
            _ => {
                let d = rng.range(1, r) as u32;
                BatchDims::new(d * s1, 0, d)
            }
        }
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn a_one_rank_nccl_group_drives_the_device_fill_step_after_step() {
        let device = require_device();
        let (major, minor, patch) = nccl_version().unwrap_or_else(|e| panic!("{e}"));
        eprintln!("NCCL {major}.{minor}.{patch} on {device}");
        let steps = 2000;
        for name in ["hybrid-small", "hybrid-spec2", "mha-tp2"] {
            let src = layouts::LAYOUTS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| *s)
                .unwrap();
            let dims = layouts::dims(src);
            let mut gpu = CudaBackend::new(
                dims.clone(),
                CudaOptions {
                    mode: FillMode::Device,
                    ..CudaOptions::default()
                },
            )
            .unwrap_or_else(|e| panic!("{name}: CUDA backend: {e}"));
            let mut cpu = HostMetadata::new(dims.clone());
            let mut own = NcclAgreement::single(0).unwrap_or_else(|e| panic!("{e}"));
            let id = GroupId::new().unwrap();
            let mut shared = NcclAgreement::with_stream(Arc::clone(gpu.stream()), 0, 1, &id)
                .unwrap_or_else(|e| panic!("{e}"));
            let mut w = Workload::new(&dims, 17, layouts::knobs(name));
            let mut rng = Rng::new(5);
            let (mut t_own, mut t_shared) = (Vec::new(), Vec::new());
            let (mut graphed, mut forced_eager, mut forced_bigger) = (0, 0, 0);
            for k in 0..steps {
                let st = w.step();
                let rows = st.rows();
                let input = st.input(&rows);
                let local = step_shape(&input);
                // The agreement through NCCL on its own stream, then on the backend's.
                let t0 = Instant::now();
                let nccl = own
                    .agree(local)
                    .unwrap_or_else(|e| panic!("{name} step {k}: {e}"));
                t_own.push(t0.elapsed());
                let t0 = Instant::now();
                let again = shared
                    .agree(local)
                    .unwrap_or_else(|e| panic!("{name} step {k}: {e}"));
                t_shared.push(t0.elapsed());
                assert_eq!(nccl, AgreedShape::solo(local), "{name} step {k}");
                assert_eq!(again, nccl, "{name} step {k}");
                // Fold in simulated ranks: the group's agreement as the CPU rule gives it.
                let others: Vec<BatchDims> = (0..rng.below(4))
                    .map(|_| phantom(&mut rng, &dims))
                    .collect();
                let agreed = match AgreedShape::reduce(&others) {
                    Some(o) => nccl.combine(o),
                    None => nccl,
                };
                let want = *cpu
                    .fill_agreed(&input, &agreed)
                    .unwrap_or_else(|e| panic!("{name} step {k}: host fill: {e}"));
                let got = gpu
                    .step_agreed(&input, &agreed)
                    .unwrap_or_else(|e| panic!("{name} step {k}: CUDA backend: {e}"));
                assert_eq!(want, got, "{name} step {k}: step info");
                graphed += usize::from(got.graphed());
                let alone = attention_layout::codegen::buckets::match_bucket(
                    local,
                    &dims.geometry().buckets,
                    dims.geometry().has_mamba(),
                );
                forced_eager += usize::from(alone.is_some() && !got.graphed());
                forced_bigger += usize::from(alone.is_some_and(|a| got.padded.tokens > a.tokens));
                if k % 50 == 0 || k + 1 == steps {
                    let snap = gpu.download().unwrap();
                    compare_step(
                        &format!("{name} step {k}"),
                        &cpu.view(),
                        &snap.view(&dims),
                        input.token_ids.is_none(),
                    );
                }
            }
            gpu.synchronize().unwrap();
            eprintln!(
                "{name}: {steps} steps, {graphed} graphed, {forced_eager} forced eager, {forced_bigger} forced into a larger bucket"
            );
            assert!(
                forced_eager > 0 && forced_bigger > 0 && graphed > 0,
                "{name}"
            );
            print(
                &format!("{name}: NCCL, 1 rank, own stream ({device})"),
                t_own,
            );
            print(
                &format!("{name}: NCCL, 1 rank, the backend's stream ({device})"),
                t_shared,
            );
        }

        // For comparison, in the same process: the bare host-device round trip the NCCL
        // agreement contains (no fill running), and the CPU-side agreement of 2 and 8
        // threaded ranks.
        let mut g = NcclAgreement::single(0).unwrap();
        let mut bare = Vec::with_capacity(5000);
        let mut idle = Vec::with_capacity(5000);
        for i in 0..5000u32 {
            let t0 = Instant::now();
            g.round_trip().unwrap();
            bare.push(t0.elapsed());
            let t0 = Instant::now();
            g.agree(BatchDims::new(i % 256, 0, i % 256)).unwrap();
            idle.push(t0.elapsed());
        }
        print(
            &format!("copies + synchronize, no all-reduce ({device})"),
            bare,
        );
        print(&format!("NCCL, 1 rank, no fill running ({device})"), idle);
        for ranks in [2, 8] {
            print(
                &format!("in-process CPU agreement, {ranks} ranks (host of {device})"),
                cpu_group(ranks, 20_000),
            );
        }
    }

    /// Per-step cost of the in-process agreement with `ranks` threads, seen by rank 0.
    pub(super) fn cpu_group(ranks: usize, steps: usize) -> Vec<Duration> {
        let mut group = in_process_group(ranks, Some(Duration::from_secs(60))).unwrap();
        let mut first = group.remove(0);
        let helpers: Vec<_> = group
            .into_iter()
            .map(|mut rank| {
                std::thread::spawn(move || {
                    for i in 0..steps {
                        rank.agree(BatchDims::new(i as u32 % 64, 0, i as u32 % 64))
                            .unwrap();
                    }
                })
            })
            .collect();
        let mut out = Vec::with_capacity(steps);
        for i in 0..steps {
            let t0 = Instant::now();
            first
                .agree(BatchDims::new(i as u32 % 32, 0, i as u32 % 32))
                .unwrap();
            out.push(t0.elapsed());
        }
        for h in helpers {
            h.join().unwrap();
        }
        out
    }

    #[test]
    #[ignore = "needs two CUDA devices"]
    fn two_ranks_on_two_gpus_agree_over_nccl_step_after_step() {
        require_device();
        if let Err(e) = attention_layout::cuda::probe(1) {
            panic!("this test needs two CUDA devices: {e}");
        }
        let id = GroupId::new().unwrap_or_else(|e| panic!("{e}"));
        let bytes = id.to_bytes();
        let steps = 1000;
        let src = layouts::LAYOUTS[1].1;
        let threads: Vec<_> = (0..2usize)
            .map(|rank| {
                std::thread::spawn(move || {
                    let dims = layouts::dims(src);
                    let id = GroupId::from_bytes(bytes);
                    let mut group = NcclAgreement::join(rank, rank, 2, &id)
                        .unwrap_or_else(|e| panic!("rank {rank}: {e}"));
                    let mut gpu = CudaBackend::new(
                        dims.clone(),
                        CudaOptions {
                            ordinal: rank,
                            ..CudaOptions::default()
                        },
                    )
                    .unwrap_or_else(|e| panic!("rank {rank}: {e}"));
                    let mut cpu = HostMetadata::new(dims.clone());
                    let mut w = Workload::new(
                        &dims,
                        100 + rank as u64,
                        layouts::knobs(layouts::LAYOUTS[1].0),
                    );
                    let mut log = Vec::with_capacity(steps);
                    let mut times = Vec::with_capacity(steps);
                    for k in 0..steps {
                        let st = w.step();
                        let rows = st.rows();
                        let input = st.input(&rows);
                        let local = step_shape(&input);
                        let t0 = Instant::now();
                        let agreed = group
                            .agree(local)
                            .unwrap_or_else(|e| panic!("rank {rank} step {k}: {e}"));
                        times.push(t0.elapsed());
                        let want = *cpu.fill_agreed(&input, &agreed).unwrap();
                        let got = gpu
                            .step_agreed(&input, &agreed)
                            .unwrap_or_else(|e| panic!("rank {rank} step {k}: {e}"));
                        assert_eq!(want, got, "rank {rank} step {k}");
                        log.push((local, agreed, got.bucket));
                    }
                    gpu.synchronize().unwrap();
                    (log, times)
                })
            })
            .collect();
        let mut results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let (log1, times1) = results.pop().unwrap();
        let (log0, times0) = results.pop().unwrap();
        let mut graphed = 0;
        for (k, (a, b)) in log0.iter().zip(&log1).enumerate() {
            let cpu = AgreedShape::reduce(&[a.0, b.0]).unwrap();
            assert_eq!(a.1, cpu, "step {k}: rank 0 agreed {:?}", a.1);
            assert_eq!(b.1, cpu, "step {k}: rank 1 agreed {:?}", b.1);
            assert_eq!(a.2, b.2, "step {k}: the ranks chose different buckets");
            graphed += usize::from(a.2.is_some());
        }
        eprintln!("2 ranks, {steps} steps, {graphed} graphed on both");
        print("NCCL, 2 ranks on 2 GPUs, rank 0", times0);
        print("NCCL, 2 ranks on 2 GPUs, rank 1", times1);
    }
}
