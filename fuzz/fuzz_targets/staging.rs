//! The device fill's residency input: an engine model -> `StagingBuilder::build`, several
//! steps on one builder, with the staging image applied to a model of the device.
//!
//! The bytes choose a small layout, whether full verification is on, and a sequence of
//! engine operations on a request table of resident rows: admissions, blocks appended
//! (some reserved past a list's end first, some left as `-1` holes), releases (clears),
//! steps (requests picked in any order, paused / decode / prefill, with or without
//! residency, token ids), a fresh residency view announced to the builder
//! (`forget_residency`), and lies: a reported change corrupted or dropped, an entry written
//! silently, the whole table started over unannounced, and per-step mangled residency
//! (resident rows out of range, duplicated, missing, swapped; changes outside the table).
//!
//! The model of the device applies each accepted image as the kernels do (patches, resident
//! changes, row jobs with gathers, uploads and write-back), and checks the launch's race
//! freedom: no metadata block-table entry written twice, no resident entry both read and
//! written.
//!
//! Checked, every step: no panic; a refused step leaves the builder equal to what it was
//! (`StagingBuilder: PartialEq` compares everything it knows of the device); a step whose
//! latest change of an entry inside a step row's list contradicts the list is refused;
//! while the engine has not lied since the start or its last announcement, every step the
//! planner accepts is accepted (no false contradiction, with or without full verification)
//! and the modelled device block table equals the host fill's, row for row.

#![no_main]

