//! The audit log a real server writes, checked by `portcullis audit verify`, tampered with,
//! and cut short by a crash.

use std::path::Path;

use crate::process::{Running, client, run, write_config};

const ROW: &str = "[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,-0.1,-0.2,-0.3,-0.4,-0.5,-0.6,-0.7,-0.8,-0.9,-1.0]";

fn body() -> String {
    format!(r#"{{"inputs":[{{"name":"features","shape":[1,20],"datatype":"FP32","data":{ROW}}}]}}"#)
}

fn create_key(config: &str) -> String {
    let output = run(&["keys", "create", "--config", config, "--name", "it", "--models", "mlp", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    created["key"].as_str().unwrap().to_owned()
}

/// `audit verify` on `file`: (exit code, stdout + stderr).
fn verify(dir: &Path, file: &Path) -> (i32, String) {
    let config = dir.join("portcullis.toml");
    let output = run(&["audit", "verify", file.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

/// An edit made to a copy of the log's lines.
type Edit = dyn FnOnce(&mut Vec<String>);

fn tampered(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<String>)) -> std::path::PathBuf {
    let mut lines: Vec<String> =
        std::fs::read_to_string(dir.join("audit.log")).unwrap().lines().map(str::to_owned).collect();
    edit(&mut lines);
    let path = dir.join(name);
    std::fs::write(&path, lines.iter().map(|line| format!("{line}\n")).collect::<String>()).unwrap();
    // Each copy is checked against the real log's head file.
    std::fs::copy(dir.join("audit.log.head"), dir.join(format!("{name}.head"))).unwrap();
    path
}

#[tokio::test]
async fn the_servers_log_verifies_and_every_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[audit]\ncheckpoint_every = 5\nstdout = true\n");
    let config = config.to_str().unwrap();
    let key = create_key(config);
    let server = Running::start(&["serve", "--config", config], &[]);
    let http = client();
    for i in 0..12 {
        let request =
            http.post(server.url("/v2/models/mlp/infer")).header("content-type", "application/json").body(body());
        let request = if i % 3 == 0 { request } else { request.bearer_auth(&key) };
        request.send().await.unwrap();
    }
    let (status, output) = server.terminate();
    assert!(status.success());
    // With `stdout = true` the server printed each record it wrote, byte for byte.
    let printed: Vec<&String> = output.iter().filter(|line| line.starts_with("{\"seq\":")).collect();
    let written = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let written: Vec<&str> = written.lines().skip(1).collect();
    assert_eq!(printed.len(), written.len(), "{printed:?}");
    assert!(printed.iter().zip(&written).all(|(printed, written)| printed.as_str() == *written));
    let revoke = run(&["keys", "revoke", &key[8..16], "--config", config]);
    assert!(revoke.status.success());

    let log = dir.path().join("audit.log");
    let (code, text) = verify(dir.path(), &log);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("OK: the log is intact") && text.contains("signatures checked"), "{text}");
    let records: Vec<serde_json::Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let events: Vec<&str> = records.iter().map(|r| r["event"].as_str().unwrap()).collect();
    // The four keyless refusals: the first written, the three identical ones after it counted.
    assert_eq!(events.iter().filter(|e| **e == "request").count(), 9);
    let folded: Vec<&serde_json::Value> = records.iter().filter(|r| r["event"] == "refusals_folded").collect();
    assert_eq!(folded.len(), 1, "{records:?}");
    assert_eq!((folded[0]["count"].as_u64(), folded[0]["reason"].as_str()), (Some(3), Some("no_credential")));
    assert_eq!(events.first(), Some(&"key_created"));
    assert_eq!(events.last(), Some(&"key_revoked"));
    assert_eq!(records.iter().filter(|r| r["decision"] == "deny").count(), 1);

    let cases: Vec<(&str, Box<Edit>, &str)> = vec![
        (
            "modified.log",
            Box::new(|l: &mut Vec<String>| l[3] = l[3].replace("\"status\":200", "\"status\":201")),
            ":4: Modified",
        ),
        ("deleted.log", Box::new(|l: &mut Vec<String>| drop(l.remove(6))), ":7: Deleted"),
        ("reordered.log", Box::new(|l: &mut Vec<String>| l.swap(8, 9)), ":10: Reordered"),
        ("truncated.log", Box::new(|l: &mut Vec<String>| l.truncate(4)), "Truncated"),
    ];
    for (name, edit, expected) in cases {
        let path = tampered(dir.path(), name, edit);
        let (code, text) = verify(dir.path(), &path);
        assert_eq!(code, 1, "{name}: {text}");
        assert!(text.contains("TAMPERED") && text.contains(expected), "{name}: '{expected}' not in {text}");
    }

    // Not a log at all: exit 2 with a clear message.
    std::fs::write(dir.path().join("garbage.log"), [0u8, 159, 146, 150, b'\n']).unwrap();
    let (code, text) = verify(dir.path(), &dir.path().join("garbage.log"));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("is not an audit log"), "{text}");
}

#[tokio::test]
async fn a_crash_mid_load_leaves_a_log_that_verifies_up_to_its_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[audit]\ncheckpoint_every = 50\nfsync = \"10ms\"\n");
    let config = config.to_str().unwrap();
    let key = create_key(config);
    let mut server = Running::start(&["serve", "--config", config], &[]);
    let http = client();
    // Load from four concurrent clients, bounded in count and time; kill -9 in the middle of it.
    let url = server.url("/v2/models/mlp/infer");
    let mut load = Vec::new();
    for _ in 0..4 {
        let (http, url, key, body) = (http.clone(), url.clone(), key.clone(), body());
        load.push(tokio::spawn(async move {
            for _ in 0..500 {
                let sent = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                if sent.is_err() {
                    break;
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for task in load {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), task).await;
    }

    let log = dir.path().join("audit.log");
    let (code, text) = verify(dir.path(), &log);
    // Either the kill fell between writes (intact) or it tore the last line, and nothing else.
    if code != 0 {
        assert_eq!(code, 1, "{text}");
        assert_eq!(text.matches("Torn").count(), 1, "{text}");
        assert_eq!(text.matches("TAMPERED: 1 finding").count(), 1, "{text}");
        let repaired = run(&["audit", "repair", log.to_str().unwrap()]);
        assert!(repaired.status.success());
        let (code, text) = verify(dir.path(), &log);
        assert_eq!(code, 0, "{text}");
    }
    assert!(text.contains("records"), "{text}");
    // The server starts again on the same log and continues its chain.
    let server = Running::start(&["serve", "--config", config], &[]);
    let (status, _) = server.terminate();
    assert!(status.success());
    let (code, text) = verify(dir.path(), &log);
    assert_eq!(code, 0, "{text}");
}
