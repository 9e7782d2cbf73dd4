//! NVRTC compilation of a layout's fill kernels, with a PTX cache in memory (per process)
//! and on disk.
//!
//! The cache key is SHA-256 over the cache format, the CUDA source, the target
//! architecture, the NVRTC version and the compile options (each part length-prefixed).
//! A disk entry is named by its key and records everything the key covers: a first line
//! with the key, architecture, NVRTC version, options and source length, then the source
//! itself, then a line with the PTX's length and SHA-256, then the PTX. An entry is used
//! only when all of it matches — the stored source byte for byte, so even a key collision
//! cannot load another layout's kernels — and its PTX has the recorded length and digest;
//! anything else is recompiled and rewritten ([`CompileReport::rejected`] says why).
//!
//! Disk cache directory, first that applies: [`CompileOptions::cache_dir`], the
//! `ATTENTION_LAYOUT_CACHE_DIR` environment variable, `$XDG_CACHE_HOME/attention-layout/ptx`,
//! `$HOME/.cache/attention-layout/ptx`. `ATTENTION_LAYOUT_CACHE_DIR=off` disables it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use cudarc::nvrtc;
use sha2::{Digest, Sha256};

use crate::backend::BackendError;

/// The environment variable naming the disk cache directory (`off` disables the cache).
pub const CACHE_DIR_ENV: &str = "ATTENTION_LAYOUT_CACHE_DIR";
/// The environment variable that adds line information to the kernels (`1`), for
/// `compute-sanitizer` reports with source lines.
pub const LINEINFO_ENV: &str = "ATTENTION_LAYOUT_LINEINFO";

/// Where a module's PTX came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtxOrigin {
    /// Compiled by NVRTC now.
    Nvrtc,
    /// Read from the disk cache.
    Disk,
    /// Found in this process's memory cache.
    Memory,
}

/// Why a disk cache entry was found but not used (the kernels were compiled again and the
/// entry rewritten).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectedEntry {
    /// The file could not be read as text.
    Unreadable,
    /// Its first line names other inputs (format, key, architecture, NVRTC version,
    /// options or source length).
    Inputs,
    /// The stored source differs from the source being compiled: a key collision or a
    /// tampered entry.
    Source,
    /// The PTX does not have the recorded length and SHA-256: a truncated or tampered
    /// entry.
    Ptx,
}

/// How one compile went.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileReport {
    /// Where the PTX came from.
    pub origin: PtxOrigin,
    /// Seconds spent (compiling, or reading the cache).
    pub seconds: f64,
    /// The target architecture (`sm_90`).
    pub arch: String,
    /// NVRTC's version, `major.minor`.
    pub nvrtc: String,
    /// Bytes of PTX.
    pub ptx_bytes: usize,
    /// The disk cache file, when the disk cache is on.
    pub cache_file: Option<PathBuf>,
    /// A disk cache entry that was there but not used, and why.
    pub rejected: Option<RejectedEntry>,
}

/// Compile settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompileOptions {
    /// The disk cache directory (default: from the environment, see the module docs).
    pub cache_dir: Option<PathBuf>,
    /// Skip both caches and compile (the cold-compile benchmark).
    pub force_compile: bool,
    /// Skip the memory cache (the disk-cache benchmark).
    pub skip_memory_cache: bool,
}

/// Fails unless libnvrtc can be loaded (cudarc panics at the first call otherwise).
fn nvrtc_present() -> Result<(), BackendError> {
    // SAFETY: `is_culib_present` only tries to dlopen the library under its usual names
    // and closes it again; it calls no NVRTC function.
    if unsafe { nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(BackendError::CudaUnavailable(
            "NVRTC (libnvrtc.so) was not found; the CUDA toolkit's runtime compiler is needed"
                .to_owned(),
        ))
    }
}

/// NVRTC's version.
pub fn nvrtc_version() -> Result<(i32, i32), BackendError> {
    nvrtc_present()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: libnvrtc is present (checked above); the pointers are valid for the call.
    unsafe { nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| BackendError::Cuda(format!("nvrtcVersion: {e}")))?;
    Ok((major, minor))
}

