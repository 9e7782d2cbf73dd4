//! The layout spec: what an engine author writes, in TOML or in the attribute.
//!
//! A spec is read with serde (unknown keys and wrong types are rejected by the
//! deserializer) and then checked by [`LayoutSpec::validate`], which names the key and the
//! rule it breaks. Every key, its type and its default are listed in [`KEYS`], which the
//! proc-macro also uses to check attribute arguments at their own spans.

use std::fmt;

use serde::Deserialize;

use crate::bucket_table::TableRules;
use crate::buckets::{BatchDims, Distribution};
pub use crate::model::Format;

/// Which kernels read the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Attention only (FlashAttention varlen with a paged KV cache).
    Mha,
    /// Mamba2 only. Megatron runs such models through the hybrid path, so the metadata is
    /// the hybrid one (strict bucket matching, Mamba fields present).
    Mamba,
    /// Attention and Mamba2 layers.
    Hybrid,
}

impl ModelKind {
    /// Whether the Mamba fields of the buffer exist.
    pub const fn has_mamba(self) -> bool {
        matches!(self, Self::Mamba | Self::Hybrid)
    }

    /// Megatron matches hybrid (Mamba) models strictly (docs/SEMANTICS.md §3.3).
    pub const fn strict_matching(self) -> bool {
        self.has_mamba()
    }

    /// The spelling used in specs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Mha => "mha",
            Self::Mamba => "mamba",
            Self::Hybrid => "hybrid",
        }
    }
}

/// Integer type of `mamba_batch_indices_decode` (Megatron HEAD: i64; batch-invariant
/// mode: i32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexDtype {
    /// 32-bit.
    I32,
    /// 64-bit (the default, as in Megatron HEAD).
    #[default]
    I64,
}

/// How many CUDA graphs to capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GraphCount {
    /// Megatron's automatic count (`num_cuda_graphs = -1`).
    #[default]
    Auto,
    /// No graphs: every step runs eagerly (`num_cuda_graphs = None`).
    Off,
    /// A requested count (`num_cuda_graphs = n`, n >= 1).
    Count(u32),
}

impl GraphCount {
    /// Megatron's encoding: `None` off, `-1` auto, `n`.
    pub const fn as_megatron(self) -> Option<i64> {
        match self {
            Self::Auto => Some(-1),
            Self::Off => None,
            Self::Count(n) => Some(n as i64),
        }
    }
}

impl<'de> Deserialize<'de> for GraphCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a positive integer, \"auto\" or \"off\"")
        })? {
            Raw::N(n) if n >= 1 && n <= i64::from(u32::MAX) => Ok(Self::Count(n as u32)),
            Raw::N(n) => Err(serde::de::Error::custom(format!(
                "graph count {n} must be at least 1 (use \"off\" for no graphs)"
            ))),
            Raw::S(s) if s == "auto" => Ok(Self::Auto),
            Raw::S(s) if s == "off" => Ok(Self::Off),
            Raw::S(s) => Err(serde::de::Error::custom(format!(
                "unknown graph count \"{s}\": expected a positive integer, \"auto\" or \"off\""
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Distribution {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "exponential" => Ok(Self::Exponential),
            "linear" => Ok(Self::Linear),
            other => Err(serde::de::Error::custom(format!(
                "unknown distribution \"{other}\": expected \"exponential\" or \"linear\""
            ))),
        }
    }
}

/// The CUDA-graph policy (docs/SEMANTICS.md §3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphSpec {
    /// Graph count: `"auto"` (default), `"off"` or a number.
    pub count: GraphCount,
    /// Ladder spacing: `"exponential"` (default) or `"linear"`.
    pub distribution: Distribution,
    /// Largest token count a graph covers; default `max_tokens`. Must lie in
    /// `[max_requests * (speculative_tokens + 1), max_tokens]`.
    pub token_budget: Option<u32>,
    /// Mixed prefill count (Megatron `cuda_graph_mixed_prefill_count`); 0 disables mixed
    /// and prefill graphs. Default 4.
    pub mixed_prefill: u32,
    /// Whether mixed and prefill steps get graphs (default true).
    pub non_decode: bool,
    /// An explicit bucket table, `[tokens, prefill, decode]` per CUDA graph, in place of
    /// the generated ladder (then `count`, `distribution`, `token_budget`, `mixed_prefill`
    /// and `non_decode` must not be given). Checked by [`crate::bucket_table::check_table`].
    pub buckets: Option<Vec<[u32; 3]>>,
    /// Device memory one captured graph of the model takes, MiB: what
    /// `attention-layout tune --graph-memory` divides its budget by. Optional.
    pub graph_memory_mib: Option<u32>,
}

impl Default for GraphSpec {
    fn default() -> Self {
        Self {
            count: GraphCount::Auto,
            distribution: Distribution::Exponential,
            token_budget: None,
            mixed_prefill: 4,
            non_decode: true,
            buckets: None,
            graph_memory_mib: None,
        }
    }
}

/// Mamba2 parameters (required for `mamba` and `hybrid`, rejected for `mha`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MambaSpec {
    /// SSM chunk size `cs` (tokens per chunk of the chunked scan).
    pub chunk_size: u32,
    /// Causal-conv1d width `d_conv`.
    pub conv_width: u32,
}

