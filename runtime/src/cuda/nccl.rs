//! Expert-parallel shape agreement over NCCL (cargo feature `nccl`): each rank writes its
//! step's token count and prefill flag into a two-element device buffer, one
//! `ncclAllReduce(MAX)` reduces them over the group, and the result is copied back to the
//! host — Megatron-LM's `adjust_batch_dims_for_expert_parallelism`, including its host
//! round trip.
//!
//! The round trip is not avoidable here: the host picks the CUDA graph a step replays (it
//! launches the graph, and the fill's staging header carries the padded shape), so the
//! agreed shape must reach the host before the step is built. An engine whose ranks share
//! a host, or that has a CPU-side communicator, should agree on the host instead
//! ([`crate::agree::InProcessRank`], or its own [`ShapeAgreement`]); this implementation
//! is for engines whose only link between ranks is NCCL, and to measure what the round
//! trip costs (`tests/ep_nccl.rs`, `BENCHMARKS.md`).
//!
//! NCCL is loaded at run time, like the rest of CUDA: [`nccl_present`] checks for the
//! library before the first call (cudarc panics at the first call when it is missing) and
//! every constructor returns [`AgreeError::NcclUnavailable`] instead. cudarc looks for
//! `libnccl.so` (and a few versioned names, not `libnccl.so.2`): where only `libnccl.so.2`
//! is installed, a `libnccl.so` link to it on `LD_LIBRARY_PATH` makes it loadable (the
//! staged `.gpu/run-all` creates one). Only functions NCCL has had since 2.18 are called
//! (`ncclGetUniqueId`, `ncclCommInitRank`, `ncclAllReduce`, `ncclCommAbort`,
//! `ncclGetVersion`).

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DriverError};
use cudarc::nccl::result::NcclError;
use cudarc::nccl::{Comm, Id, ReduceOp};

use crate::agree::{AgreeError, AgreedShape, ShapeAgreement};
use crate::codegen::BatchDims;

fn nccl(what: &'static str) -> impl Fn(NcclError) -> AgreeError {
    move |e| AgreeError::Nccl {
        what,
        code: format!("{:?}", e.0),
    }
}

fn cuda(what: &'static str) -> impl Fn(DriverError) -> AgreeError {
    move |e| AgreeError::Cuda {
        what,
        why: e.to_string(),
    }
}

/// Whether the CUDA driver library and NCCL can be loaded, without calling either.
///
/// # Errors
///
/// [`AgreeError::NcclUnavailable`] naming the missing library.
pub fn nccl_present() -> Result<(), AgreeError> {
    // SAFETY: `is_culib_present` only tries to dlopen the library under its usual names
    // and closes it again; it calls no CUDA function.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(AgreeError::NcclUnavailable(
            "the NVIDIA driver library (libcuda.so) was not found".to_owned(),
        ));
    }
    // SAFETY: as above, for libnccl; no NCCL function is called.
    if !unsafe { cudarc::nccl::sys::is_culib_present() } {
        return Err(AgreeError::NcclUnavailable(
            "the NCCL library was not found under the names cudarc loads (libnccl.so, \
             libnccl.so.<CUDA major>, ...); where only libnccl.so.2 is installed, put a \
             libnccl.so link to it on LD_LIBRARY_PATH"
                .to_owned(),
        ));
    }
    Ok(())
}

/// The loaded NCCL's version `(major, minor, patch)`.
///
/// # Errors
///
/// [`AgreeError::NcclUnavailable`] without NCCL; [`AgreeError::Nccl`] if the call fails.
pub fn nccl_version() -> Result<(i32, i32, i32), AgreeError> {
    nccl_present()?;
    let code = cudarc::nccl::result::get_nccl_version().map_err(nccl("ncclGetVersion"))?;
    // Since NCCL 2.9 the code is major·10000 + minor·100 + patch.
    Ok((code / 10_000, code / 100 % 100, code % 100))
}

/// `(rank, ranks)` as `u32`s, if `rank < ranks <= i32::MAX` (NCCL counts ranks in `int`).
fn group_size(rank: usize, ranks: usize) -> Result<(u32, u32), AgreeError> {
    let limit = i32::MAX.unsigned_abs();
    match (u32::try_from(rank), u32::try_from(ranks)) {
        (Ok(r), Ok(n)) if n <= limit && r < n => Ok((r, n)),
        _ => Err(AgreeError::GroupSize { ranks, limit }),
    }
}

/// The identity of an NCCL group: rank 0 creates it ([`GroupId::new`]) and hands its bytes
/// to every other rank (over whatever channel the engine has), which rebuild it with
/// [`GroupId::from_bytes`].
#[derive(Debug, Clone, Copy)]
pub struct GroupId(Id);

impl GroupId {
    /// A new group identity (`ncclGetUniqueId`).
    ///
    /// # Errors
    ///
    /// [`AgreeError::NcclUnavailable`] without NCCL; [`AgreeError::Nccl`] if the call
    /// fails.
    pub fn new() -> Result<Self, AgreeError> {
        nccl_present()?;
        Ok(Self(Id::new().map_err(nccl("ncclGetUniqueId"))?))
    }

    /// The identity as bytes, to send to the other ranks.
    pub fn to_bytes(&self) -> [u8; 128] {
        self.0.internal().map(|c| c.to_ne_bytes()[0])
    }

