//! TLS and mutual TLS on the real binary: certificates made here by a test CA, client
//! certificates as credentials, refusals at the handshake, reload without restart.

use std::{path::Path, sync::Arc, time::Duration};

use gateway::tls::pki::{Issued, Pki};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::process::{Running, run, write_config};

const ROW: &str = "[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,-0.1,-0.2,-0.3,-0.4,-0.5,-0.6,-0.7,-0.8,-0.9,-1.0]";

fn infer_body() -> serde_json::Value {
    serde_json::from_str(&format!(
        r#"{{"inputs":[{{"name":"features","shape":[1,20],"datatype":"FP32","data":{ROW}}}]}}"#
    ))
    .unwrap()
}

/// A client trusting `ca_pem`, presenting `identity` if given, limited to TLS 1.2 if asked.
fn https_client(ca_pem: &str, identity: Option<&Issued>, tls12_only: bool) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let versions: &[&rustls::SupportedProtocolVersion] =
        if tls12_only { &[&rustls::version::TLS12] } else { &[&rustls::version::TLS12, &rustls::version::TLS13] };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(issued) => {
            let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes()).map(Result::unwrap).collect();
            let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .tls_backend_preconfigured(config)
        .build()
        .unwrap()
}

fn write(dir: &Path, name: &str, contents: &str) {
    // Write beside, then rename: the server never reads half a file.
    let temporary = dir.join(format!("{name}.tmp"));
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(temporary, dir.join(name)).unwrap();
}

struct Setup {
    _dir: tempfile::TempDir,
    server: Running,
    pki: Pki,
    key: String,
}

