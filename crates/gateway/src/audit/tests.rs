//! The log as written, and every kind of tampering `verify` must catch, with the right line.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    AuditConfig, AuditEvent, Fsync,
    chain::{head_path, load_public_key, public_key_path},
    verify::{self, FindingKind, VerifyError},
    writer::Writer,
};

fn config(dir: &Path, checkpoint_every: u64, max_file_bytes: u64) -> AuditConfig {
    AuditConfig {
        path: dir.join("audit.log"),
        signing_key: dir.join("audit-signing.key"),
        checkpoint_every,
        checkpoint_interval: Duration::from_secs(3600),
        fsync: Fsync::Always,
        max_file_bytes,
        fail_open: false,
        stdout: false,
        queue: 16,
    }
}

fn revoked(i: usize) -> AuditEvent {
    AuditEvent::KeyRevoked { kid: format!("key{i:05}") }
}

/// Writes `records` events (a checkpoint every `every`) and seals the log.
fn write_log(dir: &Path, records: usize, every: u64) -> AuditConfig {
    let config = config(dir, every, 1 << 30);
    let mut writer = Writer::open(&config).unwrap();
    for i in 0..records {
        writer.write_batch(&[revoked(i)], false, true).unwrap();
    }
    writer.write_batch(&[], true, true).unwrap();
    config
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn rewrite(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|line| format!("{line}\n")).collect::<String>()).unwrap();
}

fn check(config: &AuditConfig, files: &[PathBuf]) -> Result<verify::Report, VerifyError> {
    let key = load_public_key(&public_key_path(&config.signing_key)).unwrap();
    verify::verify(files, Some(&key), Some(&head_path(&config.path)), 1)
}

/// Verifies and returns the findings as (kind, line).
fn findings(config: &AuditConfig) -> Vec<(FindingKind, u64)> {
    check(config, std::slice::from_ref(&config.path)).unwrap().findings.iter().map(|f| (f.kind, f.line)).collect()
}

#[test]
fn an_untouched_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_log(dir.path(), 10, 4);
    let report = check(&config, std::slice::from_ref(&config.path)).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.checkpoints, 3);
    assert_eq!(report.records, 13);
    assert_eq!(report.unsigned_tail, 0);
    assert!(report.signatures_checked);
    // Records are plain JSON lines with the documented fields.
    let first: serde_json::Value = serde_json::from_str(&lines(&config.path)[0]).unwrap();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["prev"], super::chain::GENESIS);
    assert_eq!(first["event"], "key_revoked");
}

#[test]
fn a_modified_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_log(dir.path(), 10, 4);
    let mut log = lines(&config.path);
    log[1] = log[1].replace("key00001", "key99999");
    rewrite(&config.path, &log);
    assert_eq!(findings(&config), vec![(FindingKind::Modified, 2)]);
}

#[test]
fn a_modified_record_with_a_recomputed_chain_breaks_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_log(dir.path(), 3, 100);
    // Rewrite record 2 and recompute every later prev, as a forger without the key would.
    let mut log = lines(&config.path);
    log[1] = log[1].replace("key00001", "key77777");
    for i in 2..log.len() {
        let previous = super::chain::line_hash(log[i - 1].as_bytes());
        let mut record: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&log[i]).unwrap();
        record.insert("prev".into(), previous.into());
        log[i] = serde_json::to_string(&record).unwrap();
    }
    rewrite(&config.path, &log);
    let found = findings(&config);
    assert!(found.contains(&(FindingKind::BadSignature, 4)), "{found:?}");
}

#[test]
fn records_cut_from_the_start_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_log(dir.path(), 10, 4);
    let mut log = lines(&config.path);
    log.drain(..3);
    rewrite(&config.path, &log);
    assert_eq!(findings(&config), vec![(FindingKind::Deleted, 1)]);
}

#[test]
fn a_deleted_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_log(dir.path(), 10, 4);
    let mut log = lines(&config.path);
    log.remove(2);
    rewrite(&config.path, &log);
    assert_eq!(findings(&config), vec![(FindingKind::Deleted, 3)]);
}

#[test]
fn reordered_records_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_log(dir.path(), 10, 4);
    let mut log = lines(&config.path);
    log.swap(1, 2);
    rewrite(&config.path, &log);
    let found = findings(&config);
    assert_eq!(found.first(), Some(&(FindingKind::Deleted, 2)), "{found:?}");
    assert!(found.contains(&(FindingKind::Reordered, 3)), "{found:?}");
}

#[test]
fn an_inserted_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_log(dir.path(), 6, 100);
    let mut log = lines(&config.path);
    log.insert(3, "{\"note\":\"hello\"}".into());
    rewrite(&config.path, &log);
    assert_eq!(findings(&config), vec![(FindingKind::Malformed, 4)]);
}

#[test]
fn a_truncated_tail_is_caught_by_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_log(dir.path(), 10, 4);
    let mut log = lines(&config.path);
    log.truncate(6);
    rewrite(&config.path, &log);
    let found = findings(&config);
    assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), vec![FindingKind::Truncated], "{found:?}");
}

