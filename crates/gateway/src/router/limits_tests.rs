//! Limits in process: rate limits with their headers, per-address limits that a spoofed
//! `X-Forwarded-For` cannot move, model-wide limits, quotas (spent, persisted, reset by day),
//! requests in flight, and usage accounting.

use std::{net::SocketAddr, path::Path, sync::Arc};

use axum::{body::Body, extract::ConnectInfo};
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::{
    authn::api_key::Pepper,
    backend,
    config::Config,
    keys::{Keyring, NewKey},
    state::Gateway,
    store::{KeyLimits, ModelScope, Scopes, Store, Usage, sqlite::SqliteStore},
};

const ROW: &str = "[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,-0.1,-0.2,-0.3,-0.4,-0.5,-0.6,-0.7,-0.8,-0.9,-1.0]";

fn body(rows: usize) -> String {
    let data = vec![ROW; rows].join(",");
    format!(r#"{{"inputs":[{{"name":"features","shape":[{rows},20],"datatype":"FP32","data":[{data}]}}]}}"#)
}

struct Limited {
    dir: tempfile::TempDir,
    gateway: Arc<Gateway>,
    keyring: Keyring,
    store: Arc<dyn Store>,
}

async fn gateway(dir: tempfile::TempDir) -> Limited {
    gateway_with(dir, "").await
}

/// A gateway whose `[limits]` table starts with `limits` (e.g. a Redis backend).
async fn gateway_with(dir: tempfile::TempDir, limits: &str) -> Limited {
    let mlp = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fixtures/mlp");
    let toml = format!(
        r#"
[store]
key_cache_ttl = "0s"
[limits]
{limits}
anonymous_rate = "2/min"
anonymous_burst = 2
trusted_proxies = ["10.0.0.0/8"]
[[models]]
name = "mlp"
path = "{mlp}/model.onnx"
checks = "{mlp}/checks.json"
[[models]]
name = "open"
path = "{mlp}/model.onnx"
public = true
[[models]]
name = "capped"
path = "{mlp}/model.onnx"
rate = "2/min"
burst = 2
"#,
        mlp = mlp.display()
    );
    let config = Config::from_toml(&toml, dir.path()).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("k.db")).await.unwrap());
    let pepper = Pepper::from_bytes(vec![3; 32]);
    let registry = backend::load_models(&config).unwrap();
    let gateway = Gateway::builder(config).models(registry).store(Arc::clone(&store), pepper.clone()).build().unwrap();
    let keyring = gateway.keyring(pepper);
    Limited { dir, gateway, keyring, store }
}

impl Limited {
    async fn new() -> Limited {
        gateway(tempfile::tempdir().unwrap()).await
    }

    async fn key(&self, limits: KeyLimits) -> (String, String) {
        let new = NewKey {
            name: "limited".into(),
            owner: None,
            models: ModelScope::All,
            scopes: Scopes::ALL,
            output: None,
            widen_output: false,
            delegate: false,
            expires_in: None,
            limits,
        };
        let (secret, record) = self.keyring.create(&new).await.unwrap();
        (secret.expose().to_owned(), record.kid)
    }

    async fn delegate_key(&self, limits: KeyLimits) -> (String, String) {
        let new = NewKey {
            name: "app-backend".into(),
            owner: None,
            models: ModelScope::All,
            scopes: Scopes::ALL,
            output: None,
            widen_output: false,
            delegate: true,
            expires_in: None,
            limits,
        };
        let (secret, record) = self.keyring.create(&new).await.unwrap();
        (secret.expose().to_owned(), record.kid)
    }

