//! A prompt's block hashes, exactly as Megatron-LM computes them.
//!
//! For a block size `B`, the prompt's `n = ⌊len / B⌋` complete blocks each get a hash; a
//! trailing partial block gets none. With `d₋₁` = 32 zero bytes and block `i` the tokens
//! `[iB, (i+1)B)`, each encoded as a little-endian `i64` (8 bytes):
//!
//! ```text
//! dᵢ = SHA-256(dᵢ₋₁ ‖ bytes(block i))        hᵢ = (u64_le(dᵢ[0..8]) mod (2⁶³ − 1)) + 1
//! ```
//!
//! So every hash lies in `1 ..= 2⁶³ − 1` (0 means "no parent", −1 "no hash"), and thanks to
//! the chaining `hᵢ` stands for the whole prefix `[0, (i+1)B)`: the parent of block `i` is
//! `hᵢ₋₁` (0 for block 0). The values do not depend on the process, machine or run.

use sha2::{Digest, Sha256};

use super::PrefixError;

/// A block hash: `1 ..= i64::MAX` for a registered block (`-1` in state arrays means "no
/// hash", `0` as a parent hash means "no parent").
pub type BlockHash = i64;

/// `2⁶³ − 1`, the modulus of the hash reduction.
const MODULUS: u64 = i64::MAX.unsigned_abs();

/// The block hashes of `tokens` for blocks of `block_size` tokens (one per complete block,
/// in order).
///
/// # Errors
///
/// [`PrefixError::InvalidSize`] for a block size of 0.
pub fn block_hashes(tokens: &[i64], block_size: u32) -> Result<Vec<BlockHash>, PrefixError> {
    let b = usize::try_from(block_size).unwrap_or(usize::MAX);
    if b == 0 {
        return Err(PrefixError::InvalidSize {
            what: "block size",
            size: 0,
            min: 1,
            max: u32::MAX as usize,
        });
    }
    let mut out = Vec::with_capacity(tokens.len() / b);
    let mut digest = [0u8; 32];
    for block in tokens.chunks_exact(b) {
        let mut h = Sha256::new();
        h.update(digest);
        for t in block {
            h.update(t.to_le_bytes());
        }
        digest = h.finalize().into();
        out.push(reduce(&digest));
    }
    Ok(out)
}

/// `(u64_le(d[0..8]) mod (2⁶³ − 1)) + 1`, always in `1 ..= i64::MAX`.
fn reduce(digest: &[u8; 32]) -> BlockHash {
    let mut first = [0u8; 8];
    for (d, s) in first.iter_mut().zip(digest) {
        *d = *s;
    }
    let r = u64::from_le_bytes(first) % MODULUS + 1;
    // r ≤ 2⁶³ − 1 = i64::MAX.
    i64::try_from(r).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
    use super::*;

    #[test]
    fn a_partial_block_gets_no_hash_and_block_size_zero_is_refused() {
        assert_eq!(block_hashes(&[1, 2, 3], 4).unwrap(), Vec::<i64>::new());
        assert_eq!(block_hashes(&[], 4).unwrap(), Vec::<i64>::new());
        assert_eq!(block_hashes(&[1, 2, 3, 4, 5], 4).unwrap().len(), 1);
        assert!(matches!(
            block_hashes(&[1], 0),
            Err(PrefixError::InvalidSize { size: 0, .. })
        ));
    }

    #[test]
    fn hashes_chain_so_equal_blocks_after_different_prefixes_differ() {
        let a = block_hashes(&[1, 2, 7, 7], 2).unwrap();
        let b = block_hashes(&[1, 3, 7, 7], 2).unwrap();
        assert_ne!(a[1], b[1]);
        // The first block's hash only depends on the first block.
        assert_eq!(block_hashes(&[1, 2], 2).unwrap()[0], a[0]);
    }

    #[test]
    fn the_reduction_stays_in_one_to_i64_max() {
        assert_eq!(reduce(&[0; 32]), 1);
        assert_eq!(reduce(&[0xff; 32]), 2); // (2⁶⁴ − 1) mod (2⁶³ − 1) = 1
        let mut d = [0u8; 32];
        d[..8].copy_from_slice(&(MODULUS - 1).to_le_bytes());
        assert_eq!(reduce(&d), i64::MAX);
    }
}
