//! Two `serve` processes on loopback sharing PostgreSQL (keys, usage) and Redis (limits,
//! revocations): one limit for both, a revocation on one seen by both within a second, and an
//! outage of Redis that fails closed and heals by itself.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::process::{Running, client, models, run};

/// `PORTCULLIS_TEST_<NAME>_URL`, or `None` with a note (CI always sets both).
fn service_url(name: &str) -> Option<String> {
    let variable = format!("PORTCULLIS_TEST_{name}_URL");
    match std::env::var(&variable) {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").is_ok() => panic!("CI must set {variable}"),
        Err(_) => {
            eprintln!("skipping: {variable} is not set (.ci/run sets it)");
            None
        }
    }
}

fn random_hex() -> String {
    let bytes: [u8; 6] = std::array::from_fn(|_| fastrand_byte());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fastrand_byte() -> u8 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(Instant::now()) & 0xff) as u8
}

/// A fresh database for this test in the PostgreSQL CI provides.
async fn fresh_database(base: &str) -> String {
    use sqlx::Connection;
    let name = format!("portcullis_it_{}", random_hex());
    let mut admin = sqlx::PgConnection::connect(base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}")
}

/// A config for one node: PostgreSQL store, Redis limits under `prefix`. Keys are cached for a
/// minute, so a revocation seen sooner came through the shared channel, not the cache expiry.
fn write_node_config(dir: &Path, node: &str, postgres: &str, redis: &str, prefix: &str) -> PathBuf {
    let mlp = models().join("fixtures/mlp");
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace = "5s"

[store]
url = "{postgres}"
key_cache_ttl = "60s"
pepper_file = "pepper"

[audit]
path = "audit-{node}.log"

[limits]
backend = "{redis}"
redis_prefix = "{prefix}"

[[models]]
name = "mlp"
path = "{mlp}/model.onnx"
"#,
        mlp = mlp.display(),
    );
    let path = dir.join(format!("{node}.toml"));
    std::fs::write(&path, config).unwrap();
    path
}

fn create_key(config: &Path, extra: &[&str]) -> (String, String) {
    let mut args =
        vec!["keys", "create", "--config", config.to_str().unwrap(), "--name", "it", "--models", "mlp", "--json"];
    args.extend_from_slice(extra);
    let output = run(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    (created["key"].as_str().unwrap().to_owned(), created["id"].as_str().unwrap().to_owned())
}

const BODY: &str = r#"{"inputs":[{"name":"features","shape":[1,20],"datatype":"FP32","data":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,-0.1,-0.2,-0.3,-0.4,-0.5,-0.6,-0.7,-0.8,-0.9,-1.0]}]}"#;

async fn infer(node: &Running, key: &str) -> u16 {
    let response = client()
        .post(node.url("/v2/models/mlp/infer"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn two_nodes_share_one_limit_and_see_a_revocation_within_a_second() {
    let (Some(postgres), Some(redis)) = (service_url("POSTGRES"), service_url("REDIS")) else { return };
    let postgres = fresh_database(&postgres).await;
    let prefix = format!("ptcl-it-{}:", random_hex());
    let dir = tempfile::tempdir().unwrap();
    let config_a = write_node_config(dir.path(), "a", &postgres, &redis, &prefix);
    let config_b = write_node_config(dir.path(), "b", &postgres, &redis, &prefix);
    let (limited, limited_id) = create_key(&config_a, &["--rate", "10/min", "--burst", "10"]);
    let (doomed, doomed_id) = create_key(&config_a, &[]);
    let a = Running::start(&["serve", "--config", config_a.to_str().unwrap()], &[]);
    let b = Running::start(&["serve", "--config", config_b.to_str().unwrap()], &[]);

    // Ten requests across both nodes, then both refuse: one limit, not one per node.
    let mut statuses = Vec::new();
    for i in 0..14 {
        statuses.push(infer(if i % 2 == 0 { &a } else { &b }, &limited).await);
    }
    assert_eq!(statuses.iter().filter(|&&status| status == 200).count(), 10, "{statuses:?}");
    assert!(statuses[10..].iter().all(|&status| status == 429), "{statuses:?}");

    // Both nodes have the other key cached (for a minute); a revocation reaches both at once.
    assert_eq!((infer(&a, &doomed).await, infer(&b, &doomed).await), (200, 200));
    let output = run(&["keys", "revoke", &doomed_id, "--config", config_b.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("Every running server was told"));
    let revoked = Instant::now();
    loop {
        if (infer(&a, &doomed).await, infer(&b, &doomed).await) == (401, 401) {
            break;
        }
        assert!(revoked.elapsed() < Duration::from_secs(1), "a node still accepts the key after 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("revocation seen by both nodes after {:?}", revoked.elapsed());

    // Usage from both nodes lands in the shared store.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let output = run(&["keys", "usage", "--json", "--config", config_a.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let usage: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let requests: u64 = usage
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["id"] == limited_id.as_str())
        .map(|row| row["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 10, "the ten admitted requests, from both nodes: {usage}");
}

/// A Redis server of the test's own on a free port, so it can be stopped and started.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(port: u16) -> Option<OwnRedis> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(OwnRedis { port, child: Some(child) })
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn a_redis_outage_fails_closed_and_heals_without_a_restart() {
    let Some(postgres) = service_url("POSTGRES") else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Some(mut redis) = OwnRedis::start(port) else {
        assert!(std::env::var("CI").is_err(), "CI needs redis-server on the PATH");
        eprintln!("skipping: redis-server is not installed");
        return;
    };
    let postgres = fresh_database(&postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let config_a = write_node_config(dir.path(), "a", &postgres, &url, "ptcl:");
    let config_b = write_node_config(dir.path(), "b", &postgres, &url, "ptcl:");
    let (key, _) = create_key(&config_a, &["--rate", "100/s"]);
    let a = Running::start(&["serve", "--config", config_a.to_str().unwrap()], &[]);
    let b = Running::start(&["serve", "--config", config_b.to_str().unwrap()], &[]);
    assert_eq!((infer(&a, &key).await, infer(&b, &key).await), (200, 200));

    redis.stop();
    // Limited requests are refused, never waved through, while Redis is away.
    for node in [&a, &b, &a, &b] {
        assert_eq!(infer(node, &key).await, 503);
    }
    let response = client()
        .post(a.url("/v2/models/mlp/infer"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "limiter_unavailable");

    // Redis is back on the same port: both nodes reconnect by themselves.
    let _redis = OwnRedis::start(port).unwrap();
    let back = Instant::now();
    loop {
        if (infer(&a, &key).await, infer(&b, &key).await) == (200, 200) {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(15), "the nodes did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
