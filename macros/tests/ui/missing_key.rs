use attention_layout_macros::attention_layout;

#[attention_layout(
    model = "mha",
    max_requests = 8,
    max_tokens = 64,
    block_size = 4,
)]
pub struct Layout;

fn main() {}