/// What sizes memory: lets the KV pool and Mamba state pool be derived from a budget
/// rather than guessed. Every size is per tensor-parallel rank.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySpec {
    /// Attention layers (each holds K and V for every block).
    pub attention_layers: u32,
    /// Mamba layers (each holds one conv and one SSM state per slot).
    #[serde(default)]
    pub mamba_layers: u32,
    /// KV heads per rank.
    #[serde(default)]
    pub kv_heads: u32,
    /// Head dimension.
    #[serde(default)]
    pub head_dim: u32,
    /// Bytes per KV element (2 for bf16 / fp16, 1 for fp8).
    #[serde(default = "default_dtype_bytes")]
    pub dtype_bytes: u32,
    /// Mamba SSM heads per rank.
    #[serde(default)]
    pub mamba_heads: u32,
    /// Mamba head dimension.
    #[serde(default)]
    pub mamba_head_dim: u32,
    /// Mamba state size (`d_state`).
    #[serde(default)]
    pub mamba_state_dim: u32,
    /// Mamba groups (`n_groups`), for the conv state's B and C channels.
    #[serde(default)]
    pub mamba_groups: u32,
    /// Bytes per Mamba state element (4 for fp32 SSM state).
    #[serde(default = "default_state_bytes")]
    pub state_dtype_bytes: u32,
    /// GPU memory given to the KV cache and Mamba states, GiB.
    pub budget_gib: f64,
    /// GiB for the durable Mamba state cache of prefix caching (Megatron's
    /// `prefix_caching_mamba_gb`), on top of `budget_gib`; Mamba models only. Sizes the
    /// cache's slots ([`crate::memory::prefix_mamba_cache_slots`]).
    #[serde(default)]
    pub prefix_caching_mamba_gb: Option<f64>,
}

fn default_dtype_bytes() -> u32 {
    2
}
fn default_state_bytes() -> u32 {
    4
}

/// A layout spec as written (TOML file or attribute arguments).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutSpec {
    /// A short name (used in generated docs and the CLI).
    #[serde(default)]
    pub name: Option<String>,
    /// Where the numbers come from (model card, config).
    #[serde(default)]
    pub source: Option<String>,
    /// `mha`, `mamba` or `hybrid`.
    pub model: ModelKind,
    /// `R`: request rows (active and paused).
    pub max_requests: u32,
    /// `T`: tokens per step.
    pub max_tokens: u32,
    /// `S`: longest sequence (prompt plus output).
    pub max_seq_len: u32,
    /// `B`: tokens per KV block.
    pub block_size: u32,
    /// `s`: draft tokens per decode request (0 without speculative decoding).
    #[serde(default)]
    pub speculative_tokens: u32,
    /// Tensor-parallel size (bucket token counts are multiples of it).
    #[serde(default = "one")]
    pub tensor_parallel: u32,
    /// Integer type of `mamba_batch_indices_decode`.
    #[serde(default)]
    pub decode_index_dtype: IndexDtype,
    /// KV pool size in blocks including the dummy block; default derived from `[memory]`
    /// when given, else `max_requests * block_table_width + 1`.
    #[serde(default)]
    pub kv_pool_blocks: Option<u32>,
    /// Mamba2 parameters.
    #[serde(default)]
    pub mamba: Option<MambaSpec>,
    /// CUDA-graph policy.
    #[serde(default)]
    pub graphs: GraphSpec,
    /// Memory sizing (optional).
    #[serde(default)]
    pub memory: Option<MemorySpec>,
    /// Kernel formats whose arrays the buffer also holds (default none: Megatron's
    /// arrays alone).
    #[serde(default)]
    pub formats: Vec<Format>,
}