    /// An inference by a delegate key acting for `user`.
    async fn infer_for(&self, key: &str, user: &str) -> Reply {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/v2/models/mlp/infer")
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header("portcullis-on-behalf-of", user)
            .body(Body::from(body(1)))
            .unwrap();
        request.extensions_mut().insert(ConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
        let response = super::public(Arc::clone(&self.gateway)).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply { status, headers, body: serde_json::from_slice(&bytes).unwrap_or_default() }
    }

    async fn infer(&self, model: &str, key: Option<&str>, peer: &str, forwarded: Option<&str>, rows: usize) -> Reply {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("/v2/models/{model}/infer"))
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        if let Some(forwarded) = forwarded {
            request = request.header("x-forwarded-for", forwarded);
        }
        let mut request = request.body(Body::from(body(rows))).unwrap();
        request.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let response = super::public(Arc::clone(&self.gateway)).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply { status, headers, body: serde_json::from_slice(&bytes).unwrap_or_default() }
    }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: serde_json::Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<u64> {
        self.headers.get(name).and_then(|value| value.to_str().ok()).and_then(|text| text.parse().ok())
    }
}

const PEER: &str = "198.51.100.7:4000";

fn limits(text: &[(&str, &str)]) -> KeyLimits {
    let mut limits = KeyLimits::default();
    for (field, value) in text {
        match *field {
            "rate" => limits.rate = Some(value.parse().unwrap()),
            "burst" => limits.burst = Some(value.parse().unwrap()),
            "concurrency" => limits.concurrency = Some(value.parse().unwrap()),
            "quota" => limits.quotas.push(value.parse().unwrap()),
            "row_quota" => limits.row_quotas.push(value.parse().unwrap()),
            "user_rate" => limits.user_rate = Some(value.parse().unwrap()),
            "user_burst" => limits.user_burst = Some(value.parse().unwrap()),
            "user_concurrency" => limits.user_concurrency = Some(value.parse().unwrap()),
            "user_quota" => limits.user_quotas.push(value.parse().unwrap()),
            "max_users" => limits.max_users = Some(value.parse().unwrap()),
            other => panic!("{other}"),
        }
    }
    limits
}

#[tokio::test]
async fn a_keys_rate_limit_answers_429_with_its_headers() {
    let limited = Limited::new().await;
    let (key, _) = limited.key(limits(&[("rate", "3/min"), ("burst", "3")])).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let reply = limited.infer("mlp", Some(&key), PEER, None, 1).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.header("ratelimit-limit"), Some(3));
        remaining.push(reply.header("ratelimit-remaining").unwrap());
        assert!(reply.header("ratelimit-reset").unwrap() <= 60);
    }
    assert_eq!(remaining, [2, 1, 0]);
    let refused = limited.infer("mlp", Some(&key), PEER, None, 1).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.body["code"], "rate_limited");
    let retry = refused.header("retry-after").unwrap();
    assert!((1..=20).contains(&retry), "one emission interval (20 s) at most: {retry}");
    assert_eq!(refused.header("ratelimit-remaining"), Some(0));
    // Another key has its own bucket.
    let (other, _) = limited.key(limits(&[("rate", "3/min")])).await;
    assert_eq!(limited.infer("mlp", Some(&other), PEER, None, 1).await.status, StatusCode::OK);
}

