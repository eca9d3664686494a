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

fn write_files(dir: &Path, port: u16, admin_port: u16, tls: Option<&str>) -> anyhow::Result<PathBuf> {
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
{tls}"#,
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
    let config_path = write_files(&dir, args.port, args.admin_port, tls.as_ref().map(|(section, _)| section.as_str()))?;
    let config = gateway::Config::load(&config_path)?;
    let gateway = gateway::Gateway::builder(config).open().await?;
    let (store, pepper) = gateway::serve::open_keyring(gateway.config()).await?;
    drop(store);
    let (secret, _) = gateway
        .keyring(pepper)
        .create(&NewKey {
            name: "demo".into(),
            owner: None,
            models: ModelScope::Only(vec!["credit-risk".into()]),
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
