use attention_layout_macros::attention_layout;

#[attention_layout(
    config = "tests/ui/layouts/broken.toml",
)]
pub struct Layout;

fn main() {}
