//! Baselines: a file of fingerprints of findings a team has accepted (a test key in a fixture,
//! a public identifier it has restricted). A fingerprint hashes the rule, the path (archive
//! members included) and the secret, so it survives the secret moving to another line and
//! never holds the secret itself.

use std::collections::HashSet;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::scan::Finding;

/// The stable fingerprint of a finding: 32 hex digits.
pub fn fingerprint(finding: &Finding) -> String {
    let mut hash = Sha256::new();
    hash.update(finding.rule.as_bytes());
    hash.update([0]);
    // The same file named `./src/a` or `src/a`, with `/` or `\\`, is the same file.
    let path = finding.shown_path().replace('\\', "/");
    hash.update(path.strip_prefix("./").unwrap_or(&path).as_bytes());
    hash.update([0]);
    hash.update(finding.secret.expose().as_bytes());
    hash.finalize().iter().take(16).map(|byte| format!("{byte:02x}")).collect()
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineFile {
    version: u32,
    findings: Vec<BaselineEntry>,
}

/// One accepted finding. Only the fingerprint counts; rule and path help people review it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineEntry {
    fingerprint: String,
    rule: String,
    path: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot read the baseline {0}: {1}")]
    Read(String, std::io::Error),
    #[error("the baseline {0} is not a baseline file: {1}")]
    Parse(String, serde_json::Error),
    #[error("the baseline {0} has version {1}; this version reads version 1")]
    Version(String, u32),
    #[error("cannot write the baseline {0}: {1}")]
    Write(String, std::io::Error),
}

/// Accepted fingerprints.
#[derive(Debug, Default)]
pub struct Baseline(HashSet<String>);

impl Baseline {
    pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| BaselineError::Read(shown.clone(), error))?;
        let file: BaselineFile =
            serde_json::from_str(&text).map_err(|error| BaselineError::Parse(shown.clone(), error))?;
        if file.version != 1 {
            return Err(BaselineError::Version(shown, file.version));
        }
        Ok(Baseline(file.findings.into_iter().map(|entry| entry.fingerprint).collect()))
    }

    pub fn contains(&self, finding: &Finding) -> bool {
        self.0.contains(&fingerprint(finding))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes a baseline accepting `findings`: to a temporary file, renamed into place.
    pub fn write(path: &Path, findings: &[Finding]) -> Result<(), BaselineError> {
        let shown = path.display().to_string();
        let mut entries: Vec<BaselineEntry> = findings
            .iter()
            .map(|finding| BaselineEntry {
                fingerprint: fingerprint(finding),
                rule: finding.rule.clone(),
                path: finding.shown_path(),
            })
            .collect();
        entries.sort_by(|a, b| (&a.path, &a.rule, &a.fingerprint).cmp(&(&b.path, &b.rule, &b.fingerprint)));
        entries.dedup_by(|a, b| a.fingerprint == b.fingerprint);
        let file = BaselineFile { version: 1, findings: entries };
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        crate::report::write_whole(path, text.as_bytes()).map_err(|error| BaselineError::Write(shown, error))
    }
}