    /// The identity another rank created, from its bytes.
    pub fn from_bytes(bytes: [u8; 128]) -> Self {
        Self(Id::uninit(
            bytes.map(|b| ::core::ffi::c_char::from_ne_bytes([b])),
        ))
    }
}

/// One rank of an expert-parallel group whose agreement is an NCCL all-reduce (see the
/// [module docs](self)). Not `Send` (the communicator is a raw NCCL handle): create it on
/// the thread that uses it.
#[derive(Debug)]
pub struct NcclAgreement {
    comm: Comm,
    buffer: CudaSlice<u32>,
    stream: Arc<CudaStream>,
    rank: u32,
    ranks: u32,
}

impl NcclAgreement {
    /// Joins group `id` as `rank` of `ranks` on device `ordinal`, with a stream of its own
    /// (so waiting for the agreement does not wait for the fills on the backend's stream).
    /// `ncclCommInitRank` blocks until every rank has joined: with ranks in one process,
    /// call it from one thread per rank.
    ///
    /// # Errors
    ///
    /// [`AgreeError::GroupSize`] unless `rank < ranks <= i32::MAX`;
    /// [`AgreeError::NcclUnavailable`] without the driver or NCCL; [`AgreeError::Cuda`] /
    /// [`AgreeError::Nccl`] when opening the device or the communicator fails.
    pub fn join(
        ordinal: usize,
        rank: usize,
        ranks: usize,
        id: &GroupId,
    ) -> Result<Self, AgreeError> {
        group_size(rank, ranks)?;
        nccl_present()?;
        let ctx = CudaContext::new(ordinal).map_err(cuda("open the CUDA device"))?;
        let stream = ctx.new_stream().map_err(cuda("create a stream"))?;
        Self::with_stream(stream, rank, ranks, id)
    }

    /// [`join`](Self::join) on a given stream (for example the CUDA backend's own, so the
    /// all-reduce is ordered before the step's fill on the device).
    ///
    /// # Errors
    ///
    /// As for [`join`](Self::join).
    pub fn with_stream(
        stream: Arc<CudaStream>,
        rank: usize,
        ranks: usize,
        id: &GroupId,
    ) -> Result<Self, AgreeError> {
        let (r, n) = group_size(rank, ranks)?;
        nccl_present()?;
        let buffer = stream
            .alloc_zeros::<u32>(2)
            .map_err(cuda("allocate the agreement buffer"))?;
        // `rank < ranks <= i32::MAX`: cudarc's conversions to `int` cannot fail.
        let comm = Comm::from_rank(Arc::clone(&stream), rank, ranks, id.0)
            .map_err(nccl("ncclCommInitRank"))?;
        Ok(Self {
            comm,
            buffer,
            stream,
            rank: r,
            ranks: n,
        })
    }

    /// A group of one rank on device `ordinal` (what the GPU tests use on one device).
    ///
    /// # Errors
    ///
    /// As for [`join`](Self::join).
    pub fn single(ordinal: usize) -> Result<Self, AgreeError> {
        let id = GroupId::new()?;
        Self::join(ordinal, 0, 1, &id)
    }

    /// This rank.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Ranks in the group.
    pub fn ranks(&self) -> u32 {
        self.ranks
    }

    /// The stream the all-reduce and its copies run on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The host-device round trip of [`agree`](ShapeAgreement::agree) without the
    /// all-reduce: the two copies and the synchronize. For measurements (what the
    /// all-reduce adds); it changes nothing the group sees.
    ///
    /// # Errors
    ///
    /// [`AgreeError::Cuda`] when a copy or the synchronize fails.
    pub fn round_trip(&mut self) -> Result<(), AgreeError> {
        let send = [0u32; 2];
        let mut got = [0u32; 2];
        self.stream
            .memcpy_htod(&send, &mut self.buffer)
            .map_err(cuda("copy to the device"))?;
        self.stream
            .memcpy_dtoh(&self.buffer, &mut got)
            .map_err(cuda("copy to the host"))?;
        self.stream.synchronize().map_err(cuda("synchronize"))
    }
}

impl ShapeAgreement for NcclAgreement {
    /// Copies `[tokens, has prefill]` to the device, all-reduces it with MAX, copies it
    /// back and waits for the stream: one host-device round trip per step.
    fn agree(&mut self, local: BatchDims) -> Result<AgreedShape, AgreeError> {
        let mine = AgreedShape::solo(local);
        let send = [mine.max_tokens, u32::from(mine.any_prefill)];
        self.stream
            .memcpy_htod(&send, &mut self.buffer)
            .map_err(cuda("copy the local shape to the device"))?;
        self.comm
            .all_reduce_in_place(&mut self.buffer, &ReduceOp::Max)
            .map_err(nccl("ncclAllReduce"))?;
        let mut got = [0u32; 2];
        self.stream
            .memcpy_dtoh(&self.buffer, &mut got)
            .map_err(cuda("copy the agreed shape to the host"))?;
        self.stream
            .synchronize()
            .map_err(cuda("wait for the all-reduce"))?;
        let [max_tokens, any_prefill] = got;
        Ok(AgreedShape {
            ranks: self.ranks,
            max_tokens,
            any_prefill: any_prefill != 0,
        })
    }
}
