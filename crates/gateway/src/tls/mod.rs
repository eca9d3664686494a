//! TLS: the public listener's certificate (reloaded when its files change), client-certificate
//! verification for mutual TLS, the identity a client certificate carries, and the client
//! configuration used towards `https` upstreams. rustls with the ring provider throughout; TLS
//! 1.2 and 1.3 only (rustls has nothing older).

pub mod pki;

use std::{
    path::Path,
    sync::{Arc, Mutex, RwLock},
};

use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use sha2::{Digest, Sha256};

use crate::{
    cert_identity::{DistinguishedName, SanName},
    config::{CertMatch, ClientAuth, TlsClient, TlsConfig},
};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no certificate in the file"));
    }
    Ok(certs)
}

fn roots_from_pem(pem: &[u8], what: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(pem, what)? {
        roots.add(cert).map_err(|e| format!("{what}: unusable CA certificate: {e}"))?;
    }
    Ok(roots)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// The client side towards an `https` upstream: the roots in `ca_file`, or the system's.
pub fn client_config(ca_file: Option<&Path>, http2: bool) -> Result<rustls::ClientConfig, String> {
    let roots = match ca_file {
        Some(path) => roots_from_pem(&read(path, "upstream.ca_file")?, "upstream.ca_file")?,
        None => {
            let native = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err("no system CA certificates found: set upstream.ca_file".into());
            }
            roots
        }
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(config)
}

/// A client configuration that trusts no certificate: for clients that never speak TLS.
pub fn trust_nothing_client_config() -> Result<rustls::ClientConfig, String> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

/// The files of a TLS setup, read together so that one reload sees one consistent snapshot.
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Files {
    fn read(config: &TlsConfig) -> Result<Files, String> {
        Ok(Files {
            cert: read(&config.cert, "tls.cert")?,
            key: read(&config.key, "tls.key")?,
            client_ca: config.client_ca.as_deref().map(|path| read(path, "tls.client_ca")).transpose()?,
        })
    }

    fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            let part = part.map_or(&[][..], Vec::as_slice);
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        hash.finalize().into()
    }

    fn server_config(&self, config: &TlsConfig) -> Result<(Arc<ServerConfig>, String), String> {
        let certs = certs_from_pem(&self.cert, "tls.cert")?;
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|e| format!("tls.key: not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"))?;
        let versions: &[&rustls::SupportedProtocolVersion] = if config.tls13_only {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS12, &rustls::version::TLS13]
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let roots = roots_from_pem(pem, "tls.client_ca")?;
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                let verifier = match config.client_auth {
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                    ClientAuth::Required => verifier,
                };
                builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("tls.client_ca: {e}"))?)
            }
        };
        let expires = certs.first().and_then(|cert| not_after(cert)).unwrap_or_default();
        let mut server = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("tls.cert and tls.key do not make a usable pair: {e}"))?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok((Arc::new(server), expires))
    }
}

/// The public listener's TLS: the current configuration, swapped whole when the files change.
pub struct Tls {
    config: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    digest: Mutex<[u8; 32]>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("cert", &self.config.cert).finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate, key and client CA; any problem stops the server with a message
    /// that names the file.
    pub fn load(config: &TlsConfig) -> Result<Tls, String> {
        let files = Files::read(config)?;
        let (server, expires) = files.server_config(config)?;
        tracing::info!(cert = %config.cert.display(), expires = %expires, mutual = config.client_ca.is_some(), "TLS enabled");
        Ok(Tls { config: config.clone(), current: RwLock::new(server), digest: Mutex::new(files.digest()) })
    }

    /// An acceptor for the next connection, with the configuration current now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let current =
            self.current.read().map(|config| Arc::clone(&config)).unwrap_or_else(|e| Arc::clone(&e.into_inner()));
        tokio_rustls::TlsAcceptor::from(current)
    }

    /// Reloads if any file changed. A change that does not load (a key that does not match
    /// the new certificate yet, a half-written file) is logged and the old configuration
    /// kept; the next check tries again. Returns whether a new configuration is in use.
    pub fn reload_if_changed(&self) -> bool {
        let files = match Files::read(&self.config) {
            Ok(files) => files,
            Err(error) => {
                tracing::warn!(%error, "TLS files unreadable; keeping the current certificate");
                return false;
            }
        };
        let digest = files.digest();
        let Ok(mut last) = self.digest.lock() else {
            return false;
        };
        if *last == digest {
            return false;
        }
        match files.server_config(&self.config) {
            Ok((server, expires)) => {
                if let Ok(mut current) = self.current.write() {
                    *current = server;
                }
                *last = digest;
                tracing::info!(cert = %self.config.cert.display(), expires = %expires, "TLS certificate reloaded");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "changed TLS files do not load; keeping the current certificate");
                false
            }
        }
    }

    /// Checks the files every `reload_interval` until `stop` fires.
    pub async fn watch(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.config.reload_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let tls = Arc::clone(&self);
                    // File reads are small; keep them off the async workers anyway.
                    #[expect(clippy::disallowed_methods, reason = "a few small file reads per interval, not per request")]
                    let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
                }
                () = crate::shutdown::stopped(&mut stop) => return,
            }
        }
    }

    pub fn clients(&self) -> &[TlsClient] {
        &self.config.clients
    }
}

