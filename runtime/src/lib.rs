//! # attention-layout
//!
//! Megatron-exact per-step metadata for attention (FlashAttention varlen, paged KV) and
//! Mamba2 kernels: the host fill (the reference implementation), the KV block allocator and
//! Mamba slot pool, and the command line tool.

pub mod alloc;
