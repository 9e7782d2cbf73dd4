//! # 03 — the fill captured in the engine's own graph
//!
//! Captures *metadata fill + a consumer kernel* as one CUDA graph on a stream of its own
//! (`attention_layout::cuda::StreamFill`), then replays it step after step of a steady
//! 256-decode workload, writing each step's staging before the replay. Every step of the
//! first 64 and every `CHECK_EVERY`-th after is compared with the CPU reference (the whole
//! metadata buffer and the consumer's output). Prints the fill node's GPU time (device
//! events around a graph holding only the fill, and *fill + consumer* minus *consumer
//! alone*), the host cost of preparing the staging, and the bytes per step. Then the same
//! for an async-scheduling engine's prepared steps, with the plain capture (the node reads
//! the mapped staging) and with a `FillGraph` (the node pointed at each step: a steady
//! step's image in the kernel's parameters).
//!
//! ```text
//! cargo run --release -p attention-layout-examples --features cuda --example captured_fill [STEPS] [CHECK_EVERY]
//! ```
//! Exit codes: 0 all checks passed, 1 a check failed, 2 built without the `cuda` feature,
//! 3 no usable GPU or another error.

#[cfg(not(feature = "cuda"))]
fn main() {
    attention_layout_examples::exit_without_cuda("captured_fill")
}

#[cfg(feature = "cuda")]
fn main() -> std::process::ExitCode {
    use attention_layout_examples::captured;
    let run = || -> attention_layout_examples::Result<bool> {
        let mut args = std::env::args().skip(1);
        let steps: usize = args.next().map_or(Ok(5000), |s| s.parse())?;
        let check_every: usize = args.next().map_or(Ok(100), |s| s.parse())?;
        let device = attention_layout::cuda::probe(0)?;
        let arch = attention_layout_examples::gpu::nvrtc_arch(device.compute_capability);
        println!(
            "captured_fill on {device}: {steps} steps of {} decode rows",
            captured::ROWS
        );
        let r = captured::run(arch, steps, check_every)?;
        print_checked("", &r);
        print_gpu_times("", &r);
        println!(
            "host: prepare (plan + staging) {:.2} µs median; staging {} bytes per step (median), {:.0} % delta steps",
            r.prepare_host_us,
            r.bytes,
            r.delta * 100.0
        );
        let p = captured::run_prepared(steps, check_every)?;
        print_checked(
            "prepared steps (BatchState, StreamFill::prepare_with_origin): ",
            &p,
        );
        println!(
            "prepared steps: fill alone {:.2} µs GPU per replay (median); host: prepare_with_origin (try_advance, or plan + staging) {:.2} µs median; {} bytes per step (median), {:.0} % staged by try_advance",
            p.fill_gpu_us,
            p.prepare_host_us,
            p.bytes,
            p.delta * 100.0
        );
        let g = captured::run_graph(arch, steps, check_every)?;
        print_checked(
            "fill graph (FillGraph: the node pointed at each step, small images in the kernel's parameters): ",
            &g,
        );
        print_gpu_times("fill graph: ", &g);
        println!(
            "fill graph: host prepare_with_origin (staging + the node's update) {:.2} µs median; {} bytes per step (median), {:.0} % staged by try_advance, {:.0} % with the image in the parameters",
            g.prepare_host_us,
            g.bytes,
            g.delta * 100.0,
            g.in_params * 100.0
        );
        Ok(r.mismatch.is_none() && p.mismatch.is_none() && g.mismatch.is_none())
    };
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("captured_fill: error: {e}");
            std::process::ExitCode::from(3)
        }
    }
}

/// How many steps of a run were checked against the CPU reference, and the first mismatch.
#[cfg(feature = "cuda")]
fn print_checked(prefix: &str, r: &attention_layout_examples::captured::Report) {
    println!(
        "{prefix}checked {} steps against the CPU reference: {}",
        r.checked,
        r.mismatch.as_deref().unwrap_or("all equal")
    );
}

/// The GPU times of a run with the fill, fill + consumer and consumer graphs.
#[cfg(feature = "cuda")]
fn print_gpu_times(prefix: &str, r: &attention_layout_examples::captured::Report) {
    println!(
        "{prefix}GPU time per replay (median, device events): fill alone {:.2} µs; fill + consumer {:.2} µs; consumer alone {:.2} µs; fill node by difference {:.2} µs",
        r.fill_gpu_us,
        r.fill_and_consumer_gpu_us,
        r.consumer_gpu_us,
        r.fill_and_consumer_gpu_us - r.consumer_gpu_us
    );
}
