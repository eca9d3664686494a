//! The record format. Every line is one JSON object:
//!
//! ```text
//! {"seq":N,"time":"2026-11-25T22:49:27.123Z","prev":"<64 hex>","event":"...", ...fields}
//! ```
//!
//! `seq` counts from 1 across files. `prev` is the SHA-256 of the previous line's bytes (without
//! its newline); the first record of a chain has 64 zeros. A checkpoint is a record with
//! `"event":"checkpoint"`, a `key_id` (the first 16 hex digits of SHA-256 of the Ed25519 public
//! key) and a `signature`: Ed25519 over
//!
//! ```text
//! portcullis-audit-checkpoint-v1\n<seq>\n<time>\n<prev>
//! ```
//!
//! so it vouches for every record before it. The head file beside the log holds the last
//! checkpoint's seq and line hash, signed over `portcullis-audit-head-v1\n<seq>\n<hash>`, which
//! lets a verifier notice records cut from the end.

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{AuditError, AuditEvent};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    time: &'a str,
    prev: &'a str,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

pub use crate::hex::{decode as unhex, encode as hex};

/// SHA-256 of a line's bytes, as hex.
pub fn line_hash(line: &[u8]) -> String {
    hex(&Sha256::digest(line))
}

pub fn checkpoint_message(seq: u64, time: &str, prev: &str) -> String {
    format!("portcullis-audit-checkpoint-v1\n{seq}\n{time}\n{prev}")
}

pub fn head_message(seq: u64, hash: &str) -> String {
    format!("portcullis-audit-head-v1\n{seq}\n{hash}")
}

pub fn key_id(key: &VerifyingKey) -> String {
    hex(&Sha256::digest(key.as_bytes())[..8])
}

/// The position of a chain: the last record's seq and line hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub seq: u64,
    pub hash: String,
}

impl Position {
    pub fn start() -> Position {
        Position { seq: 0, hash: GENESIS.to_owned() }
    }

    /// Serializes the next record and advances.
    pub fn append(&mut self, time: &str, event: &AuditEvent) -> Result<String, serde_json::Error> {
        let seq = self.seq + 1;
        let line = serde_json::to_string(&Line { seq, time, prev: &self.hash, event })?;
        self.seq = seq;
        self.hash = line_hash(line.as_bytes());
        Ok(line)
    }

    /// Serializes a signed checkpoint and advances.
    pub fn checkpoint(&mut self, time: &str, key: &SigningKeyFile) -> Result<String, serde_json::Error> {
        let signature = key.key.sign(checkpoint_message(self.seq + 1, time, &self.hash).as_bytes());
        let event = AuditEvent::Checkpoint { key_id: key.key_id.clone(), signature: hex(&signature.to_bytes()) };
        self.append(time, &event)
    }
}

/// The fields every record has, for reading (borrowed from the line where it can be).
#[derive(Debug, Deserialize)]
pub struct RecordHead<'a> {
    pub seq: u64,
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    #[serde(borrow)]
    pub prev: Cow<'a, str>,
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    #[serde(default, borrow)]
    pub key_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub signature: Option<Cow<'a, str>>,
}

/// The signed head file: the last checkpoint written.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
    pub key_id: String,
    pub signature: String,
}

impl Head {
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        verify_signature(key, head_message(self.seq, &self.hash).as_bytes(), &self.signature)
    }
}

pub fn verify_signature(key: &VerifyingKey, message: &[u8], signature_hex: &str) -> bool {
    let Some(bytes) = unhex(signature_hex) else {
        return false;
    };
    let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
        return false;
    };
    // Strict: a small-order key or R would let one forged signature verify every message.
    key.verify_strict(message, &Signature::from_bytes(&bytes)).is_ok()
}

/// The head file's path for a log.
pub fn head_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".head");
    PathBuf::from(name)
}

/// The Ed25519 key that signs checkpoints, loaded from (or created in) its own file.
pub struct SigningKeyFile {
    key: SigningKey,
    pub key_id: String,
}

impl std::fmt::Debug for SigningKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyFile").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl SigningKeyFile {
    /// Loads the 32-byte seed (hex) from `path`, creating it (mode 0600) with its public key in
    /// `path.pub` if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<SigningKeyFile, AuditError> {
        let error = |message: String| AuditError::Key { path: path.display().to_string(), message };
        let seed: Zeroizing<[u8; 32]> = match std::fs::read_to_string(path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                let bytes = Zeroizing::new(unhex(text.trim()).ok_or_else(|| error("is not hexadecimal".into()))?);
                let seed: [u8; 32] =
                    bytes.as_slice().try_into().map_err(|_| error("must hold 64 hexadecimal characters".into()))?;
                Zeroizing::new(seed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = Zeroizing::new([0u8; 32]);
                getrandom::fill(seed.as_mut()).map_err(|e| error(e.to_string()))?;
                match crate::secret_file::write_private(path, hex(seed.as_ref()).as_bytes()) {
                    Ok(()) => seed,
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return SigningKeyFile::load_or_create(path);
                    }
                    Err(e) => return Err(error(e.to_string())),
                }
            }
            Err(e) => return Err(error(e.to_string())),
        };
        let key = SigningKey::from_bytes(&seed);
        let public = key.verifying_key();
        let public_path = public_key_path(path);
        let public_hex = hex(public.as_bytes());
        if std::fs::read_to_string(&public_path).map(|text| text.trim() != public_hex).unwrap_or(true) {
            std::fs::write(&public_path, format!("{public_hex}\n")).map_err(|e| error(e.to_string()))?;
        }
        Ok(SigningKeyFile { key_id: key_id(&public), key })
    }

    pub fn sign_head(&self, seq: u64, hash: &str) -> Head {
        let signature = self.key.sign(head_message(seq, hash).as_bytes());
        Head { seq, hash: hash.to_owned(), key_id: self.key_id.clone(), signature: hex(&signature.to_bytes()) }
    }
}

pub fn public_key_path(signing_key: &Path) -> PathBuf {
    let mut name = signing_key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Reads a public key file (64 hex characters).
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read public key {}: {e}", path.display()))?;
    let bytes = unhex(text.trim()).ok_or_else(|| format!("public key {} is not hexadecimal", path.display()))?;
    let bytes: [u8; 32] =
        bytes.try_into().map_err(|_| format!("public key {} must be 64 hexadecimal characters", path.display()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| format!("public key {} is not a valid Ed25519 key", path.display()))
}
