//! Layout specs the unit tests share, each written once (tests edit the text, e.g.
//! `HYBRID.replace("max_tokens = 64", …)`, so its lines are part of the contract).

/// A small hybrid layout: `R = 8`, `T = 64`, `S = 32`, `B = 4`, Mamba chunk size 4 and
/// convolution width 4, default graphs. The golden data's most common hybrid shape.
pub const HYBRID: &str = r#"
model = "hybrid"
max_requests = 8
max_tokens = 64
max_seq_len = 32
block_size = 4

[mamba]
chunk_size = 4
conv_width = 4
"#;
