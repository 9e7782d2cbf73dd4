//! `attention-layout bench --backend cuda` on any machine: a message (never a panic) when
//! the build has no CUDA support or the machine has no driver, NVRTC or device, and `auto`
//! falls back to the CPU and says why. The backend selection itself is tested in the
//! runtime (`runtime/tests/cuda_unavailable.rs`). Runs in the normal test suite.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "Test code: a panic is a failed test."
)]

use attention_layout::backend::BackendKind;
use attention_layout_cli::bench;

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
fn bench_backend_cuda_without_cuda_is_a_message() {
    let cuda = bench::resolve_backend(BackendKind::Cuda);
    let auto = bench::resolve_backend(BackendKind::Auto).unwrap();
    if cuda_usable() {
        assert!(cuda.unwrap().0);
        assert!(auto.0);
    } else {
        let e = cuda.unwrap_err();
        assert!(e.starts_with("CUDA backend unavailable: "), "{e}");
        assert!(!auto.0, "{}", auto.1);
        assert!(auto.1.contains("auto"), "{}", auto.1);
    }
}