fn one() -> u32 {
    1
}

/// The type of a spec key's value, for checking attribute arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// A non-negative integer.
    Int,
    /// A number (integer or float).
    Number,
    /// A string.
    Str,
    /// A boolean.
    Bool,
    /// An integer or a string (`graphs.count`).
    IntOrStr,
    /// A table of further keys.
    Table,
    /// A list of `[tokens, prefill, decode]` entries (`graphs.buckets`).
    Buckets,
    /// A list of distinct names (`formats`).
    Names,
}

/// Every key a spec may hold: dotted path and value type. Keys not listed are unknown.
pub const KEYS: &[(&str, KeyType)] = &[
    ("name", KeyType::Str),
    ("source", KeyType::Str),
    ("model", KeyType::Str),
    ("max_requests", KeyType::Int),
    ("max_tokens", KeyType::Int),
    ("max_seq_len", KeyType::Int),
    ("block_size", KeyType::Int),
    ("speculative_tokens", KeyType::Int),
    ("tensor_parallel", KeyType::Int),
    ("decode_index_dtype", KeyType::Str),
    ("kv_pool_blocks", KeyType::Int),
    ("formats", KeyType::Names),
    ("mamba", KeyType::Table),
    ("mamba.chunk_size", KeyType::Int),
    ("mamba.conv_width", KeyType::Int),
    ("graphs", KeyType::Table),
    ("graphs.count", KeyType::IntOrStr),
    ("graphs.distribution", KeyType::Str),
    ("graphs.token_budget", KeyType::Int),
    ("graphs.mixed_prefill", KeyType::Int),
    ("graphs.non_decode", KeyType::Bool),
    ("graphs.buckets", KeyType::Buckets),
    ("graphs.graph_memory_mib", KeyType::Int),
    ("memory", KeyType::Table),
    ("memory.attention_layers", KeyType::Int),
    ("memory.mamba_layers", KeyType::Int),
    ("memory.kv_heads", KeyType::Int),
    ("memory.head_dim", KeyType::Int),
    ("memory.dtype_bytes", KeyType::Int),
    ("memory.mamba_heads", KeyType::Int),
    ("memory.mamba_head_dim", KeyType::Int),
    ("memory.mamba_state_dim", KeyType::Int),
    ("memory.mamba_groups", KeyType::Int),
    ("memory.state_dtype_bytes", KeyType::Int),
    ("memory.budget_gib", KeyType::Number),
    ("memory.prefix_caching_mamba_gb", KeyType::Number),
];

/// Keys every spec must have.
pub const REQUIRED_KEYS: &[&str] = &[
    "model",
    "max_requests",
    "max_tokens",
    "max_seq_len",
    "block_size",
];

/// Keys a section must have when it is present (dotted: `section.key`).
pub const REQUIRED_SECTION_KEYS: &[&str] = &[
    "mamba.chunk_size",
    "mamba.conv_width",
    "memory.attention_layers",
    "memory.budget_gib",
];

/// Tokens the eager path rounds a step up to (Megatron's token rounder, before `tp`).
pub const EAGER_TOKEN_ROUNDER: u32 = 64;

