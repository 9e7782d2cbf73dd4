//! `attention-layout layouts`: the bundled layouts, one a line, with the numbers that tell
//! them apart (model kind, request rows, tokens per step, sequence length, KV block size,
//! draft tokens, CUDA graphs). `inspect NAME` shows one in full.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use attention_layout::layouts::{BUNDLED, DEFAULT};

use crate::inspect;

/// One bundled layout's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name `inspect`, `simulate` and `config = "..."` take.
    pub name: &'static str,
    /// `hybrid`, `mha` or `mamba`.
    pub model: &'static str,
    /// Request rows per step (R).
    pub max_requests: usize,
    /// Tokens per step (T).
    pub max_tokens: usize,
    /// Longest sequence, prompt and output (S).
    pub max_seq_len: usize,
    /// KV block size, tokens.
    pub block_size: usize,
    /// Draft tokens per decode request (s).
    pub speculative_tokens: usize,
    /// CUDA graphs (buckets) the layout captures.
    pub graphs: usize,
}

/// Every bundled layout, in [`BUNDLED`]'s order. A bundled layout that does not load is
/// an error naming it (the tests load them all).
pub fn entries() -> Result<Vec<Entry>, String> {
    BUNDLED
        .iter()
        .map(|&(name, text)| {
            let l = inspect::from_source(text, &format!("{name} (bundled)"))?;
            let g = l.geometry();
            Ok(Entry {
                name,
                model: g.spec.model.as_str(),
                max_requests: g.facts.max_requests,
                max_tokens: g.facts.max_tokens,
                max_seq_len: g.facts.max_seq_len,
                block_size: g.facts.block_size,
                speculative_tokens: g.facts.speculative_tokens,
                graphs: g.buckets.len(),
            })
        })
        .collect()
}

/// What the columns mean, printed under the table.
pub const LEGEND: &[&str] = &[
    "requests: request rows per step (R); tokens: tokens per step (T);",
    "seq len: longest sequence, prompt and output (S); KV block: tokens per KV-cache block;",
    "draft: speculative (draft) tokens per decode request (s); graphs: CUDA graphs captured;",
    "* the default layout. `attention-layout inspect NAME` shows one in full.",
];

/// The table `attention-layout layouts` prints.
pub fn table(entries: &[Entry]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:<6} {:>8} {:>8} {:>9} {:>8} {:>7} {:>7}",
        "name", "model", "requests", "tokens", "seq len", "KV block", "draft", "graphs"
    );
    for e in entries {
        let name = if e.name == DEFAULT {
            format!("{} *", e.name)
        } else {
            e.name.to_owned()
        };
        let _ = writeln!(
            out,
            "{:<22} {:<6} {:>8} {:>8} {:>9} {:>8} {:>7} {:>7}",
            name,
            e.model,
            e.max_requests,
            e.max_tokens,
            e.max_seq_len,
            e.block_size,
            e.speculative_tokens,
            e.graphs
        );
    }
    for line in LEGEND {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The whole `layouts` command. Exit 0; 1 when a bundled layout does not load or the
/// output cannot be written.
pub fn main() -> ExitCode {
    let text = match entries() {
        Ok(e) => table(&e),
        Err(e) => {
            crate::console::error(e);
            return ExitCode::FAILURE;
        }
    };
    match crate::console::stdout().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::console::error(format!("cannot write the output: {e}"));
            ExitCode::FAILURE
        }
    }
}
