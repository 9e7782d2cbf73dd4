//! In steady state a `BatchState` step (schedule, build, commit) allocates nothing on the
//! heap. A counting global allocator, counting only this test's thread, checks it.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use attention_layout::batch::{BatchState, RequestPhase};
use attention_layout::codegen::spec::{GraphSpec, LayoutSpec, MambaSpec, ModelKind};
use attention_layout::{Geometry, RuntimeDims};

struct Counting;

thread_local! {
    static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
}

// SAFETY: forwards to the system allocator; the counter is a thread-local `Cell` that
// never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get().map(|n| n + 1)));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get().map(|n| n + 1)));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_steady_state_step_allocates_nothing() {
    let spec = LayoutSpec {
        name: None,
        source: None,
        model: ModelKind::Hybrid,
        max_requests: 32,
        max_tokens: 1024,
        max_seq_len: 4096,
        block_size: 16,
        speculative_tokens: 1,
        tensor_parallel: 1,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: None,
        mamba: Some(MambaSpec {
            chunk_size: 64,
            conv_width: 4,
        }),
        graphs: GraphSpec::default(),
        memory: None,
        formats: Vec::new(),
    };
    let dims = RuntimeDims::new(Geometry::new(&spec).unwrap());
    let mut state = BatchState::new(&dims).unwrap();
    let handles: Vec<_> = (0..24)
        .map(|i| state.admit(20 + i, 4000).unwrap())
        .collect();
    let step = |state: &mut BatchState| {
        for &h in &handles {
            match state.info(h).unwrap().phase {
                RequestPhase::Prefill => {
                    let i = state.info(h).unwrap();
                    state
                        .schedule_prefill(h, i.prompt_len - i.prompt_done)
                        .unwrap();
                }
                RequestPhase::Decode => state.schedule_decode(h).unwrap(),
            }
        }
        let rows = state.with_step(|input| input.rows.len());
        assert_eq!(rows, handles.len());
        assert!(state.commit_step(|_| 1).unwrap().is_empty());
    };
    // Warm-up: every request allocates blocks now and then, so the change list reaches its
    // largest size (all 24 requests crossing a block boundary in the same step).
    for _ in 0..64 {
        step(&mut state);
    }
    COUNT.with(|c| c.set(Some(0)));
    for _ in 0..200 {
        step(&mut state);
    }
    let n = COUNT.with(|c| c.replace(None)).unwrap();
    assert_eq!(n, 0, "{n} heap allocations in 200 steady-state steps");
}

#[test]
fn a_prepared_step_allocates_nothing_in_the_batch_state_or_the_cpu_backend() {
    use attention_layout::backend::{CpuBackend, MetadataBackend};
    let spec = LayoutSpec {
        name: None,
        source: None,
        model: ModelKind::Hybrid,
        max_requests: 32,
        max_tokens: 1024,
        max_seq_len: 4096,
        block_size: 16,
        speculative_tokens: 1,
        tensor_parallel: 1,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: None,
        mamba: Some(MambaSpec {
            chunk_size: 64,
            conv_width: 4,
        }),
        graphs: GraphSpec::default(),
        memory: None,
        formats: Vec::new(),
    };
    let dims = RuntimeDims::new(Geometry::new(&spec).unwrap());
    let mut state = BatchState::new(&dims).unwrap();
    let mut cpu = CpuBackend::new(dims.clone());
    let handles: Vec<_> = (0..24)
        .map(|i| state.admit(20 + i, 4000).unwrap())
        .collect();
    for &h in &handles {
        let p = state.info(h).unwrap().prompt_len;
        state.schedule_prefill(h, p).unwrap();
    }
    state.with_step(|input| cpu.step(input).unwrap());
    state.commit_step(|_| 0).unwrap();
    for &h in &handles {
        state.schedule_decode(h).unwrap();
    }
    let sampled = vec![7i64; handles.len()];
    let drafts = vec![8i64; handles.len()];
    let mask = vec![true; handles.len()];
    let mut step = |state: &mut BatchState| {
        state.with_step(|input| cpu.step(input).unwrap());
        state.prepare().unwrap();
        state.commit_sampled(&sampled, &drafts).unwrap();
        assert!(state.resolve(&mask).unwrap().is_empty());
    };
    for _ in 0..64 {
        step(&mut state);
    }
    COUNT.with(|c| c.set(Some(0)));
    for _ in 0..200 {
        step(&mut state);
    }
    let n = COUNT.with(|c| c.replace(None)).unwrap();
    assert_eq!(n, 0, "{n} heap allocations in 200 prepared steps");
}