/// A position in a TOML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// One problem with a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The dotted key it concerns (`graphs.token_budget`), when there is one.
    pub key: Option<String>,
    /// What is wrong, and the rule broken.
    pub message: String,
    /// Where in a TOML file, when the spec came from one.
    pub location: Option<Location>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{}:{}:{}: ", loc.file, loc.line, loc.column)?;
        }
        match &self.key {
            Some(k) => write!(f, "`{k}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A spec that could not be read or breaks a rule. Holds one diagnostic per independent
/// mistake (a mistake never produces follow-on diagnostics).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// The problems, in key order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl SpecError {
    /// An error about one key.
    pub fn key(key: &str, message: impl Into<String>) -> Self {
        Self {
            diagnostics: vec![Diagnostic {
                key: Some(key.to_owned()),
                message: message.into(),
                location: None,
            }],
        }
    }

    /// An error about the spec as a whole.
    pub fn general(message: impl Into<String>) -> Self {
        Self {
            diagnostics: vec![Diagnostic {
                key: None,
                message: message.into(),
                location: None,
            }],
        }
    }

    /// Fills in file positions for every diagnostic that names a key found in `src`.
    pub fn locate(mut self, file: &str, src: &str) -> Self {
        for d in &mut self.diagnostics {
            if d.location.is_none() {
                let offset = d
                    .key
                    .as_deref()
                    .and_then(|k| key_offset(src, k))
                    .unwrap_or(0);
                d.location = Some(location_of(file, src, offset));
            }
        }
        self
    }
}

/// 1-based line and column of a byte offset.
fn location_of(file: &str, src: &str, offset: usize) -> Location {
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Location {
        file: file.to_owned(),
        line,
        column,
    }
}

/// Byte offset of a dotted key's name in TOML source, from the parser's spans; when the key
/// itself is absent, the offset of the nearest enclosing key that is there.
fn key_offset(src: &str, dotted: &str) -> Option<usize> {
    let root = toml::de::DeTable::parse(src).ok()?;
    let mut table = root.get_ref();
    let mut found = None;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        let Some((k, v)) = table.get_key_value(part) else {
            return found;
        };
        found = Some(k.span().start);
        if parts.peek().is_none() {
            return found;
        }
        match v.get_ref() {
            toml::de::DeValue::Table(t) => table = t,
            _ => return found,
        }
    }
    found
}

impl LayoutSpec {
    /// Reads and validates a spec from TOML source; `file` names it in messages. Every
    /// key is checked first ([`crate::load::check_table`]), so a diagnostic names its key
    /// as well as the file, line and column.
    pub fn from_toml_str(src: &str, file: &str) -> Result<Self, SpecError> {
        let table = crate::load::parse_toml(crate::load::Source {
            name: file,
            text: src,
        })?;
        crate::load::spec_from_table(&table).map_err(|e| e.locate(file, src))
    }

