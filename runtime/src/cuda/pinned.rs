//! [`PinnedBuffer`]: page-locked host memory that the device reads or writes
//! asynchronously, with the one safety argument every such buffer of the backend needs.

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

use cudarc::driver::{CudaEvent, CudaStream, PinnedHostSlice};

use crate::backend::BackendError;

fn cuda(what: &str) -> impl Fn(cudarc::driver::DriverError) -> BackendError + '_ {
    move |e| BackendError::Cuda(format!("{what}: {e}"))
}

/// A stream and how many times [`synchronize`](Self::synchronize) waited for all of it:
/// what lets a [`PinnedBuffer`] on the stream skip its event query when the stream was
/// synchronized after its last device access.
pub(super) struct TrackedStream {
    stream: Arc<CudaStream>,
    /// Successful synchronizations through `synchronize` (only it changes the count, and
    /// only after the driver said every earlier piece of work completed).
    syncs: Cell<u64>,
}

impl TrackedStream {
    pub(super) fn new(stream: Arc<CudaStream>) -> Rc<Self> {
        Rc::new(Self {
            stream,
            syncs: Cell::new(0),
        })
    }

    /// The stream.
    pub(super) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits until every piece of work enqueued on the stream so far has completed.
    pub(super) fn synchronize(&self) -> Result<(), cudarc::driver::DriverError> {
        self.stream.synchronize()?;
        self.syncs.set(self.syncs.get().wrapping_add(1));
        Ok(())
    }
}

/// Page-locked host memory shared with asynchronous copies on one stream.
///
/// The safety argument of every pinned buffer lives here. The host sees the bytes only when
/// no device access is pending: device accesses are enqueued only inside
/// [`device_access`](Self::device_access), which records an event on the buffer's stream
/// after them, and [`bytes`](Self::bytes), [`bytes_mut`](Self::bytes_mut) and dropping
/// the buffer wait for that event first (for the whole stream when the event could not be
/// recorded). While the host holds the bytes no device access can be enqueued
/// (`device_access` takes `&mut self`). A wait is over at once when no access was enqueued
/// since the last one, or when the stream was synchronized ([`TrackedStream::synchronize`])
/// after the last access was enqueued: the driver then said that access completed. The
/// memory is zeroed when allocated, so it is always initialized.
///
/// Not `Send`: it holds a raw pointer (the backend is single-threaded).
pub(super) struct PinnedBuffer {
    ptr: *mut u8,
    len: usize,
    stream: Arc<CudaStream>,
    tracked: Rc<TrackedStream>,
    /// `tracked`'s synchronization count when the last device access not yet waited for
    /// was enqueued (`None`: every access so far has been waited for).
    pending_since: Cell<Option<u64>>,
    /// Recorded on `stream` after the last device access enqueued through
    /// `device_access`.
    done: CudaEvent,
    /// A device access was enqueued but `done` could not be recorded after it: the host
    /// must wait for the whole stream.
    unfenced: Cell<bool>,
    /// Freed in `Drop`, only once nothing on the device can use it any more.
    memory: ManuallyDrop<PinnedHostSlice<u8>>,
}

impl PinnedBuffer {
    /// `len` zeroed bytes (at least 1) of page-locked memory in `stream`'s context, used
    /// by device accesses on `stream`.
    pub(super) fn new(tracked: &Rc<TrackedStream>, len: usize) -> Result<Self, BackendError> {
        let stream = tracked.stream();
        let len = len.max(1);
        // cudarc asserts (panics) on allocations of `isize::MAX` bytes or more.
        if isize::try_from(len).is_err() {
            return Err(BackendError::Cuda(format!(
                "{len} bytes of pinned memory exceed the address space"
            )));
        }
        let ctx = stream.context();
        // SAFETY: cudarc's one condition is that the memory starts uninitialized: it is
        // zeroed below before anything reads it. Flags 0: cached memory (the host fill
        // reads its buffer back), not mapped into the device's address space.
        let mut memory = unsafe { ctx.alloc_pinned_with_flags::<u8>(len, 0) }
            .map_err(cuda("allocate pinned memory"))?;
        let ptr = memory.as_mut_ptr().map_err(cuda("pinned memory"))?;
        // SAFETY: `ptr` is the start of the `len` bytes just allocated, aligned for `u8`,
        // referenced by nothing else yet, and no device access exists yet.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        let done = ctx.new_event(None).map_err(cuda("create an event"))?;
        Ok(Self {
            ptr,
            len,
            stream: stream.clone(),
            tracked: tracked.clone(),
            pending_since: Cell::new(None),
            done,
            unfenced: Cell::new(false),
            memory: ManuallyDrop::new(memory),
        })
    }

