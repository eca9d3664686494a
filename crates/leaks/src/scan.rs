//! One scan: every file [`enumerate`](crate::enumerate) finds is sniffed by its first bytes
//! (and, for protobuf, its name), decoded by the matching structured decoder or read as text,
//! and its strings go through the [`Rules`]. A decoded string keeps where it sat (a string-pool
//! index, a resource name, a plist key) and, when the format names it, is matched as a
//! synthetic `name = value` line so name-context rules see it as they would see source code.
//! When a decoder fails part-way, a raw-byte pass over the whole file follows, so a malformed
//! or obfuscated file loses context, never a key.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use crate::decode::{self, DecodeError};
use crate::enumerate::{Enumerator, Limits, Visit};
use crate::rule::{Rules, Severity};
use crate::secret::Secret;

/// A secret found, and where.
#[derive(Debug, Clone)]
pub struct Finding {
    pub rule: String,
    pub title: String,
    pub severity: Severity,
    /// A public-by-design identifier: "check its restrictions", not a leak.
    pub public: bool,
    /// The file on disk, then each archive member (shown joined by `!`).
    pub path: Vec<String>,
    /// Where inside the file: a string-pool index, a resource or plist key, a section offset.
    /// `None` for text, which has `line` and `column` instead.
    pub within: Option<String>,
    pub line: Option<u64>,
    pub column: Option<u64>,
    /// The line around the secret (secret redacted) or the name that labels a decoded string.
    pub context: String,
    pub secret: Secret,
}

impl Finding {
    /// `app.apk!classes.dex`.
    pub fn shown_path(&self) -> String {
        self.path.join("!")
    }

    /// `app.apk!classes.dex#string_ids[12]`, `src/config.js:12:7`.
    pub fn location(&self) -> String {
        match (&self.within, self.line) {
            (Some(within), _) => format!("{}#{within}", self.shown_path()),
            (None, Some(line)) => format!("{}:{line}:{}", self.shown_path(), self.column.unwrap_or(1)),
            (None, None) => self.shown_path(),
        }
    }
}

/// Something skipped or cut short, located; the scan went on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    pub warnings: Vec<Warning>,
    /// Files looked at, archive members included.
    pub files: u64,
    /// Bytes looked at, decompressed.
    pub bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub limits: Limits,
    /// Skip what `.gitignore` files exclude in directories.
    pub gitignore: bool,
}

/// Scans `inputs` (files or directories) with `rules`.
pub fn scan(rules: &Rules, inputs: &[&Path], options: &Options) -> Outcome {
    let mut scanner = Scanner { rules, outcome: Outcome::default() };
    let mut enumerator = Enumerator::new(options.limits.clone(), &mut scanner);
    for input in inputs {
        enumerator.input(input, options.gitignore);
    }
    scanner.outcome
}

/// Scans one in-memory file (or archive) shown as `name`: for tests, fuzzing and embedding.
pub fn scan_bytes(rules: &Rules, name: &str, bytes: &[u8], limits: &Limits) -> Outcome {
    let mut scanner = Scanner { rules, outcome: Outcome::default() };
    Enumerator::new(limits.clone(), &mut scanner).bytes(&[name.to_owned()], bytes, 0);
    scanner.outcome
}

/// Strings shorter than this are not worth matching in binary data.
const MIN_RAW_STRING: usize = 8;
/// How much of a file decides whether it is text.
const SNIFF_BYTES: usize = 8192;
/// Streamed files are read in pieces this large, each starting with the end of the last.
const STREAM_CHUNK: usize = 8 << 20;
const STREAM_OVERLAP: usize = 4096;
/// The context shown around a secret on its line, in characters each side.
const CONTEXT_CHARS: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Dex,
    Arsc,
    Axml,
    Protobuf,
    Plist,
    Binary,
    Text,
    Raw,
}