    /// Reads and validates a spec from an already parsed table (attribute arguments, or a
    /// file merged with inline overrides).
    pub fn from_table(table: toml::Table) -> Result<Self, SpecError> {
        let spec: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| SpecError::general(e.message().to_owned()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// `s + 1`: tokens a decode request contributes per step.
    pub const fn decode_tokens(&self) -> u32 {
        // Saturating: callable on a spec that has not been validated (which caps s at 64).
        self.speculative_tokens.saturating_add(1)
    }

    /// Eager token rounder `ceil(64 / tp) * tp` (docs/SEMANTICS.md §3.4).
    pub fn token_rounder(&self) -> u32 {
        let tp = self.tensor_parallel.max(1);
        EAGER_TOKEN_ROUNDER.div_ceil(tp) * tp
    }

    /// The bucket-generation parameters of this spec (docs/SEMANTICS.md §3.2 inputs).
    pub fn bucket_params(&self) -> crate::buckets::BucketParams {
        crate::buckets::BucketParams {
            tensor_parallel: self.tensor_parallel,
            num_cuda_graphs: self.graphs.count.as_megatron(),
            cg_max: self.graph_token_budget(),
            mixed_prefill_count: self.graphs.mixed_prefill,
            max_requests: self.max_requests,
            max_tokens: self.max_tokens,
            max_seq_len: self.max_seq_len,
            non_decode_graphs: self.graphs.non_decode,
            speculative_tokens: self.speculative_tokens,
            distribution: self.graphs.distribution,
        }
    }

    /// Whether the spec names `format` in `formats`.
    pub fn has_format(&self, format: Format) -> bool {
        self.formats.contains(&format)
    }

    /// The graph token budget in effect (`max_tokens` when not set).
    pub fn graph_token_budget(&self) -> u32 {
        self.graphs.token_budget.unwrap_or(self.max_tokens)
    }

    /// Checks every rule; one diagnostic per broken rule, none that follow from another.
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut out = Vec::new();
        let mut err = |key: &str, message: String| {
            out.push(Diagnostic {
                key: Some(key.to_owned()),
                message,
                location: None,
            })
        };
        // Limits keep every derived size and offset well inside i32 (device kernels index
        // with 32-bit integers) and every product inside u64.
        const MAX_DIM: u32 = 1 << 24;
        let dims = [
            ("max_requests", self.max_requests),
            ("max_tokens", self.max_tokens),
            ("max_seq_len", self.max_seq_len),
            ("block_size", self.block_size),
            ("tensor_parallel", self.tensor_parallel),
        ];
        let mut dims_ok = true;
        for (key, v) in dims {
            if v == 0 {
                err(key, format!("must be at least 1, got {v}"));
                dims_ok = false;
            } else if v > MAX_DIM {
                err(key, format!("must be at most {MAX_DIM}, got {v}"));
                dims_ok = false;
            }
        }
        if self.block_size != 0 && !self.block_size.is_power_of_two() {
            err(
                "block_size",
                format!(
                    "must be a power of two (the fill kernels split positions with shifts), got {}",
                    self.block_size
                ),
            );
            dims_ok = false;
        }
        if self.speculative_tokens > 64 {
            err(
                "speculative_tokens",
                format!("must be at most 64, got {}", self.speculative_tokens),
            );
            dims_ok = false;
        }
        if dims_ok && !self.max_requests.is_multiple_of(self.tensor_parallel) {
            // Megatron asserts this when it builds the context: eager decode steps pad the
            // request count, and with it the token count, to a multiple of tp.
            err(
                "max_requests",
                format!(
                    "must be a multiple of tensor_parallel = {}, got max_requests = {} (Megatron refuses such a context: padded decode steps would have token counts that are not multiples of tensor_parallel)",
                    self.tensor_parallel, self.max_requests
                ),
            );
        }
        // A decode row's KV length reaches max_seq_len + s (its draft tokens run past the
        // sequence's end, into the block table's extra column).
        let longest_kv = u64::from(self.max_seq_len) + u64::from(self.speculative_tokens);
        if dims_ok && u64::from(self.max_requests) * longest_kv > i32::MAX as u64 {
            // cu_kv_seq_lengths is int32 (as in Megatron and the attention kernels) and
            // can reach the sum of every row's KV length.
            let what = if self.speculative_tokens == 0 {
                "max_requests * max_seq_len"
            } else {
                "max_requests * (max_seq_len + speculative_tokens)"
            };
            err(
                "max_seq_len",
                format!(
                    "{what} = {} exceeds {} (the int32 cumulative KV lengths could overflow)",
                    u64::from(self.max_requests) * longest_kv,
                    i32::MAX
                ),
            );
        }
        if dims_ok {
            let k = self.token_rounder();
            if !self.max_tokens.is_multiple_of(k) {
                err(
                    "max_tokens",
                    format!(
                        "must be a multiple of the eager token rounder {k} (ceil(64 / tensor_parallel) * tensor_parallel), got {}; Megatron pads eager steps past max_tokens otherwise",
                        self.max_tokens
                    ),
                );
            } else if u64::from(self.max_tokens)
                < u64::from(self.max_requests) * u64::from(self.decode_tokens())
            {
                err(
                    "max_tokens",
                    format!(
                        "must be at least max_requests * (speculative_tokens + 1) = {} so that every request can decode in one step, got {}",
                        u64::from(self.max_requests) * u64::from(self.decode_tokens()),
                        self.max_tokens
                    ),
                );
            } else if let Some(b) = self.graphs.token_budget {
                let lo = self.max_requests * self.decode_tokens();
                if b > self.max_tokens {
                    err(
                        "graphs.token_budget",
                        format!("must be at most max_tokens = {}, got {b}", self.max_tokens),
                    );
                } else if b < lo {
                    err(
                        "graphs.token_budget",
                        format!(
                            "must be at least max_requests * (speculative_tokens + 1) = {lo}, got {b}"
                        ),
                    );
                }
            }
        }
        match (self.model.has_mamba(), &self.mamba) {
            // Named by `model`, the key that is there to point at.
            (true, None) => err(
                "model",
                format!(
                    "a {} model needs `mamba.chunk_size` and `mamba.conv_width`",
                    self.model.as_str()
                ),
            ),
            (false, Some(_)) => err(
                "mamba",
                "Mamba parameters given for an `mha` model (use model = \"hybrid\" or drop them)"
                    .to_owned(),
            ),
            (true, Some(m)) => {
                if m.chunk_size == 0 || m.chunk_size > MAX_DIM {
                    err(
                        "mamba.chunk_size",
                        format!("must be in 1..={MAX_DIM}, got {}", m.chunk_size),
                    );
                } else if !m.chunk_size.is_power_of_two() {
                    // Megatron's and vLLM's chunked-scan kernels both index chunks with
                    // power-of-two tile arithmetic.
                    err(
                        "mamba.chunk_size",
                        format!(
                            "must be a power of two (the SSD chunked-scan kernels require it), got {}",
                            m.chunk_size
                        ),
                    );
                }
                if m.conv_width == 0 || m.conv_width > 1024 {
                    err(
                        "mamba.conv_width",
                        format!("must be in 1..=1024, got {}", m.conv_width),
                    );
                }
            }
            (false, None) => {}
        }
        if self.has_format(Format::Vllm) && dims_ok && !self.block_size.is_multiple_of(16) {
            err(
                "block_size",
                format!(
                    "must be a multiple of 16 with formats = [\"vllm\"] (vLLM's Triton attention loads block ids 16 tokens at a time), got {}",
                    self.block_size
                ),
            );
        }
        if let Some(p) = self.kv_pool_blocks
            && p < 2
        {
            err(
                "kv_pool_blocks",
                format!("must be at least 2 (one usable block and the dummy block), got {p}"),
            );
        }
        if let Some(m) = &self.memory {
            if !(m.budget_gib.is_finite() && m.budget_gib > 0.0) {
                err(
                    "memory.budget_gib",
                    format!("must be a positive number, got {}", m.budget_gib),
                );
            }
            if m.attention_layers > 0 && (m.kv_heads == 0 || m.head_dim == 0) {
                err(
                    "memory.kv_heads",
                    "attention layers need `kv_heads` and `head_dim`".to_owned(),
                );
            }
            if m.mamba_layers > 0 && !self.model.has_mamba() {
                err(
                    "memory.mamba_layers",
                    "Mamba layers given for an `mha` model".to_owned(),
                );
            }
            if let Some(gb) = m.prefix_caching_mamba_gb {
                if !(gb.is_finite() && gb > 0.0) {
                    err(
                        "memory.prefix_caching_mamba_gb",
                        format!("must be a positive number, got {gb}"),
                    );
                } else if m.mamba_layers == 0 {
                    err(
                        "memory.prefix_caching_mamba_gb",
                        "a Mamba state cache needs Mamba layers (`memory.mamba_layers` above 0)"
                            .to_owned(),
                    );
                }
            }
            if m.mamba_layers > 0
                && (m.mamba_heads == 0 || m.mamba_head_dim == 0 || m.mamba_state_dim == 0)
            {
                err(
                    "memory.mamba_heads",
                    "Mamba layers need `mamba_heads`, `mamba_head_dim` and `mamba_state_dim`"
                        .to_owned(),
                );
            }
        }
        if out.is_empty() {
            out.extend(self.bucket_table_diagnostics());
        }
        if out.is_empty() {
            Ok(())
        } else {
            Err(SpecError { diagnostics: out })
        }
    }
}

/// Explicit bucket tables (`graphs.buckets`): kept apart from [`LayoutSpec::validate`]'s
/// own rules, which call them last, once everything else is clean.
impl LayoutSpec {
    /// The layout facts an explicit bucket table is checked against.
    pub fn table_rules(&self) -> TableRules {
        TableRules {
            max_requests: self.max_requests,
            max_tokens: self.max_tokens,
            max_seq_len: self.max_seq_len,
            speculative_tokens: self.speculative_tokens,
            tensor_parallel: self.tensor_parallel,
        }
    }

