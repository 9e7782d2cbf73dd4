//! Builds the emitted CUDA C with the host C++ compiler through `cuda_shim.h` and runs
//! staged steps through it, so the kernels' logic is tested on machines without a GPU.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use attention_layout::codegen::emit_cuda::{self, EmitOptions};
use attention_layout::devfill::{Staged, StagingBuilder, StagingError};
use attention_layout::fill::{self, FillState};
use attention_layout::{
    Dims, Field, Geometry, HostMetadata, MetadataView, RuntimeDims, StepInfo, StepInput,
};

const SHIM: &str = include_str!("cuda_shim.h");

/// Threads per block in the CPU build (any multiple of 32 works; fewer OS threads).
pub const THREADS: u32 = 32;

/// The C++ compiler that builds the emitted kernels for the CPU: `$CXX` if set, else the
/// first of `g++`, `clang++` and `c++` that runs. It needs C++20 with `<barrier>` and
/// `-pthread` (g++ 11 or newer; README, "Tests"). Panics, failing the test, when there is
/// none: these tests are the only check of the kernels' logic on a machine without a GPU,
/// so they must not pass without running.
pub fn compiler() -> String {
    let runs = |cxx: &str| {
        Command::new(cxx)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Ok(cxx) = std::env::var("CXX") {
        assert!(
            runs(&cxx),
            "CXX={cxx} does not run (`{cxx} --version` failed); the emitted CUDA C is compiled for the CPU with it"
        );
        return cxx;
    }
    ["g++", "clang++", "c++"]
        .into_iter()
        .find(|c| runs(c))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            panic!(
                "no C++ compiler found (tried g++, clang++, c++; set CXX): the emitted CUDA C is \
                 compiled for the CPU with a C++20 compiler that has <barrier> (g++ 11 or newer)"
            )
        })
}

/// A compiled CPU build of one layout's kernels.
pub struct Harness {
    pub exe: PathBuf,
    pub dir: PathBuf,
}

/// Compiles `geometry`'s kernels (with or without the parameter entry) into a harness
/// that replays a trace file. Entry [`FILL`] is the fill entry and, with the parameter
/// entry (a layout with buckets), entry [`PARAM`] the parameter entry (the image copied
/// into an `AlParamImage` by value, as a launch passes it).
pub fn build(cxx: &str, name: &str, geometry: &Geometry, param_entry: bool) -> Harness {
    build_with_threads(cxx, name, geometry, param_entry, THREADS)
}