/// The architecture to compile for: the device's own when NVRTC supports it, else the
/// newest NVRTC supports below it (the driver JIT-compiles PTX forward).
pub fn target_arch(major: i32, minor: i32) -> Result<String, BackendError> {
    nvrtc_present()?;
    let want = major * 10 + minor;
    let mut n = 0;
    // SAFETY: libnvrtc is present (checked above); `n` is valid for the call.
    let listed = unsafe { nvrtc::sys::nvrtcGetNumSupportedArchs(&mut n) }.result();
    let mut archs = vec![0; usize::try_from(n).unwrap_or(0)];
    if listed.is_ok() && !archs.is_empty() {
        // SAFETY: `archs` has room for the `n` entries NVRTC reported.
        let _ = unsafe { nvrtc::sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }.result();
    }
    let pick = archs.iter().copied().filter(|&a| a <= want).max();
    match pick {
        Some(a) => Ok(format!("sm_{a}")),
        None if archs.is_empty() => Ok(format!("sm_{want}")),
        None => Err(BackendError::Unsupported(format!(
            "NVRTC supports no architecture at or below the device's sm_{want} (it supports {archs:?})"
        ))),
    }
}

/// The disk cache directory in effect, if any.
pub fn cache_dir(options: &CompileOptions) -> Option<PathBuf> {
    if let Some(d) = &options.cache_dir {
        return Some(d.clone());
    }
    match std::env::var_os(CACHE_DIR_ENV) {
        Some(v) if v == "off" => return None,
        Some(v) if !v.is_empty() => return Some(PathBuf::from(v)),
        _ => {}
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("attention-layout").join("ptx"));
    }
    std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| {
        PathBuf::from(h)
            .join(".cache")
            .join("attention-layout")
            .join("ptx")
    })
}

/// The cache format, part of every key and of every entry's first line.
const FORMAT: &str = "attention-layout ptx cache v2";

/// A SHA-256 digest.
type Key = [u8; 32];

/// Everything a compile's PTX depends on.
struct Inputs<'a> {
    source: &'a str,
    arch: &'a str,
    nvrtc: &'a str,
    options: &'a [String],
}

