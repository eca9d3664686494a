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

#[tokio::test]
async fn limits_are_set_changed_and_refused_precisely_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let config = config.to_str().unwrap();
    let refused = |args: &[&str], message: &str| create_is_refused(config, args, message);
    refused(&["--rate", "0/s"], "zero");
    refused(&["--rate=-3/s"], "negative");
    refused(&["--rate", "5/fortnight"], "unknown unit");
    refused(&["--rate", "99999999999999999999/s"], "not a whole number");
    refused(&["--burst", "5"], "--burst needs --rate");
    refused(&["--rate", "5/s", "--burst", "0"], "at least 1");
    refused(&["--quota", "10/day", "--quota", "20/day"], "two quotas per day");
    refused(&["--concurrency", "0"], "at least 1");

    let output = run(&[
        "keys",
        "create",
        "--name",
        "x",
        "--models",
        "mlp",
        "--rate",
        "50/s",
        "--burst",
        "100",
        "--quota",
        "100000/day",
        "--concurrency",
        "8",
        "--json",
        "--config",
        config,
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(created["limits"], "rate=50/s burst=100 concurrency=8 quota=100000/day");
    let id = created["id"].as_str().unwrap();
    let output =
        run(&["keys", "update", id, "--rate", "5/min", "--row-quota", "1000/month", "--json", "--config", config]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let updated: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(updated["limits"], "rate=5/min row_quota=1000/month");
    let output = run(&["keys", "show", id, "--json", "--config", config]);
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["limits"], "rate=5/min row_quota=1000/month", "stored, not just printed");

    // The server enforces a key's limit: 2/min with a burst of 2 gets two at once, then 429.
    let server = Running::start(&["serve", "--config", config], &[]);
    let output = run(&[
        "keys", "create", "--name", "y", "--models", "mlp", "--rate", "2/min", "--burst", "2", "--json", "--config",
        config,
    ]);
    let key: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response =
            http.get(server.url("/v2/models/mlp")).bearer_auth(key["key"].as_str().unwrap()).send().await.unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);

    let output = run(&["keys", "usage", "--since", "yesterday", "--config", config]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("YYYY-MM-DD"));
    let output = run(&["keys", "usage", "--json", "--config", config]);
    assert!(output.status.success());
}

