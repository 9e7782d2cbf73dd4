//! Memory sizing: derives the KV pool and Mamba state pool from a `[memory]` section, so
//! layouts state model facts and a budget instead of guessed pool sizes.

use crate::spec::{LayoutSpec, MemorySpec, SpecError};

/// What a layout's memory section works out to (per tensor-parallel rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Bytes of K and V for one block across all attention layers.
    pub kv_bytes_per_block: u64,
    /// Bytes of conv and SSM state for one Mamba slot across all Mamba layers.
    pub mamba_bytes_per_slot: u64,
    /// Mamba slots: one per request row, as in Megatron, plus the scratch slot `R` with
    /// the `vllm` format.
    pub mamba_slots: u64,
    /// Bytes given to the Mamba states.
    pub mamba_bytes: u64,
    /// The budget in bytes.
    pub budget_bytes: u64,
    /// KV blocks the rest of the budget holds (dummy included); 0 without attention layers.
    pub kv_blocks: u64,
}

/// Bytes in a GiB.
const GIB: f64 = (1u64 << 30) as f64;

/// `factors` multiplied, or an error naming `key` when the product overflows 64 bits.
fn product(key: &str, what: &str, factors: &[u64]) -> Result<u64, SpecError> {
    factors
        .iter()
        .try_fold(1u64, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| {
            SpecError::key(
                key,
                format!("the {what} overflows a 64-bit byte count; check the [memory] sizes"),
            )
        })
}

/// Works out the memory plan of `spec` with block-table width `nkv`.
///
/// Every size is computed with checked 64-bit arithmetic: a section whose products
/// overflow is a [`SpecError`], never a wrapped (and silently wrong) pool size.
pub fn plan(spec: &LayoutSpec, m: &MemorySpec) -> Result<MemoryPlan, SpecError> {
    let b = u64::from(spec.block_size);
    let kv_bytes_per_block = product(
        "memory.attention_layers",
        "KV bytes per block",
        &[
            2,
            u64::from(m.attention_layers),
            u64::from(m.kv_heads),
            u64::from(m.head_dim),
            b,
            u64::from(m.dtype_bytes),
        ],
    )?;
    let d_conv = spec.mamba.as_ref().map_or(0, |x| u64::from(x.conv_width));
    let state = "Mamba state per slot";
    let key = "memory.mamba_layers";
    let inner = product(
        key,
        state,
        &[u64::from(m.mamba_heads), u64::from(m.mamba_head_dim)],
    )?;
    let ssm = product(
        key,
        state,
        &[
            inner,
            u64::from(m.mamba_state_dim),
            u64::from(m.state_dtype_bytes),
        ],
    )?;
    let conv_channels = product(
        key,
        state,
        &[2, u64::from(m.mamba_groups), u64::from(m.mamba_state_dim)],
    )?
    .checked_add(inner)
    .ok_or_else(|| SpecError::key(key, format!("the {state} overflows a 64-bit byte count")))?;
    let conv = product(
        key,
        state,
        &[
            conv_channels,
            d_conv.saturating_sub(1),
            u64::from(m.dtype_bytes),
        ],
    )?;
    let per_layer = ssm
        .checked_add(conv)
        .ok_or_else(|| SpecError::key(key, format!("the {state} overflows a 64-bit byte count")))?;
    let mamba_bytes_per_slot = product(key, state, &[u64::from(m.mamba_layers), per_layer])?;
    // One slot per request row, as in Megatron; the `vllm` format adds the scratch slot
    // `R` that padding rows point at (docs/CONSUMER-CONTRACT.md).
    let mamba_slots =
        u64::from(spec.max_requests) + u64::from(spec.has_format(crate::Format::Vllm));
    let mamba_bytes = product(key, "Mamba state", &[mamba_bytes_per_slot, mamba_slots])?;
    let budget_bytes = (m.budget_gib * GIB) as u64;
    let rest = budget_bytes.checked_sub(mamba_bytes).ok_or_else(|| {
        SpecError::key(
            "memory.budget_gib",
            format!(
                "{} GiB does not hold the Mamba states of {mamba_slots} requests ({:.2} GiB)",
                m.budget_gib,
                mamba_bytes as f64 / GIB
            ),
        )
    })?;
    let kv_blocks = rest.checked_div(kv_bytes_per_block).unwrap_or(0);
    Ok(MemoryPlan {
        kv_bytes_per_block,
        mamba_bytes_per_slot,
        mamba_slots,
        mamba_bytes,
        budget_bytes,
        kv_blocks,
    })
}

/// The slots of the durable Mamba state cache that `memory.prefix_caching_mamba_gb` buys
/// (Megatron's sizing): `floor((floor(gb · 2³⁰) − scratch · per_slot) / per_slot)` where
/// `per_slot` is one request's conv and SSM states over all Mamba layers
/// ([`MemoryPlan::mamba_bytes_per_slot`]) and `scratch = min(ceil(T / B), 3 · R)` slots
/// are the per-step extraction buffer. `None` without the key.
///
/// # Errors
///
/// A [`SpecError`] naming `memory.prefix_caching_mamba_gb` when the budget holds no slot
/// besides the scratch (Megatron's configuration error), or the sizes overflow.
pub fn prefix_mamba_cache_slots(
    spec: &LayoutSpec,
    m: &MemorySpec,
) -> Result<Option<u64>, SpecError> {
    const KEY: &str = "memory.prefix_caching_mamba_gb";
    let Some(gb) = m.prefix_caching_mamba_gb else {
        return Ok(None);
    };
    let per_slot = plan(spec, m)?.mamba_bytes_per_slot;
    if per_slot == 0 {
        return Err(SpecError::key(
            KEY,
            "a Mamba state cache needs Mamba layers with a state (`memory.mamba_layers`, `mamba_heads`, `mamba_head_dim`, `mamba_state_dim`)".to_owned(),
        ));
    }
    let budget = (gb * GIB) as u64;
    let scratch = u64::from(spec.max_tokens)
        .div_ceil(u64::from(spec.block_size.max(1)))
        .min(3 * u64::from(spec.max_requests));
    let scratch_bytes = product(KEY, "Mamba extraction scratch", &[scratch, per_slot])?;
    let slots = budget.saturating_sub(scratch_bytes) / per_slot;
    if slots < 1 || slots > i32::MAX as u64 {
        return Err(SpecError::key(
            KEY,
            format!(
                "{gb} GiB holds {slots} Mamba cache slots of {per_slot} bytes after the {scratch}-slot extraction scratch; between 1 and {} are needed",
                i32::MAX
            ),
        ));
    }
    Ok(Some(slots))
}

/// The KV pool size a memory section implies: every block the budget holds after the Mamba
/// states, capped at what the block table can ever reference plus the dummy block.
pub fn derived_kv_pool_blocks(
    spec: &LayoutSpec,
    m: &MemorySpec,
    nkv: usize,
) -> Result<usize, SpecError> {
    let p = plan(spec, m)?;
    let cap = (spec.max_requests as u64) * (nkv as u64) + 1;
    if m.attention_layers == 0 {
        return Ok(cap as usize);
    }
    if p.kv_blocks < 2 {
        return Err(SpecError::key(
            "memory.budget_gib",
            format!(
                "{} GiB holds {} KV blocks of {} bytes after the Mamba states; at least 2 are needed",
                m.budget_gib, p.kv_blocks, p.kv_bytes_per_block
            ),
        ));
    }
    Ok(p.kv_blocks.min(cap).min(i32::MAX as u64) as usize)
}