use arbitrary::Arbitrary;
use attention_layout::codegen::emit_cuda::abi;
use attention_layout::codegen::spec::{GraphCount, GraphSpec, LayoutSpec, MambaSpec, ModelKind};
use attention_layout::devfill::StagingBuilder;
use attention_layout::fill::{self, BlockCheck, FillState};
use attention_layout::{
    BlockChange, Dims, Geometry, HostMetadata, Phase, RequestRow, Residency, RuntimeDims,
    StepInput,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Layout {
    model: u8,
    r: u8,
    b_log: u8,
    s: u8,
    spec: u8,
    graphs: u8,
    mixed: u8,
    pool: Option<u8>,
}

#[derive(Arbitrary, Debug)]
enum Mangle {
    ResidentOutOfRange { at: u8, by: u8 },
    Duplicate { at: u8, of: u8 },
    Missing,
    Swap { a: u8, b: u8 },
    ChangeOutside { row: u8, index: u8, block: i16 },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Admit { row: u8, blocks: u8 },
    Grow { req: u8, n: u8, hole: bool },
    Reserve { req: u8, n: u8 },
    Release { req: u8 },
    Step { rows: Vec<(u8, u8, u8)>, ids: bool, residency: bool, mangle: Option<Mangle> },
    Announce,
    CorruptChange { at: u8, block: u8 },
    DropChange { at: u8 },
    SilentWrite { req: u8, index: u8 },
    Restart,
}

#[derive(Arbitrary, Debug)]
struct Case {
    layout: Layout,
    full_verify: bool,
    ops: Vec<Op>,
}

fn dims_of(l: &Layout) -> Option<RuntimeDims> {
    let model = [ModelKind::Mha, ModelKind::Hybrid, ModelKind::Mamba][usize::from(l.model % 3)];
    let block_size = 1u32 << (l.b_log % 4);
    let spec = LayoutSpec {
        name: None,
        source: None,
        model,
        max_requests: 1 + u32::from(l.r % 8),
        max_tokens: 64,
        max_seq_len: block_size.max(1 + u32::from(l.s % 64)),
        block_size,
        speculative_tokens: u32::from(l.spec % 3),
        tensor_parallel: 1,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: l.pool.map(|p| 2 + u32::from(p)),
        mamba: model.has_mamba().then_some(MambaSpec {
            chunk_size: 4,
            conv_width: 4,
        }),
        graphs: GraphSpec {
            count: match l.graphs % 3 {
                0 => GraphCount::Auto,
                1 => GraphCount::Off,
                _ => GraphCount::Count(u32::from(l.graphs % 7)),
            },
            mixed_prefill: u32::from(l.mixed % 3),
            ..Default::default()
        },
        memory: None,
        formats: Vec::new(),
    };
    Geometry::new(&spec).ok().map(RuntimeDims::new)
}

/// The engine: its resident table (the truth), the live requests' block lists by resident
/// row, and the changes not yet delivered by an accepted step.
struct Engine {
    rows: usize,
    width: usize,
    dummy: i32,
    table: Vec<i32>,
    lists: Vec<Option<Vec<i32>>>,
    pending: Vec<BlockChange>,
    next_block: i32,
    /// No lie since the start or the last announcement.
    honest: bool,
}

impl Engine {
    fn new(d: &RuntimeDims) -> Self {
        let (rows, width) = (d.max_requests(), d.block_table_width());
        Self {
            rows,
            width,
            dummy: d.dummy_block(),
            table: vec![-1; rows * width],
            lists: vec![None; rows],
            pending: Vec::new(),
            next_block: 0,
            honest: true,
        }
    }

    fn block(&mut self) -> i32 {
        let b = self.next_block;
        self.next_block = (self.next_block + 1) % self.dummy.max(1);
        b
    }

    fn write(&mut self, r: usize, j: usize, block: i32) {
        self.table[r * self.width + j] = block;
        self.pending.push(BlockChange {
            resident_row: r as u32,
            index: j as u32,
            block,
        });
    }

    /// The resident row of the `k`-th live request (cyclically), if any is live.
    fn live(&self, k: u8) -> Option<usize> {
        let live: Vec<usize> = (0..self.rows).filter(|&r| self.lists[r].is_some()).collect();
        live.get(usize::from(k) % live.len().max(1)).copied()
    }

    fn len(&self, r: usize) -> usize {
        self.lists[r].as_ref().map_or(0, Vec::len)
    }

    fn grow(&mut self, r: usize, n: u8, hole: bool) {
        for _ in 0..n % 5 {
            let j = self.len(r);
            if j >= self.width {
                break;
            }
            let held = self.table[r * self.width + j];
            let id = if held != -1 {
                // Reserved earlier: the list takes the block the table already holds.
                held
            } else if hole {
                // The table holds -1 there: a hole needs no write.
                -1
            } else {
                let b = self.block();
                self.write(r, j, b);
                b
            };
            if let Some(list) = self.lists[r].as_mut() {
                list.push(id);
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Admit { row, blocks } => {
                let start = usize::from(row) % self.rows;
                let free = (0..self.rows)
                    .map(|k| (start + k) % self.rows)
                    .find(|&r| self.lists[r].is_none());
                if let Some(r) = free {
                    self.lists[r] = Some(Vec::new());
                    self.grow(r, blocks.max(1), false);
                }
            }
            Op::Grow { req, n, hole } => {
                if let Some(r) = self.live(req) {
                    self.grow(r, n, hole);
                }
            }
            Op::Reserve { req, n } => {
                if let Some(r) = self.live(req) {
                    let from = self.len(r);
                    for j in from..(from + usize::from(n % 3)).min(self.width) {
                        if self.table[r * self.width + j] == -1 {
                            let b = self.block();
                            self.write(r, j, b);
                        }
                    }
                }
            }
            Op::Release { req } => {
                if let Some(r) = self.live(req) {
                    // Every entry of the list, as `BatchState` does, and the reserved ones.
                    for j in 0..self.width {
                        if j < self.len(r) || self.table[r * self.width + j] != -1 {
                            self.write(r, j, -1);
                        }
                    }
                    self.lists[r] = None;
                }
            }
            Op::CorruptChange { at, block } => {
                let n = self.pending.len();
                if n > 0 {
                    let c = &mut self.pending[usize::from(at) % n];
                    c.block = i32::from(block) % (self.dummy + 1) - 1;
                    self.honest = false;
                }
            }
            Op::DropChange { at } => {
                let n = self.pending.len();
                if n > 0 {
                    self.pending.remove(usize::from(at) % n);
                    self.honest = false;
                }
            }
            Op::SilentWrite { req, index } => {
                if let Some(r) = self.live(req) {
                    let len = self.len(r);
                    if len > 0 {
                        let j = usize::from(index) % len;
                        let b = self.block();
                        self.table[r * self.width + j] = b;
                        if let Some(list) = self.lists[r].as_mut() {
                            list[j] = b;
                        }
                        self.honest = false;
                    }
                }
            }
            Op::Restart => {
                // A fresh table the builder is not told about.
                self.table.fill(-1);
                self.lists.fill(None);
                self.pending.clear();
                self.honest = false;
            }
            Op::Step { .. } | Op::Announce => {}
        }
    }

    /// What a fresh residency view reports: every write since an all -1 table.
    fn announce(&mut self) {
        self.pending.clear();
        for e in 0..self.table.len() {
            let block = self.table[e];
            if block != -1 {
                self.pending.push(BlockChange {
                    resident_row: (e / self.width) as u32,
                    index: (e % self.width) as u32,
                    block,
                });
            }
        }
        self.honest = true;
    }
}

/// One step's rows: (resident row, phase, query length, kv offset), paused first.
fn plan_rows(
    e: &Engine,
    d: &RuntimeDims,
    picks: &[(u8, u8, u8)],
) -> Vec<(usize, Phase, u32, u32)> {
    let bs = d.block_size() as u32;
    let s1 = d.speculative_tokens() as u32 + 1;
    let mut seen = vec![false; e.rows];
    let mut rows = Vec::new();
    let mut tokens = 0u32;
    for &(req, phase, knob) in picks {
        let Some(r) = e.live(req) else { break };
        if std::mem::replace(&mut seen[r], true) {
            continue;
        }
        let list = e.lists[r].as_deref().unwrap_or(&[]);
        let cap = (list.len() as u32 * bs).min(d.max_seq_len() as u32);
        let q = match phase % 3 {
            1 => s1,
            2 => 1 + u32::from(knob) % cap.clamp(1, 17),
            _ => 0,
        };
        let back = (u32::from(knob) >> 2) % bs;
        let mut row = (r, Phase::Paused, 0, cap.saturating_sub(back));
        if q > 0 && q <= cap && tokens + q <= d.max_tokens() as u32 {
            let kv = (cap - q).saturating_sub(back);
            let first = (kv / bs) as usize;
            let last = ((kv + q - 1) / bs) as usize;
            let present = list
                .get(first..=last)
                .is_some_and(|b| b.iter().all(|&id| id != -1));
            if present {
                let p = if phase % 3 == 1 { Phase::Decode } else { Phase::Prefill };
                row = (r, p, q, kv);
                tokens += q;
            }
        }
        rows.push(row);
    }
    let rank = |p: Phase| match p {
        Phase::Paused => 0,
        Phase::Decode => 1,
        Phase::Prefill => 2,
    };
    rows.sort_by_key(|&(_, p, _, _)| rank(p));
    rows
}

/// The device's block tables as the kernels leave them.
struct Device {
    width: usize,
    dummy: i32,
    meta: Vec<i32>,
    resident: Vec<i32>,
}

impl Device {
    /// Applies a staging image; panics on a race the kernels could not tolerate.
    fn apply(&mut self, words: &[u32]) {
        let w = self.width;
        let dummy = self.dummy;
        let map = |id: i32| if id == -1 { dummy } else { id };
        let (n_patches, n_changes, n_jobs) = (
            words[abi::H_N_PATCHES] as usize,
            words[abi::H_N_CHANGES] as usize,
            words[abi::H_N_JOBS] as usize,
        );
        let at = |h: usize| words[h] as usize / 4;
        let mut meta_written = vec![false; self.meta.len()];
        let mut res_written = vec![false; self.resident.len()];
        let mut res_read = vec![false; self.resident.len()];
        let mut write_meta = |meta: &mut Vec<i32>, e: usize, v: i32| {
            assert!(!meta_written[e], "metadata block-table element {e} written twice");
            meta_written[e] = true;
            meta[e] = v;
        };
        for k in 0..n_patches {
            let p = at(abi::H_OFF_PATCHES) + 2 * k;
            write_meta(&mut self.meta, words[p] as usize, words[p + 1] as i32);
        }
        for k in 0..n_changes {
            let c = at(abi::H_OFF_CHANGES) + 2 * k;
            let e = words[c] as usize;
            assert!(!res_written[e], "resident element {e} changed twice");
            res_written[e] = true;
            self.resident[e] = words[c + 1] as i32;
        }
        // Gathers read the resident table as it was before the launch's writes: the
        // kernels rely on no element being both read and written in one launch.
        let before = self.resident.clone();
        let uploaded = at(abi::H_OFF_BLOCKS);
        for k in 0..n_jobs {
            let job = at(abi::H_OFF_JOBS) + 5 * k;
            let (row, len, width, src, back) = (
                words[job] as usize,
                words[job + 1] as usize,
                words[job + 2] as usize,
                words[job + 3],
                words[job + 4],
            );
            let index = (src & !(3 << 30)) as usize;
            for j in 0..width {
                let v = if j < len {
                    let id = if src & (3 << 30) == abi::SRC_RESIDENT {
                        res_read[index * w + j] = true;
                        before[index * w + j]
                    } else {
                        words[uploaded + index + j] as i32
                    };
                    if back != abi::NO_ROW {
                        let e = back as usize * w + j;
                        assert!(!res_written[e], "resident element {e} written twice");
                        res_written[e] = true;
                        self.resident[e] = id;
                    }
                    map(id)
                } else {
                    dummy
                };
                write_meta(&mut self.meta, row * w + j, v);
            }
        }
        for (e, (&r, &wr)) in res_read.iter().zip(&res_written).enumerate() {
            assert!(!(r && wr), "resident element {e} read and written in one launch");
        }
    }
}

fuzz_target!(|case: Case| {
    let Some(d) = dims_of(&case.layout) else {
        return;
    };
    let mut builder = StagingBuilder::new(&d);
    builder.set_verify(case.full_verify);
    let mut staging = vec![0u128; builder.capacity() / 16 + 1];
    let mut plan_state = FillState::new(&d);
    let mut cpu = HostMetadata::new(d.clone());
    let mut engine = Engine::new(&d);
    let (r, w) = (d.max_requests(), d.block_table_width());
    let mut device = Device {
        width: w,
        dummy: d.dummy_block(),
        meta: vec![d.dummy_block(); r * w],
        resident: vec![0; r * w],
    };
    // Per metadata block-table row: the length of the list it was last written for.
    let mut prev_len = vec![0usize; r];
    for op in case.ops.iter().take(48) {
        let Op::Step {
            rows: picks,
            ids,
            residency,
            mangle,
        } = op
        else {
            if let Op::Announce = op {
                builder.forget_residency();
                engine.announce();
            } else {
                engine.apply(op);
            }
            continue;
        };
        let planned = plan_rows(&engine, &d, picks);
        let lists: Vec<Vec<i32>> = planned
            .iter()
            .map(|&(r, ..)| engine.lists[r].clone().unwrap_or_default())
            .collect();
        let rows: Vec<RequestRow<'_>> = planned
            .iter()
            .zip(&lists)
            .map(|(&(r, phase, q, kv), list)| RequestRow {
                phase,
                query_length: q,
                kv_offset: kv,
                blocks: list,
                mamba_slot: r as i32,
                sampling: Default::default(),
            })
            .collect();
        let mut resident_rows: Vec<u32> = planned.iter().map(|&(r, ..)| r as u32).collect();
        let mut changes = engine.pending.clone();
        let mangled = mangle.is_some();
        match *mangle {
            None => {}
            Some(Mangle::ResidentOutOfRange { at, by }) => {
                if let Some(x) = resident_rows.get_mut(usize::from(at) % rows.len().max(1)) {
                    *x = (r + usize::from(by)) as u32;
                }
            }
            Some(Mangle::Duplicate { at, of }) => {
                let n = resident_rows.len().max(1);
                if let Some(&v) = resident_rows.get(usize::from(of) % n)
                    && let Some(x) = resident_rows.get_mut(usize::from(at) % n)
                {
                    *x = v;
                }
            }
            Some(Mangle::Missing) => {
                resident_rows.pop();
            }
            Some(Mangle::Swap { a, b }) => {
                let n = resident_rows.len();
                if n > 0 {
                    resident_rows.swap(usize::from(a) % n, usize::from(b) % n);
                }
            }
            Some(Mangle::ChangeOutside { row, index, block }) => changes.push(BlockChange {
                resident_row: u32::from(row),
                index: u32::from(index),
                block: i32::from(block),
            }),
        }
        let tokens: u32 = rows.iter().map(|r| r.query_length).sum();
        let token_ids: Vec<i64> = (0..i64::from(tokens)).collect();
        let input = StepInput {
            rows: &rows,
            token_ids: ids.then_some(&token_ids[..]),
            intermediate: None,
            residency: residency.then_some(Residency {
                resident_rows: &resident_rows,
                changes: &changes,
            }),
        };
        let check = if *residency {
            BlockCheck::Needed
        } else {
            BlockCheck::Full
        };
        let Ok(plan) = fill::plan_step_checking(&d, &input, &mut plan_state, check) else {
            continue;
        };
        let info = plan.complete_info();

        // The contradiction every build must refuse: a latest change inside a row's list.
        let mut contradicted = false;
        if *residency && resident_rows.len() == rows.len() {
            let mut latest = std::collections::HashMap::new();
            for c in &changes {
                latest.insert((c.resident_row, c.index), c.block);
            }
            for (row, &rr) in rows.iter().zip(&resident_rows) {
                for (j, &b) in row.blocks.iter().enumerate() {
                    if latest.get(&(rr, j as u32)).is_some_and(|&c| c != b) {
                        contradicted = true;
                    }
                }
            }
        }

        let before = builder.clone();
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut staging);
        match builder.build(&plan, bytes) {
            Err(e) => {
                assert!(builder == before, "refused ({e}) but the builder changed");
                assert!(
                    !engine.honest || mangled,
                    "an honest engine's step was refused: {e}\n{input:#?}"
                );
                let _ = e.to_string();
            }
            Ok(staged) => {
                assert!(!contradicted, "a change contradicting its row was accepted");
                let cpu_info = *cpu.fill(&input).expect("the host fill accepts a planned step");
                assert_eq!(info, cpu_info, "step info");
                let words: &[u32] = bytemuck::cast_slice(&staging);
                assert!(staged.bytes <= words.len() * 4);
                device.apply(words);
                // Whatever the engine did, an active row's metadata entries equal its list
                // except where the builder kept the row in place and the step neither
                // changed nor sent the entry (the one thing the per-step check does not
                // read): every id the step sent or gathered is the row's own.
                let (p, n) = (info.paused as usize, info.real.requests() as usize);
                let requests = words[abi::H_OFF_REQUESTS] as usize / 4;
                // A delta step carries edit records for the rows that did not advance in
                // place; every other row is in place.
                let delta = words[abi::H_FLAGS] & abi::FLAG_DELTA != 0;
                let edit = abi::EDIT_BYTES / 4;
                let src_of = |a: usize| -> u32 {
                    if !delta {
                        return words[requests + 4 * a + 2];
                    }
                    (0..words[abi::H_N_EDITS] as usize)
                        .map(|e| &words[requests + e * edit..requests + (e + 1) * edit])
                        .find(|rec| rec[0] as usize == a)
                        .map_or(abi::SRC_META, |rec| rec[3])
                };
                for a in 0..n {
                    let row = &rows[p + a];
                    let in_place = src_of(a) & (3 << 30) == abi::SRC_META;
                    let rr = resident_rows.get(p + a).copied();
                    for (j, &b) in row.blocks.iter().enumerate() {
                        let got = device.meta[a * w + j];
                        let want = if b == -1 { d.dummy_block() } else { b };
                        if got == want {
                            continue;
                        }
                        let changed = *residency
                            && changes
                                .iter()
                                .any(|c| Some(c.resident_row) == rr && c.index as usize == j);
                        assert!(
                            in_place && j < prev_len[a].min(row.blocks.len()) && !changed,
                            "request {}: block-table entry {j} is {got}, its list says {want}, and the step sent or gathered it\n{input:#?}",
                            p + a
                        );
                    }
                }
                let np = info.padded.requests() as usize;
                for (a, l) in prev_len.iter_mut().enumerate().take(np) {
                    *l = if a < n { rows[p + a].blocks.len() } else { 0 };
                }
                if engine.honest && !mangled {
                    let want = cpu.view().block_table();
                    assert_eq!(
                        &device.meta[..np * w],
                        want,
                        "block table after an honest step\n{input:#?}"
                    );
                }
                if mangled {
                    engine.honest = false;
                }
                // Delivered: the engine forgets its changes (a step without residency
                // makes the builder forget the device's rows instead).
                engine.pending.clear();
            }
        }
    }
});
