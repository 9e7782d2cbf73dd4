//! Criterion benchmark of the CPU-side expert-parallel agreement: one round of an
//! in-process group (`agree::in_process_group`) of 2, 4 and 8 ranks, each rank on its own
//! thread, timed on rank 0; and the reduction a host that knows every rank's shape does
//! (`AgreedShape::reduce`, what `simulate --ep-ranks` uses).
//!
//! A round needs every rank's thread to run: on a machine with fewer cores than ranks this
//! measures the operating system's scheduling more than the agreement.

use std::hint::black_box;
use std::thread;

use criterion::{Criterion, criterion_group, criterion_main};

use attention_layout::BatchDims;
use attention_layout::agree::{AgreedShape, ShapeAgreement, in_process_group};

fn shape(i: u32) -> BatchDims {
    BatchDims::new(i % 64, 0, i % 64)
}

fn in_process(c: &mut Criterion) {
    let mut group = c.benchmark_group("ep_agree");
    for ranks in [2usize, 4, 8] {
        let Ok(mut all) = in_process_group(ranks, None) else {
            continue;
        };
        let mut first = all.remove(0);
        // The other ranks agree until rank 0 leaves (which breaks the group).
        let helpers: Vec<_> = all
            .into_iter()
            .map(|mut rank| {
                thread::spawn(move || {
                    let mut i = 0u32;
                    while rank.agree(shape(i)).is_ok() {
                        i = i.wrapping_add(1);
                    }
                })
            })
            .collect();
        let mut i = 0u32;
        group.bench_function(format!("in_process_{ranks}_ranks"), |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(first.agree(black_box(shape(i))))
            });
        });
        drop(first);
        for h in helpers {
            let _ = h.join();
        }
    }
    let shapes: Vec<BatchDims> = (0..8).map(|i| shape(i * 7)).collect();
    group.bench_function("host_reduce_8_ranks", |b| {
        b.iter(|| black_box(AgreedShape::reduce(black_box(&shapes))));
    });
    group.finish();
}

criterion_group!(benches, in_process);
criterion_main!(benches);
