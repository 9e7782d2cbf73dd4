//! `BatchState::with_prefix_caching`: worked examples of what a hit changes, the two
//! eviction policies, the Mamba restore and stores, and the two places where the engine
//! state departs from Megatron's skip (DESIGN.md "Prefix caching", D9 and D10).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use attention_layout::batch::{BatchError, BatchState, PrefixOptions, RequestPhase};
use attention_layout::codegen::spec::{GraphSpec, LayoutSpec, MambaSpec, ModelKind};
use attention_layout::{EvictionPolicy, Geometry, Phase, RuntimeDims};

/// R = 4, T = 64, S = 64, B = 4, 20 blocks (19 usable).
fn dims(model: ModelKind) -> RuntimeDims {
    let spec = LayoutSpec {
        name: None,
        source: None,
        model,
        max_requests: 4,
        max_tokens: 64,
        max_seq_len: 64,
        block_size: 4,
        speculative_tokens: 0,
        tensor_parallel: 1,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: Some(20),
        mamba: model.has_mamba().then_some(MambaSpec {
            chunk_size: 4,
            conv_width: 4,
        }),
        graphs: GraphSpec::default(),
        memory: None,
        formats: Vec::new(),
    };
    RuntimeDims::new(Geometry::new(&spec).unwrap())
}

fn cached(model: ModelKind, policy: EvictionPolicy, slots: Option<usize>) -> BatchState {
    BatchState::with_prefix_caching(
        &dims(model),
        PrefixOptions {
            policy,
            mamba_cache_slots: slots,
        },
    )
    .unwrap()
}

fn prompt(n: i64) -> Vec<i64> {
    (100..100 + n).collect()
}

/// Runs one step (prefill of the whole prompt) and commits it.
fn prefill_all(b: &mut BatchState, h: attention_layout::RequestHandle) {
    let i = b.info(h).unwrap();
    b.schedule_prefill(h, i.prompt_len - i.prompt_done).unwrap();
    b.with_step(|_| ());
    b.commit_step(|_| 0).unwrap();
}

#[test]
fn a_second_request_with_the_same_prompt_shares_its_blocks_and_skips_them() {
    let mut b = cached(ModelKind::Mha, EvictionPolicy::RefZero, None);
    let a = b.admit_prompt(&prompt(10), 4).unwrap();
    prefill_all(&mut b, a);
    let a_blocks = b.blocks(a).unwrap().to_vec();
    assert_eq!(a_blocks.len(), 3);
    // 10 tokens: blocks 0 and 1 are complete and registered, block 2 is not.
    let kv = b.prefix_kv().unwrap();
    assert!(kv.hashes()[a_blocks[0] as usize] > 0);
    assert!(kv.hashes()[a_blocks[1] as usize] > 0);
    assert_eq!(kv.hashes()[a_blocks[2] as usize], -1);

    let c = b.admit_prompt(&prompt(10), 4).unwrap();
    b.schedule_prefill(c, 10).unwrap();
    let hit = b.prefix_hit(c).unwrap().unwrap();
    assert_eq!(
        (hit.matched_blocks, hit.skip_tokens, hit.query_length),
        (2, 8, 2)
    );
    assert_eq!(hit.restore_from, None);
    let i = b.info(c).unwrap();
    assert_eq!((i.kv_offset, i.scheduled, i.prompt_done), (8, 2, 8));
    let c_blocks = b.blocks(c).unwrap().to_vec();
    assert_eq!(&c_blocks[..2], &a_blocks[..2]);
    assert_ne!(c_blocks[2], a_blocks[2]);
    assert_eq!(b.kv_shared(), 2);
    // The step row is a prefill of 2 tokens after 8 cached ones; both rows of the
    // resident table hold the shared blocks.
    b.with_step(|input| {
        let row = input
            .rows
            .iter()
            .find(|r| r.phase == Phase::Prefill)
            .unwrap();
        assert_eq!((row.kv_offset, row.query_length), (8, 2));
        assert_eq!(row.blocks, c_blocks.as_slice());
    });
    let nkv = b.block_table_width();
    let t = b.resident_table();
    assert_eq!(&t[a.row() as usize * nkv..][..2], &a_blocks[..2]);
    assert_eq!(&t[c.row() as usize * nkv..][..2], &a_blocks[..2]);
    b.commit_step(|_| 0).unwrap();
    assert_eq!(b.info(c).unwrap().phase, RequestPhase::Decode);
    let stats = b.prefix_stats().unwrap();
    assert_eq!(
        (
            stats.lookups,
            stats.hits,
            stats.skipped_tokens,
            stats.computed_tokens
        ),
        (2, 1, 8, 12)
    );

    // Releasing one owner keeps the shared blocks for the other.
    b.release(a).unwrap();
    let kv = b.prefix_kv().unwrap();
    assert_eq!(kv.ref_counts()[a_blocks[0] as usize], 1);
    assert!(!kv.is_free(a_blocks[0]));
    assert!(kv.is_free(a_blocks[2]));
    // Under ref_zero the last release frees and forgets them.
    b.release(c).unwrap();
    let kv = b.prefix_kv().unwrap();
    assert_eq!(kv.in_use_count(), 0);
    assert_eq!(kv.cached_count(), 0);
    assert_eq!(kv.available(), 19);
}