#[test]
fn a_torn_tail_is_reported_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_log(dir.path(), 5, 100);
    let mut bytes = std::fs::read(&config.path).unwrap();
    bytes.extend_from_slice(b"{\"seq\":7,\"time\":\"2026-");
    std::fs::write(&config.path, &bytes).unwrap();
    assert_eq!(findings(&config), vec![(FindingKind::Torn, 7)]);
    // The writer refuses to append after a torn line.
    assert!(matches!(Writer::open(&config), Err(super::AuditError::Torn(_))));
    assert_eq!(verify::repair(&config.path).unwrap(), 22);
    assert!(findings(&config).is_empty());
    assert_eq!(verify::repair(&config.path).unwrap(), 0);
    // And appending continues the same chain.
    let mut writer = Writer::open(&config).unwrap();
    writer.write_batch(&[revoked(99)], true, true).unwrap();
    assert!(findings(&config).is_empty());
}

#[test]
fn unreadable_logs_and_foreign_keys_are_errors_not_findings() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_log(dir.path(), 3, 2);
    let key = load_public_key(&public_key_path(&config.signing_key)).unwrap();
    let file = |name: &str, contents: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        (file("empty.log", b""), "is empty"),
        (file("garbage.log", &[0xff, 0x00, 0x13, b'\n', 0x80]), "is not an audit log"),
        (file("text.log", b"hello world\n"), "is not an audit log"),
        (file("huge.log", &vec![b'a'; verify::MAX_LINE + 10]), "longer than"),
        (dir.path().join("missing.log"), "cannot read"),
    ];
    for (path, needle) in cases {
        let error = verify::verify(std::slice::from_ref(&path), Some(&key), None, 1).unwrap_err().to_string();
        assert!(error.contains(needle), "{}: '{error}' lacks '{needle}'", path.display());
    }
    // Another chain's key.
    let other = tempfile::tempdir().unwrap();
    let other_config = write_log(other.path(), 3, 2);
    let other_key = load_public_key(&public_key_path(&other_config.signing_key)).unwrap();
    let error = verify::verify(std::slice::from_ref(&config.path), Some(&other_key), None, 1).unwrap_err().to_string();
    assert!(error.contains("another chain"), "{error}");
    assert!(load_public_key(&dir.path().join("nokey.pub")).is_err());
}

#[test]
fn rotation_keeps_one_chain_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 1000, 4096);
    let mut writer = Writer::open(&config).unwrap();
    for i in 0..60 {
        writer.write_batch(&[revoked(i)], false, true).unwrap();
    }
    writer.write_batch(&[], true, true).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with("audit.log."))
        .filter(|path| path.extension().is_some_and(|ext| ext.len() == 12))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    files.push(config.path.clone());
    let report = check(&config, &files).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.first_seq, Some(1));
    // Files out of order break the chain.
    let mut swapped = files.clone();
    swapped.swap(0, 1);
    assert!(!check(&config, &swapped).unwrap().findings.is_empty());
    // The active file alone starts mid-chain: missing records, unless told where it starts.
    let last = std::slice::from_ref(&config.path);
    let key = load_public_key(&public_key_path(&config.signing_key)).unwrap();
    let alone = verify::verify(last, Some(&key), None, 1).unwrap();
    assert_eq!(alone.findings.iter().map(|f| f.kind).collect::<Vec<_>>(), [FindingKind::Deleted]);
    let start = alone.first_seq.unwrap();
    assert!(verify::verify(last, Some(&key), None, start).unwrap().findings.is_empty());
    // And a writer opening the fresh active file after a rotation continues the chain.
    let mut writer = Writer::open(&config).unwrap();
    writer.write_batch(&[revoked(1000)], true, true).unwrap();
    assert!(check(&config, &files).unwrap().findings.is_empty());
}

#[tokio::test]
async fn the_writer_thread_serves_the_queue_and_seals_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 5, 1 << 30);
    config.fsync = Fsync::Every(Duration::from_millis(5));
    let log = super::AuditLog::open(&config).unwrap();
    for i in 0..12 {
        log.record(revoked(i)).await.unwrap();
    }
    log.close().await;
    let report = check(&config, std::slice::from_ref(&config.path)).unwrap();
    assert!(report.findings.is_empty());
    assert_eq!(report.records - report.checkpoints, 12);
    assert_eq!(report.unsigned_tail, 0, "close writes a final checkpoint");
    // Once the writer is gone, records are refused: callers fail closed.
    assert!(log.record(revoked(13)).await.is_err());
}

#[test]
fn a_small_order_verifying_key_verifies_no_checkpoint() {
    // The identity point as the public key, and R = identity, S = 0 as the signature: RFC 8032
    // verification without the small-order checks accepts it for every message.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&identity).unwrap();
    let mut forged = [0u8; 64];
    forged[0] = 1;
    assert!(!super::chain::verify_signature(&key, b"any checkpoint", &crate::hex::encode(&forged)));
}
