//! Explicit CUDA-graph bucket tables: a list of `(tokens, prefill, decode)` shapes written
//! in the spec (`graphs.buckets`) instead of one of Megatron's generated ladders.
//!
//! A table is checked entry by entry ([`check_table`]) and then becomes the layout's bucket
//! list, sorted ascending, exactly as a generated ladder does: matching (docs/SEMANTICS.md §3.3,
//! strict for hybrid models), eager padding, the generated Rust, the CUDA kernels and the
//! graph capture all read that one list and never ask where it came from.
//!
//! Rules, each reported with the entry it concerns:
//!
//! * every entry is a legal bucket of the layout (docs/SEMANTICS.md §2: at least one token, at most
//!   `max_requests` requests, enough tokens for its requests and not more than they can
//!   hold) and holds at most `max_tokens` tokens (the buffer's capacity);
//! * its token count is a multiple of `tensor_parallel` (Megatron's ladders only produce
//!   such counts);
//! * no entry appears twice;
//! * the full decode step `(max_requests · (s + 1), 0, max_requests)` is in the table, so
//!   a batch of `max_requests` decoding requests — the steady state of a busy engine — is
//!   always graphed, as every Megatron ladder guarantees;
//! * at most [`MAX_TABLE_ENTRIES`] entries (one graph each).

use std::collections::BTreeMap;
use std::fmt;

use crate::buckets::BatchDims;

/// Most entries a table may have: the limit a generated ladder's candidates have
/// (`geometry::MAX_BUCKET_CANDIDATES`), far beyond any number of graphs worth capturing.
pub const MAX_TABLE_ENTRIES: usize = 1 << 16;

/// The layout facts a table is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableRules {
    /// `R`.
    pub max_requests: u32,
    /// `T`.
    pub max_tokens: u32,
    /// `S`.
    pub max_seq_len: u32,
    /// `s`.
    pub speculative_tokens: u32,
    /// Tensor-parallel size (`0` is treated as `1`).
    pub tensor_parallel: u32,
}

impl TableRules {
    /// `s + 1`, widened.
    fn decode_tokens(&self) -> u128 {
        u128::from(self.speculative_tokens) + 1
    }

    /// The full decode bucket `(R · (s + 1), 0, R)` every table must hold (its token count
    /// saturates at `u32::MAX`, which no legal bucket reaches).
    pub fn full_decode(&self) -> BatchDims {
        let tokens = u128::from(self.max_requests) * self.decode_tokens();
        BatchDims::new(
            u32::try_from(tokens).unwrap_or(u32::MAX),
            0,
            self.max_requests,
        )
    }
}

/// Why a table, or one of its entries, is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableProblem {
    /// More entries than [`MAX_TABLE_ENTRIES`].
    TooMany {
        /// Entries given.
        count: usize,
    },
    /// An entry that is not a legal bucket of the layout.
    Invalid {
        /// Position in the table as written, from 0.
        index: usize,
        /// The entry.
        bucket: BatchDims,
        /// The rule it breaks, in words with its numbers.
        why: String,
    },
    /// An entry whose token count is not a multiple of the tensor-parallel size.
    NotAligned {
        /// Position in the table as written, from 0.
        index: usize,
        /// The entry.
        bucket: BatchDims,
        /// The tensor-parallel size.
        tensor_parallel: u32,
    },
    /// An entry equal to an earlier one.
    Duplicate {
        /// Position of the repeat, from 0.
        index: usize,
        /// Position of the first occurrence.
        first: usize,
        /// The entry.
        bucket: BatchDims,
    },
    /// No entry is the full decode step.
    MissingFullDecode {
        /// The entry that must be there.
        want: BatchDims,
    },
}

/// `[t, p, d]`, as the entry is written in TOML.
struct Entry(BatchDims);

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}, {}, {}]",
            self.0.tokens, self.0.prefill, self.0.decode
        )
    }
}

impl fmt::Display for TableProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooMany { count } => write!(
                f,
                "{count} entries, over the limit of {MAX_TABLE_ENTRIES} (one CUDA graph each)"
            ),
            Self::Invalid { index, bucket, why } => {
                write!(f, "entry {index}, {}: {why}", Entry(*bucket))
            }
            Self::NotAligned {
                index,
                bucket,
                tensor_parallel: tp,
            } => write!(
                f,
                "entry {index}, {}: {} tokens is not a multiple of tensor_parallel = {tp}",
                Entry(*bucket),
                bucket.tokens
            ),
            Self::Duplicate {
                index,
                first,
                bucket,
            } => write!(
                f,
                "entry {index}, {}: repeats entry {first}",
                Entry(*bucket)
            ),
            Self::MissingFullDecode { want } => write!(
                f,
                "no entry covers a full decode step of max_requests = {} requests: add {} (tokens, prefill, decode)",
                want.decode,
                Entry(*want)
            ),
        }
    }
}

