//! Token and spend budgets on language models, end to end: the gateway in process in front of
//! the scripted upstream (`scripts/llm_upstream_stub.py`), whose token counts are known (the
//! prompt's words; the answer is "the quick brown fox jumps over the lazy dog", one token a
//! word, cut at `max_tokens`). Budgets reserve the worst case before dispatch and settle to what
//! was used; these tests race them, cut streams short, stop Redis, and check what was charged.

use std::{sync::Arc, time::Duration};

use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{
    limits_tests::{redis_url, unique_prefix},
    llm_tests::{Answer, Fronted, hello, stub_llm},
};
use crate::{
    limit_spec::{Budget, Quota, SpendCap},
    state::Gateway,
    store::{KeyLimits, Usage},
};

/// The stub answers nine words at most: one token each.
const ANSWER_TOKENS: u64 = 9;
/// `hello()`'s prompt, "the secret plan": three words.
const PROMPT_TOKENS: u64 = 3;

/// Models with a price ($1 in, $2 out per million tokens) and room for 64 requests at once;
/// `slow` waits two seconds before its first token, so every racer is in flight together.
fn priced() -> String {
    let price = "price = { input = \"1\", output = \"2\" }";
    let roomy = "max_tokens = 2000\nmax_connections = 64\nqueue = 64";
    [
        stub_llm("priced", "openai", "stub-chat", &format!("{price}\n{roomy}\nmax_n = 4")),
        stub_llm("slow", "openai", "fault-slow-first-token", &format!("{price}\n{roomy}")),
        stub_llm("metered", "openai", "stub-chat", &format!("{price}\ntpm = 60")),
        stub_llm("quiet", "openai", "fault-no-usage", price),
        stub_llm("fails", "openai", "fault-500", price),
        stub_llm("unpriced", "openai", "stub-chat", ""),
    ]
    .concat()
}

fn budget(tokens: Option<&str>, spend: Option<&str>) -> KeyLimits {
    KeyLimits {
        budget: Budget {
            tpm: None,
            tokens: tokens.map(|text| text.parse::<Quota>().unwrap()).into_iter().collect(),
            spend: spend.map(|text| text.parse::<SpendCap>().unwrap()).into_iter().collect(),
        },
        ..KeyLimits::default()
    }
}

fn shared_limits(url: &str) -> String {
    format!("[limits]\nbackend = \"{url}\"\nredis_prefix = \"{}\"\n", unique_prefix())
}

/// The key's usage today, once every node has written what it counted.
async fn usage(fronted: &Fronted, nodes: &[&Arc<Gateway>], kid: &str) -> Usage {
    for node in nodes {
        node.limiter().flush_usage().await;
    }
    let today = crate::time::day_of(crate::time::now());
    let rows = fronted.store.usage(Some(kid), &today).await.unwrap();
    rows.iter().fold(Usage { kid: kid.to_owned(), ..Usage::default() }, |total, row| Usage {
        requests: total.requests + row.requests,
        tokens_in: total.tokens_in + row.tokens_in,
        tokens_out: total.tokens_out + row.tokens_out,
        spend_micros: total.spend_micros + row.spend_micros,
        estimated: total.estimated + row.estimated,
        ..total
    })
}

/// A stream, read whole.
fn streamed(model: &str, max_tokens: u64) -> Value {
    let mut body = hello(model);
    body["stream"] = json!(true);
    body["max_tokens"] = json!(max_tokens);
    body
}

/// One chat request to `node`, read whole.
async fn race_one(node: Arc<Gateway>, key: String, body: Value) -> Answer {
    let request = Request::post("/v1/chat/completions")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = super::public(node).oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer { status, headers, text: String::from_utf8_lossy(&bytes).into_owned() }
}

