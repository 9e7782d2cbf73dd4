//! GPU test helpers: a device is required (a GPU test that finds none fails), and the
//! byte-for-byte comparison of a CUDA backend's metadata with the host fill.

use attention_layout::cuda::{CudaBackend, CudaOptions, FillMode};
use attention_layout::{HostMetadata, MetadataBackend, MetadataView, RuntimeDims, StepInput};

/// Fails the test when no CUDA device can be used, naming why.
pub fn require_device() -> attention_layout::cuda::DeviceInfo {
    match attention_layout::cuda::probe(0) {
        Ok(d) => {
            eprintln!("GPU: {d}");
            d
        }
        Err(e) => panic!("this GPU test needs a CUDA device: {e}"),
    }
}

/// A backend without the parameter entry (`CudaOptions::param_images` off: every graphed
/// step takes the copy graph), failing the test with the setup error.
pub fn backend(dims: &RuntimeDims, mode: FillMode, graphs: bool) -> CudaBackend {
    backend_with(
        dims,
        CudaOptions {
            mode,
            graphs,
            // The copy graph for every graphed step: the parameter entry (the default)
            // have their own tests (`backend_with_param_images`).
            param_images: false,
            ..CudaOptions::default()
        },
    )
}

/// A device-fill backend with graphs whose small graphed images travel
/// in the kernel's parameters (`CudaOptions::param_images`).
pub fn backend_with_param_images(dims: &RuntimeDims) -> CudaBackend {
    backend_with(
        dims,
        CudaOptions {
            param_images: true,
            ..CudaOptions::default()
        },
    )
}

/// A backend with `options` (graphs asserted captured when asked for and the layout has
/// buckets).
pub fn backend_with(dims: &RuntimeDims, options: CudaOptions) -> CudaBackend {
    let graphs = options.graphs;
    let b = CudaBackend::new(dims.clone(), options)
        .unwrap_or_else(|e| panic!("CUDA backend setup: {e}"));
    if graphs && !dims.geometry().buckets.is_empty() {
        assert_eq!(b.report().graphs_disabled, None, "graphs were asked for");
        assert!(b.report().graphs > 0, "no graph captured");
    }
    b
}

/// Runs one step on both, then compares every field's live bytes (and the step info).
/// Returns whether the CUDA step replayed a graph.
pub fn step_and_compare(
    what: &str,
    cpu: &mut HostMetadata<RuntimeDims>,
    gpu: &mut CudaBackend,
    input: &StepInput<'_>,
) -> bool {
    step_and_compare_origin(what, cpu, gpu, input, None)
}

/// [`step_and_compare`] with the step's origin, when a batch state built it (the backend
/// then stages a step that advances the one before from its changes alone).
pub fn step_and_compare_origin(
    what: &str,
    cpu: &mut HostMetadata<RuntimeDims>,
    gpu: &mut CudaBackend,
    input: &StepInput<'_>,
    origin: Option<&attention_layout::StepOrigin>,
) -> bool {
    let want = *cpu
        .fill(input)
        .unwrap_or_else(|e| panic!("{what}: the host fill rejected the step: {e}"));
    let got = match origin {
        Some(o) => gpu.step_with_origin(input, o),
        None => gpu.step(input),
    }
    .unwrap_or_else(|e| panic!("{what}: the CUDA backend failed: {e}"));
    assert_eq!(want, got, "{what}: step info");
    let snap = gpu
        .download()
        .unwrap_or_else(|e| panic!("{what}: download: {e}"));
    let dims = cpu.dims().clone();
    // The block table's guard (not part of any live length): dummy ids on the device too.
    let guard = {
        use attention_layout::{Dims, Field};
        let rows = dims.max_requests() * dims.block_table_width() * 4;
        let start = dims.field_offset(Field::MhaBlockTable) + rows;
        start..dims.field_offset(Field::MhaBlockTable) + dims.field_elems(Field::MhaBlockTable) * 4
    };
    assert_eq!(
        snap.bytes().get(guard.clone()),
        cpu.bytes().get(guard),
        "{what}: the block table's guard"
    );
    compare_step(
        what,
        &cpu.view(),
        &snap.view(&dims),
        input.token_ids.is_none(),
    );
    gpu.last_step_graphed()
}

/// Panics with the first differing field and element.
pub fn compare(what: &str, want: &MetadataView<'_>, got: &MetadataView<'_>) {
    compare_step(what, want, got, false);
}

/// [`compare`]; after a step without token ids (`engine_token_ids`) the real entries of
/// `token_to_input_ids` are the engine's and are left out: a backend with its own
/// (double-buffered) staging need not share the host buffer's history there.
pub fn compare_step(
    what: &str,
    want: &MetadataView<'_>,
    got: &MetadataView<'_>,
    engine_token_ids: bool,
) {
    if let Some(d) = want.first_difference_with(got, engine_token_ids) {
        panic!(
            "{what} ({:?} real, {:?} padded, bucket {:?}): {d}",
            want.info().real,
            want.info().padded,
            want.info().bucket
        );
    }
}
