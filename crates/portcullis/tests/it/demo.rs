//! `portcullis demo`: the README's first command.

use crate::process::{Running, client, run};

#[tokio::test]
async fn demo_serves_denies_by_default_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let demo = Running::start(&["demo", "--data-dir", data, "--port", "0", "--admin-port", "0"], &[]);
    let banner = demo.banner.join("\n");
    let key = banner
        .split_whitespace()
        .find(|word| word.starts_with("ptcl_sk_") && word.len() == 54)
        .unwrap_or_else(|| panic!("no key in the banner:\n{banner}"))
        .to_owned();
    let body =
        r#"{"inputs":[{"name":"features","shape":[1,8],"datatype":"FP32","data":[[35,52000,0.3,4,0,15000,6,0.35]]}]}"#;
    let http = client();
    let infer = |model: &str| demo.url(&format!("/v2/models/{model}/infer"));

    let anonymous =
        http.post(infer("credit-risk")).header("content-type", "application/json").body(body).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    let allowed = http
        .post(infer("credit-risk"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    let prediction: serde_json::Value = allowed.json().await.unwrap();
    let names: Vec<&str> =
        prediction["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["label", "probabilities"]);

    let other = http
        .post(infer("credit-risk-shadow"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);

    let metrics = http.get(format!("http://{}/metrics", demo.admin)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("portcullis_http_requests_total"), "{metrics}");
    assert!(metrics.contains("portcullis_models_loaded 2"), "{metrics}");

    // The demo's config manages the running demo's keys.
    let config = dir.path().join("portcullis.toml");
    let output = run(&["keys", "list", "--config", config.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("demo"));

    let (status, _) = demo.terminate();
    assert!(status.success(), "{status:?}");
}
