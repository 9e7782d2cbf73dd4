use attention_layout_macros::attention_layout;

#[attention_layout(
    model = "mha",
    max_requests = 8,
    max_tokens = 64,
    max_seq_len = 32,
    block_size = 4,
    speculative_tokens = 1,
    graphs(token_budget = 8),
)]
pub struct Layout;

fn main() {}
