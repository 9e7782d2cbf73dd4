//! GPU machine (NVRTC and a device): the PTX disk cache with the real compiler. An entry is
//! written by NVRTC and read back; a tampered entry (PTX bytes changed) and a colliding
//! one (another layout's source stored under this key) are recompiled, not loaded, and
//! rewritten; a backend then loads its kernels from the rewritten entry. The cache's
//! format and checks are also tested without a device (`cuda::compile` unit tests).

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
    use std::path::PathBuf;

    use attention_layout::codegen::emit_cuda;
    use attention_layout::cuda::{
        CompileOptions, CudaBackend, CudaOptions, PtxOrigin, RejectedEntry, compile,
    };

    use super::support::gpu::require_device;
    use super::support::layouts;

    #[test]
    #[ignore = "needs a CUDA device"]
    fn a_tampered_or_colliding_ptx_cache_entry_is_recompiled_by_nvrtc() {
        let device = require_device();
        let dir: PathBuf = std::env::temp_dir().join(format!(
            "attention-layout-ptx-cache-gpu-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let options = CompileOptions {
            cache_dir: Some(dir.clone()),
            skip_memory_cache: true,
            force_compile: false,
        };
        let (cc_major, cc_minor) = device.compute_capability;
        let arch = compile::target_arch(cc_major, cc_minor).unwrap();
        // The entries a default backend compiles: it then finds the entry cached below.
        let entries = CudaOptions::default().emit_options();
        let source_of = |i: usize| {
            let dims = layouts::dims(layouts::LAYOUTS[i].1);
            emit_cuda::cuda_source_with(dims.geometry(), entries)
        };
        let (source, other) = (source_of(0), source_of(1));
        assert_ne!(source, other);

        let (ptx, fresh) = compile::compile(&source, &arch, &options).unwrap();
        assert_eq!((fresh.origin, fresh.rejected), (PtxOrigin::Nvrtc, None));
        let file = fresh.cache_file.clone().unwrap();
        let good = std::fs::read_to_string(&file).unwrap();
        let (again, read) = compile::compile(&source, &arch, &options).unwrap();
        assert_eq!((read.origin, read.rejected), (PtxOrigin::Disk, None));
        assert_eq!(again, ptx);

        // Tampered: one byte of the PTX changed, length kept.
        let at = good.rfind(".entry").unwrap() + 1;
        let mut tampered = good.clone().into_bytes();
        tampered[at] = if tampered[at] == b'e' { b'f' } else { b'e' };
        std::fs::write(&file, &tampered).unwrap();
        let (recompiled, r) = compile::compile(&source, &arch, &options).unwrap();
        assert_eq!(
            (r.origin, r.rejected),
            (PtxOrigin::Nvrtc, Some(RejectedEntry::Ptx))
        );
        assert_eq!(recompiled, ptx);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), good);

        // Colliding: another layout's entry under this key, with this key's first line.
        let (_, other_report) = compile::compile(&other, &arch, &options).unwrap();
        let other_entry = std::fs::read_to_string(other_report.cache_file.unwrap()).unwrap();
        let first_line = |text: &str| text.split_inclusive('\n').next().unwrap().to_owned();
        let forged = other_entry.replacen(&first_line(&other_entry), &first_line(&good), 1);
        assert!(forged.starts_with(&first_line(&good)));
        std::fs::write(&file, forged).unwrap();
        let (recompiled, r) = compile::compile(&source, &arch, &options).unwrap();
        assert_eq!(
            (r.origin, r.rejected),
            (PtxOrigin::Nvrtc, Some(RejectedEntry::Source))
        );
        assert_eq!(recompiled, ptx);

        // A backend loads its kernels from the rewritten entry.
        let dims = layouts::dims(layouts::LAYOUTS[0].1);
        let backend = CudaBackend::new(
            dims,
            CudaOptions {
                compile: options,
                ..CudaOptions::default()
            },
        )
        .unwrap();
        let report = backend.report().compile.clone().unwrap();
        assert_eq!((report.origin, report.rejected), (PtxOrigin::Disk, None));
        drop(backend);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
#[ignore = "needs a CUDA device"]
fn gpu_tests_need_the_cuda_feature() {
    panic!("built without the `cuda` feature: build with `--features attention-layout/cuda`");
}