fn sniff(path: &[String], bytes: &[u8]) -> Format {
    let name = path.last().map(String::as_str).unwrap_or_default();
    let head = &bytes[..bytes.len().min(SNIFF_BYTES)];
    if bytes.starts_with(b"dex\n") {
        Format::Dex
    } else if bytes.starts_with(&[0x02, 0x00, 0x0c, 0x00]) {
        Format::Arsc
    } else if bytes.starts_with(&[0x03, 0x00, 0x08, 0x00]) {
        Format::Axml
    } else if decode::binary::sniff(bytes).is_some() {
        Format::Binary
    } else if decode::plist::sniff(bytes) {
        Format::Plist
    } else if !looks_like_text(head)
        && (name.ends_with(".pb")
            || (name.ends_with("AndroidManifest.xml") && path.len() > 1)
            || name.ends_with("/resources.pb"))
    {
        Format::Protobuf
    } else if looks_like_text(head) {
        Format::Text
    } else {
        Format::Raw
    }
}

/// Text: no NUL byte and few control characters in the first bytes.
fn looks_like_text(head: &[u8]) -> bool {
    if head.contains(&0) {
        return false;
    }
    let control = head.iter().filter(|&&byte| byte < 0x09 || (byte > 0x0d && byte < 0x20) || byte == 0x7f).count();
    control * 100 <= head.len()
}

struct Scanner<'r> {
    rules: &'r Rules,
    outcome: Outcome,
}

impl std::fmt::Debug for Scanner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner").field("findings", &self.outcome.findings.len()).finish_non_exhaustive()
    }
}

impl Visit for Scanner<'_> {
    fn file(&mut self, path: &[String], bytes: &[u8]) {
        self.outcome.files += 1;
        self.outcome.bytes += bytes.len() as u64;
        match sniff(path, bytes) {
            Format::Text => self.text(path, &String::from_utf8_lossy(bytes), 0),
            Format::Raw => self.raw(path, bytes, 0, &mut HashSet::new()),
            format => self.structured(path, bytes, format),
        }
    }

    fn large_file(&mut self, path: &[String], reader: &mut dyn Read) {
        self.outcome.files += 1;
        let mut buffer: Vec<u8> = Vec::with_capacity(STREAM_CHUNK + STREAM_OVERLAP);
        // Bytes of the buffer that came from the previous piece, and its place in the file.
        let mut carried = 0usize;
        let mut offset = 0u64;
        let mut lines_before = 0u64;
        let mut text = None;
        let mut seen = HashSet::new();
        loop {
            let mut piece = Vec::with_capacity(STREAM_CHUNK);
            match reader.take(STREAM_CHUNK as u64).read_to_end(&mut piece) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => {
                    self.warning(path, format!("cannot read further: {error}"));
                    break;
                }
            }
            self.outcome.bytes += piece.len() as u64;
            buffer.extend_from_slice(&piece);
            let is_text = *text.get_or_insert_with(|| looks_like_text(&buffer[..buffer.len().min(SNIFF_BYTES)]));
            if is_text {
                self.text_piece(path, &String::from_utf8_lossy(&buffer), carried, lines_before);
            } else {
                self.raw(path, &buffer, offset, &mut seen);
            }
            let dropped = buffer.len() - buffer.len().min(STREAM_OVERLAP);
            lines_before += bytecount_newlines(&buffer[..dropped]);
            offset += dropped as u64;
            buffer.drain(..dropped);
            carried = buffer.len();
        }
    }

    fn warning(&mut self, path: &[String], message: String) {
        self.outcome.warnings.push(Warning { path: path.join("!"), message });
    }
}

fn bytecount_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&byte| byte == b'\n').count() as u64
}

