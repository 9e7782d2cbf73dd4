//! `attention-layout inspect`: what a layout works out to, in readable tables: the buffer
//! map (every field's type, capacity, offset and size), the CUDA-graph buckets with their
//! padded sizes, memory totals, and on request the generated Rust and CUDA C.

use std::fmt::Write as _;
use std::process::ExitCode;

use attention_layout_codegen::load::{self, Loaded, Source};
use attention_layout_codegen::{ALIASES, BatchDims, Field, Geometry, LiveDims, emit_cuda, memory};

/// A layout read for inspection.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// The name used in messages (`nemotron-h-8b (bundled)` or the path).
    pub label: String,
    /// The spec, its merged table and its geometry.
    pub loaded: Loaded,
}

impl Inspected {
    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.loaded.geometry
    }

    /// The type name the generated Rust uses: from the spec's name, else the file's stem.
    pub fn type_name(&self) -> String {
        let name = self.loaded.spec.name.clone().unwrap_or_else(|| {
            std::path::Path::new(&self.label)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        attention_layout_codegen::emit_rust::type_name_for(&name)
    }
}

/// Reads a layout: a bundled name or a TOML path. Errors name the file, line, column and
/// key.
pub fn read(name_or_path: &str) -> Result<Inspected, String> {
    let (text, label) = attention_layout::layouts::read(name_or_path)?;
    from_source(&text, &label)
}

/// Reads a layout from TOML text; `label` names it in messages.
pub fn from_source(text: &str, label: &str) -> Result<Inspected, String> {
    let loaded = load::load_file(Source { name: label, text }).map_err(|e| e.to_string())?;
    Ok(Inspected {
        label: label.to_owned(),
        loaded,
    })
}

/// The report: header, buffer map, buckets and memory.
pub fn report(layout: &Inspected) -> String {
    let mut out = String::new();
    header(&mut out, layout);
    buffer_map(&mut out, layout.geometry());
    buckets(&mut out, layout.geometry());
    memory_totals(&mut out, layout.geometry());
    out
}

/// The generated Rust for the layout, formatted with prettyplease.
pub fn rust_source(layout: &Inspected) -> Result<String, String> {
    let g = layout.geometry();
    attention_layout_codegen::emit_rust::layout_source(
        &layout.type_name(),
        g,
        &layout.loaded.spec_toml(),
    )
    .map_err(|e| format!("generated Rust does not parse: {e}"))
}

/// The generated CUDA C of the layout's fill kernels.
pub fn cuda_source(layout: &Inspected) -> String {
    emit_cuda::cuda_source(layout.geometry())
}

/// The whole `inspect` command: prints the report, then the Rust and CUDA C if asked.
/// Exit 0, 2 for a layout that cannot be read, 1 when the output cannot be produced or
/// written, [`crate::console::CLOSED_PIPE_STATUS`] when the reader closed the pipe.
pub fn main(name_or_path: &str, rust: bool, cuda: bool) -> ExitCode {
    use std::io::Write as _;

    let layout = match read(name_or_path) {
        Ok(l) => l,
        Err(e) => {
            crate::console::error(e);
            return ExitCode::from(2);
        }
    };
    let mut text = report(&layout);
    if rust {
        match rust_source(&layout) {
            Ok(src) => {
                let _ = write!(
                    text,
                    "\n// ---- generated Rust ({}) ----\n\n{src}",
                    layout.type_name()
                );
            }
            Err(e) => {
                crate::console::error(e);
                return ExitCode::FAILURE;
            }
        }
    }
    if cuda {
        let _ = write!(
            text,
            "\n// ---- generated CUDA C ----\n\n{}",
            cuda_source(&layout)
        );
    }
    match crate::console::stdout().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::console::error(format!("cannot write the output: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn header(out: &mut String, layout: &Inspected) {
    let g = layout.geometry();
    let s = &g.spec;
    let _ = writeln!(
        out,
        "layout {}: {} model, {}",
        layout.label,
        s.model.as_str(),
        g.facts.headline()
    );
    if let Some(src) = &s.source {
        let _ = writeln!(out, "source: {src}");
    }
    let _ = write!(
        out,
        "derived: block-table width {} blocks per request (nkv), KV pool {} blocks (dummy block {})",
        g.facts.block_table_width, g.facts.kv_pool_blocks, g.facts.dummy_block
    );
    if g.has_mamba() {
        let _ = write!(
            out,
            ", Mamba chunk size {} (cs), convolution width {} (d_conv), at most {} Mamba chunks per step (Cmax), at most {} intermediate states per step (Kmax)",
            g.facts.chunk_size, g.facts.conv_width, g.facts.max_chunks, g.facts.max_intermediate
        );
    }
    let _ = writeln!(out);
}

fn buffer_map(out: &mut String, g: &Geometry) {
    let _ = writeln!(
        out,
        "\nbuffer map (docs/SEMANTICS.md §9): {} fields, {} bytes ({} in Megatron's fields, {} appended)",
        g.fields.len(),
        g.facts.total_bytes,
        g.facts.megatron_bytes,
        g.facts.total_bytes - g.facts.megatron_bytes
    );
    let _ = writeln!(
        out,
        "  {:>2}  {:<40} {:<4} {:>9} {:>10} {:>10} {:>10}",
        "#", "field", "type", "elements", "offset", "bytes", "end"
    );
    let mut end = 0;
    for (i, f) in g.fields.iter().enumerate() {
        if f.offset > end {
            let _ = writeln!(
                out,
                "  {:>2}  {:<40} {:<4} {:>9} {:>10} {:>10} {:>10}",
                "",
                "(alignment pad)",
                "",
                "",
                end,
                f.offset - end,
                f.offset
            );
        }
        let _ = writeln!(
            out,
            "  {:>2}  {:<40} {:<4} {:>9} {:>10} {:>10} {:>10}",
            i,
            f.field.name(),
            f.dtype.rust(),
            f.elems,
            f.offset,
            f.bytes(),
            f.end()
        );
        end = f.end();
    }
    let formats = &g.spec.formats;
    if !formats.is_empty() {
        let names: Vec<&str> = formats.iter().map(|f| f.as_str()).collect();
        let _ = writeln!(
            out,
            "kernel formats: {} (their fields are listed above); the names they give Megatron's own fields, which they read as is:",
            names.join(", ")
        );
        for (format, name, field) in ALIASES {
            if formats.contains(format) && g.field(*field).is_some() {
                let _ = writeln!(
                    out,
                    "  {:<10} {:<20} = {}",
                    format.as_str(),
                    name,
                    field.name()
                );
            }
        }
    }
    let guard = g.field(Field::MhaBlockTable).map_or(0, |b| {
        b.elems - g.facts.max_requests * g.facts.block_table_width
    });
    let _ = writeln!(
        out,
        "the block table ends with a {guard}-entry guard of dummy-block ids ({} bytes) after its {} rows",
        guard * 4,
        g.facts.max_requests
    );
}

/// Bytes the kernels read at a padded shape: token-indexed fields at `t`, request-indexed
/// ones at `p + d` (`+ 1` for cumulative ones), block-table rows, and the Mamba fields
/// present at that shape (chunk and intermediate fields, whose lengths depend on the
/// data, at capacity).
pub fn live_bytes(g: &Geometry, b: BatchDims) -> usize {
    live_bytes_by_field(g, b).iter().map(|(_, n)| n).sum()
}

/// [`live_bytes`] field by field, in buffer order (the layout's fields only).
pub fn live_bytes_by_field(g: &Geometry, b: BatchDims) -> Vec<(Field, usize)> {
    let f = &g.facts;
    let at = LiveDims {
        tokens: b.tokens as usize,
        decode: b.decode as usize,
        prefill: b.prefill as usize,
        chunks: f.max_chunks,
        intermediate: f.max_intermediate,
        // Every row's whole block-table row, the most a step at this shape can have.
        pages: b.requests() as usize * f.block_table_width,
    };
    g.fields
        .iter()
        .map(|l| (l.field, l.field.live_elems(&at, f) * l.dtype.size()))
        .collect()
}

fn buckets(out: &mut String, g: &Geometry) {
    let s = &g.spec;
    let count = match s.graphs.count {
        attention_layout_codegen::spec::GraphCount::Auto => "auto".to_owned(),
        attention_layout_codegen::spec::GraphCount::Off => "off".to_owned(),
        attention_layout_codegen::spec::GraphCount::Count(n) => n.to_string(),
    };
    let decode = g.buckets.iter().filter(|b| b.prefill == 0).count();
    let prefill = g
        .buckets
        .iter()
        .filter(|b| b.decode == 0 && b.prefill > 0)
        .count();
    let policy = if s.graphs.buckets.is_some() {
        "explicit table (graphs.buckets)".to_owned()
    } else {
        format!(
            "graphs {}, {} ladder, token budget {}, mixed prefill {}",
            count,
            match s.graphs.distribution {
                attention_layout_codegen::Distribution::Exponential => "exponential",
                attention_layout_codegen::Distribution::Linear => "linear",
            },
            s.graph_token_budget(),
            s.graphs.mixed_prefill,
        )
    };
    let _ = writeln!(
        out,
        "\nCUDA-graph buckets: {} ({} decode-only, {} mixed, {} prefill-only); {policy}{}",
        g.buckets.len(),
        decode,
        g.buckets.len() - decode - prefill,
        prefill,
        if s.model.strict_matching() {
            ", strict matching"
        } else {
            ""
        }
    );
    if g.buckets.is_empty() {
        let _ = writeln!(
            out,
            "  (none: every step runs eagerly, padded per docs/SEMANTICS.md §3.4)"
        );
        return;
    }
    let _ = writeln!(
        out,
        "  {:>4} {:>7} {:>7} {:>7} {:>8} {:>14} {:>11}",
        "#", "tokens", "prefill", "decode", "requests", "block rows", "live bytes"
    );
    for (i, b) in g.buckets.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:>4} {:>7} {:>7} {:>7} {:>8} {:>14} {:>11}",
            i,
            b.tokens,
            b.prefill,
            b.decode,
            b.requests(),
            format!("{} × {}", b.requests() as usize, g.facts.block_table_width),
            live_bytes(g, *b)
        );
    }
}

