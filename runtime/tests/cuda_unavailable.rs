//! Backend selection on any machine: `cuda` returns a typed error (never a panic) when the
//! build has no CUDA support or the machine has no driver, NVRTC or device, and `auto`
//! falls back to the CPU backend and says why. Where CUDA is usable, both pick it. Runs in
//! the normal test suite (no device needed).

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

mod support;

use attention_layout::backend::{BackendError, BackendKind, select};

fn cuda_usable() -> bool {
    #[cfg(feature = "cuda")]
    {
        attention_layout::cuda::probe(0).is_ok()
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

#[test]
fn cuda_without_cuda_is_an_error_and_auto_falls_back_to_the_cpu() {
    let dims = support::layouts::dims(support::layouts::LAYOUTS[1].1);
    let usable = cuda_usable();
    match select(BackendKind::Cuda, dims.clone()) {
        Ok(s) => assert!(
            usable,
            "cuda selected without a usable device: {}",
            s.reason
        ),
        Err(BackendError::CudaUnavailable(why)) => {
            assert!(!usable, "a usable device was not selected: {why}");
            assert!(!why.is_empty());
            eprintln!("cuda: {why}");
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
    let auto = select(BackendKind::Auto, dims).unwrap();
    eprintln!("auto: {}", auto.reason);
    if usable {
        assert!(auto.backend.name().starts_with("cuda"), "{}", auto.reason);
    } else {
        assert_eq!(auto.backend.name(), "cpu");
        assert!(
            auto.reason.starts_with("cpu backend (auto: "),
            "{}",
            auto.reason
        );
    }
}

#[cfg(feature = "cuda")]
#[test]
fn the_cuda_backend_without_a_device_is_a_typed_error() {
    if cuda_usable() {
        return;
    }
    let dims = support::layouts::dims(support::layouts::LAYOUTS[0].1);
    let opts = attention_layout::cuda::CudaOptions::default();
    match attention_layout::cuda::CudaBackend::new(dims, opts) {
        Err(BackendError::CudaUnavailable(_)) => {}
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a CUDA backend without a device"),
    }
}

/// The compile functions are public: without NVRTC they return a typed error (cudarc's
/// loader would panic at the first NVRTC call); with it, a source NVRTC rejects is a
/// `Compile` error with the log.
#[cfg(feature = "cuda")]
#[test]
fn compiling_without_nvrtc_is_an_error_not_a_panic() {
    use attention_layout::cuda::{CompileOptions, compile};
    let options = CompileOptions {
        cache_dir: Some(std::env::temp_dir().join("attention-layout-no-nvrtc-test")),
        force_compile: true,
        skip_memory_cache: true,
    };
    let compiled = compile::compile("this is not CUDA", "sm_90", &options);
    match compile::nvrtc_version() {
        Err(BackendError::CudaUnavailable(why)) => {
            eprintln!("no NVRTC here: {why}");
            assert!(
                matches!(compiled, Err(BackendError::CudaUnavailable(_))),
                "{compiled:?}"
            );
            assert!(matches!(
                compile::target_arch(9, 0),
                Err(BackendError::CudaUnavailable(_))
            ));
        }
        Ok(v) => {
            eprintln!("NVRTC {v:?} present");
            assert!(
                matches!(compiled, Err(BackendError::Compile { .. })),
                "{compiled:?}"
            );
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}
