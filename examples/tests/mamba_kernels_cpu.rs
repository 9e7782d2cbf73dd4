//! The Mamba consumer's CUDA C (`mamba::cuda_source`, the very text NVRTC compiles on a
//! GPU), compiled for the CPU with the host C++ compiler under AddressSanitizer and
//! UndefinedBehaviorSanitizer (`support/cpu_shim.h`, `support/mamba_driver.cpp`), run on
//! random steps of every Mamba layout, blocks in launch order and last first, and checked
//! against the f64 reference like the GPU run. On the `vllm` layout this is the vLLM path:
//! state slots from `vllm_state_indices_*` with no padding check, so an index outside the
//! `R + 1`-slot state pool would fail the run (AddressSanitizer here, compute-sanitizer's
//! memcheck on a GPU); a negative control feeds Megatron's `-1` padding indices to the same
//! kernels and must fail that way.
//!
//! The GPU-free half of `tests/gpu.rs`'s Mamba tests: it checks the kernels' logic, not
//! NVRTC or the device.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use attention_layout::{Dims, Field, HostMetadata};
use attention_layout_examples::batch::{Batch, Kind};
use attention_layout_examples::layouts::{self, Layout, MambaModel};
use attention_layout_examples::mamba::{self, MambaCase, States};
use attention_layout_examples::rng::Rng;

const SHIM: &str = include_str!("support/cpu_shim.h");
const DRIVER: &str = include_str!("support/mamba_driver.cpp");

