//! The hot paths of `leaks scan`: the rules over source text (with and without a secret), over
//! the short strings decoders emit, the raw printable-run pass over binary data, and a whole
//! seeded APK from zip to findings.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leaks::{Rules, enumerate::Limits};

/// Source text typical of an app repository: code, config, no secret.
fn source_text() -> String {
    let lines = [
        "import os, json, logging",
        "const client = new ApiClient({ baseUrl: process.env.API_BASE, timeout: 30_000 });",
        "def token_for(user):\n    return session.get(\"token\")",
        "<string name=\"app_name\">Example</string>",
        "api_key = os.environ[\"API_KEY\"]  # read at start",
        "fn main() { let secret_len = 32; println!(\"{}\", secret_len); }",
        "  \"version\": \"1.2.3\", \"sha256\": \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\",",
    ];
    lines.iter().cycle().take(20_000).map(|line| format!("{line}\n")).collect()
}

fn bench(c: &mut Criterion) {
    let Ok(rules) = Rules::builtin() else { return };
    let clean = source_text();
    let mut dirty = clean.clone();
    dirty.push_str("STRIPE_KEY=sk_live_4eC39HqLyjWDarjtT1zdp7dc\n");
    assert!(rules.find(&clean).is_empty() && rules.find(&dirty).len() == 1);

    let mut text = c.benchmark_group("rules_find_text");
    text.throughput(Throughput::Bytes(clean.len() as u64));
    text.bench_function("source_clean", |b| b.iter(|| rules.find(black_box(&clean))));
    text.bench_function("source_one_secret", |b| b.iter(|| rules.find(black_box(&dirty))));
    text.finish();

    let strings = [
        "Lcom/example/app/MainActivity;",
        "https://api.example.com/v1/models",
        "google_api_key = AIzaSyB3x9Qp2Lm7Rt5Vw8Zy1Ab4Cd6Ef0Gh2Ij",
    ];
    let mut short = c.benchmark_group("rules_find_string");
    for (name, value) in [("class_name", strings[0]), ("url", strings[1]), ("named_key", strings[2])] {
        short.bench_function(name, |b| b.iter(|| rules.find(black_box(value))));
    }
    short.finish();

    let binary: Vec<u8> = (0..4_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let mut raw = c.benchmark_group("raw_pass");
    raw.throughput(Throughput::Bytes(binary.len() as u64));
    raw.bench_function("printable_runs_4mb", |b| {
        b.iter(|| {
            let mut count = 0usize;
            leaks::decode::runs::printable_runs(black_box(&binary), 8, |_, run| count += run.len());
            count
        })
    });
    raw.finish();

    let mut random = leaks::corpus::app::Random::new(7);
    let mut truth = leaks::corpus::app::Truth::default();
    let apk = leaks::corpus::app::android("app.apk", &mut random, &mut truth);
    let mut whole = c.benchmark_group("scan_bytes");
    whole.throughput(Throughput::Bytes(apk.len() as u64));
    whole.bench_function("seeded_apk", |b| {
        b.iter(|| leaks::scan_bytes(&rules, "app.apk", black_box(&apk), &Limits::default()))
    });
    whole.finish();
    c.bench_function("rules_builtin", |b| b.iter(|| black_box(Rules::builtin().is_ok())));
}

criterion_group!(benches, bench);
criterion_main!(benches);
