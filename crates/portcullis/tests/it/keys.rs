//! `portcullis keys` against a real store, and the keys it makes against a real server.

use crate::process::{Running, client, run, write_config};

fn create_key(config: &str, models: &str) -> serde_json::Value {
    let output = run(&["keys", "create", "--config", config, "--name", "it", "--models", models, "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn keys_cli_lifecycle_is_enforced_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let config = config.to_str().unwrap();
    let created = create_key(config, "mlp");
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(apikey::parse(&key).is_ok());

    // The secret is shown once: never by list or show.
    for args in [
        vec!["keys", "list", "--config", config],
        vec!["keys", "show", &id, "--config", config],
        vec!["keys", "list", "--json", "--config", config],
    ] {
        let output = run(&args);
        assert!(output.status.success());
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains(&id), "{text}");
        assert!(!text.contains(&key[16..48]), "secret shown by {args:?}");
    }
    // Nor is it in the store file.
    let db = std::fs::read(dir.path().join("portcullis.db")).unwrap();
    assert!(!db.windows(32).any(|window| window == &key.as_bytes()[16..48]));

    let server = Running::start(&["serve", "--config", config], &[]);
    let http = client();
    let metadata = server.url("/v2/models/mlp");
    let status = http.get(&metadata).bearer_auth(&key).send().await.unwrap().status();
    assert_eq!(status, 200);

    // Rotation: both keys work during the overlap.
    let output = run(&["keys", "rotate", &id, "--overlap", "1h", "--json", "--config", config]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rotated: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    for presented in [&key, &new_key] {
        assert_eq!(http.get(&metadata).bearer_auth(presented).send().await.unwrap().status(), 200);
    }

    // Revocation takes effect (the test config caches keys for 0 s).
    let output = run(&["keys", "revoke", &id, "--config", config]);
    assert!(output.status.success());
    assert_eq!(http.get(&metadata).bearer_auth(&key).send().await.unwrap().status(), 401);
    assert_eq!(http.get(&metadata).bearer_auth(&new_key).send().await.unwrap().status(), 200);

    // Errors are clear and exit 2.
    let output = run(&["keys", "revoke", "nokey123", "--config", config]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no key with id nokey123"));
    let output = run(&["keys", "create", "--name", "x", "--models", "mlp", "--expires", "soon", "--config", config]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a duration"));

    // No key material reached the server's log.
    let (status, lines) = server.terminate();
    assert!(status.success());
    let log = lines.join("\n");
    assert!(!log.contains(&key[16..48]) && !log.contains(&new_key[16..48]));
}
