//! Per-detector costs: a whole value checked as its column's kind (one validator), and the
//! combined pass over free text with and without personal data in it.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pii::{Detector, Kind};

fn bench(c: &mut Criterion) {
    let detector = Detector::new();
    let mut values = c.benchmark_group("value_is");
    for (kind, value) in [
        (Kind::Email, "jane.doe@example.co.uk"),
        (Kind::Phone, "+44 20 7946 0958"),
        (Kind::PaymentCard, "4111 1111 1111 1111"),
        (Kind::Iban, "GB82 WEST 1234 5698 7654 32"),
        (Kind::IpAddress, "192.168.1.20"),
        (Kind::UsSsn, "536-90-4399"),
        (Kind::DateOfBirth, "1984-07-23"),
        (Kind::Postcode, "94105"),
        (Kind::PersonName, "Jane Smith"),
    ] {
        assert!(detector.value_is(kind, value).is_some(), "{kind} {value}");
        values.bench_function(kind.name(), |b| b.iter(|| detector.value_is(kind, black_box(value))));
    }
    values.finish();

    let mut text = c.benchmark_group("find");
    let dirty =
        "please update my account, call +44 20 7946 0958 or mail jane.doe@example.com; order 4092815901396244 shipped";
    let clean = "please update my account, the delivery was late and the refund has not arrived yet, thanks again";
    for (name, sample) in [("free_text_with_pii", dirty), ("free_text_clean", clean)] {
        text.throughput(Throughput::Bytes(sample.len() as u64));
        text.bench_function(name, |b| b.iter(|| detector.find(black_box(sample), None)));
    }
    text.finish();
    c.bench_function("detector_new", |b| b.iter(|| black_box(Detector::new())));
    let _ = black_box(detector.find("x", None)).len();
}

criterion_group!(benches, bench);
criterion_main!(benches);