/// Why `b` is not a legal bucket under `rules` (docs/SEMANTICS.md §2, plus the buffer's token
/// capacity), or `None`.
pub fn invalid_reason(b: BatchDims, rules: &TableRules) -> Option<String> {
    // u128: every product below is exact for any u32 inputs.
    let (t, p, d) = (
        u128::from(b.tokens),
        u128::from(b.prefill),
        u128::from(b.decode),
    );
    let decode_tokens = d * rules.decode_tokens();
    let s1 = rules.decode_tokens();
    if t == 0 {
        Some("a bucket needs at least one token".to_owned())
    } else if t > u128::from(rules.max_tokens) {
        Some(format!(
            "{t} tokens exceeds max_tokens = {}",
            rules.max_tokens
        ))
    } else if p + d > u128::from(rules.max_requests) {
        Some(format!(
            "{p} prefill + {d} decode requests exceeds max_requests = {}",
            rules.max_requests
        ))
    } else if t < p + decode_tokens {
        Some(format!(
            "{t} tokens cannot hold {p} prefill requests and {d} decode requests of {s1} tokens each (at least {} needed)",
            p + decode_tokens
        ))
    } else if t > p * u128::from(rules.max_seq_len) + decode_tokens {
        Some(if p == 0 {
            format!(
                "a decode-only bucket holds exactly decode · (speculative_tokens + 1) = {decode_tokens} tokens, not {t}"
            )
        } else {
            format!(
                "{t} tokens is more than {p} prefill requests of at most max_seq_len = {} tokens and {d} decode requests can hold ({})",
                rules.max_seq_len,
                p * u128::from(rules.max_seq_len) + decode_tokens
            )
        })
    } else {
        None
    }
}