#[test]
fn under_lru_a_finished_prefix_stays_cached_and_is_matched_later() {
    let mut b = cached(ModelKind::Mha, EvictionPolicy::Lru, None);
    let a = b.admit_prompt(&prompt(12), 1).unwrap();
    prefill_all(&mut b, a);
    // max_output 1: finished at the end of its prefill.
    assert!(b.info(a).is_err());
    let kv = b.prefix_kv().unwrap();
    assert_eq!((kv.cached_count(), kv.in_use_count()), (3, 0));
    assert_eq!(b.kv_available(), 19);
    let c = b.admit_prompt(&prompt(12), 1).unwrap();
    b.schedule_prefill(c, 12).unwrap();
    // All 3 blocks match; the skip keeps 2 query tokens (12 − 2 = 10, rounded down to 8).
    let hit = b.prefix_hit(c).unwrap().unwrap();
    assert_eq!(
        (hit.matched_blocks, hit.skip_tokens, hit.query_length),
        (3, 8, 4)
    );
    assert_eq!(b.prefix_kv().unwrap().cached_count(), 0);
}

#[test]
fn lru_evicts_cached_blocks_when_the_free_stack_is_short() {
    let mut b = cached(ModelKind::Mha, EvictionPolicy::Lru, None);
    let a = b.admit_prompt(&prompt(40), 1).unwrap();
    prefill_all(&mut b, a);
    assert_eq!(b.prefix_kv().unwrap().cached_count(), 10);
    // 9 free + 10 cached: a 60-token prompt of other tokens needs 15.
    let other: Vec<i64> = (0..60).collect();
    let c = b.admit_prompt(&other, 1).unwrap();
    b.schedule_prefill(c, 60).unwrap();
    let stats = b.prefix_stats().unwrap();
    assert_eq!(stats.evicted_blocks, 6);
    assert_eq!(b.prefix_kv().unwrap().cached_count(), 4);
}

#[test]
fn a_failed_schedule_under_prefix_caching_changes_nothing() {
    let mut b = cached(ModelKind::Mha, EvictionPolicy::RefZero, None);
    let a = b.admit_prompt(&prompt(40), 2).unwrap();
    prefill_all(&mut b, a);
    // 19 − 10 = 9 free: a different 60-token prompt needs 15 blocks.
    let other: Vec<i64> = (0..60).collect();
    let c = b.admit_prompt(&other, 1).unwrap();
    let refs = b.prefix_kv().unwrap().ref_counts().to_vec();
    let table = b.resident_table().to_vec();
    assert_eq!(
        b.schedule_prefill(c, 60),
        Err(BatchError::OutOfBlocks {
            needed: 15,
            available: 9
        })
    );
    assert_eq!(b.prefix_kv().unwrap().ref_counts(), refs.as_slice());
    assert_eq!(b.resident_table(), table.as_slice());
    assert_eq!(b.info(c).unwrap().kv_offset, 0);
    assert_eq!(b.prefix_hit(c).unwrap(), None);
    // The same prompt extended fits: 10 blocks matched, 5 new.
    let mut longer = prompt(40);
    longer.extend(500..520);
    let d = b.admit_prompt(&longer, 1).unwrap();
    b.schedule_prefill(d, 60).unwrap();
    assert_eq!(b.prefix_hit(d).unwrap().unwrap().matched_blocks, 10);
    assert_eq!(b.kv_available(), 4);
}