#[tokio::test]
async fn a_key_revoked_by_the_command_line_is_refused_within_a_second_without_redis() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    // A long cache: the revocation must not wait for it.
    let text = std::fs::read_to_string(&path).unwrap().replace(r#"key_cache_ttl = "0s""#, r#"key_cache_ttl = "60s""#);
    std::fs::write(&path, text).unwrap();
    let config = path.to_str().unwrap();
    let created = create_key(config, "mlp");
    let (key, id) = (created["key"].as_str().unwrap().to_owned(), created["id"].as_str().unwrap().to_owned());
    let server = Running::start(&["serve", "--config", config], &[]);
    let http = client();
    let metadata = server.url("/v2/models/mlp");
    assert_eq!(http.get(&metadata).bearer_auth(&key).send().await.unwrap().status(), 200, "now cached");
    let output = run(&["keys", "revoke", &id, "--config", config]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let revoked = std::time::Instant::now();
    loop {
        if http.get(&metadata).bearer_auth(&key).send().await.unwrap().status() == 401 {
            break;
        }
        assert!(revoked.elapsed() < std::time::Duration::from_secs(1), "the revoked key still works after 1 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    eprintln!("revocation took effect after {:?}", revoked.elapsed());
}

#[tokio::test]
async fn usage_on_the_admin_listener_needs_an_admin_key_made_by_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let config = config.to_str().unwrap();
    let output = run(&["keys", "create", "--config", config, "--name", "ops", "--admin", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let admin = created["key"].as_str().unwrap().to_owned();
    assert!(admin.starts_with("ptcl_ak_"), "{admin}");
    assert_eq!(created["kind"], "admin");
    let output = run(&["keys", "create", "--config", config, "--name", "ops", "--admin", "--models", "mlp"]);
    assert_eq!(output.status.code(), Some(2), "an admin key calls no model");
    let server = Running::start(&["serve", "--config", config], &[]);
    let http = client();
    let usage = format!("http://{}/usage", server.admin);
    assert_eq!(http.get(&usage).send().await.unwrap().status(), 401);
    assert_eq!(http.get(&usage).bearer_auth(&admin).send().await.unwrap().status(), 200);
    let rebound = http.get(&usage).bearer_auth(&admin).header("host", "rebind.example").send().await.unwrap();
    assert_eq!(rebound.status(), 421, "a name other than loopback is not answered");
    let metadata = http.get(server.url("/v2/models/mlp")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(metadata.status(), 401, "admin keys are refused on the public listener");
}

#[tokio::test]
async fn token_budgets_are_set_changed_and_refused_precisely_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let config = config.to_str().unwrap();
    let refused = |args: &[&str], message: &str| create_is_refused(config, args, message);
    refused(
        &["--spend", "20eur/day"],
        "spend cap '20eur/day': write a spend cap as <dollars>usd/day or <dollars>usd/month",
    );
    refused(&["--spend", "1usd/day", "--spend", "2usd/day"], "two spend caps per day");
    refused(&["--tpm", "0"], "tokens per minute '0': zero");
    refused(&["--tpm", "many"], "tokens per minute 'many': 'many' is not a whole number");
    refused(&["--token-quota", "5/week"], "quota '5/week': unknown window 'week'");
    refused(&["--token-quota", "5/day", "--token-quota", "6/day"], "two token quotas per day");
    // Per-user budgets are for keys that name their users.
    for flag in ["--user-tpm=100", "--user-token-quota=100/day", "--user-spend=1usd/day"] {
        refused(&[flag], "are for --delegate keys");
    }

    let output = run(&[
        "keys",
        "create",
        "--name",
        "app",
        "--models",
        "mlp",
        "--delegate",
        "--tpm",
        "100_000",
        "--token-quota",
        "1000000/day",
        "--token-quota",
        "20000000/month",
        "--spend",
        "20usd/day",
        "--user-tpm",
        "5000",
        "--user-token-quota",
        "50000/day",
        "--user-spend",
        "0.50usd/day",
        "--json",
        "--config",
        config,
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let budgets = "tpm=100000 token_quota=1000000/day token_quota=20000000/month spend=20usd/day \
                   user_tpm=5000 user_token_quota=50000/day user_spend=0.5usd/day";
    assert_eq!(created["limits"], budgets);
    let id = created["id"].as_str().unwrap();
    let output = run(&["keys", "show", id, "--config", config]);
    assert!(String::from_utf8_lossy(&output.stdout).contains(budgets), "stored, not just printed");

    // An update replaces the limits whole: what it does not give returns to the defaults.
    let output = run(&["keys", "update", id, "--spend", "500usd/month", "--json", "--config", config]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let updated: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(updated["limits"], "spend=500usd/month");
    let output = run(&["keys", "update", id, "--spend", "20eur/day", "--config", config]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("spend cap '20eur/day'"));
    let output = run(&["keys", "show", id, "--json", "--config", config]);
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["limits"], "spend=500usd/month", "a refused update changes nothing");
}

#[tokio::test]
async fn usage_shows_tokens_spend_and_estimates_per_row() {
    use gateway::store::{Store, Usage, sqlite::SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let config = config.to_str().unwrap();
    let created = create_key(config, "mlp");
    let id = created["id"].as_str().unwrap().to_owned();
    // What the gateway records for a language model's answers, written as it writes it.
    let store = SqliteStore::open(&dir.path().join("portcullis.db")).await.unwrap();
    let row = Usage {
        kid: id.clone(),
        model: "chat".into(),
        day: "2026-11-03".into(),
        requests: 3,
        rows: 0,
        tokens_in: 1_200,
        tokens_out: 345,
        spend_micros: 1_250_450,
        estimated: 1,
    };
    store.add_usage(std::slice::from_ref(&row)).await.unwrap();

    let output = run(&["keys", "usage", &id, "--since", "2026-11-01", "--config", config]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let words = |line: &str| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        words(lines[0]),
        ["DAY", "ID", "MODEL", "REQUESTS", "ROWS", "TOKENS", "IN", "TOKENS", "OUT", "SPEND", "USD", "ESTIMATED"]
    );
    assert_eq!(words(lines[1]), ["2026-11-03", &id, "chat", "3", "0", "1200", "345", "1.25045", "1"]);

    let output = run(&["keys", "usage", &id, "--since", "2026-11-01", "--json", "--config", config]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        rows,
        serde_json::json!([{
            "id": id, "model": "chat", "day": "2026-11-03", "requests": 3, "rows": 0,
            "tokens_in": 1200, "tokens_out": 345, "spend_micros": 1_250_450, "spend_usd": "1.25045", "estimated": 1,
        }])
    );
}

/// `keys create` with `args` exits 2 and says `message`.
fn create_is_refused(config: &str, args: &[&str], message: &str) {
    let mut all = vec!["keys", "create", "--name", "x", "--models", "mlp", "--config", config];
    all.extend_from_slice(args);
    let output = run(&all);
    assert_eq!(output.status.code(), Some(2), "{args:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(message), "{args:?}: {stderr}");
}
