//! The consumers on a GPU, as tests (`cuda` feature; ignored unless asked for: run with
//! `--include-ignored` on a machine with a GPU, where a missing device fails the test).
#![cfg(feature = "cuda")]

use attention_layout_examples::{RunArgs, attention, gpu, layouts, mamba};

const ARGS: RunArgs = RunArgs {
    batches: 9,
    seed: 77,
};

#[test]
#[ignore = "needs a CUDA device"]
fn paged_attention_on_gpu() {
    let layouts = layouts::attention().unwrap();
    let mut exec = gpu::GpuAttention::new(gpu::Gpu::open().unwrap());
    let s = attention::run_batches(&layouts, ARGS, &mut exec, &mut |l| println!("{l}")).unwrap();
    assert_eq!(s.failed, 0);
}

#[test]
#[ignore = "needs a CUDA device"]
fn mamba_consumer_on_gpu() {
    let layouts = layouts::mamba().unwrap();
    let mut exec = gpu::GpuMamba::new(gpu::Gpu::open().unwrap());
    let s = mamba::run_batches(&layouts, ARGS, &mut exec, &mut |l| println!("{l}")).unwrap();
    assert_eq!(s.failed, 0);
}

/// The Mamba consumer's vLLM path on the GPU: state slots from `vllm_state_indices_*`, no
/// padding check (padding rows on the scratch slot `R` of an `R + 1`-slot pool), decode
/// outputs by decode row. Every real row's output and final state within tolerance, conv
/// states exact, every slot no real row owns bit-identical, no kernel error; steps with
/// padding rows included. Run it under `compute-sanitizer --tool memcheck` too (.gpu/run-cuda
/// does, through the mamba_consumer program).
#[test]
#[ignore = "needs a CUDA device"]
fn mamba_consumer_with_vllm_state_indices_on_gpu() {
    let layouts: Vec<_> = layouts::mamba()
        .unwrap()
        .into_iter()
        .filter(|l| mamba::uses_vllm(&l.dims))
        .collect();
    assert_eq!(layouts.len(), 1);
    let mut exec = gpu::GpuMamba::new(gpu::Gpu::open().unwrap());
    let args = RunArgs {
        batches: 48,
        seed: 1313,
    };
    let s = mamba::run_batches(&layouts, args, &mut exec, &mut |l| println!("{l}")).unwrap();
    assert_eq!(s.failed, 0);
    assert!(
        s.graphed_padded >= 8,
        "{} padded graphed steps",
        s.graphed_padded
    );
}

/// Fill + consumer captured as one graph and replayed: every checked step equals the CPU
/// reference (the metadata buffer and the consumer's output).
#[test]
#[ignore = "needs a CUDA device"]
fn the_fill_captured_with_a_consumer_matches_the_cpu_reference() {
    let arch = gpu::nvrtc_arch(attention_layout::cuda::probe(0).unwrap().compute_capability);
    let r = attention_layout_examples::captured::run(arch, 400, 7).unwrap();
    assert_eq!(r.mismatch, None);
    assert!(r.checked >= 64 + 400 / 7, "{} steps checked", r.checked);
    assert!(r.delta > 0.9, "{:.0} % delta steps", r.delta * 100.0);
}

/// The same through `FillGraph`s (the node pointed at each step): every checked step equals
/// the CPU reference, and steady steps travel in the kernel's parameters.
#[test]
#[ignore = "needs a CUDA device"]
fn the_fill_graph_with_a_consumer_matches_the_cpu_reference() {
    let arch = gpu::nvrtc_arch(attention_layout::cuda::probe(0).unwrap().compute_capability);
    let r = attention_layout_examples::captured::run_graph(arch, 400, 7).unwrap();
    assert_eq!(r.mismatch, None);
    assert!(r.checked >= 64 + 400 / 7, "{} steps checked", r.checked);
    assert!(
        r.in_params > 0.9,
        "{:.0} % in the parameters",
        r.in_params * 100.0
    );
}

/// The kernels compile for Hopper (NVRTC only: no device needed).
#[test]
#[ignore = "needs NVRTC (libnvrtc)"]
fn kernels_compile_with_nvrtc() {
    let modules = gpu::compile_all("sm_90").unwrap();
    assert_eq!(
        modules.len(),
        layouts::attention().unwrap().len() + layouts::mamba().unwrap().len()
    );
    for (label, ptx) in modules {
        println!("{label}: {ptx} bytes of PTX");
        assert!(ptx > 1000, "{label}");
    }
}
