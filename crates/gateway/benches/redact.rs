//! What keeping personal data out of a prompt and counting its tokens add to a request: the
//! redaction of a 1 KB chat prompt with and without personal data in it (the detector's pass,
//! placeholders, the body walk), and the token estimate of the same prompt.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use gateway::llm::{body::Route, redact::Redactor, tokens::TokenCounter};
use serde_json::{Map, Value, json};

/// About 1 KB of prompt text: an e-mail thread someone asks to have summarised.
const WITH_PERSONAL_DATA: &str = "Please summarise this thread and draft a reply. From: Jane Smith \
<jane.smith@acme-corp.com>, sent Tuesday. Hi Tom, following up on the Q3 budget review. Can you \
call me on +44 20 7946 0958 before Friday? The refund for the conference should go to IBAN GB82 \
WEST 1234 5698 7654 32, and the hotel was paid with card 4111 1111 1111 1111. Our VPN gateway at \
10.0.12.7 dropped twice during the call, so please ask IT to check it. Also, the vendor asked for \
a contact: use procurement@acme-corp.com rather than my own address. Reply from Tom: sure, I will \
call you tomorrow morning; my mobile is +1 (202) 555-0143 if the desk line is busy. The budget \
numbers look fine except travel, which is 12% over plan because of the Berlin offsite. Let us \
move two trips to next quarter and keep the training budget as it is. Thanks, Jane. PS: the \
shared drive link still asks me to log in every time; is that expected?";

/// The same length, about the same subject, and nothing personal.
const WITHOUT_PERSONAL_DATA: &str = "Please summarise this thread and draft a reply. The thread is \
about the third-quarter budget review. The team is asked to confirm the numbers before Friday. The \
refund for the conference is pending, and the hotel was paid with the corporate account as usual. \
The VPN gateway dropped twice during the weekly call, so the team asks IT to check its logs and \
its certificate expiry. The vendor asked for a contact in procurement rather than in engineering. \
The reply says the numbers look fine except travel, which is twelve percent over plan because of \
the offsite in the spring. The proposal is to move two trips to next quarter and to keep the \
training budget as it is, since the new hires start in the autumn. A note at the end asks whether \
the shared drive should still ask for a login every time, or whether single sign-on should cover \
it by now. Please keep the reply short and friendly.";

fn chat(text: &str) -> Map<String, Value> {
    match json!({"model": "m", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": text},
    ]}) {
        Value::Object(body) => body,
        _ => Map::new(),
    }
}

fn bench(c: &mut Criterion) {
    let redactor = Redactor::new();
    let mut group = c.benchmark_group("redact_chat_1kb");
    for (name, text) in [("with_personal_data", WITH_PERSONAL_DATA), ("without_personal_data", WITHOUT_PERSONAL_DATA)] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || chat(text),
                |body| redactor.redact(Route::ChatCompletions, black_box(body)),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();

    let counter = TokenCounter::estimate();
    let body = chat(WITH_PERSONAL_DATA);
    let mut group = c.benchmark_group("tokens_1kb");
    group.throughput(Throughput::Bytes(WITH_PERSONAL_DATA.len() as u64));
    group.bench_function("estimate", |b| b.iter(|| counter.count(black_box(WITH_PERSONAL_DATA))));
    group.bench_function("prompt_tokens_estimate", |b| {
        b.iter(|| counter.prompt_tokens(Route::ChatCompletions, black_box(&body)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
