//! `portcullis audit verify` speed: records per second over a log with checkpoints, signatures
//! checked (goal: over 500,000 records/s).
#![expect(clippy::unwrap_used, reason = "benchmark setup")]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gateway::audit::{
    AuditEvent, RequestRecord,
    chain::{Position, SigningKeyFile, load_public_key, public_key_path},
    verify,
};

const RECORDS: u64 = 200_000;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("audit-signing.key");
    let key = SigningKeyFile::load_or_create(&key_path).unwrap();
    let public = load_public_key(&public_key_path(&key_path)).unwrap();
    let mut position = Position::start();
    let mut log = String::new();
    for i in 0..RECORDS {
        let event = AuditEvent::Request(RequestRecord {
            request_id: format!("{i:024x}"),
            principal: "key:Ab3dE5gH".into(),
            client: "127.0.0.1".into(),
            method: "POST".into(),
            route: "/v2/models/{model}/infer".into(),
            model: Some("credit-risk".into()),
            action: gateway::audit::RequestAction::Infer,
            decision: gateway::audit::Decision::Allow,
            reason: "ok".into(),
            status: 200,
            latency_us: 812,
            rows: Some(1),
            prompt_sha256: None,
            redacted: Default::default(),
            tokens: None,
        });
        log.push_str(&position.append("2026-11-25T22:49:27.123Z", &event).unwrap());
        log.push('\n');
        if i % 1000 == 999 {
            log.push_str(&position.checkpoint("2026-11-25T22:49:27.123Z", &key).unwrap());
            log.push('\n');
        }
    }
    let path = dir.path().join("audit.log");
    std::fs::write(&path, log).unwrap();
    let files = [path];

    let mut group = c.benchmark_group("audit_verify");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS));
    group.bench_function("records_with_signatures", |b| {
        b.iter(|| {
            let report = verify::verify(&files, Some(&public), None, 1).unwrap();
            assert!(report.findings.is_empty());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
