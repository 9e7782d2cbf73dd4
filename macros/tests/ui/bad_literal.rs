use attention_layout_macros::attention_layout;

#[attention_layout(
    model = "mha",
    max_requests = 8,
    max_tokens = 64,
    max_seq_len = 32,
    block_size = 'b',
)]
pub struct Layout;

fn main() {}
