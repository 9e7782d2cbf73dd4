use attention_layout_macros::attention_layout;

#[attention_layout(
    model = "hybrid",
    max_requests = 8,
    max_tokens = 64,
    max_seq_len = 32,
    block_size = 4,
    mamba(chunk_size = 4, conv_width = 4),
    graphs(buckets = [[8, 0, 8], [16, 2, 6], [63, 1, 7]]),
)]
pub struct Layout;

fn main() {}
