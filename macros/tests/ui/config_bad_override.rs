use attention_layout_macros::attention_layout;

#[attention_layout(
    config = "tests/ui/layouts/small.toml",
    block_size = 12,
)]
pub struct Layout;

fn main() {}
