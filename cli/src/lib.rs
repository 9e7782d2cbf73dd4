//! # attention-layout-cli
//!
//! The `attention-layout` command line tool (`cargo install --path cli`) and the pieces
//! behind it: the engine-loop simulator ([`simulate`]), the bucket-table tuner ([`tune`]),
//! the replay of Megatron-LM golden records ([`golden`]), the benchmark scenarios and the
//! fill timing ([`scenarios`], [`bench`](mod@bench)) and layout inspection ([`inspect`]). The runtime
//! crate, `attention-layout`, is what an engine links; this crate depends on it.

// Every write goes through `console`, which handles a closed pipe; `print!`/`eprint!`
// would panic there.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod bench;
pub mod console;
#[cfg(feature = "cuda")]
pub mod cuda_bench;
pub mod golden;
pub mod inspect;
pub mod layouts;
pub mod reports;
pub mod scenarios;
pub mod simulate;
pub mod tune;
