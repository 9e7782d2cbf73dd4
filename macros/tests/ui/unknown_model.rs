use attention_layout_macros::attention_layout;

#[attention_layout(
    model = "ssm",
    max_requests = 8,
    max_tokens = 64,
    max_seq_len = 32,
    block_size = 4,
)]
pub struct Layout;

fn main() {}
