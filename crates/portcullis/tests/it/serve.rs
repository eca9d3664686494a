//! `portcullis serve`: models served as scikit-learn computed them, and refusals at start.

use crate::process::{Running, client, models, run, write_config};

/// The ONNX Runtime library, from `ORT_DYLIB_PATH`. `scripts/test.sh` installs it and sets
/// `PORTCULLIS_REQUIRE_ORT=1`, so in CI its absence fails the test instead of skipping it.
fn onnxruntime_library() -> Option<String> {
    match std::env::var("ORT_DYLIB_PATH") {
        Ok(path) => Some(path),
        Err(_) if std::env::var("PORTCULLIS_REQUIRE_ORT").is_ok() => {
            panic!("PORTCULLIS_REQUIRE_ORT is set but ORT_DYLIB_PATH is not")
        }
        Err(_) => {
            eprintln!("skipping the ONNX Runtime part: ORT_DYLIB_PATH is not set (scripts/test.sh sets it)");
            None
        }
    }
}

/// Sends every case of a model's checks.json (computed by scikit-learn) over HTTP and compares.
async fn assert_matches_scikit_learn(server: &Running, key: &str, model: &str, checks: &std::path::Path) {
    let checks: serde_json::Value = serde_json::from_slice(&std::fs::read(checks).unwrap()).unwrap();
    let tolerance = checks["tolerance"].as_f64().unwrap();
    let http = client();
    for case in checks["cases"].as_array().unwrap() {
        let request = serde_json::json!({ "inputs": case["inputs"] });
        let response = http
            .post(server.url(&format!("/v2/models/{model}/infer")))
            .bearer_auth(key)
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        for want in case["outputs"].as_array().unwrap() {
            let got = body["outputs"].as_array().unwrap().iter().find(|o| o["name"] == want["name"]).unwrap();
            assert_eq!(got["shape"], want["shape"]);
            assert_eq!(got["datatype"], want["datatype"]);
            let got: Vec<f64> = serde_json::from_value(got["data"].clone()).unwrap();
            let want: Vec<f64> = serde_json::from_value(want["data"].clone()).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= tolerance, "{model}: {g} vs scikit-learn's {w}");
            }
        }
    }
}

#[tokio::test]
async fn mlp_and_gradient_boosted_trees_serve_scikit_learns_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let library = onnxruntime_library();
    let gbt = models().join("fixtures/gbt");
    let extra = match &library {
        Some(library) => format!(
            "[inference]\nonnxruntime_library = \"{library}\"\n\n[[models]]\nname = \"gbt\"\npath = \"{0}/model.onnx\"\nchecks = \"{0}/checks.json\"\nruntime = \"onnxruntime\"\n",
            gbt.display()
        ),
        None => String::new(),
    };
    let config = write_config(dir.path(), &extra);
    let config = config.to_str().unwrap();
    let output = run(&["keys", "create", "--config", config, "--name", "it", "--models", "*", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let key: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let key = key["key"].as_str().unwrap();

    let server = Running::start(&["serve", "--config", config], &[]);
    assert_matches_scikit_learn(&server, key, "mlp", &models().join("fixtures/mlp/checks.json")).await;
    if library.is_some() {
        assert_matches_scikit_learn(&server, key, "gbt", &gbt.join("checks.json")).await;
        let metadata: serde_json::Value =
            client().get(server.url("/v2/models/gbt")).bearer_auth(key).send().await.unwrap().json().await.unwrap();
        assert_eq!(metadata["inputs"][0]["shape"], serde_json::json!([-1, 10]));
    }

    // Access logs are JSON lines with request ids, and hold neither keys nor payloads.
    let (status, lines) = server.terminate();
    assert!(status.success());
    let access: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == "request")
        .collect();
    assert!(!access.is_empty());
    assert!(access.iter().all(|event| { event["request_id"].as_str().is_some_and(|id| id.len() == 24) }));
    let log = lines.join("\n");
    assert!(!log.contains(&key[16..48]));
    assert!(!log.contains("52000") && !log.contains("features\""));
    assert!(log.contains("stopped"), "{log}");
}

fn refused(config_text: &str, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, config_text).unwrap();
    let output = run(&["serve", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(expected), "'{stderr}' lacks '{expected}'");
}