/// [`build`] with `threads` threads per block (whole warps, at most 32 of them: the
/// kernels' own `static_assert` refuses any other count at compile time): more than one
/// warp runs the block-wide scans across warps and, on the test layouts' few rows, leaves
/// whole warps without a row, as the GPU's 512 threads do.
pub fn build_with_threads(
    cxx: &str,
    name: &str,
    geometry: &Geometry,
    param_entry: bool,
    threads: u32,
) -> Harness {
    let dir = std::env::temp_dir().join(format!(
        "attention-layout-shim-{}-{name}-{}-{threads}",
        std::process::id(),
        u8::from(param_entry)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cuda_shim.h"), SHIM).unwrap();
    let options = EmitOptions {
        param_entries: param_entry,
    };
    let source = emit_cuda::cuda_source_with(geometry, options);
    std::fs::write(dir.join("kernels.cu"), &source).unwrap();
    let mut entries = vec![emit_cuda::FILL_ENTRY.to_owned()];
    let mut adapters = String::new();
    if options.has_param_entry(geometry) {
        let param = emit_cuda::PARAM_ENTRY;
        adapters.push_str(&format!(
            "static void {param}_adapter(unsigned char* meta, const unsigned char* staging, int* resident) {{\n\
             \x20 AlParamImage image;\n\
             \x20 memcpy(image.bytes, staging, AL_PARAM_IMAGE_BYTES);\n\
             \x20 {param}(meta, image, resident);\n\
             }}\n"
        ));
        entries.push(format!("{param}_adapter"));
    }
    let main = format!(
        r#"#include "cuda_shim.h"
#include <cstring>
#define AL_THREADS {threads}u
#include "kernels.cu"
{adapters}
static const al_shim_entry ENTRIES[] = {{ {entries} }};
static bool read_u32(FILE* f, uint32_t* v) {{ return fread(v, 4, 1, f) == 1; }}
int main(int argc, char** argv) {{
  if (argc != 3) return 2;
  FILE* in = fopen(argv[1], "rb");
  FILE* out = fopen(argv[2], "wb");
  if (!in || !out) return 3;
  uint32_t total = 0, resident_elems = 0;
  if (!read_u32(in, &total) || !read_u32(in, &resident_elems)) return 4;
  std::vector<uint64_t> meta(total / 8 + 1);
  if (fread(meta.data(), 1, total, in) != total) return 5;
  std::vector<int> resident(resident_elems, -1);
  std::vector<uint64_t> staging;
  al_shim_pool pool(AL_THREADS);
  uint32_t entry = 0;
  while (read_u32(in, &entry)) {{
    uint32_t grid = 0, reverse = 0, len = 0, ranges = 0;
    if (!read_u32(in, &grid) || !read_u32(in, &reverse) || !read_u32(in, &len)) return 6;
    // At least a parameter image's bytes: its adapter copies that many.
    staging.assign((len > AL_PARAM_IMAGE_BYTES ? len : AL_PARAM_IMAGE_BYTES) / 8 + 2, 0);
    if (fread(staging.data(), 1, len, in) != len) return 7;
    if (entry >= sizeof(ENTRIES) / sizeof(ENTRIES[0])) return 8;
    pool.launch(ENTRIES[entry], grid, reverse != 0, (unsigned char*)meta.data(),
                (const unsigned char*)staging.data(), resident.data());
    if (!read_u32(in, &ranges)) return 9;
    for (uint32_t i = 0; i < ranges; ++i) {{
      uint32_t off = 0, n = 0;
      if (!read_u32(in, &off) || !read_u32(in, &n)) return 10;
      fwrite((const unsigned char*)meta.data() + off, 1, n, out);
    }}
  }}
  fclose(out);
  return 0;
}}
"#,
        entries = entries.join(", ")
    );
    std::fs::write(dir.join("main.cpp"), main).unwrap();
    let exe = dir.join("harness");
    let out = Command::new(cxx)
        .args([
            "-std=c++20",
            "-O1",
            "-pthread",
            "-Wall",
            "-Wno-unused-function",
        ])
        .arg("-o")
        .arg(&exe)
        .arg(dir.join("main.cpp"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the emitted kernels do not compile with {cxx}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        !warnings.contains("kernels.cu"),
        "the emitted kernels compile with warnings:\n{warnings}"
    );
    Harness { exe, dir }
}

/// The harness entry of the fill entry.
pub const FILL: u32 = 0;

/// The harness entry of the parameter entry (a harness built with it, of a layout with
/// buckets).
pub const PARAM: u32 = 1;

/// A trace of launches for one harness run.
pub struct Trace {
    file: Vec<u8>,
}

impl Trace {
    /// A trace starting from `initial` (the whole metadata buffer) and a resident
    /// allocation of `resident_elems` words, all `-1`.
    pub fn new(initial: &[u8], resident_elems: usize) -> Self {
        let mut file = Vec::new();
        file.extend_from_slice(&(initial.len() as u32).to_le_bytes());
        file.extend_from_slice(&(resident_elems as u32).to_le_bytes());
        file.extend_from_slice(initial);
        Self { file }
    }

    /// One launch of `grid` blocks, run one after another, the last first if `reverse`
    /// (block 0 after the workers); after it the harness writes the bytes of `ranges`
    /// (offset, length).
    pub fn launch(
        &mut self,
        entry: u32,
        grid: u32,
        reverse: bool,
        staging: &[u8],
        ranges: &[(u32, u32)],
    ) {
        for v in [entry, grid, u32::from(reverse), staging.len() as u32] {
            self.file.extend_from_slice(&v.to_le_bytes());
        }
        self.file.extend_from_slice(staging);
        self.file
            .extend_from_slice(&(ranges.len() as u32).to_le_bytes());
        for &(o, n) in ranges {
            self.file.extend_from_slice(&o.to_le_bytes());
            self.file.extend_from_slice(&n.to_le_bytes());
        }
    }

    /// Runs the trace; returns the concatenated range bytes.
    pub fn run(&self, h: &Harness, tag: &str) -> Vec<u8> {
        let input = h.dir.join(format!("trace-{tag}.bin"));
        let output = h.dir.join(format!("out-{tag}.bin"));
        std::fs::File::create(&input)
            .and_then(|mut f| f.write_all(&self.file))
            .unwrap();
        let status = Command::new(&h.exe)
            .arg(&input)
            .arg(&output)
            .status()
            .unwrap();
        assert!(status.success(), "harness failed: {status}");
        std::fs::read(&output).unwrap()
    }
}

/// Removes a harness's directory.
pub fn clean(h: &Harness) {
    let _ = std::fs::remove_dir_all(Path::new(&h.dir));
}

/// How a replayed step is launched: the entry (0 eager, `i + 1` bucket `i`) and the grid.
pub type Launch<'a> = &'a dyn Fn(&StepInfo, &Staged) -> (u32, u32);

/// Stages steps as the CUDA backend's device fill does and records their launches into a
/// trace, next to the host fill's bytes, for one comparison at the end ([`Replay::check`]).
pub struct Replay {
    pub dims: RuntimeDims,
    pub cpu: HostMetadata<RuntimeDims>,
    /// The staging builder (verifying the residency whatever the build profile).
    pub builder: StagingBuilder,
    plan_state: FillState,
    staging: Vec<u128>,
    trace: Trace,
    expected: Vec<u8>,
    steps: Vec<Recorded>,
}

/// One recorded step: its name, info and the compared ranges: each field's live bytes
/// (field, byte offset, length), then the block table's guard.
type Recorded = (String, StepInfo, Vec<(Field, usize, usize)>);

/// The byte range of the block table's guard (after its `R × nkv` entries).
pub fn guard_range(dims: &RuntimeDims) -> (usize, usize) {
    let rows = dims.max_requests() * dims.block_table_width() * 4;
    let start = dims.field_offset(Field::MhaBlockTable) + rows;
    (start, dims.field_elems(Field::MhaBlockTable) * 4 - rows)
}

impl Replay {
    pub fn new(dims: &RuntimeDims) -> Self {
        let cpu = HostMetadata::new(dims.clone());
        // The device buffer starts with a poisoned guard: only the kernels' own writes
        // make it dummy ids again, which the comparison of every step checks.
        let mut initial = cpu.bytes().to_vec();
        let (g, n) = guard_range(dims);
        initial[g..g + n].fill(0xA5);
        // The resident allocation as the backend sizes it: block table, then request table.
        let resident =
            emit_cuda::abi::resident_words(dims.max_requests(), dims.block_table_width());
        let trace = Trace::new(&initial, resident);
        let mut builder = StagingBuilder::new(dims);
        builder.set_verify(true);
        let staging = vec![0u128; builder.buffer_len() / 16 + 1];
        Self {
            dims: dims.clone(),
            cpu,
            plan_state: FillState::new(dims),
            builder,
            staging,
            trace,
            expected: Vec::new(),
            steps: Vec::new(),
        }
    }

    /// Stages one step (the host fill runs alongside) and records its launch; `Err` when
    /// the staging builder rejects it (nothing recorded).
    pub fn try_step(
        &mut self,
        what: String,
        input: &StepInput<'_>,
        launch: Launch<'_>,
    ) -> Result<(StepInfo, Staged), StagingError> {
        let plan = fill::plan_step(&self.dims, input, &mut self.plan_state)
            .unwrap_or_else(|e| panic!("{what}: the workload produced a bad step: {e}"));
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.staging);
        let staged = self.builder.build(&plan, bytes)?;
        let info = staged.info;
        let cpu_info = *self.cpu.fill(input).unwrap();
        assert_eq!(info, cpu_info, "{what}: step info");
        let (entry, grid) = launch(&info, &staged);
        let view = self.cpu.view();
        let mut ranges = Vec::new();
        let mut lens = Vec::new();
        for &f in Field::ALL {
            if let Some(live) = view.live_bytes(f) {
                ranges.push((self.dims.field_offset(f) as u32, live.len() as u32));
                lens.push((f, self.dims.field_offset(f), live.len()));
                self.expected.extend_from_slice(live);
            }
        }
        let (g, n) = guard_range(&self.dims);
        ranges.push((g as u32, n as u32));
        lens.push((Field::MhaBlockTable, g, n));
        self.expected.extend_from_slice(&self.cpu.bytes()[g..g + n]);
        // Block 0 first, then last, step after step: a launch whose result depends on the
        // order of its blocks (a race on a GPU) shows.
        let reverse = self.steps.len() % 2 == 1;
        self.trace
            .launch(entry, grid, reverse, &bytes[..staged.bytes], &ranges);
        self.steps.push((what, info, lens));
        Ok((info, staged))
    }

    /// [`try_step`](Self::try_step), panicking on a rejected step.
    pub fn step(
        &mut self,
        what: String,
        input: &StepInput<'_>,
        launch: Launch<'_>,
    ) -> (StepInfo, Staged) {
        self.try_step(what.clone(), input, launch)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Runs the trace through `h` and panics at the first step whose bytes differ from the
    /// host fill's, naming the field and element.
    pub fn check(&self, h: &Harness, tag: &str) {
        let got = self.trace.run(h, tag);
        assert_eq!(got.len(), self.expected.len(), "{tag}: output length");
        let mut at = 0;
        for (what, info, lens) in &self.steps {
            for &(f, off, len) in lens {
                let (e, o) = (&self.expected[at..at + len], &got[at..at + len]);
                if e != o && off != self.dims.field_offset(f) {
                    panic!(
                        "{what} ({:?} real, {:?} padded): the block table's guard at bytes {off}..{}: expected {e:?}, got {o:?}",
                        info.real,
                        info.padded,
                        off + len
                    );
                }
                if e != o {
                    // Rebuild both views of this field to name the first differing element.
                    let total = self.dims.total_bytes();
                    let (mut eb, mut ob) = (vec![0u8; total], vec![0u8; total]);
                    eb[off..off + len].copy_from_slice(e);
                    ob[off..off + len].copy_from_slice(o);
                    let ev = MetadataView::from_parts(&self.dims, &eb, info);
                    let ov = MetadataView::from_parts(&self.dims, &ob, info);
                    let d = ev.first_difference(&ov).unwrap();
                    panic!(
                        "{what} ({:?} real, {:?} padded, bucket {:?}): {d}",
                        info.real, info.padded, info.bucket
                    );
                }
                at += len;
            }
        }
    }

    /// Steps recorded.
    pub fn len(&self) -> usize {
        self.steps.len()
    }
}
