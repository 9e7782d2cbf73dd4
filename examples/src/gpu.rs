//! The GPU side (`cuda` feature): device set-up with clear errors when there is no GPU,
//! NVRTC compilation for the device's architecture, and the two consumers' executors.
//!
//! Each layout's kernels are compiled once (the layout's offsets are constants in the
//! source). Each step copies the host metadata buffer to the device as one buffer (the same
//! device buffer every step, as an engine's fixed-address metadata), then launches the
//! kernels with the padded (bucket) shapes only.

use std::sync::Arc;

use attention_layout::{Dims, StepInfo};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use crate::Result;
use crate::attention::{self, AttnCase, Cache, StepRun};
use crate::layouts::{AttnModel, Layout, MambaModel};
use crate::mamba::{self, MambaCase, MambaRun, States};

/// The NVRTC architecture for compute capability `(major, minor)` (`sm_90`). NVRTC takes
/// it as a `&'static str`: one short string per call, leaked (a process asks once or
/// twice).
pub fn nvrtc_arch((major, minor): (i32, i32)) -> &'static str {
    Box::leak(format!("sm_{major}{minor}").into_boxed_str())
}

/// An open device: context, a stream, and the NVRTC architecture to compile for.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: &'static str,
    name: String,
}

impl Gpu {
    /// Opens device 0. Fails with a message, never a panic, when the driver library or NVRTC
    /// is missing or no device is present.
    pub fn open() -> Result<Self> {
        // SAFETY: only tries to load the shared library; no CUDA call is made.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("no CUDA driver library (libcuda.so) found: this program needs an NVIDIA GPU and its driver".into());
        }
        // SAFETY: as above, for NVRTC.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(
                "no NVRTC library (libnvrtc.so) found: install the CUDA toolkit's NVRTC".into(),
            );
        }
        let count =
            CudaContext::device_count().map_err(|e| format!("cannot query CUDA devices: {e}"))?;
        if count < 1 {
            return Err("the CUDA driver reports no device".into());
        }
        let ctx = CudaContext::new(0).map_err(|e| format!("cannot open CUDA device 0: {e}"))?;
        let arch = nvrtc_arch(ctx.compute_capability()?);
        let name = ctx.name()?;
        let stream = ctx.new_stream()?;
        Ok(Self {
            ctx,
            stream,
            arch,
            name,
        })
    }

    /// "NAME (sm_XY)".
    pub fn describe(&self) -> String {
        format!("{} ({})", self.name, self.arch)
    }

    /// Compiles CUDA C with NVRTC for this device and loads it.
    pub fn compile(&self, src: &str, name: &str) -> Result<Arc<CudaModule>> {
        let ptx = compile_ptx_with_opts(
            src,
            CompileOptions {
                arch: Some(self.arch),
                name: Some(format!("{name}.cu")),
                ..Default::default()
            },
        )
        .map_err(|e| format!("NVRTC failed on {name}: {e}"))?;
        Ok(self.ctx.load_module(ptx)?)
    }

    fn function(module: &Arc<CudaModule>, name: &str) -> Result<CudaFunction> {
        module
            .load_function(name)
            .map_err(|e| format!("kernel {name}: {e}").into())
    }

    /// Uploads `data` (a one-element buffer of zeros when `data` is empty: CUDA has no
    /// zero-byte allocations).
    fn upload<T: DeviceRepr + ValidAsZeroBits + Copy>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        if data.is_empty() {
            return Ok(self.stream.alloc_zeros::<T>(1)?);
        }
        Ok(self.stream.clone_htod(data)?)
    }

    fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        Ok(self.stream.alloc_zeros::<T>(n.max(1))?)
    }

    /// Downloads the first `n` elements.
    fn download<T: DeviceRepr + Default + Clone>(
        &self,
        d: &CudaSlice<T>,
        n: usize,
    ) -> Result<Vec<T>> {
        let mut v = self.stream.clone_dtoh(d)?;
        v.truncate(n);
        Ok(v)
    }
}