#[test]
fn insecure_or_broken_setups_refuse_to_start() {
    let models = models();
    refused("[server]\nlisten = \"0.0.0.0:0\"\n", "not a loopback address");
    refused("[server]\nadmin_listen = \"192.0.2.1:9090\"\n", "must never be public");
    refused("[server]\nlisten = \"127.0.0.1:0\"\nbogus = 1\n", "unknown field `bogus`");
    // A tree ensemble on tract: the error names the model and the operator.
    refused(
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[[models]]\nname = \"trees\"\npath = \"{}\"\nruntime = \"tract\"\n",
            models.join("fixtures/gbt/model.onnx").display()
        ),
        "model 'trees': tract cannot read",
    );
    refused(
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[[models]]\nname = \"trees\"\npath = \"{}\"\n",
            models.join("fixtures/gbt/model.onnx").display()
        ),
        "TreeEnsembleClassifier",
    );
    refused(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[[models]]\nname = \"gone\"\npath = \"/nonexistent/model.onnx\"\n",
        "model 'gone'",
    );
}

#[test]
fn a_model_that_disagrees_with_its_checks_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mlp = models().join("fixtures/mlp");
    let mut checks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(mlp.join("checks.json")).unwrap()).unwrap();
    let first = &mut checks["cases"][0]["outputs"][1]["data"][0];
    *first = serde_json::json!(first.as_f64().unwrap() + 0.01);
    std::fs::write(dir.path().join("checks.json"), checks.to_string()).unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[[models]]\nname = \"mlp\"\npath = \"{}\"\nchecks = \"checks.json\"\n",
        mlp.join("model.onnx").display()
    );
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, config).unwrap();
    let output = run(&["serve", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("model 'mlp'") && stderr.contains("differs from the known answer"), "{stderr}");
}

/// SIGTERM stops new connections but lets a request already in flight finish.
#[tokio::test]
async fn sigterm_drains_requests_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let config = config.to_str().unwrap();
    let output = run(&["keys", "create", "--config", config, "--name", "it", "--models", "mlp", "--json"]);
    let key: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    let server = Running::start(&["serve", "--config", config], &[]);

    let row = "[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,-0.1,-0.2,-0.3,-0.4,-0.5,-0.6,-0.7,-0.8,-0.9,-1.0]";
    let body = format!(r#"{{"inputs":[{{"name":"features","shape":[1,20],"datatype":"FP32","data":{row}}}]}}"#);
    let mut stream = tokio::net::TcpStream::connect(&server.public).await.unwrap();
    let head = format!(
        "POST /v2/models/mlp/infer HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (first, second) = body.split_at(body.len() / 2);
    stream.write_all(first.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Ask the server to stop while the request is half sent.
    let pid = server.child.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // New connections are refused once it stops listening.
    assert!(tokio::net::TcpStream::connect(&server.public).await.is_err());

    stream.write_all(second.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("probabilities"));
    let (status, _) = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_client_that_sends_headers_too_slowly_is_disconnected() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let server = Running::start(&["serve", "--config", config.to_str().unwrap()], &[]);
    let mut stream = std::net::TcpStream::connect(&server.public).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    // Half a request, then nothing: the connection must not be held open.
    stream.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: portcullis\r\n").unwrap();
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 512];
    let closed = loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break started.elapsed(),
            Ok(_) => {}
        }
    };
    assert!(closed >= std::time::Duration::from_millis(900), "closed after {closed:?}, before the timeout");
    assert!(closed < std::time::Duration::from_secs(5), "held for {closed:?}; header_read_timeout is 1 s");
    // A client that sends its request in time is served on a new connection.
    let mut stream = std::net::TcpStream::connect(&server.public).unwrap();
    stream.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: portcullis\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

/// Reads until the server closes the connection; how long that took (or `None` if it stayed
/// open for `within`).
fn closed_within(stream: &mut std::net::TcpStream, within: std::time::Duration) -> Option<std::time::Duration> {
    use std::io::Read;
    stream.set_read_timeout(Some(within)).unwrap();
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return Some(started.elapsed()),
            Err(_) => return None,
        }
    }
}

fn small_server(dir: &std::path::Path) -> Running {
    let config = write_config(dir, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "header_read_timeout = \"1s\"",
        "header_read_timeout = \"1s\"\nidle_timeout = \"2s\"\nmax_connections = 16",
    );
    std::fs::write(&config, text).unwrap();
    Running::start(&["serve", "--config", config.to_str().unwrap()], &[])
}