const GIB: f64 = (1u64 << 30) as f64;

fn memory_totals(out: &mut String, g: &Geometry) {
    let _ = writeln!(out, "\nmemory (per tensor-parallel rank):");
    let _ = writeln!(
        out,
        "  metadata buffer  {:>14} bytes (one host-to-device copy per step at most)",
        g.facts.total_bytes
    );
    let Some(m) = &g.spec.memory else {
        let _ = writeln!(
            out,
            "  KV pool          {:>14} blocks (no [memory] section: sized R × nkv + 1 or as given)",
            g.facts.kv_pool_blocks
        );
        return;
    };
    match memory::plan(&g.spec, m) {
        Ok(p) => {
            let kv_bytes = p.kv_bytes_per_block * g.facts.kv_pool_blocks as u64;
            if m.attention_layers == 0 {
                let _ = writeln!(
                    out,
                    "  KV cache         {:>14} bytes (no attention layers: the KV fields only place tokens; pool {} blocks)",
                    0, g.facts.kv_pool_blocks
                );
            } else {
                let _ = writeln!(
                    out,
                    "  KV cache         {:>14} bytes per block ({} attention layers × {} KV heads × {} head dim × 2 (K, V) × {} tokens × {} B); {} blocks = {:.2} GiB ({} tokens)",
                    p.kv_bytes_per_block,
                    m.attention_layers,
                    m.kv_heads,
                    m.head_dim,
                    g.facts.block_size,
                    m.dtype_bytes,
                    g.facts.kv_pool_blocks,
                    kv_bytes as f64 / GIB,
                    (g.facts.kv_pool_blocks.saturating_sub(1)) * g.facts.block_size
                );
            }
            if g.has_mamba() {
                let _ = writeln!(
                    out,
                    "  Mamba states     {:>14} bytes per slot ({} layers); {} slots = {:.2} GiB",
                    p.mamba_bytes_per_slot,
                    m.mamba_layers,
                    p.mamba_slots,
                    p.mamba_bytes as f64 / GIB
                );
            }
            let _ = writeln!(
                out,
                "  budget           {:>14} bytes ({} GiB); used {:.2} GiB",
                p.budget_bytes,
                m.budget_gib,
                (kv_bytes + p.mamba_bytes) as f64 / GIB
            );
        }
        Err(e) => {
            let _ = writeln!(out, "  memory plan: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_table_is_listed_as_one() {
        let l = read("nemotron-h-8b-tuned").unwrap();
        let r = report(&l);
        assert!(
            r.contains(&format!(
                "CUDA-graph buckets: {} ",
                l.geometry().buckets.len()
            )),
            "{r}"
        );
        assert!(
            r.contains("explicit table (graphs.buckets), strict matching"),
            "{r}"
        );
        assert!(!r.contains("ladder"), "{r}");
        let ladder = report(&read("nemotron-h-8b").unwrap());
        assert!(
            ladder.contains("graphs auto, exponential ladder"),
            "{ladder}"
        );
    }

    #[test]
    fn live_bytes_of_the_largest_bucket_fit_the_buffer() {
        for (name, _) in attention_layout::layouts::BUNDLED {
            let l = read(name).unwrap();
            let g = l.geometry();
            for b in &g.buckets {
                assert!(live_bytes(g, *b) <= g.facts.total_bytes, "{name} {b:?}");
            }
        }
    }
}