async fn start() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test CA").unwrap();
    let server_cert = pki.server(&["localhost", "127.0.0.1"]).unwrap();
    write(dir.path(), "ca.pem", &pki.ca_pem());
    write(dir.path(), "server.pem", &server_cert.cert_pem);
    write(dir.path(), "server-key.pem", &server_cert.key_pem);
    let config = write_config(
        dir.path(),
        r#"
[tls]
cert = "server.pem"
key = "server-key.pem"
client_ca = "ca.pem"
reload_interval = "200ms"

[[tls.clients]]
name = "svc-a"
subject = "CN=svc-a, O=Portcullis"
models = ["mlp"]

[[tls.clients]]
name = "svc-b"
san = "spiffe://test/svc-b"
models = ["*"]
scopes = "metadata"
"#,
    );
    let config = config.to_str().unwrap().to_owned();
    let created = run(&["keys", "create", "--config", &config, "--name", "k", "--models", "mlp", "--json"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let server = Running::start(&["serve", "--config", &config], &[]);
    Setup { _dir: dir, server, pki, key }
}

#[tokio::test]
async fn client_certificates_are_credentials_only_when_mapped() {
    let setup = start().await;
    let (server, pki) = (&setup.server, &setup.pki);
    let infer = server.https_url("/v2/models/mlp/infer");
    let ca = pki.ca_pem();

    // Plain HTTP to the TLS port gets no answer; HTTPS without any credential gets 401.
    assert!(crate::process::client().get(server.url("/v2/health/live")).send().await.is_err());
    let anonymous = https_client(&ca, None, false);
    let response = anonymous.post(&infer).json(&infer_body()).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.version(), reqwest::Version::HTTP_2, "h2 is offered by ALPN");

    // A key over TLS, and over TLS 1.2 too.
    for client in [https_client(&ca, None, false), https_client(&ca, None, true)] {
        let response = client.post(&infer).bearer_auth(&setup.key).json(&infer_body()).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }

    // A mapped certificate by subject: its own allow-list, no key needed.
    let svc_a = https_client(&ca, Some(&pki.client("svc-a", None).unwrap()), false);
    let response = svc_a.post(&infer).json(&infer_body()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = svc_a.get(server.https_url("/v2/models/unknown")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    // ...and not together with a key: two credentials are ambiguous.
    let response = svc_a.post(&infer).bearer_auth(&setup.key).json(&infer_body()).send().await.unwrap();
    assert_eq!(response.status(), 400);

    // A mapped certificate by SAN URI, limited to metadata.
    let svc_b = https_client(&ca, Some(&pki.client("svc-b", Some("spiffe://test/svc-b")).unwrap()), false);
    assert_eq!(svc_b.get(server.https_url("/v2/models/mlp")).send().await.unwrap().status(), 200);
    assert_eq!(svc_b.post(&infer).json(&infer_body()).send().await.unwrap().status(), 403);

    // A valid but unmapped certificate secures the connection and is no credential.
    let stranger = https_client(&ca, Some(&pki.client("stranger", None).unwrap()), false);
    assert_eq!(stranger.post(&infer).json(&infer_body()).send().await.unwrap().status(), 401);
    let response = stranger.post(&infer).bearer_auth(&setup.key).json(&infer_body()).send().await.unwrap();
    assert_eq!(response.status(), 200);

    // A certificate from another CA fails the handshake, named or not.
    let rogue = Pki::new("rogue CA").unwrap();
    let impostor = https_client(&ca, Some(&rogue.client("svc-a", None).unwrap()), false);
    assert!(impostor.post(&infer).json(&infer_body()).send().await.is_err());
}

#[tokio::test]
async fn a_new_certificate_is_served_without_restart() {
    let setup = start().await;
    let dir = setup._dir.path();
    let health = setup.server.https_url("/v2/health/live");
    let old_ca = setup.pki.ca_pem();
    assert_eq!(https_client(&old_ca, None, false).get(&health).send().await.unwrap().status(), 200);

    // A certificate from a new CA, written key first: in between, the pair does not match and
    // the server keeps the old one.
    let next = Pki::new("next CA").unwrap();
    let cert = next.server(&["localhost", "127.0.0.1"]).unwrap();
    write(dir, "server-key.pem", &cert.key_pem);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(https_client(&old_ca, None, false).get(&health).send().await.unwrap().status(), 200);
    write(dir, "server.pem", &cert.cert_pem);

    let new_client = https_client(&next.ca_pem(), None, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(response) = new_client.get(&health).send().await {
            assert_eq!(response.status(), 200);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the new certificate was not loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(https_client(&old_ca, None, false).get(&health).send().await.is_err(), "the old certificate is gone");
}

#[test]
fn plain_http_on_a_public_address_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let text =
        std::fs::read_to_string(&config).unwrap().replace("\nlisten = \"127.0.0.1:0\"", "\nlisten = \"0.0.0.0:0\"");
    std::fs::write(&config, text).unwrap();
    let output = run(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("there is no [tls] section"), "{stderr}");
}

/// Certificates the client CA issued whose common names print like the listed client's
/// subject (`CN=svc-a,O=Portcullis`) must not become that client over a real mutual-TLS
/// connection.
#[tokio::test]
async fn a_certificate_whose_common_name_imitates_a_listed_subject_is_not_that_client() {
    let setup = start().await;
    let (server, pki) = (&setup.server, &setup.pki);
    let infer = server.https_url("/v2/models/mlp/infer");
    let ca = pki.ca_pem();
    for forged in ["svc-a,O=Portcullis", "svc-a, O=Portcullis", "\"svc-a, O=Portcullis\"", "svc-a ", "svc-a\t"] {
        let issued = pki.client_with_subject(&[("CN", forged)], None).unwrap();
        let client = https_client(&ca, Some(&issued), false);
        let response = client.post(&infer).json(&infer_body()).send().await.unwrap();
        assert_eq!(response.status(), 401, "CN {forged:?} was taken for svc-a");
    }
    // The real one still is.
    let real = https_client(&ca, Some(&pki.client("svc-a", None).unwrap()), false);
    assert_eq!(real.post(&infer).json(&infer_body()).send().await.unwrap().status(), 200);
}