#[tokio::test]
async fn anonymous_limits_follow_the_real_client_address() {
    let limited = Limited::new().await;
    // From an untrusted peer, X-Forwarded-For is ignored: each spoofed address hits one bucket.
    let statuses: Vec<StatusCode> = {
        let mut statuses = Vec::new();
        for spoofed in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
            statuses.push(limited.infer("open", None, PEER, Some(spoofed), 1).await.status);
        }
        statuses
    };
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    // Through a trusted proxy, each forwarded client has its own bucket.
    for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let reply = limited.infer("open", None, "10.0.0.1:4000", Some(client), 1).await;
        assert_eq!(reply.status, StatusCode::OK, "{client}");
    }
    // ...and a client behind it that prepends a fake address still lands in its own bucket.
    for _ in 0..2 {
        let reply = limited.infer("open", None, "10.0.0.1:4000", Some("1.1.1.1, 203.0.113.4"), 1).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let reply = limited.infer("open", None, "10.0.0.1:4000", Some("9.9.9.9, 203.0.113.4"), 1).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_models_own_limit_holds_across_keys_and_is_not_spent_by_strangers() {
    let limited = Limited::new().await;
    let (a, _) = limited.key(KeyLimits::default()).await;
    let (b, _) = limited.key(KeyLimits::default()).await;
    assert_eq!(limited.infer("capped", Some(&a), PEER, None, 1).await.status, StatusCode::OK);
    assert_eq!(limited.infer("capped", Some(&b), PEER, None, 1).await.status, StatusCode::OK);
    let refused = limited.infer("capped", Some(&a), PEER, None, 1).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")));
    assert_eq!(limited.infer("mlp", Some(&a), PEER, None, 1).await.status, StatusCode::OK, "other models are free");
}

#[tokio::test]
async fn quotas_are_spent_persisted_and_reset_by_day() {
    let limited = Limited::new().await;
    let (key, kid) = limited.key(limits(&[("quota", "3/day"), ("row_quota", "5/day")])).await;
    assert_eq!(limited.infer("mlp", Some(&key), PEER, None, 4).await.status, StatusCode::OK);
    // Two more rows would pass the row quota: refused, and not counted.
    let refused = limited.infer("mlp", Some(&key), PEER, None, 2).await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("quota_exhausted"))
    );
    assert!(refused.body["error"].as_str().unwrap().contains("rows quota of 5/day"));
    let until_midnight = crate::time::until_next_day(crate::time::now()) as u64;
    assert!(refused.header("retry-after").unwrap().abs_diff(until_midnight) <= 2);
    assert_eq!(limited.infer("mlp", Some(&key), PEER, None, 1).await.status, StatusCode::OK);
    // Three requests were admitted (the refused one counts as a request): the fourth is over.
    let refused = limited.infer("mlp", Some(&key), PEER, None, 1).await;
    assert_eq!(refused.body["code"], "quota_exhausted");
    assert!(refused.body["error"].as_str().unwrap().contains("requests quota of 3/day"));

    // Usage reaches the store, per key, model and day.
    limited.gateway.limiter().flush_usage().await;
    let today = crate::time::day_of(crate::time::now());
    let usage = limited.store.usage(Some(&kid), &today).await.unwrap();
    assert_eq!(
        usage,
        [Usage { kid: kid.clone(), model: "mlp".into(), day: today.clone(), requests: 3, rows: 5, ..Usage::default() }]
    );

    // The admin listener shows the same rows to an admin key; a malformed day is a 400.
    let (admin_key, _) = limited.keyring.create_admin("ops", None, None).await.unwrap();
    let admin_key = admin_key.expose().to_owned();
    let admin = |uri: String| {
        let gateway = Arc::clone(&limited.gateway);
        let admin_key = admin_key.clone();
        async move {
            let request = Request::builder()
                .uri(uri)
                .header(header::HOST, "127.0.0.1:9090")
                .header(header::AUTHORIZATION, format!("Bearer {admin_key}"))
                .body(Body::empty())
                .unwrap();
            let response = super::admin(gateway).oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<serde_json::Value>(&bytes).unwrap())
        }
    };
    let (status, rows) = admin(format!("/usage?key={kid}&since={today}")).await;
    assert_eq!(status, StatusCode::OK);
    let expected = serde_json::json!([{
        "id": kid, "model": "mlp", "day": today, "requests": 3, "rows": 5,
        "tokens_in": 0, "tokens_out": 0, "spend_micros": 0, "spend_usd": "0", "estimated": 0,
    }]);
    assert_eq!(rows, expected);
    assert_eq!(admin("/usage?since=last-week".into()).await.0, StatusCode::BAD_REQUEST);

    // A restarted node (same store) still sees the quota spent.
    let Limited { dir, store, .. } = limited;
    let restarted = gateway(dir).await;
    assert_eq!(restarted.infer("mlp", Some(&key), PEER, None, 1).await.body["code"], "quota_exhausted");

    // Yesterday's usage does not count today.
    let (fresh, fresh_kid) = restarted.key(limits(&[("quota", "3/day")])).await;
    let yesterday = crate::time::day_of(crate::time::now() - 86_400);
    let old =
        Usage { kid: fresh_kid, model: "mlp".into(), day: yesterday, requests: 1_000, rows: 1_000, ..Usage::default() };
    store.add_usage(&[old]).await.unwrap();
    assert_eq!(restarted.infer("mlp", Some(&fresh), PEER, None, 1).await.status, StatusCode::OK);
}