#[test]
fn a_silent_connection_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = small_server(dir.path());
    // Connect and say nothing at all.
    let mut silent = std::net::TcpStream::connect(&server.public).unwrap();
    let closed =
        closed_within(&mut silent, std::time::Duration::from_secs(10)).expect("a silent connection stays open");
    assert!(closed < std::time::Duration::from_secs(5), "held for {closed:?}; header_read_timeout is 1 s");
    // An HTTP/2 client that sends its preface and settings, then never opens a stream.
    use std::io::Write;
    let mut h2 = std::net::TcpStream::connect(&server.public).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").unwrap();
    let closed =
        closed_within(&mut h2, std::time::Duration::from_secs(10)).expect("a streamless HTTP/2 connection stays open");
    assert!(closed < std::time::Duration::from_secs(5), "held for {closed:?}");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = small_server(dir.path());
    let mut stream = std::net::TcpStream::connect(&server.public).unwrap();
    stream.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: portcullis\r\n\r\n").unwrap();
    let mut buffer = [0u8; 1024];
    let read = stream.read(&mut buffer).unwrap();
    assert!(buffer[..read].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buffer[..read]));
    // HTTP/1.1 waits for the next request's head under header_read_timeout (1 s here), and any
    // connection with nothing in flight under idle_timeout (2 s): whichever ends first.
    let closed = closed_within(&mut stream, std::time::Duration::from_secs(10)).expect("an idle connection stays open");
    assert!(closed >= std::time::Duration::from_millis(900), "closed after {closed:?}, before either timeout");
    assert!(closed < std::time::Duration::from_secs(6), "held for {closed:?}");
}

#[tokio::test]
async fn silent_connections_cannot_crowd_out_keyed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = small_server(dir.path());
    let config = dir.path().join("portcullis.toml");
    let output =
        run(&["keys", "create", "--config", config.to_str().unwrap(), "--name", "k", "--models", "mlp", "--json"]);
    let key = serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()["key"].as_str().unwrap().to_owned();
    // Three times the connection cap, all silent.
    let mut silent: Vec<std::net::TcpStream> =
        (0..48).map(|_| std::net::TcpStream::connect(&server.public).unwrap()).collect();
    let status = client().get(server.url("/v2/models/mlp")).bearer_auth(&key).send().await.unwrap().status();
    assert_eq!(status, 200, "a keyed request is served while silent connections fill the listener");
    // The oldest silent connections were closed to make room.
    let first = closed_within(&mut silent[0], std::time::Duration::from_millis(500));
    assert!(first.is_some(), "the oldest idle connection is closed first");
    // The process may open as many files as its hard limit allows.
    #[cfg(target_os = "linux")]
    {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
        let line = limits.lines().find(|line| line.starts_with("Max open files")).unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[3], fields[4], "soft limit raised to the hard limit: {line}");
    }
}

/// RFC 9112 3.2 on the real listener: an HTTP/1.1 request without a `Host` header, or with two,
/// gets 400 with the standard error body; HTTP/1.0 without one and HTTP/2 (`:authority`) are
/// served.
#[tokio::test]
async fn requests_without_exactly_one_host_header_get_400() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let server = Running::start(&["serve", "--config", config.to_str().unwrap()], &[]);
    let exchange = |head: &str| {
        let mut stream = std::net::TcpStream::connect(&server.public).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    };
    for head in [
        "GET /v2/health/live HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /v2/health/live HTTP/1.1\r\nHost: portcullis\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    ] {
        let reply = exchange(head);
        assert!(reply.starts_with("HTTP/1.1 400"), "{head:?}: {reply}");
        assert!(reply.contains("\"code\":\"invalid_request\""), "{reply}");
        assert!(reply.to_ascii_lowercase().contains("x-content-type-options: nosniff"), "{reply}");
    }
    let reply = exchange("GET /v2/health/live HTTP/1.0\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    let reply = exchange("GET /v2/health/live HTTP/1.1\r\nHost: portcullis\r\nConnection: close\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let http2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .tls_backend_preconfigured(gateway::tls::trust_nothing_client_config().unwrap())
        .build()
        .unwrap();
    let response = http2.get(server.url("/v2/health/live")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
}
