//! Criterion benchmark of the host fill for the core issue's five scenarios (R=256,
//! T=4096, B=64, S=8192, Mamba chunk 128, d_conv 4, graphs auto / exponential, mixed
//! prefill count 4). Each iteration builds one step, alternating with the same step one
//! decode token later, as a decode loop does.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

use attention_layout::{Geometry, HostMetadata, Phase, RequestRow, RuntimeDims};
use attention_layout_cli::scenarios;

fn host_fill(c: &mut Criterion) {
    let mut group = c.benchmark_group("host_fill");
    for s in scenarios::all() {
        let Ok(geometry) = Geometry::new(&s.spec) else {
            continue;
        };
        let bs = s.spec.block_size;
        let mut meta = HostMetadata::new(RuntimeDims::new(geometry));
        let rows = s.rows();
        let advanced: Vec<RequestRow<'_>> = rows
            .iter()
            .map(|r| {
                let mut r = *r;
                if r.phase == Phase::Decode && r.kv_offset + 2 <= r.blocks.len() as u32 * bs {
                    r.kv_offset += 1;
                }
                r
            })
            .collect();
        let ids = s.token_ids();
        let inputs = [
            scenarios::Scenario::input(&rows, &ids),
            scenarios::Scenario::input(&advanced, &ids),
        ];
        let mut i = 0usize;
        group.bench_function(s.name, |b| {
            b.iter(|| {
                i ^= 1;
                let [a, b2] = &inputs;
                let input = if i == 0 { a } else { b2 };
                black_box(meta.fill(black_box(input)).is_ok())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, host_fill);
criterion_main!(benches);