#[tokio::test]
async fn requests_in_flight_are_capped_per_principal() {
    let limited = Limited::new().await;
    let (key, _) = limited.key(limits(&[("concurrency", "1")])).await;
    let principal = limited.gateway.verifier().verify(&key).await.unwrap();
    let effective = crate::limits::Effective::of(&principal, limited.gateway.limiter().config());
    let held = limited.gateway.limiter().admit(&principal, &effective, None).await.unwrap();
    let reply = limited.infer("mlp", Some(&key), PEER, None, 1).await;
    assert_eq!((reply.status, reply.body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("overloaded")));
    assert_eq!(reply.header("retry-after"), Some(1));
    drop(held);
    assert_eq!(limited.infer("mlp", Some(&key), PEER, None, 1).await.status, StatusCode::OK);
}

/// The Redis URL CI provides; without it the shared-limiter tests say so and pass.
pub(super) fn redis_url() -> Option<String> {
    match std::env::var("PORTCULLIS_TEST_REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").is_ok() => panic!("CI must set PORTCULLIS_TEST_REDIS_URL"),
        Err(_) => {
            eprintln!("skipping: PORTCULLIS_TEST_REDIS_URL is not set (.ci/run sets it)");
            None
        }
    }
}

pub(super) fn unique_prefix() -> String {
    format!("ptcl-test-{}-{}:", std::process::id(), crate::hex::encode(&rand_bytes()))
}