#[test]
fn a_hybrid_hit_restores_from_the_slot_its_first_request_stored() {
    let mut b = cached(ModelKind::Hybrid, EvictionPolicy::Lru, Some(4));
    let a = b.admit_prompt(&prompt(16), 1).unwrap();
    b.schedule_prefill(a, 16).unwrap();
    // Offsets: the last complete block of the prompt ends at 16 = the chunk's end (EOS
    // state), the penultimate block boundary 12 is an intermediate.
    let inter = b.with_step(|input| input.intermediate.map(<[_]>::to_vec));
    let inter = inter.expect("a hybrid layout with a Mamba cache gets intermediate offsets");
    assert_eq!(inter.len(), 1);
    assert_eq!(&inter[0].offsets[..usize::from(inter[0].count)], &[12]);
    let blocks = b.blocks(a).unwrap().to_vec();
    b.commit_step(|_| 0).unwrap();
    let stores = b.mamba_stores().to_vec();
    assert_eq!(stores.len(), 2);
    assert_eq!(
        (stores[0].block, stores[0].intermediate),
        (blocks[2], Some(0))
    );
    assert_eq!((stores[1].block, stores[1].intermediate), (blocks[3], None));
    // Same prompt: the whole chunk is cached, so the match backs off to block 2's state.
    let c = b.admit_prompt(&prompt(16), 1).unwrap();
    b.schedule_prefill(c, 16).unwrap();
    let hit = b.prefix_hit(c).unwrap().unwrap();
    assert_eq!((hit.matched_blocks, hit.skip_tokens), (4, 12));
    assert_eq!(hit.restore_from, Some(stores[0].slot));
    b.with_step(|_| ());
    b.commit_step(|_| 0).unwrap();
    assert_eq!(b.prefix_stats().unwrap().mamba_restores, 1);
}

#[test]
fn the_two_token_clamp_never_lands_a_hybrid_skip_on_a_state_that_is_not_cached() {
    // D9. A, 20 tokens in one chunk, stores the states after 16 tokens (the chunk's last
    // block boundary) and 20 (its end): blocks 3 and 4, not block 2.
    let mut b = cached(ModelKind::Hybrid, EvictionPolicy::Lru, Some(4));
    let a = b.admit_prompt(&prompt(20), 1).unwrap();
    prefill_all(&mut b, a);
    let stored: Vec<_> = b.mamba_stores().iter().map(|s| s.intermediate).collect();
    assert_eq!(stored, [Some(0), None]);
    // C: A's first 16 tokens and one more. Mamba match 4 blocks, skip 16 leaves 1 query
    // token; Megatron's clamp moves the skip to 12 and restores the state after block 2,
    // which is not cached: zeros. Here the skip backs off to a cached state, and there is
    // none before block 3: nothing skipped, nothing restored.
    let mut p = prompt(16);
    p.push(7);
    let c = b.admit_prompt(&p, 1).unwrap();
    b.schedule_prefill(c, 17).unwrap();
    let hit = b.prefix_hit(c).unwrap().unwrap();
    assert_eq!(hit.matched_blocks, 4);
    assert_eq!((hit.skip_tokens, hit.restore_from), (0, None));
    assert_eq!(hit.query_length, 17);
    // With 18 tokens the skip of 16 keeps 2 query tokens and restores block 3's state.
    b.release(c).unwrap();
    p.push(8);
    let c = b.admit_prompt(&p, 1).unwrap();
    b.schedule_prefill(c, 18).unwrap();
    let hit = b.prefix_hit(c).unwrap().unwrap();
    assert_eq!(hit.skip_tokens, 16);
    let block3 = b.blocks(c).unwrap()[3];
    assert_eq!(hit.restore_from, b.mamba_cache().unwrap().slot(block3));
    assert!(hit.restore_from.is_some());
}