/// What a verified client certificate says about its holder, kept per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject as the certificate holds it.
    pub subject: DistinguishedName,
    /// DNS names, URIs, e-mail addresses and IP addresses.
    pub sans: Vec<SanName>,
}

/// A certificate that two configured clients would claim: refused rather than resolved by
/// list order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the client certificate matches both '{0}' and '{1}'")]
pub struct AmbiguousCertificate(pub String, pub String);

impl PeerCertificate {
    /// Reads the end-entity certificate rustls has already verified against the client CA.
    pub fn from_der(der: &[u8]) -> Option<PeerCertificate> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = DistinguishedName::from_x509(cert.subject());
        let mut sans = Vec::new();
        if let Ok(Some(extension)) = cert.subject_alternative_name() {
            sans.extend(extension.value.general_names.iter().filter_map(SanName::from_general_name));
        }
        Some(PeerCertificate { subject, sans })
    }

    /// The configured client this certificate is, if any. Subjects compare RDN by RDN and
    /// value by value; SANs compare within their type.
    pub fn client<'a>(&self, clients: &'a [TlsClient]) -> Result<Option<&'a TlsClient>, AmbiguousCertificate> {
        let mut matching = clients.iter().filter(|client| match &client.matcher {
            CertMatch::Subject(subject) => *subject == self.subject,
            CertMatch::San(san) => self.sans.contains(san),
        });
        let first = matching.next();
        match (first, matching.next()) {
            (Some(a), Some(b)) => Err(AmbiguousCertificate(a.name.clone(), b.name.clone())),
            (first, _) => Ok(first),
        }
    }
}