/// Fifty streams at once on `nodes` in turn.
async fn race(nodes: &[Arc<Gateway>], key: &str) -> Vec<Answer> {
    let mut tasks = Vec::new();
    for index in 0..50 {
        let node = Arc::clone(&nodes[index % nodes.len()]);
        tasks.push(tokio::spawn(race_one(node, key.to_owned(), streamed("slow", 1000))));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// Room for ten worst cases (a prompt of a few tokens plus 1000), not eleven, in tokens and in
/// dollars: ten streams are served, forty refused at once, and what was spent is what the ten
/// used, under both caps.
async fn ten_of_fifty(fronted: &Fronted, nodes: &[Arc<Gateway>]) {
    // Worst case per request: prompt (at most 50 tokens, however counted) + 1000 tokens.
    let (key, kid) = fronted.key_and_kid(&["slow"], budget(Some("10600/day"), Some("0.021200usd/day"))).await;
    let answers = race(nodes, &key).await;
    let served: Vec<&Answer> = answers.iter().filter(|answer| answer.status == StatusCode::OK).collect();
    assert_eq!(served.len(), 10, "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    for answer in &answers {
        if answer.status != StatusCode::OK {
            assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{}", answer.text);
            assert_eq!(answer.json()["error"]["code"], "budget_exhausted", "{}", answer.text);
            assert!(answer.headers.contains_key(header::RETRY_AFTER));
        }
    }
    for answer in served {
        assert!(answer.text.trim_end().ends_with("data: [DONE]"), "{}", answer.text);
        assert!(!answer.text.contains("\"usage\""), "the client did not ask for usage: {}", answer.text);
    }
    let used = usage(fronted, &nodes.iter().collect::<Vec<_>>(), &kid).await;
    assert_eq!(used.requests, 10);
    assert_eq!((used.tokens_in, used.tokens_out), (10 * PROMPT_TOKENS, 10 * ANSWER_TOKENS));
    // $1 and $2 per million: 3 + 18 micro-dollars a request.
    assert_eq!(used.spend_micros, 10 * (PROMPT_TOKENS + 2 * ANSWER_TOKENS));
    assert!(used.spend_micros <= 21_200 && used.tokens_in + used.tokens_out <= 10_600);
}

#[tokio::test]
async fn fifty_concurrent_streams_on_a_key_with_room_for_ten_serve_ten() {
    let fronted = Fronted::with(&priced()).await;
    ten_of_fifty(&fronted, &[Arc::clone(&fronted.gateway)]).await;
}

#[tokio::test]
async fn two_nodes_sharing_redis_hold_one_budget_under_a_race() {
    let Some(url) = redis_url() else { return };
    let fronted = Fronted::with(&format!("{}\n{}", priced(), shared_limits(&url))).await;
    let nodes = [Arc::clone(&fronted.gateway), fronted.another_node()];
    ten_of_fifty(&fronted, &nodes).await;
}

#[tokio::test]
async fn settlements_in_redis_give_back_what_a_request_did_not_use() {
    let Some(url) = redis_url() else { return };
    let fronted = Fronted::with(&format!("{}\n{}", priced(), shared_limits(&url))).await;
    let nodes = [Arc::clone(&fronted.gateway), fronted.another_node()];
    // Room for one worst case at a time (a prompt of a few tokens and 1000), used 12 at a time.
    let (key, _) = fronted.key_and_kid(&["priced"], budget(Some("1100/day"), None)).await;
    for round in 0..8 {
        let node = Arc::clone(&nodes[round % 2]);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let answer = race_one(Arc::clone(&node), key.clone(), streamed("priced", 1000)).await;
            if answer.status == StatusCode::OK {
                break;
            }
            assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{}", answer.text);
            assert!(std::time::Instant::now() < deadline, "round {round}: the last request was never settled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn what_was_used_is_charged_whatever_the_answer_looked_like() {
    let fronted = Fronted::with(&priced()).await;
    let all = ["priced", "quiet", "slow", "fails"];
    let (key, kid) = fronted.key_and_kid(&all, budget(Some("1000000/day"), None)).await;
    let mut expected = Usage::default();
    let mut expect = |requests: u64, tokens_in: u64, tokens_out: u64| {
        expected.requests += requests;
        expected.tokens_in += tokens_in;
        expected.tokens_out += tokens_out;
    };

    // A whole answer: the upstream's usage.
    let answer = fronted.chat(&key, hello("priced")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    expect(1, PROMPT_TOKENS, ANSWER_TOKENS);

    // A stream whose client did not ask for usage: the upstream was asked, the client sees none.
    let answer = fronted.chat(&key, streamed("priced", 5)).await;
    assert!(!answer.text.contains("usage"), "{}", answer.text);
    let sent = fronted.stub.record().await;
    let upstream: Value = serde_json::from_str(sent.last().unwrap()["body"].as_str().unwrap()).unwrap();
    assert_eq!(upstream["stream_options"]["include_usage"], true);
    expect(1, PROMPT_TOKENS, 5);

    // A stream whose client asked for usage gets it, once.
    let mut asked = streamed("priced", 4);
    asked["stream_options"] = json!({"include_usage": true});
    let answer = fronted.chat(&key, asked).await;
    assert_eq!(answer.text.matches("\"usage\":{").count(), 1, "{}", answer.text);
    expect(1, PROMPT_TOKENS, 4);

    // n = 2: both choices are charged.
    let mut two = hello("priced");
    two["n"] = json!(2);
    two["max_tokens"] = json!(6);
    assert_eq!(fronted.chat(&key, two).await.status, StatusCode::OK);
    expect(1, PROMPT_TOKENS, 12);

    // A retried request: the upstream failed the first time, which costs nothing.
    assert_eq!(fronted.chat(&key, hello("fails")).await.status, StatusCode::BAD_GATEWAY);
    expect(1, 0, 0);
    assert_eq!(fronted.chat(&key, hello("priced")).await.status, StatusCode::OK);
    expect(1, PROMPT_TOKENS, ANSWER_TOKENS);

    let used = usage(&fronted, &[&fronted.gateway], &kid).await;
    assert_eq!(
        (used.requests, used.tokens_in, used.tokens_out, used.estimated),
        (expected.requests, expected.tokens_in, expected.tokens_out, 0),
        "reported usage is charged exactly"
    );
    assert_eq!(used.spend_micros, expected.tokens_in + 2 * expected.tokens_out, "$1 in and $2 out per million");

    // Without usage from the upstream, the gateway counts and says so.
    let answer = fronted.chat(&key, streamed("quiet", 50)).await;
    assert!(answer.text.trim_end().ends_with("data: [DONE]"), "{}", answer.text);
    let quiet = usage(&fronted, &[&fronted.gateway], &kid).await;
    assert_eq!(quiet.estimated, 1);
    assert!(quiet.tokens_out - used.tokens_out >= ANSWER_TOKENS / 2, "{quiet:?}");

    // A client that hangs up mid-stream is charged for what was generated until then: it reads
    // up to the second word, then goes.
    let request = Request::post("/v1/chat/completions")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(streamed("slow", 50).to_string()))
        .unwrap();
    let response = super::public(Arc::clone(&fronted.gateway)).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut read = String::new();
    while !read.contains("quick") {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame()).await.unwrap().unwrap().unwrap();
        read.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap()));
    }
    assert!(!read.contains("[DONE]"), "the stream was read whole: {read}");
    drop(body);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let cut = loop {
        let now = usage(&fronted, &[&fronted.gateway], &kid).await;
        if now.requests > quiet.requests {
            break now;
        }
        assert!(std::time::Instant::now() < deadline, "the cut stream was never charged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(cut.estimated, 2);
    assert!(cut.tokens_in > quiet.tokens_in, "its prompt was charged");
    let generated = cut.tokens_out - quiet.tokens_out;
    assert!((2..=ANSWER_TOKENS).contains(&generated), "{generated} tokens charged for a cut stream: {cut:?}");
}

#[tokio::test]
async fn a_request_that_cannot_fit_is_refused_before_the_upstream_sees_it() {
    let fronted = Fronted::with(&priced()).await;
    let (key, _) =
        fronted.key_and_kid(&["priced", "slow", "unpriced"], budget(Some("500/day"), Some("1usd/day"))).await;
    let before = fronted.stub.record().await.len();
    // More than the whole budget: a bad request, not "try later".
    let answer = fronted.chat(&key, streamed("priced", 1000)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert!(answer.text.contains("500 tokens per day"), "{}", answer.text);
    // While a request holds 300 of the 500, one asking for 400 fits the whole budget but not
    // what is left of it: 429 until the day ends.
    let held = tokio::spawn(race_one(Arc::clone(&fronted.gateway), key.clone(), streamed("slow", 300)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = fronted.chat(&key, streamed("priced", 400)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.text);
    let retry: i64 = refused.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert_eq!(retry, crate::time::until_next_day(crate::time::now()).max(1), "{retry}");
    assert_eq!(held.await.unwrap().status, StatusCode::OK);
    // Settled to what it used: the 400 fits now.
    assert_eq!(fronted.chat(&key, streamed("priced", 400)).await.status, StatusCode::OK);
    // A spend cap on a model without a price cannot be kept: refused, never free.
    let unpriced = fronted.chat(&key, hello("unpriced")).await;
    assert_eq!(unpriced.status, StatusCode::FORBIDDEN, "{}", unpriced.text);
    assert!(unpriced.text.contains("no price"), "{}", unpriced.text);
    assert_eq!(fronted.stub.record().await.len(), before + 2, "only the requests that fit reached the upstream");
}

#[tokio::test]
async fn no_credential_skips_the_budget_and_admin_keys_call_no_model() {
    let fronted = Fronted::with(&format!("{}\n[limits]\ntoken_quota = [\"40/day\"]\n", priced())).await;
    // A key without a budget of its own has the defaults: it is not a master key.
    let (key, _) = fronted.key_and_kid(&["priced"], KeyLimits::default()).await;
    let mut small = hello("priced");
    small["max_tokens"] = json!(9);
    assert_eq!(fronted.chat(&key, small.clone()).await.status, StatusCode::OK);
    assert_eq!(fronted.chat(&key, small.clone()).await.status, StatusCode::OK);
    let refused = fronted.chat(&key, small).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.text);
    // An admin key is refused on the model routes, whatever it asks.
    let admin = fronted.admin_key().await;
    for path in ["/v1/chat/completions", "/v1/completions", "/api/chat", "/v1/models"] {
        let method = if path == "/v1/models" { Method::GET } else { Method::POST };
        let body = (method == Method::POST).then(|| hello("priced"));
        let answer = fronted.send_to(&fronted.gateway, method, path, Some(&admin), body).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}: {}", answer.text);
    }
}

#[tokio::test]
async fn a_delegate_keys_end_users_each_have_a_budget_inside_the_keys() {
    let fronted = Fronted::with(&priced()).await;
    let mut body = hello("priced");
    body["max_tokens"] = json!(9);
    // The worst case the gateway reserves: the prompt as it counts it, and 9 tokens.
    let prompt = crate::llm::tokens::TokenCounter::estimate()
        .prompt_tokens(crate::llm::body::Route::ChatCompletions, body.as_object().unwrap());
    let worst = prompt + 9;
    // Each user: room for one worst case, not two; the key: room for three used (12 each) and
    // one more worst case.
    let mut limits = budget(Some(&format!("{}/day", 3 * (PROMPT_TOKENS + ANSWER_TOKENS) + worst)), None);
    limits.user_budget = budget(Some(&format!("{worst}/day")), None).budget;
    let key = fronted.delegate_key(&["priced"], limits).await;
    let ask = |user: &'static str| {
        let body = body.clone();
        let request = Request::post("/v1/chat/completions")
            .header(header::HOST, "localhost")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("portcullis-on-behalf-of", user)
            .body(Body::from(body.to_string()))
            .unwrap();
        let gateway = Arc::clone(&fronted.gateway);
        async move { super::public(gateway).oneshot(request).await.unwrap().status() }
    };
    assert_eq!(ask("ada").await, StatusCode::OK);
    // Ada's own budget has less than a worst case left: refused; Bob is not.
    assert_eq!(ask("ada").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(ask("bob").await, StatusCode::OK);
    assert_eq!(ask("cyd").await, StatusCode::OK);
    // The key has room for one more worst case, not two: a new user gains nothing.
    assert_eq!(ask("dee").await, StatusCode::OK);
    assert_eq!(ask("eve").await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_models_tokens_per_minute_hold_across_keys() {
    let fronted = Fronted::with(&priced()).await;
    let (first, _) = fronted.key_and_kid(&["metered"], KeyLimits::default()).await;
    let (second, _) = fronted.key_and_kid(&["metered"], KeyLimits::default()).await;
    let mut body = hello("metered");
    body["max_tokens"] = json!(9);
    let mut statuses = Vec::new();
    for key in [&first, &second, &first, &second, &first, &second] {
        statuses.push(fronted.chat(key, body.clone()).await.status.as_u16());
    }
    // 60 tokens a minute for all callers: each request uses 12 and reserves at most 12 + the
    // prompt's count, so four or five fit and the sixth never does within the minute.
    let served = statuses.iter().filter(|status| **status == 200).count();
    assert!((3..=5).contains(&served), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(statuses.iter().all(|status| *status == 200 || *status == 429), "{statuses:?}");
}

#[tokio::test]
async fn an_upstream_without_usage_is_counted_with_the_models_tokenizer() {
    let tokenizer = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokenizer.json");
    let extra = stub_llm("counted", "openai", "fault-no-usage", &format!("tokenizer = \"{tokenizer}\""));
    let fronted = Fronted::with(&extra).await;
    let (key, kid) = fronted.key_and_kid(&["counted"], budget(Some("100000/day"), None)).await;
    assert_eq!(fronted.chat(&key, streamed("counted", 50)).await.status, StatusCode::OK);
    assert_eq!(fronted.chat(&key, hello("counted")).await.status, StatusCode::OK);
    let used = usage(&fronted, &[&fronted.gateway], &kid).await;
    // One word, one token in the fixture's vocabulary: the answer's nine words exactly, twice;
    // the prompt's three words and the chat's per-message overhead.
    assert_eq!((used.tokens_out, used.estimated), (2 * ANSWER_TOKENS, 0), "{used:?}");
    assert!(used.tokens_in >= 2 * PROMPT_TOKENS && used.tokens_in <= 2 * (PROMPT_TOKENS + 10), "{used:?}");
}

/// A Redis server of this test's own, to stop and start again.
struct OwnRedis {
    child: std::process::Child,
}

impl OwnRedis {
    fn start(port: u16) -> Option<OwnRedis> {
        let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(binary) = binary else {
            assert!(std::env::var("CI").is_err(), "CI needs redis-server");
            eprintln!("skipping: redis-server is not installed");
            return None;
        };
        let child = std::process::Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(OwnRedis { child })
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn budgets_fail_closed_while_redis_is_down_and_recover_when_it_is_back() {
    if redis_url().is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Some(redis) = OwnRedis::start(port) else { return };
    let fronted =
        Fronted::with(&format!("{}\n{}", priced(), shared_limits(&format!("redis://127.0.0.1:{port}")))).await;
    let (budgeted, _) = fronted.key_and_kid(&["priced"], budget(Some("100000/day"), None)).await;
    let (free, _) = fronted.key_and_kid(&["priced"], KeyLimits::default()).await;
    assert_eq!(fronted.chat(&budgeted, hello("priced")).await.status, StatusCode::OK);

    drop(redis);
    let refused = fronted.chat(&budgeted, hello("priced")).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.text);
    assert_eq!(refused.json()["error"]["code"], "limiter_unavailable");
    assert_eq!(fronted.chat(&free, hello("priced")).await.status, StatusCode::OK, "no budget, no Redis needed");

    let _redis = OwnRedis::start(port).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = fronted.chat(&budgeted, hello("priced")).await;
        if answer.status == StatusCode::OK {
            break;
        }
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.text);
        assert!(std::time::Instant::now() < deadline, "budgets did not recover after Redis came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