impl Inputs<'_> {
    /// SHA-256 over the format and every input, each part prefixed with its length (so
    /// no two different inputs hash the same bytes).
    fn key(&self) -> Key {
        let mut h = Sha256::new();
        let mut part = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        part(FORMAT.as_bytes());
        part(self.arch.as_bytes());
        part(self.nvrtc.as_bytes());
        part(&(self.options.len() as u64).to_le_bytes());
        for o in self.options {
            part(o.as_bytes());
        }
        part(self.source.as_bytes());
        h.finalize().into()
    }

    /// The first line of an entry: the key and every input but the source, which follows
    /// verbatim.
    fn first_line(&self, key: &Key) -> String {
        format!(
            "// {FORMAT} key={} arch={} nvrtc={} source_bytes={} options={}\n",
            hex(key),
            self.arch,
            self.nvrtc,
            self.source.len(),
            self.options.join(" ")
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(bytes: &[u8]) -> Key {
    Sha256::digest(bytes).into()
}

/// The line between the stored source and the PTX.
fn ptx_line(ptx: &str) -> String {
    format!(
        "// ptx bytes={} sha256={}\n",
        ptx.len(),
        hex(&sha256(ptx.as_bytes()))
    )
}

fn memory_cache() -> &'static Mutex<HashMap<Key, Arc<str>>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<str>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The compile flags for `arch` (`sm_XY`). NVRTC is asked for the virtual architecture
/// (`compute_XY`): PTX only. Given the real one it also generates the cubin, which this
/// crate does not use, and the driver generates the same SASS again when it loads the
/// PTX — on a machine that never compiled these kernels, each takes seconds to tens of
/// seconds per layout (BENCHMARKS.md, run 50).
fn flags(arch: &str) -> Vec<String> {
    let virtual_arch = arch
        .strip_prefix("sm_")
        .map_or_else(|| arch.to_owned(), |n| format!("compute_{n}"));
    let mut flags = vec![
        format!("--gpu-architecture={virtual_arch}"),
        "--std=c++17".to_owned(),
    ];
    if std::env::var_os(LINEINFO_ENV).is_some_and(|v| v == "1") {
        flags.push("--generate-line-info".to_owned());
    }
    flags
}

/// Compiles `source` for `arch` (or finds it in a cache). Fails with
/// [`BackendError::CudaUnavailable`] when libnvrtc cannot be loaded.
pub fn compile(
    source: &str,
    arch: &str,
    options: &CompileOptions,
) -> Result<(Arc<str>, CompileReport), BackendError> {
    let (major, minor) = nvrtc_version()?;
    let nvrtc_v = format!("{major}.{minor}");
    let flags = flags(arch);
    let inputs = Inputs {
        source,
        arch,
        nvrtc: &nvrtc_v,
        options: &flags,
    };
    cached(&inputs, options, || nvrtc_compile(source, &flags))
}

/// The caches around `compile_ptx`, which compiles `inputs` when no cache has them.
fn cached(
    inputs: &Inputs<'_>,
    options: &CompileOptions,
    compile_ptx: impl FnOnce() -> Result<String, BackendError>,
) -> Result<(Arc<str>, CompileReport), BackendError> {
    let t0 = Instant::now();
    let key = inputs.key();
    let dir = cache_dir(options);
    let file = dir.as_ref().map(|d| d.join(format!("{}.ptx", hex(&key))));
    let mut rejected = None;
    let report = |origin, ptx: &str, rejected| CompileReport {
        origin,
        seconds: t0.elapsed().as_secs_f64(),
        arch: inputs.arch.to_owned(),
        nvrtc: inputs.nvrtc.to_owned(),
        ptx_bytes: ptx.len(),
        cache_file: file.clone(),
        rejected,
    };

    if !options.force_compile {
        let found = if options.skip_memory_cache {
            None
        } else {
            memory_cache()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned()
        };
        if let Some(ptx) = found {
            let r = report(PtxOrigin::Memory, &ptx, None);
            return Ok((ptx, r));
        }
        match file.as_deref().map(|f| read_cached(f, inputs, &key)) {
            Some(Ok(ptx)) => {
                let ptx: Arc<str> = Arc::from(ptx);
                memory_cache()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, ptx.clone());
                let r = report(PtxOrigin::Disk, &ptx, None);
                return Ok((ptx, r));
            }
            Some(Err(why)) => rejected = why,
            None => {}
        }
    }

    let ptx: Arc<str> = Arc::from(compile_ptx()?);
    if let Some(f) = &file {
        // A cache that cannot be written only costs the next process a compile.
        let _ = write_cached(f, inputs, &key, &ptx);
    }
    memory_cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, ptx.clone());
    let r = report(PtxOrigin::Nvrtc, &ptx, rejected);
    Ok((ptx, r))
}

/// NVRTC itself.
fn nvrtc_compile(source: &str, flags: &[String]) -> Result<String, BackendError> {
    let opts = nvrtc::CompileOptions {
        options: flags.to_vec(),
        name: Some("attention_layout_fill.cu".to_owned()),
        ..Default::default()
    };
    let ptx = nvrtc::compile_ptx_with_opts(source, opts).map_err(|e| match e {
        nvrtc::CompileError::CompileError {
            nvrtc,
            options,
            log,
        } => BackendError::Compile {
            log: format!("{nvrtc}: {}", log.to_string_lossy()),
            options,
        },
        other => BackendError::Cuda(format!("NVRTC: {other}")),
    })?;
    let bytes = ptx
        .as_bytes()
        .ok_or_else(|| BackendError::Cuda("NVRTC returned no PTX image".to_owned()))?;
    let text = std::str::from_utf8(bytes)
        .map_err(|e| BackendError::Cuda(format!("NVRTC returned non-UTF-8 PTX: {e}")))?
        .trim_end_matches('\0');
    if text.contains('\0') {
        return Err(BackendError::Cuda(
            "NVRTC returned PTX with an interior NUL".to_owned(),
        ));
    }
    Ok(text.to_owned())
}

