use attention_layout_macros::attention_layout;

// A name (no `/`, no `.toml`) must be one of the bundled layouts.
#[attention_layout(config = "nemotron-h8b", max_requests = 128)]
pub struct Layout;

fn main() {}
