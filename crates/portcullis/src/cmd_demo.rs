//! `portcullis demo`: the whole product in one command, on embedded defaults.
//!
//! Writes the bundled credit-risk model, a config and a SQLite store into a data folder (a
//! temporary one unless `--data-dir` is given), creates one API key, starts the server on
//! 127.0.0.1 and prints curl lines that show deny-by-default at work.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use gateway::{
    Server,
    keys::NewKey,
    store::{ModelScope, Scopes},
};

const MODEL: &[u8] = include_bytes!("../../../models/credit-risk/model.onnx");
const CHECKS: &[u8] = include_bytes!("../../../models/credit-risk/checks.json");

/// The demo's example applicant: age, income, debt ratio, credit lines, late payments (90 d),
/// loan amount, years employed, utilisation.
const EXAMPLE: &str =
    r#"{"inputs":[{"name":"features","shape":[1,8],"datatype":"FP32","data":[[35,52000,0.3,4,0,15000,6,0.35]]}]}"#;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the demo's files (config, store, model) here instead of a temporary folder.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Port for the public listener on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Port for the admin listener (metrics) on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 9090)]
    admin_port: u16,
    /// Serve HTTPS with certificates from a local CA made for the demo (in DATA_DIR/tls), and
    /// accept its client certificate as a credential (mutual TLS).
    #[arg(long)]
    tls: bool,
    /// Also front the OpenAI-compatible server at URL (its base URL, e.g.
    /// http://127.0.0.1:8000/v1): its models are offered under the same names, and the demo key
    /// may use the first of them. Repeat for several servers.
    #[arg(long, value_name = "URL")]
    openai_upstream: Vec<String>,
    /// Also front the Ollama server at URL (e.g. http://127.0.0.1:11434), the same way.
    #[arg(long, value_name = "URL")]
    ollama_upstream: Vec<String>,
    /// The environment variable holding the upstreams' API key, if they need one (hosted APIs).
    #[arg(long, value_name = "VAR")]
    upstream_key_env: Option<String>,
}

/// One LLM the demo offers: the upstream it is on and its name there (and here).
struct Llm {
    api: &'static str,
    url: String,
    name: String,
}

