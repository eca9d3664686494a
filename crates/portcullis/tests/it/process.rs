//! Starting the real binary and talking to it.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

pub fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").canonicalize().unwrap()
}

/// Runs `portcullis ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(binary()).args(args).env_remove("PORTCULLIS_PEPPER").output().unwrap()
}

/// A running server process; killed when dropped.
pub struct Running {
    pub child: Child,
    pub public: String,
    pub admin: String,
    /// Lines the process wrote after it started listening (stdout and stderr).
    pub lines: mpsc::Receiver<String>,
    /// Everything it printed before listening (the demo's instructions).
    pub banner: Vec<String>,
}

impl Running {
    /// Starts the binary and waits until it logs its listening addresses (or the demo prints its
    /// banner). Fails the test with the process's output if it exits or takes over 60 s.
    pub fn start(args: &[&str], extra_env: &[(&str, &str)]) -> Running {
        let mut command = Command::new(binary());
        command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).env_remove("PORTCULLIS_PEPPER");
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let (sender, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        let mut banner = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(remaining) {
                Ok(line) => {
                    if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                        && event["message"] == "listening"
                    {
                        let public = event["public"].as_str().unwrap().to_owned();
                        let admin = event["admin"].as_str().unwrap().to_owned();
                        return Running { child, public, admin, lines, banner };
                    }
                    if line.contains("Press Ctrl-C to stop.") {
                        let public = banner
                            .iter()
                            .find_map(|l: &String| {
                                l.split(" model on ").nth(1).map(|rest| {
                                    let url = rest.split_whitespace().next().unwrap();
                                    url.split("://").nth(1).unwrap().to_owned()
                                })
                            })
                            .unwrap();
                        let admin = banner
                            .iter()
                            .find_map(|l| {
                                l.trim().strip_prefix("Metrics:").map(|rest| {
                                    rest.trim()
                                        .trim_start_matches("curl -s http://")
                                        .trim_end_matches("/metrics")
                                        .to_owned()
                                })
                            })
                            .unwrap();
                        banner.push(line);
                        return Running { child, public, admin, lines, banner };
                    }
                    banner.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("the server did not start:\n{}", banner.join("\n"));
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.public)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        // The readers end at EOF, which follows the exit; the timeout only guards a stuck pipe.
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            rest.push(line);
        }
        (status, rest)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain-HTTP client. reqwest is built without a default TLS provider (the gateway configures
/// rustls itself), so even a plain client is handed a TLS configuration: one that trusts nothing.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .tls_backend_preconfigured(gateway::tls::trust_nothing_client_config().unwrap())
        .build()
        .unwrap()
}

/// Writes a config in `dir` serving the fixture models, with ephemeral ports.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let models = models();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace = "5s"
header_read_timeout = "1s"

[store]
sqlite = "portcullis.db"
key_cache_ttl = "0s"

[[models]]
name = "mlp"
path = "{mlp}/model.onnx"
checks = "{mlp}/checks.json"
runtime = "tract"
{extra}
"#,
        mlp = models.join("fixtures/mlp").display(),
    );
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, config).unwrap();
    path
}
