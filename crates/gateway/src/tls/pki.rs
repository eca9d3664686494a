//! A small private certificate authority for development, demos and tests: a CA, server
//! certificates for this machine, and client certificates for mutual TLS. Production
//! certificates come from the organisation's own CA or ACME; this exists so that the secure
//! setup (TLS everywhere, client certificates) is also the easy one to try.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A CA that can issue certificates.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "Portcullis");
    name
}

impl Pki {
    /// A new CA (ECDSA P-256) named `common_name`.
    pub fn new(common_name: &str) -> Result<Pki, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Pki { ca: CertifiedIssuer::self_signed(params, KeyPair::generate()?)? })
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Result<Issued, rcgen::Error> {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params.distinguished_name = name(names.first().map_or("server", String::as_str));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate with subject `CN=<common_name>,O=Portcullis` and, if given, one
    /// URI subject alternative name (e.g. a SPIFFE id).
    pub fn client(&self, common_name: &str, uri: Option<&str>) -> Result<Issued, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name);
        if let Some(uri) = uri {
            params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into()?)];
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    /// A client certificate with exactly the subject given (`CN`, `O`, `OU`, `C`, `L`, `ST`
    /// pairs, in certificate order): for tests of names that other names could imitate.
    pub fn client_with_subject(&self, subject: &[(&str, &str)], uri: Option<&str>) -> Result<Issued, rcgen::Error> {
        let mut name = DistinguishedName::new();
        for (kind, value) in subject {
            let kind = match *kind {
                "CN" => DnType::CommonName,
                "O" => DnType::OrganizationName,
                "OU" => DnType::OrganizationalUnitName,
                "C" => DnType::CountryName,
                "L" => DnType::LocalityName,
                "ST" => DnType::StateOrProvinceName,
                _ => return Err(rcgen::Error::UnsupportedSignatureAlgorithm),
            };
            name.push(kind, *value);
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name;
        if let Some(uri) = uri {
            params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into()?)];
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, mut params: CertificateParams) -> Result<Issued, rcgen::Error> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// The files of a development PKI, as `[tls]` names them.
#[derive(Debug, Clone)]
pub struct DevFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Writes a CA, a server certificate for `localhost` and `127.0.0.1`, and one client
/// certificate `CN=<client>` into `dir/tls`, private keys mode 0600. Files already there are
/// kept, so a demo folder keeps its certificates across runs.
pub fn write_dev_files(dir: &Path, client: &str) -> Result<DevFiles, String> {
    let tls = dir.join("tls");
    let files = DevFiles {
        ca: tls.join("ca.pem"),
        cert: tls.join("server.pem"),
        key: tls.join("server-key.pem"),
        client_cert: tls.join("client.pem"),
        client_key: tls.join("client-key.pem"),
    };
    if [&files.ca, &files.cert, &files.key, &files.client_cert, &files.client_key].iter().all(|path| path.exists()) {
        return Ok(files);
    }
    std::fs::create_dir_all(&tls).map_err(|e| format!("cannot create {}: {e}", tls.display()))?;
    let fail = |e: rcgen::Error| format!("cannot make certificates: {e}");
    let pki = Pki::new("Portcullis development CA").map_err(fail)?;
    let server = pki.server(&["localhost", "127.0.0.1"]).map_err(fail)?;
    let client = pki.client(client, None).map_err(fail)?;
    let write = |path: &Path, contents: &str, private: bool| {
        let _ = std::fs::remove_file(path);
        let result = if private {
            crate::secret_file::write_private(path, contents.as_bytes())
        } else {
            std::fs::write(path, contents)
        };
        result.map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(&files.ca, &pki.ca_pem(), false)?;
    write(&files.cert, &server.cert_pem, false)?;
    write(&files.key, &server.key_pem, true)?;
    write(&files.client_cert, &client.cert_pem, false)?;
    write(&files.client_key, &client.key_pem, true)?;
    Ok(files)
}