/// Asks each upstream which models it serves (`/models` of an OpenAI base URL, `/api/tags` of
/// Ollama), so the demo can offer them under the same names.
async fn discover(args: &Args) -> anyhow::Result<Vec<Llm>> {
    let key = match &args.upstream_key_env {
        Some(var) => {
            Some(std::env::var(var).with_context(|| format!("--upstream-key-env names {var}, which is not set"))?)
        }
        None => None,
    };
    let mut found = Vec::new();
    let upstreams = args
        .openai_upstream
        .iter()
        .map(|url| ("openai", url))
        .chain(args.ollama_upstream.iter().map(|url| ("ollama", url)));
    for (api, url) in upstreams {
        let url = url.trim_end_matches('/').to_owned();
        let list = if api == "openai" { format!("{url}/models") } else { format!("{url}/api/tags") };
        let client = gateway::backend::upstream::http_client(&url, None, std::time::Duration::from_secs(3), 2, false)
            .map_err(anyhow::Error::msg)?
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        let mut request = client.get(&list);
        if let Some(key) = &key {
            request = request.bearer_auth(key);
        }
        let answer = request.send().await.with_context(|| format!("cannot reach {list}"))?;
        anyhow::ensure!(answer.status().is_success(), "{list} answered {}", answer.status());
        let body: serde_json::Value = answer.json().await.with_context(|| format!("{list} did not answer JSON"))?;
        let names: Vec<String> = if api == "openai" {
            body["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|model| model["id"].as_str())
                .map(str::to_owned)
                .collect()
        } else {
            body["models"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|model| model["name"].as_str())
                .map(str::to_owned)
                .collect()
        };
        for name in names {
            if gateway::config::valid_model_name(&name) && !found.iter().any(|llm: &Llm| llm.name == name) {
                found.push(Llm { api, url: url.clone(), name });
            } else {
                eprintln!(
                    "note: model '{name}' of {url} is not offered (a name must be letters, digits, '_', '.', '-', ':')"
                );
            }
        }
    }
    Ok(found)
}

fn llm_section(llms: &[Llm], key_env: Option<&str>) -> String {
    let mut section = String::new();
    for llm in llms {
        section += &format!(
            "\n[[llm]]\nname = \"{name}\"\napi = \"{api}\"\nurl = \"{url}\"\ndefault_max_tokens = 256\n",
            name = llm.name,
            api = llm.api,
            url = llm.url,
        );
        if let Some(var) = key_env {
            section += &format!("credential_env = \"{var}\"\n");
        }
    }
    section
}

/// The principal the demo's client certificate maps to.
const DEMO_CLIENT: &str = "demo-service";

fn tls_section(files: &gateway::tls::pki::DevFiles) -> String {
    format!(
        r#"
# HTTPS with a CA made for the demo. Clients trust tls/ca.pem; a client certificate signed by
# the same CA with subject CN={DEMO_CLIENT},O=Portcullis is a credential of its own (mutual TLS).
[tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"

[[tls.clients]]
name = "{DEMO_CLIENT}"
subject = "CN={DEMO_CLIENT},O=Portcullis"
models = ["credit-risk"]
output = "label"
"#,
        cert = files.cert.display(),
        key = files.key.display(),
        ca = files.ca.display(),
    )
}

fn write_files(dir: &Path, port: u16, admin_port: u16, tls: Option<&str>, llm: &str) -> anyhow::Result<PathBuf> {
    let model_dir = dir.join("models").join("credit-risk");
    std::fs::create_dir_all(&model_dir).with_context(|| format!("cannot create {}", model_dir.display()))?;
    std::fs::write(model_dir.join("model.onnx"), MODEL)?;
    std::fs::write(model_dir.join("checks.json"), CHECKS)?;
    let config = format!(
        r#"# Written by `portcullis demo`. Manage its keys with:
#   portcullis keys list --config {config}
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"

[store]
sqlite = "portcullis.db"
pepper_file = "pepper"

# The demo key may call this model. Callers get the label and scores rounded to 2 decimals
# unless their key says otherwise (label, top_k=N, scores, raw).
[[models]]
name = "credit-risk"
path = "models/credit-risk/model.onnx"
checks = "models/credit-risk/checks.json"
runtime = "tract"

[models.output]
scores = "probabilities"
label = "label"
classes = ["repay", "default"]
policy = "scores:round=2"

# The same model under another name, which the demo key may not call.
[[models]]
name = "credit-risk-shadow"
path = "models/credit-risk/model.onnx"
checks = "models/credit-risk/checks.json"
runtime = "tract"

[models.output]
scores = "probabilities"
label = "label"
classes = ["repay", "default"]
policy = "label"
{tls}{llm}"#,
        config = dir.join("portcullis.toml").display(),
        tls = tls.unwrap_or(""),
    );
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, config).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // A temporary folder lives until the demo stops, then is removed with everything in it.
    let (dir, _temporary) = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            (std::fs::canonicalize(dir)?, None)
        }
        None => {
            let temporary = tempfile::Builder::new().prefix("portcullis-demo-").tempdir()?;
            (temporary.path().to_owned(), Some(temporary))
        }
    };
    // Listen for signals before anything starts, so none is missed.
    let shutdown = gateway::serve::shutdown_signal();
    let tls = if args.tls {
        let files = gateway::tls::pki::write_dev_files(&dir, DEMO_CLIENT).map_err(anyhow::Error::msg)?;
        Some((tls_section(&files), files))
    } else {
        None
    };
    let llms = discover(&args).await?;
    let llm = llm_section(&llms, args.upstream_key_env.as_deref());
    let config_path =
        write_files(&dir, args.port, args.admin_port, tls.as_ref().map(|(section, _)| section.as_str()), &llm)?;
    let config = gateway::Config::load(&config_path)?;
    let gateway = gateway::Gateway::builder(config).open().await?;
    let (store, pepper) = gateway::serve::open_keyring(gateway.config()).await?;
    drop(store);
    let (secret, _) = gateway
        .keyring(pepper)
        .create(&NewKey {
            name: "demo".into(),
            owner: None,
            models: ModelScope::Only(
                std::iter::once("credit-risk".to_owned()).chain(llms.first().map(|llm| llm.name.clone())).collect(),
            ),
            scopes: Scopes::ALL,
            output: None,
            widen_output: false,
            delegate: false,
            expires_in: Some(24 * 3600),
            limits: Default::default(),
        })
        .await?;
    let server = Server::bind(gateway)
        .await
        .context("is another server on that port? choose others with --port and --admin-port (0 picks a free one)")?;
    let public = server.public_addr().unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)));
    let admin = server.admin_addr().unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, args.admin_port)));
    let (scheme, curl, mtls) = match &tls {
        None => ("http", "curl".to_owned(), String::new()),
        Some((_, files)) => {
            let curl = format!("curl --cacert {}", files.ca.display());
            let mtls = format!(
                "\nWith the demo's client certificate instead of a key (mutual TLS; it gets labels only):\n\n    \
                 {curl} --cert {} --key {} -s https://{public}/v2/models/credit-risk/infer -H 'content-type: application/json' -d '{EXAMPLE}'\n",
                files.client_cert.display(),
                files.client_key.display(),
            );
            ("https", curl, mtls)
        }
    };
    let llm_text = match llms.first() {
        None => String::new(),
        Some(first) => {
            let others: Vec<&str> = llms.iter().skip(1).map(|llm| llm.name.as_str()).collect();
            let (path, body) = if first.api == "openai" {
                (
                    "/v1/chat/completions",
                    format!(
                        r#"{{"model":"{}","messages":[{{"role":"user","content":"Hello"}}],"max_tokens":16}}"#,
                        first.name
                    ),
                )
            } else {
                (
                    "/api/chat",
                    format!(
                        r#"{{"model":"{}","messages":[{{"role":"user","content":"Hello"}}],"stream":false}}"#,
                        first.name
                    ),
                )
            };
            format!(
                r#"
Language models: the key may use '{first}'{others}.

    {curl} -s {scheme}://{public}{path} -H 'authorization: Bearer {key}' -H 'content-type: application/json' -d '{body}'

With the official openai SDK (pip install openai):

    from openai import OpenAI
    client = OpenAI(base_url="{scheme}://{public}/v1", api_key="{key}")
    print(client.chat.completions.create(model="{first}", messages=[{{"role": "user", "content": "Hello"}}], max_tokens=16))"#,
                first = first.name,
                others = if others.is_empty() {
                    String::new()
                } else {
                    format!(" (not {}: a model outside its list answers 404)", others.join(", "))
                },
                key = secret.expose(),
            )
        }
    };
    let base = format!("{scheme}://{public}/v2/models");
    println!(
        r#"
Portcullis demo: serving the credit-risk model on {scheme}://{public} (loopback only).
Files: {dir}  (config: {config})

API key, shown once (the server stores only a hash of it), valid for 24 hours:

    {key}

1. Without a key, every endpoint but the health checks says 401:

    {curl} -i {base}/credit-risk/infer -H 'content-type: application/json' -d '{EXAMPLE}'

2. With the key, a prediction:

    {curl} -s {base}/credit-risk/infer -H 'authorization: Bearer {key}' -H 'content-type: application/json' -d '{EXAMPLE}'

3. A model this key may not use answers 404, exactly like a model that does not exist:

    {curl} -i {base}/credit-risk-shadow/infer -H 'authorization: Bearer {key}' -H 'content-type: application/json' -d '{EXAMPLE}'
{mtls}
Model metadata:  {curl} -s {base}/credit-risk -H 'authorization: Bearer {key}'
Metrics:         curl -s http://{admin}/metrics
More keys:       portcullis keys create --config {config} --name NAME --models credit-risk
Audit log:       portcullis audit verify {dir}/audit.log --config {config}
{llm_text}
Press Ctrl-C to stop.
"#,
        dir = dir.display(),
        config = config_path.display(),
        key = secret.expose(),
    );
    drop(secret);
    server.run(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
