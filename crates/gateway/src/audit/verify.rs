//! Reading a log back: `portcullis audit verify` and `portcullis audit repair`.
//!
//! The algorithm, so that anyone can write their own verifier (see docs/audit-log.md): read the
//! files in chain order, line by line; each line must be a JSON record whose `seq` is one more
//! than the previous record's and whose `prev` is the SHA-256 of the previous line's bytes. A
//! checkpoint's signature must verify under the public key. A finding names the line at fault:
//! a `prev` mismatch with consecutive `seq` means the line before was modified; a jump in `seq`
//! means records were deleted; a `seq` that goes back means records were reordered or inserted. The
//! signed head file names the last checkpoint written; a log that ends before it was truncated.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::chain::{GENESIS, Head, RecordHead, checkpoint_message, key_id, line_hash, verify_signature};

/// Lines longer than this are not records.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Modified,
    Deleted,
    Reordered,
    Malformed,
    BadSignature,
    Torn,
    Truncated,
    Discontinuous,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub file: String,
    pub line: u64,
    pub message: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub files: usize,
    pub records: u64,
    pub checkpoints: u64,
    pub signatures_checked: bool,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Records after the last checkpoint: protected by the chain, not yet by a signature.
    pub unsigned_tail: u64,
    pub findings: Vec<Finding>,
}

/// Why a log could not be checked at all (not a finding about its content).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    #[error("{0} is empty: there are no records to verify")]
    Empty(String),
    #[error("{0} is not an audit log: line 1 is not an audit record ({1})")]
    NotALog(String, String),
    #[error("{0}: line {1} is longer than {MAX_LINE} bytes; this is not an audit log")]
    HugeLine(String, u64),
    #[error("{0}")]
    OtherChain(String),
    #[error("{0}")]
    Head(String),
}

struct Chain<'k> {
    key: Option<&'k VerifyingKey>,
    key_id: Option<String>,
    last: Option<(u64, String)>,
    report: Report,
    last_checkpoint: Option<(String, u64)>,
    head: Option<Head>,
    from_seq: u64,
}

impl Chain<'_> {
    fn finding(&mut self, kind: FindingKind, file: &str, line: u64, message: String) {
        self.report.findings.push(Finding { kind, file: file.to_owned(), line, message });
    }
}

/// Reads one line of at most `MAX_LINE` bytes; `None` at the end.
fn read_line(reader: &mut impl BufRead, buffer: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    buffer.clear();
    let read = reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', buffer)?;
    if read == 0 {
        return Ok(None);
    }
    let complete = buffer.last() == Some(&b'\n');
    if complete {
        buffer.pop();
    }
    Ok(Some(complete))
}

/// Verifies `files`, in chain order. `key`: the checkpoint public key (signatures are not
/// checked without it). `head`: the head file, if any.
/// `from_seq`: the seq the first file starts at, when older files were archived (default 1).
pub fn verify(
    files: &[PathBuf],
    key: Option<&VerifyingKey>,
    head: Option<&Path>,
    from_seq: u64,
) -> Result<Report, VerifyError> {
    let mut chain = Chain {
        key,
        key_id: key.map(key_id),
        last: None,
        report: Report::default(),
        last_checkpoint: None,
        head: None,
        from_seq,
    };
    chain.report.signatures_checked = key.is_some();
    chain.report.files = files.len();
    if let Some(head) = head {
        chain.head = Some(load_head(&chain, head)?);
    }
    for path in files {
        verify_file(&mut chain, path)?;
    }
    check_truncation(&mut chain, files);
    Ok(chain.report)
}

fn verify_file(chain: &mut Chain<'_>, path: &Path) -> Result<(), VerifyError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| VerifyError::Read(name.clone(), e.to_string()))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buffer = Vec::with_capacity(512);
    let mut number = 0u64;
    let mut first_in_file = true;
    loop {
        let complete = match read_line(&mut reader, &mut buffer) {
            Ok(None) => break,
            Ok(Some(complete)) => complete,
            Err(e) => return Err(VerifyError::Read(name, e.to_string())),
        };
        number += 1;
        if buffer.len() > MAX_LINE {
            return Err(VerifyError::HugeLine(name, number));
        }
        let parsed = serde_json::from_slice::<RecordHead>(&buffer);
        if !complete {
            // A last line without its newline: a write cut short. Nothing after it is read.
            let detail = if parsed.is_ok() { "has no final newline" } else { "is incomplete" };
            chain.finding(
                FindingKind::Torn,
                &name,
                number,
                format!("the last record {detail} (a torn write); `portcullis audit repair` cuts it"),
            );
            break;
        }
        let record = match parsed {
            Ok(record) => record,
            Err(e) if chain.report.records == 0 => return Err(VerifyError::NotALog(name, e.to_string())),
            Err(e) => {
                chain.finding(
                    FindingKind::Malformed,
                    &name,
                    number,
                    format!("not an audit record ({e}): inserted or edited"),
                );
                continue;
            }
        };
        let hash = line_hash(&buffer);
        check_link(chain, &record, &name, number, first_in_file);
        if let Some(head) = &chain.head
            && head.seq == record.seq
            && head.hash != hash
        {
            let message = format!("checkpoint seq {} differs from the one the head file records", record.seq);
            chain.finding(FindingKind::Modified, &name, number, message);
        }
        first_in_file = false;
        if record.event == "checkpoint" {
            check_checkpoint(chain, &record, &name, number)?;
            chain.last_checkpoint = Some((name.clone(), number));
            chain.report.checkpoints += 1;
            chain.report.unsigned_tail = 0;
        } else {
            chain.report.unsigned_tail += 1;
        }
        chain.report.first_seq.get_or_insert(record.seq);
        chain.report.last_seq = Some(record.seq);
        chain.report.records += 1;
        chain.last = Some((record.seq, hash));
    }
    if number == 0 {
        return Err(VerifyError::Empty(name));
    }
    Ok(())
}

