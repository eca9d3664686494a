//! Key parsing sits on every authenticated request, before any store lookup.
#![expect(clippy::unwrap_used, reason = "benchmark setup")]
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let key = apikey::generate(apikey::KeyKind::Secret).unwrap();
    let text = key.expose().to_owned();
    c.bench_function("apikey_parse_valid", |b| b.iter(|| apikey::parse(black_box(&text)).is_ok()));
    let bad = format!("{}0", &text[..53]);
    c.bench_function("apikey_parse_bad_checksum", |b| b.iter(|| apikey::parse(black_box(&bad)).is_err()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