fn not_after(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(cert.validity().not_after.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::TlsClient,
        store::{ModelScope, Scopes},
    };

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::pem_slice_iter(pem.as_bytes()).next().unwrap().unwrap().to_vec()
    }

    fn client(name: &str, matcher: CertMatch) -> TlsClient {
        TlsClient {
            name: name.into(),
            matcher,
            models: ModelScope::All,
            scopes: Scopes::ALL,
            output: None,
            limits: Default::default(),
        }
    }

    fn subject(text: &str) -> CertMatch {
        CertMatch::Subject(DistinguishedName::parse(text).unwrap())
    }

    fn san(text: &str) -> CertMatch {
        CertMatch::San(SanName::parse(text).unwrap())
    }

    #[test]
    fn client_certificates_map_by_subject_or_san() {
        let pki = pki::Pki::new("unit CA").unwrap();
        let by_subject = PeerCertificate::from_der(&der(&pki.client("svc-a", None).unwrap().cert_pem)).unwrap();
        assert_eq!(by_subject.subject.to_string(), "CN=svc-a,O=Portcullis");
        let by_uri =
            PeerCertificate::from_der(&der(&pki.client("other", Some("spiffe://t/svc-b")).unwrap().cert_pem)).unwrap();
        assert_eq!(by_uri.sans, [SanName::Uri("spiffe://t/svc-b".into())]);
        let server =
            PeerCertificate::from_der(&der(&pki.server(&["localhost", "127.0.0.1"]).unwrap().cert_pem)).unwrap();
        assert_eq!(server.sans, [SanName::Dns("localhost".into()), SanName::Ip("127.0.0.1".parse().unwrap())]);

        let clients = [client("a", subject("CN=svc-a, O=Portcullis")), client("b", san("spiffe://t/svc-b"))];
        assert_eq!(by_subject.client(&clients).unwrap().map(|c| c.name.as_str()), Some("a"));
        assert_eq!(by_uri.client(&clients).unwrap().map(|c| c.name.as_str()), Some("b"));
        assert!(server.client(&clients).unwrap().is_none());
        // Subjects match whole, not by prefix or by common name alone.
        let partial = [client("c", subject("CN=svc-a"))];
        assert!(by_subject.client(&partial).unwrap().is_none());
        assert!(PeerCertificate::from_der(b"not a certificate").is_none());
        // A SAN matches only within its type: a DNS entry never matches a URI.
        let dns = [client("d", san("dns:localhost"))];
        assert!(server.client(&dns).unwrap().is_some());
        let uri = [client("u", san("uri:localhost"))];
        assert!(server.client(&uri).unwrap().is_none());
    }

    /// Certificates the client CA issued whose common names print like a listed client's
    /// subject: none of them may become that client.
    #[test]
    fn a_common_name_that_prints_like_another_subject_is_not_that_client() {
        let pki = pki::Pki::new("unit CA").unwrap();
        let listed = [client("demo", subject("CN=demo-service,O=Portcullis"))];
        let real = PeerCertificate::from_der(&der(&pki.client("demo-service", None).unwrap().cert_pem)).unwrap();
        assert_eq!(real.client(&listed).unwrap().map(|c| c.name.as_str()), Some("demo"));
        for forged_cn in [
            "demo-service,O=Portcullis",
            "demo-service, O=Portcullis",
            "\"demo-service, O=Portcullis\"",
            "demo-service ",
            "demo-service\t",
            "demo-service\\",
        ] {
            let forged = pki.client_with_subject(&[("CN", forged_cn)], None).unwrap();
            let forged = PeerCertificate::from_der(&der(&forged.cert_pem)).unwrap();
            assert!(forged.client(&listed).unwrap().is_none(), "CN {forged_cn:?} became the listed client");
        }
        // Two RDNs in the other order are another name too.
        let swapped = pki.client_with_subject(&[("O", "Portcullis"), ("CN", "demo-service")], None).unwrap();
        let swapped = PeerCertificate::from_der(&der(&swapped.cert_pem)).unwrap();
        assert!(swapped.client(&listed).unwrap().is_none());
        // The escaped form names the single-CN certificate, and only it.
        let escaped = [client("odd", subject(r"CN=demo-service\,O=Portcullis"))];
        let forged = pki.client_with_subject(&[("CN", "demo-service,O=Portcullis")], None).unwrap();
        let forged = PeerCertificate::from_der(&der(&forged.cert_pem)).unwrap();
        assert_eq!(forged.client(&escaped).unwrap().map(|c| c.name.as_str()), Some("odd"));
        assert!(real.client(&escaped).unwrap().is_none());
    }

    #[test]
    fn a_certificate_two_clients_would_claim_is_refused() {
        let pki = pki::Pki::new("unit CA").unwrap();
        let both =
            PeerCertificate::from_der(&der(&pki.client("svc-a", Some("spiffe://t/a")).unwrap().cert_pem)).unwrap();
        let clients = [client("by-subject", subject("CN=svc-a,O=Portcullis")), client("by-san", san("spiffe://t/a"))];
        assert_eq!(both.client(&clients), Err(AmbiguousCertificate("by-subject".into(), "by-san".into())));
    }

    #[test]
    fn a_broken_reload_keeps_the_working_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki::Pki::new("unit CA").unwrap();
        let issued = pki.server(&["localhost"]).unwrap();
        std::fs::write(dir.path().join("c.pem"), &issued.cert_pem).unwrap();
        std::fs::write(dir.path().join("k.pem"), &issued.key_pem).unwrap();
        let config = TlsConfig {
            cert: dir.path().join("c.pem"),
            key: dir.path().join("k.pem"),
            client_ca: None,
            client_auth: ClientAuth::Optional,
            reload_interval: std::time::Duration::from_secs(1),
            tls13_only: false,
            clients: Vec::new(),
        };
        let tls = Tls::load(&config).unwrap();
        assert!(!tls.reload_if_changed(), "nothing changed");
        std::fs::write(dir.path().join("c.pem"), "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
        assert!(!tls.reload_if_changed(), "a broken file is not loaded");
        let other = pki.server(&["localhost"]).unwrap();
        std::fs::write(dir.path().join("c.pem"), &other.cert_pem).unwrap();
        assert!(!tls.reload_if_changed(), "a certificate without its key is not loaded");
        std::fs::write(dir.path().join("k.pem"), &other.key_pem).unwrap();
        assert!(tls.reload_if_changed(), "the matching pair is");
        std::fs::remove_file(dir.path().join("k.pem")).unwrap();
        assert!(!tls.reload_if_changed());
        assert!(Tls::load(&config).unwrap_err().contains("tls.key"), "a missing file names itself at start");
    }
}