#[test]
fn a_hybrid_continuation_chunk_shares_blocks_but_skips_nothing() {
    // D10: the live Mamba state of a chunked request is at its processed prompt; skipping
    // tokens of a later chunk would leave them out of it.
    let mut b = cached(ModelKind::Hybrid, EvictionPolicy::Lru, None);
    let a = b.admit_prompt(&prompt(16), 1).unwrap();
    prefill_all(&mut b, a);
    let c = b.admit_prompt(&prompt(16), 1).unwrap();
    b.schedule_prefill(c, 4).unwrap();
    assert_eq!(b.prefix_hit(c).unwrap().unwrap().skip_tokens, 0);
    b.with_step(|_| ());
    b.commit_step(|_| 0).unwrap();
    b.schedule_prefill(c, 12).unwrap();
    let hit = b.prefix_hit(c).unwrap().unwrap();
    assert_eq!((hit.matched_blocks, hit.skip_tokens), (3, 0));
    // The MHA layout skips the same continuation chunk (rule 2: at most q − 1 tokens,
    // the 2-token clamp: 8).
    let mut m = cached(ModelKind::Mha, EvictionPolicy::Lru, None);
    let a = m.admit_prompt(&prompt(16), 1).unwrap();
    prefill_all(&mut m, a);
    let c = m.admit_prompt(&prompt(16), 1).unwrap();
    m.schedule_prefill(c, 4).unwrap();
    m.with_step(|_| ());
    m.commit_step(|_| 0).unwrap();
    m.schedule_prefill(c, 12).unwrap();
    assert_eq!(m.prefix_hit(c).unwrap().unwrap().skip_tokens, 8);
}

#[test]
fn without_prefix_caching_admit_prompt_is_admit() {
    let mut b = BatchState::new(&dims(ModelKind::Mha)).unwrap();
    let h = b.admit_prompt(&prompt(10), 2).unwrap();
    assert_eq!(b.info(h).unwrap().prompt_len, 10);
    b.schedule_prefill(h, 10).unwrap();
    assert_eq!(b.prefix_hit(h).unwrap(), None);
    assert!(b.prefix_kv().is_none());
    assert_eq!(b.kv_in_use(), 3);
}

#[test]
fn mamba_cache_slots_on_a_layout_without_mamba_are_refused() {
    let r = BatchState::with_prefix_caching(
        &dims(ModelKind::Mha),
        PrefixOptions {
            policy: EvictionPolicy::Lru,
            mamba_cache_slots: Some(3),
        },
    );
    assert!(matches!(r, Err(BatchError::Layout(_))));
    let r = BatchState::with_prefix_caching(
        &dims(ModelKind::Hybrid),
        PrefixOptions {
            policy: EvictionPolicy::Lru,
            mamba_cache_slots: Some(0),
        },
    );
    assert!(matches!(r, Err(BatchError::Prefix(_))));
}

#[test]
fn the_layouts_memory_key_sizes_the_mamba_cache() {
    let src = r#"
model = "hybrid"
max_requests = 4
max_tokens = 64
max_seq_len = 64
block_size = 4
kv_pool_blocks = 20
[mamba]
chunk_size = 4
conv_width = 4
[memory]
attention_layers = 1
kv_heads = 1
head_dim = 8
mamba_layers = 1
mamba_heads = 1
mamba_head_dim = 8
mamba_state_dim = 8
mamba_groups = 1
budget_gib = 1.0
prefix_caching_mamba_gb = 0.0001
"#;
    let g = Geometry::new(&attention_layout::LayoutSpec::from_toml_str(src, "t.toml").unwrap())
        .unwrap();
    // 0.0001 GiB = 107,374 bytes; 400-byte slots; scratch min(16, 12) = 12 slots.
    let slots = (107_374 - 12 * 400) / 400;
    assert_eq!(g.prefix_mamba_cache_slots(), Some(slots));
    let options = PrefixOptions::for_layout(&g, EvictionPolicy::Lru);
    assert_eq!(options.mamba_cache_slots, Some(slots));
    let b = BatchState::with_prefix_caching(&RuntimeDims::new(g), options).unwrap();
    assert_eq!(b.mamba_cache().unwrap().slots(), slots);
}