fn check_link(chain: &mut Chain<'_>, record: &RecordHead, name: &str, number: u64, first_in_file: bool) {
    let Some((last_seq, last_hash)) = chain.last.clone() else {
        if record.seq == 1 && record.prev != GENESIS {
            chain.finding(
                FindingKind::Modified,
                name,
                number,
                "the first record of the chain must have prev = 64 zeros".into(),
            );
        } else if record.seq != chain.from_seq {
            let message = format!(
                "the files start at seq {}, not {}: earlier records are missing (give the older rotated files \
                 first, or --from-seq {} if they were archived)",
                record.seq, chain.from_seq, record.seq
            );
            chain.finding(FindingKind::Deleted, name, number, message);
        }
        return;
    };
    if record.seq == last_seq + 1 {
        if record.prev != last_hash {
            let (kind, line, message) = if first_in_file {
                (
                    FindingKind::Discontinuous,
                    number,
                    format!(
                        "this file does not continue the previous one (seq {} after {last_seq}, but prev differs)",
                        record.seq
                    ),
                )
            } else {
                (
                    FindingKind::Modified,
                    number - 1,
                    format!("record seq {last_seq} was modified: its hash does not match the prev of the next record"),
                )
            };
            chain.finding(kind, name, line, message);
        }
    } else if record.seq > last_seq + 1 {
        let missing = record.seq - last_seq - 1;
        chain.finding(
            FindingKind::Deleted,
            name,
            number,
            format!("{missing} record(s) deleted before this line (seq {} follows {last_seq})", record.seq),
        );
    } else {
        chain.finding(
            FindingKind::Reordered,
            name,
            number,
            format!("record out of order or inserted (seq {} after {last_seq})", record.seq),
        );
    }
}

fn check_checkpoint(chain: &mut Chain<'_>, record: &RecordHead, name: &str, number: u64) -> Result<(), VerifyError> {
    let Some(key) = chain.key else {
        return Ok(());
    };
    let (Some(record_key), Some(signature)) = (&record.key_id, &record.signature) else {
        chain.finding(FindingKind::BadSignature, name, number, "checkpoint without key_id or signature".into());
        return Ok(());
    };
    if Some(record_key.as_ref()) != chain.key_id.as_deref() {
        return Err(VerifyError::OtherChain(format!(
            "{name}: line {number}: checkpoints are signed by key {record_key}, but the public key given is {}: \
             this log belongs to another chain, or the wrong key was given",
            chain.key_id.as_deref().unwrap_or("?")
        )));
    }
    if !verify_signature(key, checkpoint_message(record.seq, &record.time, &record.prev).as_bytes(), signature) {
        chain.finding(
            FindingKind::BadSignature,
            name,
            number,
            "checkpoint signature does not verify: the checkpoint or the record before it was altered".into(),
        );
    }
    Ok(())
}

fn load_head(chain: &Chain<'_>, head_path: &Path) -> Result<Head, VerifyError> {
    let shown = head_path.display();
    let text = std::fs::read_to_string(head_path)
        .map_err(|e| VerifyError::Head(format!("cannot read head file {shown}: {e}")))?;
    let head: Head =
        serde_json::from_str(&text).map_err(|e| VerifyError::Head(format!("head file {shown} is not valid: {e}")))?;
    if let Some(key) = chain.key {
        if Some(&head.key_id) != chain.key_id.as_ref() {
            return Err(VerifyError::OtherChain(format!(
                "head file {shown} is signed by key {}, not by the key given",
                head.key_id
            )));
        }
        if !head.verify(key) {
            return Err(VerifyError::Head(format!("head file {shown}: its signature does not verify")));
        }
    }
    Ok(head)
}

fn check_truncation(chain: &mut Chain<'_>, files: &[PathBuf]) {
    let (Some(head), Some((last_seq, _))) = (&chain.head, &chain.last) else {
        return;
    };
    if *last_seq < head.seq {
        let message = format!(
            "the log ends at seq {last_seq}, but checkpoint seq {} was written: records were cut from the end",
            head.seq
        );
        let name = files.last().map(|path| path.display().to_string()).unwrap_or_default();
        let line = chain.last_checkpoint.as_ref().map_or(0, |(_, line)| *line);
        chain.finding(FindingKind::Truncated, &name, line, message);
    }
}

/// Cuts a torn last line (one without its newline). Returns the number of bytes removed.
pub fn repair(path: &Path) -> Result<u64, VerifyError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| VerifyError::Read(name.clone(), e.to_string()))?;
    if bytes.is_empty() || bytes.last() == Some(&b'\n') {
        return Ok(0);
    }
    let keep = bytes.iter().rposition(|&byte| byte == b'\n').map_or(0, |newline| newline + 1);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| VerifyError::Read(name.clone(), e.to_string()))?;
    file.set_len(keep as u64).and_then(|()| file.sync_all()).map_err(|e| VerifyError::Read(name, e.to_string()))?;
    Ok((bytes.len() - keep) as u64)
}