impl Scanner<'_> {
    fn structured(&mut self, path: &[String], bytes: &[u8], format: Format) {
        let rules = self.rules;
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let mut sink = |within: &str, name: Option<&str>, value: &str| {
            let text = match name {
                Some(name) => format!("{name} = {value}"),
                None => value.to_owned(),
            };
            for hit in rules.find(&text) {
                let secret = &text[hit.start..hit.end];
                if seen.insert((hit.rule, secret.to_owned())) {
                    found.push((hit.rule, secret.to_owned(), within.to_owned(), name.map(str::to_owned)));
                }
            }
        };
        let result: Result<(), DecodeError> = match format {
            Format::Dex => decode::dex::decode(bytes, &mut sink),
            Format::Arsc => decode::arsc::decode(bytes, &mut sink),
            Format::Axml => decode::axml::decode(bytes, &mut sink),
            Format::Protobuf => decode::protobuf::decode(bytes, &mut sink),
            Format::Plist => decode::plist::decode(bytes, &mut sink),
            Format::Binary => match decode::binary::decode(bytes, &mut sink) {
                Ok(info) => {
                    if info.encrypted {
                        self.warning(
                            path,
                            format!(
                                "{} encrypted (App Store FairPlay): its code cannot be scanned; scan a decrypted build or the CI artifact",
                                info.format
                            ),
                        );
                    }
                    Ok(())
                }
                Err(error) => Err(error),
            },
            Format::Text | Format::Raw => Ok(()),
        };
        for (rule, secret, within, name) in found {
            self.push(path, rule, Secret::new(secret), Some(within), None, name.unwrap_or_default());
        }
        if let Err(error) = result {
            self.warning(path, format!("{error}; the whole file is also scanned as raw bytes"));
            // Keep what the decoder found; the raw pass adds only what it missed.
            let mut known: HashSet<(usize, String)> = self
                .outcome
                .findings
                .iter()
                .filter(|finding| finding.path == path)
                .filter_map(|finding| self.rule_index(&finding.rule).map(|rule| (rule, finding.secret.expose().to_owned())))
                .collect();
            self.raw(path, bytes, 0, &mut known);
        }
    }

    fn rule_index(&self, id: &str) -> Option<usize> {
        self.rules.iter().position(|rule| rule.id == id)
    }

    /// Printable runs of binary data, each matched on its own.
    fn raw(&mut self, path: &[String], bytes: &[u8], base: u64, seen: &mut HashSet<(usize, String)>) {
        let rules = self.rules;
        let mut found = Vec::new();
        decode::binary::printable_runs(bytes, MIN_RAW_STRING, |offset, run| {
            for hit in rules.find(run) {
                let secret = &run[hit.start..hit.end];
                if seen.insert((hit.rule, secret.to_owned())) {
                    let at = base + (offset + hit.start) as u64;
                    found.push((hit.rule, secret.to_owned(), format!("offset 0x{at:x}")));
                }
            }
        });
        for (rule, secret, within) in found {
            self.push(path, rule, Secret::new(secret), Some(within), None, String::new());
        }
    }

    fn text(&mut self, path: &[String], text: &str, first_line: u64) {
        self.text_piece(path, text, 0, first_line);
    }

    /// Matches a piece of text whose first `carried` bytes were matched with the piece before
    /// (hits wholly inside them are not reported twice); `first_line` counts the lines before.
    fn text_piece(&mut self, path: &[String], text: &str, carried: usize, first_line: u64) {
        let hits = self.rules.find(text);
        let mut line = first_line + 1;
        let mut line_start = 0usize;
        let mut scanned = 0usize;
        for hit in hits {
            if hit.end <= carried {
                continue;
            }
            for (index, _) in text[scanned..hit.start].match_indices('\n') {
                line += 1;
                line_start = scanned + index + 1;
            }
            scanned = hit.start;
            let column = text[line_start..hit.start].chars().count() as u64 + 1;
            let secret = Secret::new(text[hit.start..hit.end].to_owned());
            let context = context_line(text, line_start, hit.start, hit.end, &secret);
            self.push(path, hit.rule, secret, None, Some((line, column)), context);
        }
    }

    fn push(
        &mut self,
        path: &[String],
        rule: usize,
        secret: Secret,
        within: Option<String>,
        position: Option<(u64, u64)>,
        context: String,
    ) {
        let Some(rule) = self.rules.get(rule) else { return };
        self.outcome.findings.push(Finding {
            rule: rule.id.clone(),
            title: rule.title.clone(),
            severity: rule.severity,
            public: rule.public,
            path: path.to_vec(),
            within,
            line: position.map(|(line, _)| line),
            column: position.map(|(_, column)| column),
            context,
            secret,
        });
    }
}

/// The secret's line, cut to a window around it, with the secret redacted.
fn context_line(text: &str, line_start: usize, start: usize, end: usize, secret: &Secret) -> String {
    let line_end = text[end..].find('\n').map_or(text.len(), |at| end + at);
    let before: String = {
        let chars: Vec<char> = text[line_start..start].chars().rev().take(CONTEXT_CHARS).collect();
        chars.into_iter().rev().collect()
    };
    let after: String = text[end..line_end].chars().take(CONTEXT_CHARS).collect();
    format!("{}{}{}", before.trim_start(), secret.redacted(), after.trim_end())
}

#[cfg(test)]
mod tests;
