//! Per-model build configs: the same items `#[attention_layout(config = ...)]` generates,
//! written into `OUT_DIR` and included by `src/lib.rs`; a layout file or a bundled layout's
//! name.

use attention_layout_codegen::build::write_layout;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    write_layout("MhaGraphs4", "layouts/mha-graphs4.toml", "mha_graphs4.rs")?;
    write_layout(
        "HybridLinearTp2",
        "layouts/hybrid-linear-tp2.toml",
        "hybrid_linear_tp2.rs",
    )?;
    // A bundled layout, by name.
    write_layout("Mamba2ByName", "mamba2-2.7b", "mamba2_by_name.rs")?;
    Ok(())
}