fn rand_bytes() -> [u8; 6] {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

#[tokio::test]
async fn two_nodes_sharing_redis_hold_one_limit_and_one_quota() {
    let Some(url) = redis_url() else { return };
    let shared = format!("backend = \"{url}\"\nredis_prefix = \"{}\"", unique_prefix());
    let dir = tempfile::tempdir().unwrap();
    let first = gateway_with(dir, &shared).await;
    // The second node shares the first one's store and Redis.
    let second_dir = tempfile::tempdir().unwrap();
    let mut second = gateway_with(second_dir, &shared).await;
    let (key, kid) = first.key(limits(&[("rate", "4/min"), ("burst", "4"), ("quota", "6/day")])).await;
    let record = first.store.find_key(&kid).await.unwrap().unwrap();
    second.store.insert_key(&record).await.unwrap();
    second.keyring = second.gateway.keyring(Pepper::from_bytes(vec![3; 32]));

    let mut statuses = Vec::new();
    for node in [&first, &second, &first, &second, &first] {
        statuses.push(node.infer("mlp", Some(&key), PEER, None, 1).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429], "four across both nodes, then refused on either");
    let refused = second.infer("mlp", Some(&key), PEER, None, 1).await;
    assert_eq!(refused.body["code"], "rate_limited");
    assert!(refused.header("retry-after").unwrap() >= 1);

    // The model-wide limit is shared too.
    let (other, other_kid) = first.key(KeyLimits::default()).await;
    second.store.insert_key(&first.store.find_key(&other_kid).await.unwrap().unwrap()).await.unwrap();
    let capped: Vec<u16> = vec![
        first.infer("capped", Some(&other), PEER, None, 1).await.status.as_u16(),
        second.infer("capped", Some(&other), PEER, None, 1).await.status.as_u16(),
        first.infer("capped", Some(&other), PEER, None, 1).await.status.as_u16(),
    ];
    assert_eq!(capped, [200, 200, 429]);
}

#[tokio::test]
async fn quota_counters_in_redis_are_seeded_from_the_store() {
    let Some(url) = redis_url() else { return };
    let shared = format!("backend = \"{url}\"\nredis_prefix = \"{}\"", unique_prefix());
    let limited = gateway_with(tempfile::tempdir().unwrap(), &shared).await;
    let (key, kid) = limited.key(limits(&[("quota", "5/day"), ("row_quota", "100/month")])).await;
    // Earlier today this key made 4 requests (written by some node before Redis lost them).
    let today = crate::time::day_of(crate::time::now());
    let earlier = Usage { kid, model: "mlp".into(), day: today, requests: 4, rows: 98, ..Usage::default() };
    limited.store.add_usage(&[earlier]).await.unwrap();
    assert_eq!(limited.infer("mlp", Some(&key), PEER, None, 2).await.status, StatusCode::OK);
    let refused = limited.infer("mlp", Some(&key), PEER, None, 1).await;
    assert_eq!(refused.body["code"], "quota_exhausted");
    assert!(refused.body["error"].as_str().unwrap().contains("requests quota of 5/day"), "{}", refused.body);
}

#[tokio::test]
async fn an_unreachable_redis_fails_closed_unless_told_to_fall_back() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let closed = format!("backend = \"redis://127.0.0.1:{port}\"");
    let limited = gateway_with(tempfile::tempdir().unwrap(), &closed).await;
    let (limited_key, _) = limited.key(limits(&[("rate", "10/s")])).await;
    let (free_key, _) = limited.key(KeyLimits::default()).await;
    let reply = limited.infer("mlp", Some(&limited_key), PEER, None, 1).await;
    assert_eq!(
        (reply.status, reply.body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("limiter_unavailable"))
    );
    assert_eq!(reply.header("retry-after"), Some(1));
    assert_eq!(
        limited.infer("mlp", Some(&free_key), PEER, None, 1).await.status,
        StatusCode::OK,
        "unlimited keys need no Redis"
    );

    let fallback = gateway_with(tempfile::tempdir().unwrap(), &format!("{closed}\non_unavailable = \"local\"")).await;
    let (key, _) = fallback.key(limits(&[("rate", "1/min"), ("burst", "1")])).await;
    assert_eq!(fallback.infer("mlp", Some(&key), PEER, None, 1).await.status, StatusCode::OK);
    assert_eq!(
        fallback.infer("mlp", Some(&key), PEER, None, 1).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "local limits still hold"
    );
}

#[tokio::test]
async fn a_full_server_or_model_queue_sheds_load_at_once() {
    let limited = Limited::new().await;
    let (key, _) = limited.key(KeyLimits::default()).await;
    // Every request slot of the server taken: 503 at once, with Retry-After.
    let slots = limited.gateway.config().max_concurrency as u32;
    let held = limited.gateway.in_flight().try_acquire_many(slots).unwrap();
    let started = std::time::Instant::now();
    let reply = limited.infer("mlp", Some(&key), PEER, None, 1).await;
    assert_eq!((reply.status, reply.body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("overloaded")));
    assert_eq!(reply.header("retry-after"), Some(1));
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "refused at once, not queued");
    drop(held);
    // The inference queue full (every thread busy, every queue place taken): 503 at once too.
    let pool = &limited.gateway.pool();
    let mut admitted = Vec::new();
    while let Ok(place) = pool.admit() {
        admitted.push(place);
    }
    let reply = limited.infer("capped", Some(&key), PEER, None, 1).await;
    assert_eq!((reply.status, reply.body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("overloaded")));
    assert_eq!(reply.header("retry-after"), Some(1));
    drop(admitted);
    assert_eq!(limited.infer("mlp", Some(&key), PEER, None, 1).await.status, StatusCode::OK);
}

/// Sends one request per fresh end user; returns the statuses.
async fn one_request_per_new_user(limited: &Limited, key: &str, count: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for user in 0..count {
        statuses.push(limited.infer_for(key, &format!("user-{user}")).await.status.as_u16());
    }
    statuses
}