/// Compiles every consumer layout's kernels with NVRTC for `arch` (e.g. `"sm_90"`) and
/// returns `(layout label, PTX size)` per module. NVRTC needs no device, so this checks the
/// CUDA C on any machine that has `libnvrtc`.
pub fn compile_all(arch: &'static str) -> Result<Vec<(&'static str, usize)>> {
    // SAFETY: only tries to load the shared library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("no NVRTC library (libnvrtc.so) found".into());
    }
    let mut sources = Vec::new();
    for l in crate::layouts::attention()? {
        sources.push((l.label, attention::cuda_source(&l)));
    }
    for l in crate::layouts::mamba()? {
        sources.push((l.label, mamba::cuda_source(&l)));
    }
    sources
        .into_iter()
        .map(|(label, src)| {
            let ptx = compile_ptx_with_opts(
                src,
                CompileOptions {
                    arch: Some(arch),
                    name: Some(format!("{label}.cu")),
                    ..Default::default()
                },
            )
            .map_err(|e| format!("NVRTC failed on {label}: {e}"))?;
            Ok((label, ptx.to_src().len()))
        })
        .collect()
}

fn cfg(grid: (u32, u32, u32), threads: u32, shared: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (threads, 1, 1),
        shared_mem_bytes: shared,
    }
}

/// Per-layout device state: the compiled kernels and the metadata buffer.
struct Compiled {
    functions: Vec<CudaFunction>,
    meta: CudaSlice<u8>,
}

fn compiled<'a>(
    gpu: &Gpu,
    cache: &'a mut Vec<Option<Compiled>>,
    index: usize,
    total_bytes: usize,
    src: impl FnOnce() -> String,
    label: &str,
    names: &[&str],
) -> Result<&'a mut Compiled> {
    if cache.len() <= index {
        cache.resize_with(index + 1, || None);
    }
    let slot = cache.get_mut(index).ok_or("layout index out of range")?;
    if slot.is_none() {
        let module = gpu.compile(&src(), label)?;
        let functions = names
            .iter()
            .map(|n| Gpu::function(&module, n))
            .collect::<Result<Vec<_>>>()?;
        *slot = Some(Compiled {
            functions,
            meta: gpu.zeros::<u8>(total_bytes)?,
        });
    }
    slot.as_mut()
        .ok_or_else(|| "kernels missing after compilation".into())
}

fn func(c: &Compiled, i: usize) -> Result<&CudaFunction> {
    c.functions.get(i).ok_or_else(|| "kernel missing".into())
}

/// Paged attention on the GPU.
pub struct GpuAttention {
    gpu: Gpu,
    layouts: Vec<Option<Compiled>>,
}

impl GpuAttention {
    /// Executor on an open device.
    pub fn new(gpu: Gpu) -> Self {
        Self {
            gpu,
            layouts: Vec::new(),
        }
    }
}

impl attention::Executor for GpuAttention {
    fn describe(&self) -> String {
        format!("{}, NVRTC kernels (f32)", self.gpu.describe())
    }

    fn run(
        &mut self,
        layout_index: usize,
        layout: &Layout<AttnModel>,
        meta: &[u8],
        info: &StepInfo,
        case: &AttnCase,
    ) -> Result<StepRun> {
        let gpu = &self.gpu;
        let c = compiled(
            gpu,
            &mut self.layouts,
            layout_index,
            layout.dims.total_bytes(),
            || attention::cuda_source(layout),
            layout.label,
            &[
                "kv_append",
                "paged_attention",
                "kv_append_slots",
                "paged_attention_csr",
            ],
        )?;
        // The slot-mapping and FlashInfer CSR path on layouts with both formats.
        let path = if attention::uses_formats(&layout.dims) {
            2
        } else {
            0
        };
        let s = &gpu.stream;
        // One host-to-device copy of the whole coalesced buffer.
        s.memcpy_htod(meta, &mut c.meta)?;
        let m = layout.model;
        let q = gpu.upload(&case.q)?;
        let k_new = gpu.upload(&case.k_new)?;
        let v_new = gpu.upload(&case.v_new)?;
        let mut k_cache = gpu.upload(&case.cache.k)?;
        let mut v_cache = gpu.upload(&case.cache.v)?;
        let mut out = gpu.upload(&vec![attention::sentinel(); case.q.len()])?;
        let mut err = gpu.zeros::<i32>(1)?;
        let tokens = info.padded.tokens as i32;
        let requests = info.padded.requests() as i32;
        let max_k = info.max_seqlen_k as i32;
        let scale = case.scale();
        let heads = m.heads as u32;
        if tokens > 0 {
            let f = func(c, path)?;
            let mut b = s.launch_builder(f);
            b.arg(&c.meta)
                .arg(&tokens)
                .arg(&k_new)
                .arg(&v_new)
                .arg(&mut k_cache)
                .arg(&mut v_cache)
                .arg(&mut err);
            // SAFETY: the arguments match the kernel's signature; every buffer is sized for
            // Tp tokens / the whole pool, which is what the kernel indexes.
            unsafe {
                b.launch(cfg(
                    (tokens as u32, heads, 1),
                    m.head_dim.min(128) as u32,
                    0,
                ))
            }?;
        }
        if requests > 0 && info.max_seqlen_q > 0 {
            let f = func(c, path + 1)?;
            let mut b = s.launch_builder(f);
            b.arg(&c.meta)
                .arg(&requests)
                .arg(&tokens)
                .arg(&max_k)
                .arg(&scale)
                .arg(&q)
                .arg(&k_cache)
                .arg(&v_cache)
                .arg(&mut out)
                .arg(&mut err);
            let grid = (requests as u32, heads, info.max_seqlen_q);
            // SAFETY: as above; the shared memory holds max_seqlen_k scores and the kernel
            // refuses (counts an error for) any request with more keys.
            unsafe {
                b.launch(cfg(
                    grid,
                    attention::ATTENTION_THREADS,
                    4 * info.max_seqlen_k,
                ))
            }?;
        }
        s.synchronize()?;
        Ok(StepRun {
            cache: Cache {
                k: gpu.download(&k_cache, case.cache.k.len())?,
                v: gpu.download(&v_cache, case.cache.v.len())?,
            },
            out: gpu.download(&out, case.q.len())?,
            kernel_errors: gpu.download(&err, 1)?.first().copied().unwrap_or(-1) as u32,
        })
    }
}