    /// The stream its device accesses use.
    pub(super) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The address of the first byte, for recording into a CUDA graph only: every launch
    /// of such a graph must happen inside [`device_access`](Self::device_access) (the
    /// backend points a graph's copy at the buffer in use before each launch).
    pub(super) fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Its length in bytes.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Waits until no device access of the buffer is pending.
    fn wait(&self) -> Result<(), BackendError> {
        let waited = self.wait_pending();
        if waited.is_ok() {
            self.pending_since.set(None);
        }
        waited
    }

    fn wait_pending(&self) -> Result<(), BackendError> {
        let synchronized_since = |c: u64| self.tracked.syncs.get() != c;
        if self.unfenced.get() {
            self.stream
                .synchronize()
                .map_err(cuda("wait for pinned memory"))?;
            self.unfenced.set(false);
            Ok(())
        } else if self.pending_since.get().is_none_or(synchronized_since) {
            // Nothing enqueued since the last wait, or the whole stream was waited for
            // since the last access was enqueued (`TrackedStream::synchronize`).
            Ok(())
        } else if self.done.is_complete() {
            // The usual case of a buffer two steps old: a query is cheaper than a
            // synchronize (which also binds the context first). A failed query reads as
            // not complete, and the synchronize below reports the error.
            Ok(())
        } else {
            self.done
                .synchronize()
                .map_err(cuda("wait for pinned memory"))
        }
    }

    /// The bytes, once every device access enqueued so far has completed.
    pub(super) fn bytes(&self) -> Result<&[u8], BackendError> {
        self.wait()?;
        // SAFETY: `ptr` addresses `len` initialized bytes (zeroed at allocation) owned by
        // `memory`, which lives as long as `self`; no device access is pending (waited
        // above), and none can be enqueued while the returned borrow of `self` lives.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
    }

    /// The bytes for writing, once every device access enqueued so far has completed.
    pub(super) fn bytes_mut(&mut self) -> Result<&mut [u8], BackendError> {
        self.wait()?;
        // SAFETY: as in `bytes`; the borrow is unique because `self` is borrowed mutably.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) })
    }

    /// Enqueues device accesses (reads or writes) of `range`, then records the event host
    /// accesses wait for. `enqueue` gets the buffer's stream and the address of
    /// `range.start`, valid for `range.len()` bytes until the event completes: it must
    /// enqueue its accesses on that stream and within that range (the condition for the
    /// unsafe copies it makes). The event is recorded even when `enqueue` fails, since
    /// part of its work may be enqueued.
    pub(super) fn device_access<R>(
        &mut self,
        range: Range<usize>,
        enqueue: impl FnOnce(&Arc<CudaStream>, *mut u8, usize) -> Result<R, BackendError>,
    ) -> Result<R, BackendError> {
        if range.start > range.end || range.end > self.len {
            return Err(BackendError::Cuda(format!(
                "device access of bytes {range:?} of a {}-byte pinned buffer",
                self.len
            )));
        }
        let start = self.ptr.wrapping_add(range.start);
        self.pending_since.set(Some(self.tracked.syncs.get()));
        self.unfenced.set(true);
        let enqueued = enqueue(&self.stream, start, range.end - range.start);
        let recorded = self.done.record(&self.stream);
        if recorded.is_ok() {
            self.unfenced.set(false);
        }
        let value = enqueued?;
        recorded.map_err(cuda("record a pinned-memory event"))?;
        Ok(value)
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        if self.wait().is_ok() {
            // SAFETY: `memory` is dropped here, once, and never used again; nothing on
            // the device uses it any more (waited above).
            unsafe { ManuallyDrop::drop(&mut self.memory) };
        }
        // Otherwise a copy may still use the memory: it is leaked rather than freed under
        // the device (the context is broken anyway).
    }
}