#[tokio::test]
async fn a_delegate_key_naming_a_new_user_per_request_is_still_rate_limited() {
    let limited = Limited::new().await;
    let (key, _) = limited.delegate_key(limits(&[("rate", "5/s"), ("burst", "5")])).await;
    let statuses = one_request_per_new_user(&limited, &key, 60).await;
    let served = statuses.iter().filter(|status| **status == 200).count();
    assert!(served <= 6, "a 5/s key served {served} of 60 requests naming new users: {statuses:?}");
    assert!(statuses.contains(&429));
}

#[tokio::test]
async fn a_delegate_key_naming_a_new_user_per_request_keeps_its_quota() {
    let limited = Limited::new().await;
    let (key, kid) = limited.delegate_key(limits(&[("quota", "10/day")])).await;
    let statuses = one_request_per_new_user(&limited, &key, 50).await;
    assert_eq!(statuses.iter().filter(|status| **status == 200).count(), 10, "{statuses:?}");
    let refused = limited.infer_for(&key, "one-more").await;
    assert_eq!(refused.body["code"], "quota_exhausted");
    // After a restart the key-wide count is seeded from the usage of all its users.
    limited.gateway.limiter().flush_usage().await;
    let usage = limited.store.usage(Some(&kid), "2000-01-01").await.unwrap();
    assert_eq!(usage.iter().map(|row| row.requests).sum::<u64>(), 10);
    let restarted = gateway(limited.dir).await;
    assert_eq!(restarted.infer_for(&key, "fresh").await.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_delegate_key_with_concurrency_one_holds_one_slot_whatever_user_it_names() {
    let limited = Limited::new().await;
    let (key, _) = limited.delegate_key(limits(&[("concurrency", "1")])).await;
    let mut principal = limited.gateway.verifier().verify(&key).await.unwrap();
    principal.delegator = Some(principal.id.clone());
    principal.id = principal.id.on_behalf_of("alice");
    let effective = crate::limits::Effective::of(&principal, limited.gateway.limiter().config());
    let held = limited.gateway.limiter().admit(&principal, &effective, None).await.unwrap();
    let reply = limited.infer_for(&key, "bob").await;
    assert_eq!((reply.status, reply.body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("overloaded")));
    drop(held);
    assert_eq!(limited.infer_for(&key, "bob").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_delegate_keys_end_users_have_their_own_limits_too() {
    let limited = Limited::new().await;
    let (key, _) =
        limited.delegate_key(limits(&[("user_rate", "1/min"), ("user_burst", "1"), ("user_quota", "5/day")])).await;
    assert_eq!(limited.infer_for(&key, "alice").await.status, StatusCode::OK);
    let again = limited.infer_for(&key, "alice").await;
    assert_eq!((again.status, again.body["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")));
    assert_eq!(limited.infer_for(&key, "bob").await.status, StatusCode::OK, "another user has a bucket of its own");
}

#[tokio::test]
async fn a_delegate_key_names_at_most_its_cap_of_distinct_users() {
    let limited = Limited::new().await;
    let (key, _) = limited.delegate_key(limits(&[("max_users", "3/h")])).await;
    assert_eq!(one_request_per_new_user(&limited, &key, 4).await, [200, 200, 200, 429]);
    let refused = limited.infer_for(&key, "user-9").await;
    assert_eq!(refused.body["code"], "rate_limited");
    assert!(refused.header("retry-after").unwrap() >= 1);
    assert_eq!(limited.infer_for(&key, "user-1").await.status, StatusCode::OK, "known users go on");
    // Without a cap of its own the key gets the safe default.
    let (uncapped, _) = limited.delegate_key(KeyLimits::default()).await;
    assert_eq!(limited.gateway.limiter().config().max_users, crate::config::DEFAULT_MAX_USERS);
    assert_eq!(limited.infer_for(&uncapped, "someone").await.status, StatusCode::OK);
}

#[tokio::test]
async fn two_nodes_sharing_redis_hold_a_delegate_keys_user_cap_and_rate() {
    let Some(url) = redis_url() else { return };
    let shared = format!("backend = \"{url}\"\nredis_prefix = \"{}\"", unique_prefix());
    let first = gateway_with(tempfile::tempdir().unwrap(), &shared).await;
    let mut second = gateway_with(tempfile::tempdir().unwrap(), &shared).await;
    let (key, kid) = first.delegate_key(limits(&[("rate", "4/min"), ("burst", "4"), ("max_users", "2/h")])).await;
    second.store.insert_key(&first.store.find_key(&kid).await.unwrap().unwrap()).await.unwrap();
    second.keyring = second.gateway.keyring(Pepper::from_bytes(vec![3; 32]));
    let statuses = [
        first.infer_for(&key, "a").await.status.as_u16(),
        second.infer_for(&key, "b").await.status.as_u16(),
        second.infer_for(&key, "c").await.status.as_u16(),
        first.infer_for(&key, "a").await.status.as_u16(),
        second.infer_for(&key, "b").await.status.as_u16(),
        first.infer_for(&key, "b").await.status.as_u16(),
    ];
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429], "two users across nodes, then four requests in all");
}

/// A Redis server on loopback that speaks TLS only, with a certificate from a CA of the test's.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_redis() -> Option<TlsRedis> {
    let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].into_iter().find(|p| Path::new(p).exists());
    let Some(binary) = binary else {
        eprintln!("skipping: redis-server is not installed");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::tls::pki::Pki::new("redis test CA").unwrap();
    let server = pki.server(&["localhost", "127.0.0.1"]).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca = write("ca.pem", &pki.ca_pem());
    let cert = write("cert.pem", &server.cert_pem);
    let key = write("key.pem", &server.key_pem);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new(binary)
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-auth-clients", "no", "--dir"])
        .arg(dir.path())
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&ca)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "redis-server with TLS did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Some(TlsRedis { child, port, ca, _dir: dir })
}