/// The Mamba2 consumer on the GPU.
pub struct GpuMamba {
    gpu: Gpu,
    layouts: Vec<Option<Compiled>>,
}

impl GpuMamba {
    /// Executor on an open device.
    pub fn new(gpu: Gpu) -> Self {
        Self {
            gpu,
            layouts: Vec::new(),
        }
    }
}

impl mamba::Executor for GpuMamba {
    fn describe(&self) -> String {
        format!("{}, NVRTC kernels (f32)", self.gpu.describe())
    }

    fn run(
        &mut self,
        layout_index: usize,
        layout: &Layout<MambaModel>,
        meta: &[u8],
        info: &StepInfo,
        case: &MambaCase,
    ) -> Result<MambaRun> {
        let gpu = &self.gpu;
        let c = compiled(
            gpu,
            &mut self.layouts,
            layout_index,
            layout.dims.total_bytes(),
            || mamba::cuda_source(layout),
            layout.label,
            &mamba::kernel_names(&layout.dims),
        )?;
        // The vLLM path (state slots from vllm_state_indices_*, no padding check): the state
        // pool holds the scratch slot (the case's states are sized by mamba::state_slots),
        // and decode rows write their outputs by decode row into y_d.
        let vllm = mamba::uses_vllm(&layout.dims);
        let s = &gpu.stream;
        s.memcpy_htod(meta, &mut c.meta)?;
        let m = layout.model;
        let p = &case.params;
        let (xd, ds, nh) = (m.nheads * m.headdim, m.d_state, m.nheads);
        let padded_tokens = case.padded_tokens;
        let chunks = info.mamba_chunks as usize;
        let xbc = gpu.upload(&case.xbc)?;
        let dt = gpu.upload(&case.dt)?;
        let a = gpu.upload(&p.a)?;
        let dskip = gpu.upload(&p.d)?;
        let conv_w = gpu.upload(&p.conv_w)?;
        let conv_b = gpu.upload(&p.conv_b)?;
        let mut conv_state = gpu.upload(&case.states.conv)?;
        let mut ssm_state = gpu.upload(&case.states.ssm)?;
        let mut y = gpu.upload(&vec![mamba::sentinel(); padded_tokens * xd])?;
        let dp_rows = info.padded.decode as usize;
        let mut y_d = gpu.upload(&vec![mamba::sentinel(); dp_rows * xd])?;
        let mut act = gpu.zeros::<f32>(padded_tokens * m.conv_dim())?;
        let mut acum = gpu.zeros::<f32>(padded_tokens * nh)?;
        let mut chunk_states = gpu.zeros::<f32>(chunks * xd * ds)?;
        let mut chunk_decay = gpu.zeros::<f32>(chunks * nh)?;
        let mut chunk_init = gpu.zeros::<f32>(chunks * xd * ds)?;
        let mut err = gpu.zeros::<i32>(1)?;
        let dp = info.padded.decode as i32;
        let fp = info.padded.prefill as i32;
        let tokens = padded_tokens as i32;
        let nchunks = chunks as i32;
        let t = mamba::THREADS;
        if dp > 0 {
            let mut b = s.launch_builder(func(c, 0)?);
            b.arg(&c.meta)
                .arg(&dp)
                .arg(&tokens)
                .arg(&xbc)
                .arg(&dt)
                .arg(&a)
                .arg(&dskip)
                .arg(&conv_w)
                .arg(&conv_b)
                .arg(&mut conv_state)
                .arg(&mut ssm_state);
            if vllm {
                b.arg(&mut y_d);
            } else {
                b.arg(&mut y);
            }
            b.arg(&mut err);
            // SAFETY: arguments match the kernel (mamba_decode's `y`, mamba_decode_vllm's
            // `y_d`); buffers are sized for Tp tokens, Dp decode rows and the case's state
            // slots (R, or R + 1 with the vLLM scratch slot).
            unsafe { b.launch(cfg((dp as u32, 1, 1), t, 0)) }?;
        }
        if fp > 0 && tokens > 0 {
            let mut b = s.launch_builder(func(c, 1)?);
            b.arg(&c.meta)
                .arg(&dp)
                .arg(&fp)
                .arg(&tokens)
                .arg(&xbc)
                .arg(&conv_w)
                .arg(&conv_b)
                .arg(&conv_state)
                .arg(&mut act)
                .arg(&mut err);
            // SAFETY: as above.
            unsafe { b.launch(cfg((tokens as u32, 1, 1), t, 0)) }?;

            let mut b = s.launch_builder(func(c, 2)?);
            b.arg(&c.meta)
                .arg(&dp)
                .arg(&fp)
                .arg(&tokens)
                .arg(&xbc)
                .arg(&mut conv_state)
                .arg(&mut err);
            // SAFETY: as above; launched after the conv, which read the old conv states.
            unsafe { b.launch(cfg((fp as u32, 1, 1), t, 0)) }?;

            let mut b = s.launch_builder(func(c, 3)?);
            b.arg(&c.meta)
                .arg(&dp)
                .arg(&fp)
                .arg(&tokens)
                .arg(&nchunks)
                .arg(&act)
                .arg(&dt)
                .arg(&a)
                .arg(&mut acum)
                .arg(&mut chunk_states)
                .arg(&mut chunk_decay)
                .arg(&mut err);
            // SAFETY: as above; chunk buffers hold C chunks.
            unsafe { b.launch(cfg((nchunks as u32, nh as u32, 1), t, 0)) }?;

            let mut b = s.launch_builder(func(c, 4)?);
            b.arg(&c.meta)
                .arg(&fp)
                .arg(&nchunks)
                .arg(&chunk_states)
                .arg(&chunk_decay)
                .arg(&mut chunk_init)
                .arg(&mut ssm_state)
                .arg(&mut err);
            // SAFETY: as above.
            unsafe { b.launch(cfg((fp as u32, nh as u32, 1), t, 0)) }?;

            let mut b = s.launch_builder(func(c, 5)?);
            b.arg(&c.meta)
                .arg(&dp)
                .arg(&fp)
                .arg(&tokens)
                .arg(&nchunks)
                .arg(&act)
                .arg(&dt)
                .arg(&dskip)
                .arg(&acum)
                .arg(&chunk_init)
                .arg(&mut y)
                .arg(&mut err);
            // SAFETY: as above.
            unsafe { b.launch(cfg((nchunks as u32, nh as u32, 1), t, 0)) }?;
        }
        s.synchronize()?;
        let mut y = gpu.download(&y, padded_tokens * xd)?;
        let mut kernel_errors = gpu.download(&err, 1)?.first().copied().unwrap_or(-1) as u32;
        if vllm {
            let y_d = gpu.download(&y_d, dp_rows * xd)?;
            kernel_errors +=
                mamba::merge_decode_outputs(&mut y, &y_d, info.real.decode as usize, xd);
        }
        Ok(MambaRun {
            states: States {
                conv: gpu.download(&conv_state, case.states.conv.len())?,
                ssm: gpu.download(&ssm_state, case.states.ssm.len())?,
            },
            y,
            kernel_errors,
        })
    }
}