/// Checks a table as written and returns it as a bucket list, sorted ascending (the order
/// [`crate::buckets::match_bucket`] needs), or every problem found, in table order.
pub fn check_table(
    table: &[BatchDims],
    rules: &TableRules,
) -> Result<Vec<BatchDims>, Vec<TableProblem>> {
    if table.len() > MAX_TABLE_ENTRIES {
        return Err(vec![TableProblem::TooMany { count: table.len() }]);
    }
    let tp = rules.tensor_parallel.max(1);
    let mut problems = Vec::new();
    let mut seen: BTreeMap<BatchDims, usize> = BTreeMap::new();
    for (index, &bucket) in table.iter().enumerate() {
        if let Some(why) = invalid_reason(bucket, rules) {
            problems.push(TableProblem::Invalid { index, bucket, why });
        } else if !bucket.tokens.is_multiple_of(tp) {
            problems.push(TableProblem::NotAligned {
                index,
                bucket,
                tensor_parallel: tp,
            });
        }
        if let Some(&first) = seen.get(&bucket) {
            problems.push(TableProblem::Duplicate {
                index,
                first,
                bucket,
            });
        } else {
            seen.insert(bucket, index);
        }
    }
    let want = rules.full_decode();
    if !seen.contains_key(&want) {
        problems.push(TableProblem::MissingFullDecode { want });
    }
    if problems.is_empty() {
        // BTreeMap keys: ascending and distinct.
        Ok(seen.into_keys().collect())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buckets::match_bucket;

    fn b(t: u32, p: u32, d: u32) -> BatchDims {
        BatchDims::new(t, p, d)
    }

    /// R = 8, T = 64, S = 32, s = 0, tp = 1 (docs/SEMANTICS.md §3.2's worked layout).
    const RULES: TableRules = TableRules {
        max_requests: 8,
        max_tokens: 64,
        max_seq_len: 32,
        speculative_tokens: 0,
        tensor_parallel: 1,
    };

    #[test]
    fn a_legal_table_comes_back_sorted() {
        let t = [b(64, 4, 4), b(8, 0, 8), b(2, 0, 2), b(16, 1, 7)];
        assert_eq!(
            check_table(&t, &RULES).unwrap(),
            [b(2, 0, 2), b(8, 0, 8), b(16, 1, 7), b(64, 4, 4)]
        );
    }

    #[test]
    fn each_rule_names_the_entry() {
        let cases: [(BatchDims, &str); 6] = [
            (
                b(0, 0, 0),
                "entry 1, [0, 0, 0]: a bucket needs at least one token",
            ),
            (
                b(128, 4, 4),
                "entry 1, [128, 4, 4]: 128 tokens exceeds max_tokens = 64",
            ),
            (
                b(32, 4, 5),
                "entry 1, [32, 4, 5]: 4 prefill + 5 decode requests exceeds max_requests = 8",
            ),
            (
                b(6, 2, 6),
                "entry 1, [6, 2, 6]: 6 tokens cannot hold 2 prefill requests and 6 decode requests of 1 tokens each (at least 8 needed)",
            ),
            (
                b(64, 1, 7),
                "entry 1, [64, 1, 7]: 64 tokens is more than 1 prefill requests of at most max_seq_len = 32 tokens and 7 decode requests can hold (39)",
            ),
            (
                b(6, 0, 4),
                "entry 1, [6, 0, 4]: a decode-only bucket holds exactly decode · (speculative_tokens + 1) = 4 tokens, not 6",
            ),
        ];
        for (bad, want) in cases {
            let e = check_table(&[b(8, 0, 8), bad], &RULES).unwrap_err();
            assert_eq!(e.len(), 1, "{e:?}");
            assert_eq!(e[0].to_string(), want);
        }
    }

    #[test]
    fn duplicates_alignment_and_the_full_decode_step() {
        let e = check_table(&[b(8, 0, 8), b(4, 1, 3), b(4, 1, 3)], &RULES).unwrap_err();
        assert_eq!(
            e,
            [TableProblem::Duplicate {
                index: 2,
                first: 1,
                bucket: b(4, 1, 3)
            }]
        );
        assert_eq!(e[0].to_string(), "entry 2, [4, 1, 3]: repeats entry 1");
        let e = check_table(&[b(4, 0, 4)], &RULES).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "no entry covers a full decode step of max_requests = 8 requests: add [8, 0, 8] (tokens, prefill, decode)"
        );
        assert!(check_table(&[], &RULES).is_err());
        // Tensor parallelism: token counts must be multiples of tp; s = 1 doubles the
        // decode tokens.
        let tp2 = TableRules {
            tensor_parallel: 2,
            speculative_tokens: 1,
            max_tokens: 64,
            ..RULES
        };
        assert_eq!(tp2.full_decode(), b(16, 0, 8));
        let e = check_table(&[b(16, 0, 8), b(9, 1, 4)], &tp2).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "entry 1, [9, 1, 4]: 9 tokens is not a multiple of tensor_parallel = 2"
        );
        assert!(check_table(&[b(16, 0, 8), b(10, 2, 4), b(4, 0, 2)], &tp2).is_ok());
        // Every problem is reported, in table order.
        let e = check_table(&[b(0, 0, 0), b(9, 1, 4), b(0, 0, 0)], &tp2).unwrap_err();
        assert_eq!(e.len(), 5, "{e:?}");
    }

    #[test]
    fn a_table_is_matched_with_megatrons_rules() {
        let list = check_table(
            &[
                b(8, 0, 8),
                b(4, 0, 4),
                b(16, 2, 6),
                b(16, 4, 4),
                b(64, 3, 5),
            ],
            &RULES,
        )
        .unwrap();
        // Decode-only steps use decode-only buckets, the smallest that fits.
        assert_eq!(match_bucket(b(3, 0, 3), &list, true), Some(b(4, 0, 4)));
        assert_eq!(match_bucket(b(0, 0, 0), &list, true), Some(b(4, 0, 4)));
        // Strict (hybrid): every count must fit; (12, 3, 5) skips both 16-token buckets.
        assert_eq!(match_bucket(b(12, 3, 5), &list, true), Some(b(64, 3, 5)));
        // Non-strict: spare prefill slots host decodes.
        assert_eq!(match_bucket(b(12, 3, 5), &list, false), Some(b(16, 4, 4)));
        // Nothing covers 4 prefill requests with 5 decodes: eager.
        assert_eq!(match_bucket(b(12, 4, 4), &list, true), Some(b(16, 4, 4)));
        assert_eq!(match_bucket(b(12, 4, 5), &list, false), None);
    }

    #[test]
    fn extreme_numbers_do_not_overflow() {
        let m = u32::MAX;
        let rules = TableRules {
            max_requests: m,
            max_tokens: m,
            max_seq_len: m,
            speculative_tokens: m,
            tensor_parallel: 0,
        };
        assert_eq!(rules.full_decode(), b(m, 0, m));
        for x in [b(m, m, m), b(m, 0, m), b(1, m, 0), b(m, 1, 0)] {
            let _ = invalid_reason(x, &rules);
        }
        assert!(check_table(&[b(m, m, m), b(m, 0, m)], &rules).is_err());
    }

    #[test]
    fn the_limit_on_entries() {
        let many = vec![b(8, 0, 8); MAX_TABLE_ENTRIES + 1];
        let e = check_table(&many, &RULES).unwrap_err();
        assert_eq!(
            e,
            [TableProblem::TooMany {
                count: MAX_TABLE_ENTRIES + 1
            }]
        );
    }
}