/// The host C++ compiler: `$CXX`, else `g++`, else `clang++`. Panics (fails the test) when
/// there is none: this test must not pass without running.
fn compiler() -> String {
    let runs = |cxx: &str| {
        Command::new(cxx)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Ok(cxx) = std::env::var("CXX") {
        assert!(runs(&cxx), "CXX={cxx} does not run");
        return cxx;
    }
    ["g++", "clang++"]
        .into_iter()
        .find(|c| runs(c))
        .map(str::to_owned)
        .expect("no C++ compiler found (tried g++, clang++; set CXX): the Mamba kernels' CUDA C is compiled for the CPU with it")
}

/// Compiles `layout`'s kernels and the driver into `dir/run`.
fn build(layout: &Layout<MambaModel>, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let src = format!(
        "{SHIM}{}{}{DRIVER}",
        if mamba::uses_vllm(&layout.dims) {
            "#define VLLM_PATH 1\n"
        } else {
            ""
        },
        mamba::cuda_source(layout)
    );
    let cpp = dir.join("mamba.cpp");
    std::fs::write(&cpp, src).unwrap();
    let exe = dir.join("run");
    let out = Command::new(compiler())
        .args(["-std=c++17", "-O1", "-g", "-fsanitize=address,undefined"])
        .args(["-fno-sanitize-recover=undefined", "-o"])
        .arg(&exe)
        .arg(&cpp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: the kernels do not build for the CPU:\n{}",
        layout.label,
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn write_f32(dir: &Path, name: &str, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn read_f32(dir: &Path, name: &str) -> Vec<f32> {
    std::fs::read(dir.join(name))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

/// What one run of the compiled kernels gave.
struct Ran {
    ok: bool,
    stderr: String,
    states: States,
    y: Vec<f32>,
    kernel_errors: u32,
}

/// Runs one step of `case` with metadata `meta` through `exe`.
fn run_step(
    exe: &Path,
    dir: &Path,
    meta: &[u8],
    info: &attention_layout::StepInfo,
    case: &MambaCase,
    reverse: bool,
) -> Ran {
    let xd = case.model.nheads * case.model.headdim;
    let dp = info.padded.decode as usize;
    let dims: Vec<u8> = [
        dp as i32,
        info.padded.prefill as i32,
        case.padded_tokens as i32,
        info.mamba_chunks as i32,
    ]
    .iter()
    .flat_map(|x| x.to_ne_bytes())
    .collect();
    std::fs::write(dir.join("dims"), dims).unwrap();
    std::fs::write(dir.join("meta"), meta).unwrap();
    let p = &case.params;
    for (name, v) in [
        ("xbc", &case.xbc),
        ("dt", &case.dt),
        ("a", &p.a),
        ("d", &p.d),
        ("conv_w", &p.conv_w),
        ("conv_b", &p.conv_b),
        ("conv", &case.states.conv),
        ("ssm", &case.states.ssm),
    ] {
        write_f32(dir, name, v);
    }
    write_f32(dir, "y", &vec![mamba::sentinel(); case.padded_tokens * xd]);
    write_f32(dir, "y_d", &vec![mamba::sentinel(); dp * xd]);
    let mut cmd = Command::new(exe);
    cmd.arg(dir);
    if reverse {
        cmd.arg("reverse");
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Ran {
            ok: false,
            stderr,
            states: case.states.clone(),
            y: Vec::new(),
            kernel_errors: 0,
        };
    }
    let mut y = read_f32(dir, "y.out");
    let err = i32::from_ne_bytes(
        std::fs::read(dir.join("err.out")).unwrap()[..4]
            .try_into()
            .unwrap(),
    );
    let mut kernel_errors = err as u32;
    if case.vllm {
        let y_d = read_f32(dir, "y_d.out");
        kernel_errors += mamba::merge_decode_outputs(&mut y, &y_d, info.real.decode as usize, xd);
    }
    Ran {
        ok: true,
        stderr,
        states: States {
            conv: read_f32(dir, "conv.out"),
            ssm: read_f32(dir, "ssm.out"),
        },
        y,
        kernel_errors,
    }
}

fn work_dir(label: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "attention-layout-mamba-cpu-{}-{label}",
        std::process::id()
    ))
}

/// Every Mamba layout's kernels, compiled for the CPU under the sanitizers, reproduce the f64
/// reference on random steps (blocks in order and last first): outputs and final states of
/// every real row within tolerance, conv states exact, slots no real row owns untouched,
/// padding tokens' outputs untouched, no kernel-counted inconsistency, no sanitizer report.
/// On the `vllm` layout the steps include mixed ones with padding decode rows, whose
/// outputs would land on real prefill tokens if indexed by `cu_query_seq_lengths`.
#[test]
fn the_mamba_kernels_compiled_for_the_cpu_match_the_reference_on_every_layout() {
    for layout in layouts::mamba().unwrap() {
        let dir = work_dir(layout.label);
        let exe = build(&layout, &dir);
        let mut meta = HostMetadata::new(layout.dims.clone());
        let (mut padded_decode_in_mixed, mut padded_prefill) = (0, 0);
        let steps = 40;
        for seed in 0..steps {
            let mut rng = Rng::new(seed);
            let batch = Batch::random(&layout.dims, Kind::schedule(seed as usize), &mut rng);
            let info = *batch.fill(&mut meta).unwrap();
            let case = MambaCase::new(&layout, batch, &info, &mut rng);
            padded_decode_in_mixed +=
                usize::from(info.real.prefill > 0 && info.padded.decode > info.real.decode);
            padded_prefill += usize::from(info.padded.prefill > info.real.prefill);
            for reverse in [false, true] {
                let ran = run_step(&exe, &dir, meta.bytes(), &info, &case, reverse);
                let at = format!("{} seed {seed} reverse {reverse}", layout.label);
                assert!(ran.ok, "{at}: the kernels failed:\n{}", ran.stderr);
                assert!(ran.stderr.is_empty(), "{at}: {}", ran.stderr);
                let o = case.check(&ran.states, &ran.y);
                assert_eq!(ran.kernel_errors, 0, "{at}");
                assert_eq!(
                    (o.guard_violations, o.padding_writes),
                    (0, 0),
                    "{at}: {o:?}"
                );
                assert!(
                    o.output.within(mamba::TOLERANCE) && o.state.within(mamba::TOLERANCE),
                    "{at}: {o:?}"
                );
            }
        }
        if mamba::uses_vllm(&layout.dims) {
            assert!(
                padded_decode_in_mixed >= 10 && padded_prefill >= 10,
                "{}: {padded_decode_in_mixed} mixed steps with padding decode rows, {padded_prefill} with padded prefill rows",
                layout.label
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The negative control: Megatron's state indices (`-1` on padding rows) put into the
/// `vllm_state_indices_*` fields make the vLLM path's kernels, which have no padding check,
/// index one slot before the state pool, and the sanitizer stops the run. (So the clean
/// runs above mean the scratch slot kept every padding row inside the pool.)
#[test]
fn megatron_padding_indices_on_the_vllm_path_leave_the_state_pool() {
    let layout = layouts::mamba()
        .unwrap()
        .into_iter()
        .find(|l| mamba::uses_vllm(&l.dims))
        .unwrap();
    let dir = work_dir("negative");
    let exe = build(&layout, &dir);
    let mut meta = HostMetadata::new(layout.dims.clone());
    let (mut tried, mut caught) = (0, 0);
    for seed in 0..40 {
        let mut rng = Rng::new(seed);
        let batch = Batch::random(&layout.dims, Kind::schedule(seed as usize), &mut rng);
        let info = *batch.fill(&mut meta).unwrap();
        let case = MambaCase::new(&layout, batch, &info, &mut rng);
        let (dr, dp) = (info.real.decode as usize, info.padded.decode as usize);
        let (fr, fp) = (info.real.prefill as usize, info.padded.prefill as usize);
        if dp == dr && fp == fr {
            continue;
        }
        let mut bytes = meta.bytes().to_vec();
        for (field, real, padded) in [
            (Field::VllmStateIndicesDecode, dr, dp),
            (Field::VllmStateIndicesPrefill, fr, fp),
        ] {
            let off = layout.dims.field_offset(field);
            for i in real..padded {
                bytes[off + 4 * i..off + 4 * i + 4].copy_from_slice(&(-1i32).to_ne_bytes());
            }
        }
        tried += 1;
        let ran = run_step(&exe, &dir, &bytes, &info, &case, false);
        if !ran.ok && ran.stderr.contains("AddressSanitizer") {
            caught += 1;
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(tried >= 10, "{tried} steps with padding rows");
    assert_eq!(caught, tried, "{caught} of {tried} caught");
}
