//! # 04 — what one graphed step costs the host, call by call
//!
//! The CUDA backend's steady step is: plan and stage on the host, wait for the staging
//! slot's last copy, repoint the step graph's copy (only when its size changed), launch
//! the graph, record the slot's event. This program times each of those driver calls on
//! its own, on a graph shaped like the backend's (a 256-byte pinned host-to-device copy,
//! then one small kernel), so a host-cost figure can be split into planning, staging and
//! the driver; and it compares a replay + synchronize of that graph with one of a graph
//! holding only the kernel, reading mapped pinned memory (`cuda::StreamFill`'s way).
//! Medians over `STEPS` calls, each call timed alone; the stream is drained
//! every 64 calls, outside the timed calls.
//!
//! ```text
//! cargo run --release -p attention-layout-examples --features cuda --example launch_costs [STEPS]
//! ```
//! Exit codes: 0 measured, 2 built without the `cuda` feature, 3 no usable GPU or another
//! error.

#[cfg(not(feature = "cuda"))]
fn main() {
    attention_layout_examples::exit_without_cuda("launch_costs")
}

#[cfg(feature = "cuda")]
fn main() -> std::process::ExitCode {
    match costs::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("launch_costs: {e}");
            std::process::ExitCode::from(3)
        }
    }
}

#[cfg(feature = "cuda")]
mod costs {
    use std::time::Instant;

    use attention_layout_examples::Result;
    use attention_layout_examples::captured::median;
    use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg, sys};
    use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

    const COPY: usize = 256;
    // Two dependent reads of the staging (a header word, then the records it points at),
    // as the fill kernel's first phases do.
    const KERNEL: &str = r#"