/// The PTX of a disk entry, if the entry is for exactly `inputs` and intact. `Err(None)`:
/// no entry; `Err(Some(why))`: an entry that must not be used.
fn read_cached(
    file: &Path,
    inputs: &Inputs<'_>,
    key: &Key,
) -> Result<String, Option<RejectedEntry>> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(None),
        Err(_) => return Err(Some(RejectedEntry::Unreadable)),
    };
    let text = String::from_utf8(bytes).map_err(|_| Some(RejectedEntry::Unreadable))?;
    let rest = text
        .strip_prefix(inputs.first_line(key).as_str())
        .ok_or(Some(RejectedEntry::Inputs))?;
    let rest = rest
        .strip_prefix(inputs.source)
        .ok_or(Some(RejectedEntry::Source))?;
    let (line, ptx) = rest.split_once('\n').ok_or(Some(RejectedEntry::Ptx))?;
    let intact = format!("{line}\n") == ptx_line(ptx) && !ptx.is_empty() && !ptx.contains('\0');
    if !intact {
        return Err(Some(RejectedEntry::Ptx));
    }
    Ok(ptx.to_owned())
}

fn write_cached(file: &Path, inputs: &Inputs<'_>, key: &Key, ptx: &str) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Write then rename: a concurrent reader sees the old file or the whole new one.
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file.file_name().and_then(|n| n.to_str()).unwrap_or("ptx"),
        std::process::id()
    ));
    let entry = [
        inputs.first_line(key).as_str(),
        inputs.source,
        &ptx_line(ptx),
        ptx,
    ]
    .concat();
    std::fs::write(&tmp, entry)?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::panic,
        reason = "Test code: a panic is a failed test."
    )]

    use std::cell::Cell;

    use super::*;

    #[test]
    fn nvrtc_is_asked_for_ptx_of_the_virtual_architecture() {
        let f = super::flags("sm_90");
        assert_eq!(f[0], "--gpu-architecture=compute_90");
        assert_eq!(super::flags("sm_100")[0], "--gpu-architecture=compute_100");
    }

    fn flags() -> Vec<String> {
        vec![
            "--gpu-architecture=sm_90".to_owned(),
            "--std=c++17".to_owned(),
        ]
    }

    fn inputs<'a>(source: &'a str, options: &'a [String]) -> Inputs<'a> {
        Inputs {
            source,
            arch: "sm_90",
            nvrtc: "13.0",
            options,
        }
    }

    /// A scratch cache directory, removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let d =
                std::env::temp_dir().join(format!("al-ptx-cache-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            Self(d)
        }
        fn options(&self) -> CompileOptions {
            CompileOptions {
                cache_dir: Some(self.0.clone()),
                skip_memory_cache: true,
                ..Default::default()
            }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `cached` with a stand-in for NVRTC that returns `ptx` and counts its calls.
    fn compile_with(
        i: &Inputs<'_>,
        options: &CompileOptions,
        ptx: &str,
        calls: &Cell<u32>,
    ) -> (Arc<str>, CompileReport) {
        cached(i, options, || {
            calls.set(calls.get() + 1);
            Ok(ptx.to_owned())
        })
        .unwrap()
    }

    #[test]
    fn keys_depend_on_every_part() {
        let f = flags();
        let base = inputs("src", &f);
        let k = base.key();
        assert_ne!(
            k,
            Inputs {
                nvrtc: "13.1",
                ..inputs("src", &f)
            }
            .key()
        );
        assert_ne!(
            k,
            Inputs {
                arch: "sm_89",
                ..inputs("src", &f)
            }
            .key()
        );
        assert_ne!(k, inputs("src ", &f).key());
        let lineinfo = [f.clone(), vec!["--generate-line-info".to_owned()]].concat();
        assert_ne!(k, inputs("src", &lineinfo).key());
        // Part boundaries count: options ("ab", "c") differ from ("a", "bc").
        let (ab_c, a_bc) = (
            ["ab".to_owned(), "c".to_owned()],
            ["a".to_owned(), "bc".to_owned()],
        );
        assert_ne!(inputs("s", &ab_c).key(), inputs("s", &a_bc).key());
        assert_eq!(k, inputs("src", &f).key());
        // SHA-256 itself (FIPS 180-2 test vector), so the key is the standard hash.
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_cache_directory_can_be_named_or_turned_off() {
        let named = CompileOptions {
            cache_dir: Some(PathBuf::from("/tmp/x")),
            ..Default::default()
        };
        assert_eq!(cache_dir(&named), Some(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn a_cache_entry_is_compiled_once_then_read_from_disk() {
        let dir = Dir::new("round-trip");
        let f = flags();
        let i = inputs("__global__ void k() {}", &f);
        let calls = Cell::new(0);
        let (ptx, r) = compile_with(&i, &dir.options(), ".version 8.0\n", &calls);
        assert_eq!(
            (r.origin, r.rejected, calls.get()),
            (PtxOrigin::Nvrtc, None, 1)
        );
        let file = r.cache_file.unwrap();
        assert_eq!(file, dir.0.join(format!("{}.ptx", hex(&i.key()))));
        let (again, r) = compile_with(&i, &dir.options(), "other", &calls);
        assert_eq!(
            (r.origin, r.rejected, calls.get()),
            (PtxOrigin::Disk, None, 1)
        );
        assert_eq!(again, ptx);
        // The entry holds the source it was compiled from.
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("__global__ void k() {}"), "{text}");
    }

    #[test]
    fn a_colliding_cache_entry_is_recompiled_not_loaded() {
        let dir = Dir::new("collision");
        let f = flags();
        let (a, b) = (
            inputs("kernels of layout A", &f),
            inputs("kernels of layout B", &f),
        );
        let calls = Cell::new(0);
        let (_, ra) = compile_with(&a, &dir.options(), "PTX of A", &calls);
        // A key collision: B's key names A's entry. Forged here by storing A's entry
        // under B's name with B's first line (the same key line B computes), so only the
        // stored source tells them apart.
        let b_file = dir.0.join(format!("{}.ptx", hex(&b.key())));
        let entry = std::fs::read_to_string(ra.cache_file.unwrap()).unwrap();
        let forged = entry.replacen(&a.first_line(&a.key()), &b.first_line(&b.key()), 1);
        assert_ne!(forged, entry);
        std::fs::write(&b_file, forged).unwrap();
        let (ptx, rb) = compile_with(&b, &dir.options(), "PTX of B", &calls);
        assert_eq!(&*ptx, "PTX of B");
        assert_eq!(
            (rb.origin, rb.rejected, calls.get()),
            (PtxOrigin::Nvrtc, Some(RejectedEntry::Source), 2)
        );
        // The entry was rewritten for B and is used from then on.
        let (ptx, rb) = compile_with(&b, &dir.options(), "unused", &calls);
        assert_eq!(
            (&*ptx, rb.origin, calls.get()),
            ("PTX of B", PtxOrigin::Disk, 2)
        );
    }

    #[test]
    fn a_tampered_or_truncated_ptx_is_recompiled_not_loaded() {
        let dir = Dir::new("tampered");
        let f = flags();
        let i = inputs("kernels", &f);
        let calls = Cell::new(0);
        let (_, r) = compile_with(&i, &dir.options(), ".entry al_fill", &calls);
        let file = r.cache_file.unwrap();
        let good = std::fs::read_to_string(&file).unwrap();
        let damaged = [
            // Same length, one byte changed.
            good.replacen(".entry al_fill", ".entry al_fill_x", 1),
            // Cut short.
            good.get(..good.len() - 3).unwrap().to_owned(),
            // Another architecture's entry under this name (first line differs).
            good.replacen("arch=sm_90", "arch=sm_80", 1),
            // Not text.
            String::new(),
        ];
        let want = [
            RejectedEntry::Ptx,
            RejectedEntry::Ptx,
            RejectedEntry::Inputs,
            RejectedEntry::Inputs,
        ];
        for (k, (bad, why)) in damaged.iter().zip(want).enumerate() {
            std::fs::write(&file, bad).unwrap();
            let (ptx, r) = compile_with(&i, &dir.options(), ".entry al_fill", &calls);
            assert_eq!(&*ptx, ".entry al_fill", "case {k}");
            assert_eq!(
                (r.origin, r.rejected),
                (PtxOrigin::Nvrtc, Some(why)),
                "case {k}"
            );
            assert_eq!(
                std::fs::read_to_string(&file).unwrap(),
                good,
                "case {k}: rewritten"
            );
        }
        std::fs::write(&file, [0xffu8, 0xfe, 0x00]).unwrap();
        let (_, r) = compile_with(&i, &dir.options(), ".entry al_fill", &calls);
        assert_eq!(r.rejected, Some(RejectedEntry::Unreadable));
        assert_eq!(calls.get(), 6);
    }
}