    /// The explicit bucket table, checked and sorted ascending; `None` when the spec
    /// uses a generated ladder. Errors name `graphs.buckets` and each offending entry.
    pub fn explicit_buckets(&self) -> Option<Result<Vec<BatchDims>, SpecError>> {
        let table = self.graphs.buckets.as_ref()?;
        let dims: Vec<BatchDims> = table
            .iter()
            .map(|&[t, p, d]| BatchDims::new(t, p, d))
            .collect();
        Some(
            crate::bucket_table::check_table(&dims, &self.table_rules()).map_err(|problems| {
                SpecError {
                    diagnostics: problems
                        .iter()
                        .map(|p| Diagnostic {
                            key: Some(BUCKETS_KEY.to_owned()),
                            message: p.to_string(),
                            location: None,
                        })
                        .collect(),
                }
            }),
        )
    }

    /// One diagnostic per problem of the explicit bucket table (none without one).
    fn bucket_table_diagnostics(&self) -> Vec<Diagnostic> {
        match self.explicit_buckets() {
            Some(Err(e)) => e.diagnostics,
            _ => Vec::new(),
        }
    }
}

/// The key of an explicit bucket table.
pub const BUCKETS_KEY: &str = "graphs.buckets";

/// The `graphs` keys that describe a generated ladder, which an explicit table replaces.
pub const LADDER_KEYS: &[&str] = &[
    "count",
    "distribution",
    "token_budget",
    "mixed_prefill",
    "non_decode",
];

/// A TOML or serde error as a located diagnostic.
pub(crate) fn toml_error(file: &str, src: &str, e: &toml::de::Error) -> SpecError {
    let offset = e.span().map_or(0, |s| s.start);
    SpecError {
        diagnostics: vec![Diagnostic {
            key: None,
            message: e.message().trim().to_owned(),
            location: Some(location_of(file, src, offset)),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_layouts::HYBRID;

    #[test]
    fn reads_a_minimal_hybrid_spec_with_defaults() {
        let s = LayoutSpec::from_toml_str(HYBRID, "h.toml").unwrap();
        assert_eq!(s.model, ModelKind::Hybrid);
        assert_eq!(s.tensor_parallel, 1);
        assert_eq!(s.graphs.count, GraphCount::Auto);
        assert_eq!(s.graphs.mixed_prefill, 4);
        assert_eq!(s.decode_index_dtype, IndexDtype::I64);
        assert_eq!(s.graph_token_budget(), 64);
    }

    #[test]
    fn semantic_errors_name_file_line_and_key() {
        let src = HYBRID.replace("block_size = 4", "block_size = 12");
        let e = LayoutSpec::from_toml_str(&src, "h.toml").unwrap_err();
        assert_eq!(e.diagnostics.len(), 1);
        let d = &e.diagnostics[0];
        assert_eq!(d.key.as_deref(), Some("block_size"));
        let loc = d.location.as_ref().unwrap();
        assert_eq!((loc.line, loc.column), (6, 1));
        assert!(
            e.to_string()
                .starts_with("h.toml:6:1: `block_size`: must be a power of two")
        );
    }

    #[test]
    fn nested_key_is_located() {
        let src = format!("{HYBRID}\n[graphs]\ntoken_budget = 128\n");
        let e = LayoutSpec::from_toml_str(&src, "h.toml").unwrap_err();
        let d = &e.diagnostics[0];
        assert_eq!(d.key.as_deref(), Some("graphs.token_budget"));
        assert_eq!(d.location.as_ref().unwrap().line, 13);
    }

    #[test]
    fn unknown_key_and_wrong_type_are_parse_errors_with_location() {
        let e = LayoutSpec::from_toml_str(&format!("{HYBRID}\nbogus = 1\n"), "h.toml");
        // `bogus` lands in the [mamba] table here.
        assert!(e.unwrap_err().to_string().contains("unknown field `bogus`"));
        let e = LayoutSpec::from_toml_str(
            &HYBRID.replace("max_tokens = 64", "max_tokens = \"x\""),
            "h.toml",
        )
        .unwrap_err();
        let d = &e.diagnostics[0];
        assert_eq!(d.location.as_ref().unwrap().line, 4);
        assert!(d.message.contains("invalid type"), "{}", d.message);
    }

    #[test]
    fn one_mistake_one_diagnostic() {
        let src = HYBRID.replace("max_requests = 8", "max_requests = 0");
        let e = LayoutSpec::from_toml_str(&src, "h.toml").unwrap_err();
        assert_eq!(e.diagnostics.len(), 1, "{e}");
        let src = HYBRID.replace("max_tokens = 64", "max_tokens = 100");
        let e = LayoutSpec::from_toml_str(&src, "h.toml").unwrap_err();
        assert_eq!(e.diagnostics.len(), 1, "{e}");
        assert!(
            e.to_string()
                .contains("multiple of the eager token rounder 64")
        );
    }

    #[test]
    fn mamba_rules() {
        let mha = HYBRID.replace("\"hybrid\"", "\"mha\"");
        let e = LayoutSpec::from_toml_str(&mha, "m.toml").unwrap_err();
        assert_eq!(e.diagnostics[0].key.as_deref(), Some("mamba"));
        let no_mamba = HYBRID.split("[mamba]").next().unwrap();
        let e = LayoutSpec::from_toml_str(no_mamba, "m.toml").unwrap_err();
        assert!(e.to_string().contains("needs `mamba.chunk_size`"));
    }

    #[test]
    fn a_chunk_size_that_is_not_a_power_of_two_is_refused_naming_the_key() {
        let src = HYBRID.replace("chunk_size = 4", "chunk_size = 48");
        let e = LayoutSpec::from_toml_str(&src, "h.toml").unwrap_err();
        assert_eq!(e.diagnostics.len(), 1, "{e}");
        assert_eq!(e.diagnostics[0].key.as_deref(), Some("mamba.chunk_size"));
        assert!(
            e.to_string()
                .contains("`mamba.chunk_size`: must be a power of two"),
            "{e}"
        );
        let ok = HYBRID.replace("chunk_size = 4", "chunk_size = 64");
        assert!(LayoutSpec::from_toml_str(&ok, "h.toml").is_ok());
    }

    #[test]
    fn graph_count_forms() {
        for (v, want) in [
            ("\"auto\"", GraphCount::Auto),
            ("\"off\"", GraphCount::Off),
            ("8", GraphCount::Count(8)),
        ] {
            let s = LayoutSpec::from_toml_str(&format!("{HYBRID}\n[graphs]\ncount = {v}\n"), "g")
                .unwrap();
            assert_eq!(s.graphs.count, want);
        }
        for bad in ["0", "\"many\"", "-1"] {
            let e = LayoutSpec::from_toml_str(&format!("{HYBRID}\n[graphs]\ncount = {bad}\n"), "g");
            assert!(e.is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_table_covers_the_struct() {
        // Every key in KEYS deserializes: build a table with all top-level scalar keys.
        let top: Vec<&str> = KEYS
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| !k.contains('.'))
            .collect();
        for k in REQUIRED_KEYS {
            assert!(top.contains(k));
        }
    }
}