extern "C" __global__ void touch(const unsigned char* staging, unsigned char* meta) {
  const unsigned t = threadIdx.x;
  const unsigned at = ((const unsigned*)staging)[0] & 127u;
  if (t < 128u) meta[t] = staging[at + t];
}
// The same reads from an image passed in the kernel's parameters (`__grid_constant__`:
// read in place, no copy node and no read over the bus).
struct Img { unsigned char b[256]; };
extern "C" __global__ void touch_param(const __grid_constant__ Img img, unsigned char* meta) {
  const unsigned char* staging = img.b;
  const unsigned t = threadIdx.x;
  const unsigned at = ((const unsigned*)staging)[0] & 127u;
  if (t < 128u) meta[t] = staging[at + t];
}
"#;

    /// A 256-byte image passed by value as a kernel parameter.
    #[derive(Clone, Copy)]
    #[repr(C)]
    struct Img([u8; COPY]);
    // SAFETY: plain bytes, `repr(C)`: the layout of the kernel's `Img`.
    unsafe impl cudarc::driver::DeviceRepr for Img {}

    pub fn run() -> Result<()> {
        let steps: usize = std::env::args().nth(1).map_or(Ok(20_000), |s| s.parse())?;
        let device = attention_layout::cuda::probe(0)?;
        let arch = attention_layout_examples::gpu::nvrtc_arch(device.compute_capability);
        let ctx = CudaContext::new(0)?;
        // SAFETY: every buffer below is used on `stream` only (no cross-stream tracking
        // needed); it would invalidate the capture. Affects slices created after it.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let ptx = compile_ptx_with_opts(
            KERNEL,
            CompileOptions {
                arch: Some(arch),
                ..Default::default()
            },
        )?;
        let module = ctx.load_module(ptx)?;
        let f = module.load_function("touch")?;
        let f_param = module.load_function("touch_param")?;
        // SAFETY: cudarc's one condition is that the memory starts uninitialized: nothing
        // reads it before the first copy, which reads bytes the host wrote below.
        let mut pinned = unsafe { ctx.alloc_pinned::<u8>(2 * COPY) }?;
        let src = pinned.as_mut_ptr()?;
        // SAFETY: `src` points at `2 * COPY` bytes of pinned memory owned by `pinned`.
        unsafe { std::ptr::write_bytes(src, 7, 2 * COPY) };
        let staging = stream.alloc_zeros::<u8>(COPY)?;
        let mut meta = stream.alloc_zeros::<u8>(COPY)?;
        let (dst, _guard) = cudarc::driver::DevicePtr::device_ptr(&staging, &stream);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };

        // The step graph: the copy, then the kernel.
        stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        // SAFETY: recorded, not executed; `src` (pinned, `2 * COPY` bytes) and `dst`
        // (`COPY` bytes) stay allocated until the end of this function, after the last
        // synchronize, and the host never writes `src` again.
        unsafe { sys::cuMemcpyHtoDAsync_v2(dst, src.cast(), COPY, stream.cu_stream()) }.result()?;
        let mut launch = stream.launch_builder(&f);
        launch.arg(&staging).arg(&mut meta);
        // SAFETY: `touch(const u8*, u8*)` reads and writes 256 bytes of buffers of 256.
        unsafe { launch.launch(cfg) }?;
        let graph = stream
            .end_capture(sys::CUgraphInstantiate_flags(0))?
            .ok_or("capture produced no graph")?;
        graph.upload()?;
        let exec = graph.cu_graph_exec();
        let mut n = 0usize;
        // SAFETY: a null array asks for the node count of a graph `graph` owns.
        unsafe { sys::cuGraphGetNodes(graph.cu_graph(), std::ptr::null_mut(), &mut n) }.result()?;
        let mut nodes: Vec<sys::CUgraphNode> = vec![std::ptr::null_mut(); n];
        // SAFETY: `nodes` has room for the `n` nodes just counted.
        unsafe { sys::cuGraphGetNodes(graph.cu_graph(), nodes.as_mut_ptr(), &mut n) }.result()?;
        let mut copy = None;
        for &node in &nodes {
            let mut ty = sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
            // SAFETY: `node` belongs to the graph.
            unsafe { sys::cuGraphNodeGetType(node, &mut ty) }.result()?;
            if ty == sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMCPY {
                let mut p = std::mem::MaybeUninit::<sys::CUDA_MEMCPY3D>::uninit();
                // SAFETY: `node` is the graph's copy node; `p` has room for its parameters.
                unsafe { sys::cuGraphMemcpyNodeGetParams(node, p.as_mut_ptr()) }.result()?;
                // SAFETY: the call succeeded: the driver wrote every field.
                copy = Some((node, unsafe { p.assume_init() }));
            }
        }
        let (node, params) = copy.ok_or("no copy node")?;
        // The same kernel alone in a graph, reading mapped pinned memory over the bus (no
        // copy node), as `cuda::StreamFill` does.
        // SAFETY: as `pinned`; DEVICEMAP maps it into the device's address space.
        let mut mapped =
            unsafe { ctx.alloc_pinned_with_flags::<u8>(COPY, sys::CU_MEMHOSTALLOC_DEVICEMAP) }?;
        let mapped_host = mapped.as_mut_ptr()?;
        // SAFETY: `mapped_host` points at `COPY` bytes owned by `mapped`.
        unsafe { std::ptr::write_bytes(mapped_host, 0, COPY) };
        let mut mapped_dev: sys::CUdeviceptr = 0;
        // SAFETY: `mapped_host` was allocated with DEVICEMAP in this (current) context.
        unsafe { sys::cuMemHostGetDevicePointer_v2(&mut mapped_dev, mapped_host.cast(), 0) }
            .result()?;
        stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        let mut launch = stream.launch_builder(&f);
        launch.arg(&mapped_dev).arg(&mut meta);
        // SAFETY: the kernel reads at most 256 bytes of the `COPY`-byte mapped buffer,
        // live until the end of this function, and writes 128 bytes of `meta`.
        unsafe { launch.launch(cfg) }?;
        let mapped_graph = stream
            .end_capture(sys::CUgraphInstantiate_flags(0))?
            .ok_or("capture produced no graph")?;
        mapped_graph.upload()?;
        let mapped_exec = mapped_graph.cu_graph_exec();
        // The same, with the event record `StreamFill` adds after its kernel (EXTERNAL: a
        // node of the graph, recorded again on every replay).
        let done = ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))?;
        stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        let mut launch = stream.launch_builder(&f);
        launch.arg(&mapped_dev).arg(&mut meta);
        // SAFETY: as the mapped graph's launch above.
        unsafe { launch.launch(cfg) }?;
        // SAFETY: `done` and the stream are live, in the same context; EXTERNAL is a flag
        // of the driver's record call, valid during a capture.
        unsafe {
            sys::cuEventRecordWithFlags(
                done.cu_event(),
                stream.cu_stream(),
                sys::CUevent_record_flags::CU_EVENT_RECORD_EXTERNAL as u32,
            )
        }
        .result()?;
        let recorded_graph = stream
            .end_capture(sys::CUgraphInstantiate_flags(0))?
            .ok_or("capture produced no graph")?;
        recorded_graph.upload()?;
        let recorded_exec = recorded_graph.cu_graph_exec();

        // The kernel alone with its image in the parameters; each step sets the node's
        // parameters to a new image (`cuGraphExecKernelNodeSetParams`).
        let mut img = Img([7; COPY]);
        stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        let mut launch = stream.launch_builder(&f_param);
        launch.arg(&img).arg(&mut meta);
        // SAFETY: `touch_param(Img, u8*)` reads its own parameter and writes 128 bytes of
        // `meta` (256 bytes, live until the end of this function).
        unsafe { launch.launch(cfg) }?;
        let param_graph = stream
            .end_capture(sys::CUgraphInstantiate_flags(0))?
            .ok_or("capture produced no graph")?;
        param_graph.upload()?;
        let param_exec = param_graph.cu_graph_exec();
        let mut n = 0usize;
        // SAFETY: a null array asks for the node count of a graph `param_graph` owns.
        unsafe { sys::cuGraphGetNodes(param_graph.cu_graph(), std::ptr::null_mut(), &mut n) }
            .result()?;
        let mut pnodes: Vec<sys::CUgraphNode> = vec![std::ptr::null_mut(); n];
        // SAFETY: `pnodes` has room for the `n` nodes just counted.
        unsafe { sys::cuGraphGetNodes(param_graph.cu_graph(), pnodes.as_mut_ptr(), &mut n) }
            .result()?;
        let knode = *pnodes.first().ok_or("no kernel node")?;
        let mut kp = std::mem::MaybeUninit::<sys::CUDA_KERNEL_NODE_PARAMS>::uninit();
        // SAFETY: `knode` is the graph's one node, a kernel node; `kp` has room for it.
        unsafe { sys::cuGraphKernelNodeGetParams_v2(knode, kp.as_mut_ptr()) }.result()?;
        // SAFETY: the call succeeded: the driver wrote every field.
        let kp = unsafe { kp.assume_init() };
        let meta_ptr = cudarc::driver::DevicePtr::device_ptr(&meta, &stream).0;

        let event = ctx.new_event(None)?;
        let cu_stream = stream.cu_stream();
        let cu_ctx = ctx.cu_ctx();

        // Times `call` `steps` times, draining the stream every 64 calls (untimed).
        let time = |call: &mut dyn FnMut(usize) -> Result<()>| -> Result<f64> {
            let mut t = Vec::with_capacity(steps);
            for i in 0..steps {
                if i % 64 == 0 {
                    stream.synchronize()?;
                }
                let t0 = Instant::now();
                call(i)?;
                t.push(t0.elapsed().as_secs_f64() * 1e6);
            }
            stream.synchronize()?;
            Ok(median(&mut t))
        };
        let graph_launch = |_: usize| -> Result<()> {
            // SAFETY: `exec` is live; its copy reads `src` and writes `dst` (see above).
            unsafe { sys::cuGraphLaunch(exec, cu_stream) }.result()?;
            Ok(())
        };
        let set_params = |i: usize| -> Result<()> {
            let mut p = params;
            // Alternate between the two halves, as two staging slots would.
            p.srcHost = src.wrapping_add((i % 2) * COPY).cast();
            // SAFETY: the node is the copy node of the graph `exec` came from; the
            // parameters keep its shape and point into the same live allocations.
            unsafe { sys::cuGraphExecMemcpyNodeSetParams(exec, node, &p, cu_ctx) }.result()?;
            Ok(())
        };
        let record = |_: usize| -> Result<()> {
            // SAFETY: `event` and the stream are live, in the same context.
            unsafe { sys::cuEventRecord(event.cu_event(), cu_stream) }.result()?;
            Ok(())
        };
        let event_sync = |_: usize| -> Result<()> {
            // SAFETY: `event` is live (recorded above or never: both return at once).
            unsafe { sys::cuEventSynchronize(event.cu_event()) }.result()?;
            Ok(())
        };
        let query = |_: usize| -> Result<()> {
            // SAFETY: `event` is live.
            let _ = unsafe { sys::cuEventQuery(event.cu_event()) };
            Ok(())
        };
        let current = |_: usize| -> Result<()> {
            ctx.bind_to_thread()?;
            Ok(())
        };

        let launch_us = time(&mut { graph_launch })?;
        let set_us = time(&mut { set_params })?;
        let set_launch_us = time(&mut |i| {
            set_params(i)?;
            graph_launch(i)
        })?;
        let record_us = time(&mut { record })?;
        let sync_us = time(&mut { event_sync })?;
        let query_us = time(&mut { query })?;
        let bind_us = time(&mut { current })?;
        let step_us = time(&mut |i| {
            event_sync(i)?;
            graph_launch(i)?;
            record(i)
        })?;
        let synced_us = time(&mut |i| {
            graph_launch(i)?;
            stream.synchronize()?;
            Ok(())
        })?;
        let mapped_synced_us = time(&mut |_| {
            // SAFETY: `mapped_exec` is live; its kernel reads the live mapped buffer.
            unsafe { sys::cuGraphLaunch(mapped_exec, cu_stream) }.result()?;
            stream.synchronize()?;
            Ok(())
        })?;
        let recorded_synced_us = time(&mut |_| {
            // SAFETY: as the mapped graph; its event node records the live `done`.
            unsafe { sys::cuGraphLaunch(recorded_exec, cu_stream) }.result()?;
            stream.synchronize()?;
            Ok(())
        })?;
        // The GPU's time between events around each graph (what `captured_fill` reports).
        let (start, end) = (
            ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))?,
            ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))?,
        );
        let gpu_time = |exec: sys::CUgraphExec| -> Result<f64> {
            let mut t = Vec::with_capacity(steps);
            for _ in 0..steps {
                start.record(&stream)?;
                // SAFETY: `exec` is one of the live executable graphs above.
                unsafe { sys::cuGraphLaunch(exec, cu_stream) }.result()?;
                end.record(&stream)?;
                end.synchronize()?;
                t.push(f64::from(start.elapsed_ms(&end)?) * 1e3);
            }
            Ok(median(&mut t))
        };
        let mapped_gpu_us = gpu_time(mapped_exec)?;
        let recorded_gpu_us = gpu_time(recorded_exec)?;
        let mut set_kernel = |i: usize| -> Result<()> {
            img.0[0] = (i % 100) as u8;
            let mut meta_arg = meta_ptr;
            let mut args: [*mut std::ffi::c_void; 2] =
                [(&raw mut img).cast(), (&raw mut meta_arg).cast()];
            let mut p = kp;
            p.kernelParams = args.as_mut_ptr();
            p.extra = std::ptr::null_mut();
            // SAFETY: the node is the kernel node of the graph `param_exec` came from, the
            // same function; `args` points at one value of each parameter's type, read
            // during the call.
            unsafe { sys::cuGraphExecKernelNodeSetParams_v2(param_exec, knode, &p) }.result()?;
            Ok(())
        };
        let kernel_set_us = time(&mut |i| set_kernel(i))?;
        let param_synced_us = time(&mut |i| {
            set_kernel(i)?;
            // SAFETY: `param_exec` is live; its kernel reads its parameters and writes
            // the live `meta`.
            unsafe { sys::cuGraphLaunch(param_exec, cu_stream) }.result()?;
            stream.synchronize()?;
            Ok(())
        })?;
        let eager_us = time(&mut |_| {
            // SAFETY: as the captured copy: live pinned source, device destination.
            unsafe { sys::cuMemcpyHtoDAsync_v2(dst, src.cast(), COPY, cu_stream) }.result()?;
            let mut launch = stream.launch_builder(&f);
            launch.arg(&staging).arg(&mut meta);
            // SAFETY: as the captured launch.
            unsafe { launch.launch(cfg) }?;
            Ok(())
        })?;

        println!("launch_costs on {device}: medians over {steps} calls, each timed alone");
        println!("  cuGraphLaunch (256 B copy + 1 kernel)           {launch_us:6.2} µs");
        println!("  cuGraphExecMemcpyNodeSetParams                  {set_us:6.2} µs");
        println!("  SetParams + cuGraphLaunch                       {set_launch_us:6.2} µs");
        println!("  cuEventRecord                                   {record_us:6.2} µs");
        println!("  cuEventSynchronize (event already complete)     {sync_us:6.2} µs");
        println!("  cuEventQuery (event already complete)           {query_us:6.2} µs");
        println!("  bind_to_thread (cuCtxGetCurrent)                {bind_us:6.2} µs");
        println!("  slot wait + cuGraphLaunch + cuEventRecord       {step_us:6.2} µs");
        println!("  cuGraphLaunch + stream synchronize              {synced_us:6.2} µs");
        println!("  kernel-only graph on mapped staging + synchronize {mapped_synced_us:4.2} µs");
        println!(
            "  the same + StreamFill's event record node + synchronize {recorded_synced_us:4.2} µs"
        );
        println!(
            "  GPU time between events: mapped kernel graph {mapped_gpu_us:4.2} µs; with the event record node {recorded_gpu_us:4.2} µs"
        );
        println!("  eager: cuMemcpyHtoDAsync + cuLaunchKernel       {eager_us:6.2} µs");
        println!("  cuGraphExecKernelNodeSetParams (256 B image)    {kernel_set_us:6.2} µs");
        println!(
            "  image in the kernel's parameters: SetParams + cuGraphLaunch + synchronize {param_synced_us:4.2} µs"
        );
        drop(param_graph);
        drop(recorded_graph);
        drop(mapped_graph);
        drop(mapped);
        drop(pinned);
        Ok(())
    }
}
