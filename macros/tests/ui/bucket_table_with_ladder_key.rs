use attention_layout_macros::attention_layout;

#[attention_layout(
    model = "mha",
    max_requests = 8,
    max_tokens = 64,
    max_seq_len = 32,
    block_size = 4,
    graphs(count = 4, buckets = [[8, 0, 8], [64, 2, 6]]),
)]
pub struct Layout;

fn main() {}
