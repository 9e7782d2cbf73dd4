//! NVRTC compilation of a layout's fill kernels, with a PTX cache in memory (per process)
//! and on disk.
//!
//! The cache key is a 128-bit hash of the CUDA source, the target architecture, the NVRTC
//! version and the compile options; the disk entry starts with a line naming the key, so a
//! stale or foreign file is recompiled rather than trusted.
//!
//! Disk cache directory, first that applies: [`CompileOptions::cache_dir`], the
//! `ATTENTION_LAYOUT_CACHE_DIR` environment variable, `$XDG_CACHE_HOME/attention-layout/ptx`,
//! `$HOME/.cache/attention-layout/ptx`. `ATTENTION_LAYOUT_CACHE_DIR=off` disables it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use cudarc::nvrtc;

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

/// NVRTC's version.
pub fn nvrtc_version() -> Result<(i32, i32), BackendError> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the caller checked that libnvrtc is present (`super::probe`); the pointers
    // are valid for the call.
    unsafe { nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| BackendError::Cuda(format!("nvrtcVersion: {e}")))?;
    Ok((major, minor))
}

/// The architecture to compile for: the device's own when NVRTC supports it, else the
/// newest NVRTC supports below it (the driver JIT-compiles PTX forward).
pub fn target_arch(major: i32, minor: i32) -> Result<String, BackendError> {
    let want = major * 10 + minor;
    let mut n = 0;
    // SAFETY: libnvrtc is present (see `nvrtc_version`); `n` is valid for the call.
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

/// 128-bit FNV-1a (two 64-bit lanes with different offset bases) over `parts`, each
/// followed by a zero byte.
fn key(parts: &[&[u8]]) -> u128 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let (mut a, mut b) = (0xcbf2_9ce4_8422_2325_u64, 0x6c62_272e_07bb_0142_u64);
    for part in parts {
        for &byte in part.iter().chain(std::iter::once(&0u8)) {
            a = (a ^ u64::from(byte)).wrapping_mul(PRIME);
            b = (b ^ u64::from(byte.rotate_left(3))).wrapping_mul(PRIME);
        }
    }
    (u128::from(a) << 64) | u128::from(b)
}

fn memory_cache() -> &'static Mutex<HashMap<u128, Arc<str>>> {
    static CACHE: OnceLock<Mutex<HashMap<u128, Arc<str>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Compiles `source` for `arch` (or finds it in a cache). The caller has checked that
/// libnvrtc is present.
pub fn compile(
    source: &str,
    arch: &str,
    options: &CompileOptions,
) -> Result<(Arc<str>, CompileReport), BackendError> {
    let t0 = Instant::now();
    let (major, minor) = nvrtc_version()?;
    let nvrtc_v = format!("{major}.{minor}");
    let mut flags = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_owned(),
    ];
    if std::env::var_os(LINEINFO_ENV).is_some_and(|v| v == "1") {
        flags.push("--generate-line-info".to_owned());
    }
    let k = key(&[
        b"attention-layout ptx v1",
        arch.as_bytes(),
        nvrtc_v.as_bytes(),
        flags.join(" ").as_bytes(),
        source.as_bytes(),
    ]);
    let header = format!(
        "// attention-layout ptx cache: key={k:032x} arch={arch} nvrtc={nvrtc_v} source_bytes={}\n",
        source.len()
    );
    let dir = cache_dir(options);
    let file = dir.as_ref().map(|d| d.join(format!("{k:032x}.ptx")));
    let report = |origin, ptx: &str, t0: Instant| CompileReport {
        origin,
        seconds: t0.elapsed().as_secs_f64(),
        arch: arch.to_owned(),
        nvrtc: nvrtc_v.clone(),
        ptx_bytes: ptx.len(),
        cache_file: file.clone(),
    };

    if !options.force_compile {
        let found = if options.skip_memory_cache {
            None
        } else {
            memory_cache()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&k)
                .cloned()
        };
        if let Some(ptx) = found {
            let r = report(PtxOrigin::Memory, &ptx, t0);
            return Ok((ptx, r));
        }
        if let Some(ptx) = file.as_deref().and_then(|f| read_cached(f, &header)) {
            let ptx: Arc<str> = Arc::from(ptx);
            memory_cache()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(k, ptx.clone());
            let r = report(PtxOrigin::Disk, &ptx, t0);
            return Ok((ptx, r));
        }
    }

    let opts = nvrtc::CompileOptions {
        options: flags,
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
    let ptx: Arc<str> = Arc::from(text);
    if let Some(f) = &file {
        // A cache that cannot be written only costs the next process a compile.
        let _ = write_cached(f, &header, &ptx);
    }
    memory_cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(k, ptx.clone());
    let r = report(PtxOrigin::Nvrtc, &ptx, t0);
    Ok((ptx, r))
}

fn read_cached(file: &Path, header: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let ptx = text.strip_prefix(header)?;
    (!ptx.is_empty() && !ptx.contains('\0')).then(|| ptx.to_owned())
}

fn write_cached(file: &Path, header: &str, ptx: &str) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Write then rename: a concurrent reader sees the old file or the whole new one.
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file.file_name().and_then(|n| n.to_str()).unwrap_or("ptx"),
        std::process::id()
    ));
    std::fs::write(&tmp, format!("{header}{ptx}"))?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "Test code: a panic is a failed test.")]

    use super::*;

    #[test]
    fn keys_depend_on_every_part() {
        let base = key(&[b"src", b"sm_90", b"13.0"]);
        assert_ne!(base, key(&[b"src", b"sm_90", b"13.1"]));
        assert_ne!(base, key(&[b"src", b"sm_89", b"13.0"]));
        assert_ne!(base, key(&[b"src ", b"sm_90", b"13.0"]));
        // Part boundaries count: ("ab", "c") differs from ("a", "bc").
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
        assert_eq!(base, key(&[b"src", b"sm_90", b"13.0"]));
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
    fn cached_files_are_checked_against_their_key_line() {
        let dir = std::env::temp_dir().join(format!("al-ptx-cache-test-{}", std::process::id()));
        let f = dir.join("k.ptx");
        write_cached(&f, "// key=1\n", ".version 8.0\n").unwrap();
        assert_eq!(
            read_cached(&f, "// key=1\n").as_deref(),
            Some(".version 8.0\n")
        );
        assert_eq!(read_cached(&f, "// key=2\n"), None);
        std::fs::write(&f, "// key=1\n.ver\0sion").unwrap();
        assert_eq!(read_cached(&f, "// key=1\n"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
