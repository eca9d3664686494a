//! Hot paths of every inference request: decoding the body (JSON and Triton binary) and
//! verifying the API key (parse, checksum, HMAC, constant-time compare).
#![expect(clippy::unwrap_used, reason = "benchmark setup")]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gateway::{authn::api_key::Pepper, oip};
use std::hint::black_box;
use subtle::ConstantTimeEq;

fn json_body(rows: usize, features: usize) -> Vec<u8> {
    let data: Vec<String> = (0..rows * features).map(|i| format!("{:.6}", i as f32 * 0.37)).collect();
    format!(
        r#"{{"id":"bench","inputs":[{{"name":"features","shape":[{rows},{features}],"datatype":"FP32","data":[{}]}}]}}"#,
        data.join(",")
    )
    .into_bytes()
}

fn binary_body(rows: usize, features: usize) -> (Vec<u8>, usize) {
    let header = format!(
        r#"{{"id":"bench","inputs":[{{"name":"features","shape":[{rows},{features}],"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}],"outputs":[{{"name":"probabilities","parameters":{{"binary_data":true}}}}]}}"#,
        rows * features * 4
    );
    let mut body = header.clone().into_bytes();
    for i in 0..rows * features {
        body.extend_from_slice(&(i as f32 * 0.37).to_le_bytes());
    }
    (body, header.len())
}

fn decode(c: &mut Criterion) {
    let limits = oip::Limits::default();
    let mut group = c.benchmark_group("oip_decode");
    for rows in [1usize, 64, 1024] {
        let json = json_body(rows, 20);
        group.throughput(Throughput::Elements((rows * 20) as u64));
        group.bench_with_input(BenchmarkId::new("json", rows), &json, |b, body| {
            b.iter(|| oip::decode_request(black_box(body), None, &limits).unwrap())
        });
        let (binary, json_len) = binary_body(rows, 20);
        group.bench_with_input(BenchmarkId::new("binary", rows), &binary, |b, body| {
            b.iter(|| oip::decode_request(black_box(body), Some(json_len), &limits).unwrap())
        });
    }
    group.finish();
}

fn verify_key(c: &mut Criterion) {
    let pepper = Pepper::from_bytes(vec![7; 32]);
    let key = apikey::generate(apikey::KeyKind::Secret).unwrap();
    let token = key.expose().to_owned();
    let stored = pepper.hash(&token);
    c.bench_function("api_key_verify_cached", |b| {
        b.iter(|| {
            let parsed = apikey::parse(black_box(&token)).unwrap();
            bool::from(pepper.hash(parsed.expose()).ct_eq(&stored))
        })
    });
}

criterion_group!(benches, decode, verify_key);
criterion_main!(benches);
