//! The in-memory limiter's decision (goal: well under a microsecond): the GCRA arithmetic alone,
//! and a decision on a sharded bucket map holding 10,000 callers.
#![expect(clippy::unwrap_used, reason = "benchmark setup")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::limits::{gcra::Gcra, memory::Buckets};

fn bench(c: &mut Criterion) {
    let gcra = Gcra::new(1_000_000, 1_000_000_000, 1_000).unwrap();
    c.bench_function("gcra_decide", |b| {
        let mut now = 0u64;
        let mut tat = None;
        b.iter(|| {
            now += 1_000;
            let (decision, next) = gcra.decide(black_box(now), tat);
            tat = Some(next);
            decision
        });
    });

    let buckets = Buckets::default();
    let keys: Vec<String> = (0..10_000).map(|i| format!("p:key:{i:08}")).collect();
    for key in &keys {
        buckets.decide(key, &gcra, 0);
    }
    c.bench_function("limiter_memory_decision", |b| {
        let mut i = 0usize;
        let mut now = 1_000_000u64;
        b.iter(|| {
            i = (i + 1) % keys.len();
            now += 100;
            buckets.decide(black_box(&keys[i]), &gcra, now)
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