#[tokio::test]
async fn limits_hold_over_a_tls_link_to_redis() {
    if redis_url().is_none() {
        return;
    }
    let Some(redis) = tls_redis() else { return };
    let shared = format!(
        "backend = \"rediss://127.0.0.1:{}\"\nredis_ca_file = \"{}\"\nredis_prefix = \"{}\"",
        redis.port,
        redis.ca.display(),
        unique_prefix()
    );
    let limited = gateway_with(tempfile::tempdir().unwrap(), &shared).await;
    let (key, _) = limited.key(limits(&[("rate", "1/min"), ("burst", "1")])).await;
    assert_eq!(limited.infer("mlp", Some(&key), PEER, None, 1).await.status, StatusCode::OK);
    let refused = limited.infer("mlp", Some(&key), PEER, None, 1).await;
    assert_eq!(refused.body["code"], "rate_limited", "decided by the TLS Redis");

    // Without the CA, the server's certificate is not trusted: limited requests fail closed.
    let untrusted = format!("backend = \"rediss://127.0.0.1:{}\"\nredis_prefix = \"{}\"", redis.port, unique_prefix());
    let closed = gateway_with(tempfile::tempdir().unwrap(), &untrusted).await;
    let (key, _) = closed.key(limits(&[("rate", "10/s")])).await;
    let reply = closed.infer("mlp", Some(&key), PEER, None, 1).await;
    assert_eq!(reply.body["code"], "limiter_unavailable");
    // A CA file on a plain redis:// URL is a configuration error.
    let toml = "[limits]\nbackend = \"redis://127.0.0.1:6379\"\nredis_ca_file = \"ca.pem\"\n";
    let error = Config::from_toml(toml, Path::new(".")).unwrap_err().to_string();
    assert!(error.contains("needs a rediss://"), "{error}");
}
