//! One scan: every file [`enumerate`](crate::enumerate) finds is sniffed by its first bytes
//! (and, for protobuf, its name), decoded by the matching structured decoder or read as text,
//! and its strings go through the [`Rules`]. A decoded string keeps where it sat (a string-pool
//! index, a resource name, a plist key) and, when the format names it, is matched as a
//! synthetic `name = value` line so name-context rules see it as they would see source code.
//! When a decoder fails part-way, a raw-byte pass over the whole file follows, so a malformed
//! or obfuscated file loses context, never a key.
//!
//! Each file is scanned on its own, so files can be scanned on several threads ([`pool`]): the
//! enumerator walks on one thread and hands files to workers, and what each file gave is put
//! back in the order they were handed over, so a report is the same for any thread count.

mod pool;

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use crate::decode::{self, DecodeError};
use crate::enumerate::{Budget, Enumerator, Limits, Stop, Visit};
use crate::rule::{Hit, Rules, Severity};
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
    /// The run's budget that ran out, when one did: then the findings are those of the part
    /// scanned, and a warning says where the scan stopped.
    pub partial: Option<Stop>,
}

impl Outcome {
    /// Appends what a later part of the run found.
    fn append(&mut self, part: Outcome) {
        self.findings.extend(part.findings);
        self.warnings.extend(part.warnings);
        self.files += part.files;
        self.bytes += part.bytes;
        self.partial = self.partial.or(part.partial);
    }
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Caps per input.
    pub limits: Limits,
    /// Caps on the whole run.
    pub budget: Budget,
    /// Skip what `.gitignore` files exclude in directories.
    pub gitignore: bool,
    /// Threads that scan files; 0 is one per core. With more than one, one more thread walks
    /// the inputs and opens archives. The report is the same for any number.
    pub threads: usize,
}

impl Options {
    /// The threads a scan uses: `threads`, or one per core when it is 0.
    pub fn scan_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            threads => threads,
        }
    }
}

/// Scans `inputs` (files or directories) with `rules`.
pub fn scan(rules: &Rules, inputs: &[&Path], options: &Options) -> Outcome {
    let threads = options.scan_threads();
    if threads > 1 {
        return pool::scan(rules, inputs, options, threads);
    }
    let mut scanner = Scanner::new(rules);
    let mut enumerator = Enumerator::new(options.limits.clone(), &mut scanner).with_budget(options.budget);
    for input in inputs {
        enumerator.input(input, options.gitignore);
    }
    let stopped = enumerator.stopped();
    scanner.outcome.partial = stopped;
    scanner.outcome
}

/// Scans one in-memory file (or archive) shown as `name`, on the calling thread: for tests,
/// fuzzing and embedding.
pub fn scan_bytes(rules: &Rules, name: &str, bytes: &[u8], limits: &Limits) -> Outcome {
    let mut scanner = Scanner::new(rules);
    Enumerator::new(limits.clone(), &mut scanner).bytes(&[name.to_owned()], Cow::Borrowed(bytes), 0);
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
    /// Flutter's compiled Dart code (`libapp.so`): an ELF with Dart snapshot symbols.
    Dart,
    /// Unity's IL2CPP `global-metadata.dat`.
    Il2cpp,
    Hermes,
    Dotnet,
    Arsc,
    Axml,
    Protobuf,
    Plist,
    Binary,
    Text,
    /// Text in UTF-16 with a byte-order mark (iOS `.strings` files, Windows tools).
    Utf16,
    Raw,
}

fn sniff(path: &[String], bytes: &[u8]) -> Format {
    let name = path.last().map(String::as_str).unwrap_or_default();
    let head = &bytes[..bytes.len().min(SNIFF_BYTES)];
    if bytes.starts_with(b"dex\n") {
        Format::Dex
    } else if decode::hermes::sniff(bytes) {
        Format::Hermes
    } else if decode::dotnet::sniff(bytes) {
        Format::Dotnet
    } else if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        Format::Utf16
    } else if bytes.starts_with(&[0x02, 0x00, 0x0c, 0x00]) {
        Format::Arsc
    } else if bytes.starts_with(&[0x03, 0x00, 0x08, 0x00]) {
        Format::Axml
    } else if decode::il2cpp::sniff(bytes) {
        Format::Il2cpp
    } else if decode::dart::sniff(bytes) {
        Format::Dart
    } else if decode::binary::sniff(bytes).is_some() {
        Format::Binary
    } else if decode::plist::sniff(bytes) {
        Format::Plist
    } else if !looks_like_text(head) && path.len() > 1 && (name.ends_with(".pb") || name.ends_with(".xml")) {
        // In an AAB, resource tables and every compiled XML file (the manifest, `res/xml`,
        // layouts) are aapt2 protobuf; binary XML with the AXML magic was taken above.
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

/// Scans the files handed to it, one after the other, into one [`Outcome`].
struct Scanner<'r> {
    rules: &'r Rules,
    outcome: Outcome,
}

impl<'r> Scanner<'r> {
    fn new(rules: &'r Rules) -> Scanner<'r> {
        Scanner { rules, outcome: Outcome::default() }
    }
}

impl std::fmt::Debug for Scanner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner").field("findings", &self.outcome.findings.len()).finish_non_exhaustive()
    }
}

impl Visit for Scanner<'_> {
    fn file(&mut self, path: &[String], bytes: Cow<'_, [u8]>) {
        let bytes = &bytes[..];
        self.outcome.files += 1;
        self.outcome.bytes += bytes.len() as u64;
        match sniff(path, bytes) {
            Format::Text => self.text(path, &String::from_utf8_lossy(bytes)),
            Format::Utf16 => self.text(path, &utf16_text(bytes)),
            Format::Raw => self.raw(path, bytes, 0, &mut HashSet::new()),
            format => self.structured(path, bytes, format),
        }
    }

    fn large_file(&mut self, path: &[String], reader: &mut dyn Read) {
        self.outcome.files += 1;
        let mut buffer: Vec<u8> = Vec::with_capacity(STREAM_CHUNK + STREAM_OVERLAP);
        // The buffer's place in the file, in bytes and in lines.
        let mut offset = 0u64;
        let mut lines_before = 0u64;
        let mut text = None;
        let mut seen = HashSet::new();
        loop {
            let mut piece = Vec::with_capacity(STREAM_CHUNK);
            let read = reader.take(STREAM_CHUNK as u64).read_to_end(&mut piece);
            if let Err(error) = &read {
                self.warning(path, format!("cannot read further: {error}"));
            }
            // A short piece (or an error) is the end of the stream.
            let last = read.map_or(true, |count| count < STREAM_CHUNK);
            self.outcome.bytes += piece.len() as u64;
            buffer.extend_from_slice(&piece);
            if buffer.is_empty() {
                break;
            }
            let is_text = *text.get_or_insert_with(|| looks_like_text(&buffer[..buffer.len().min(SNIFF_BYTES)]));
            // Secrets that start in the last STREAM_OVERLAP bytes are left to the next piece,
            // which begins with those bytes: each secret is matched whole, and once.
            let keep = if last { 0 } else { buffer.len().min(STREAM_OVERLAP) };
            let report_before = buffer.len() - keep;
            if is_text {
                let piece_text = String::from_utf8_lossy(&buffer);
                let limit = report_before.min(piece_text.len());
                self.text_piece(path, &piece_text, lines_before, limit, &mut seen);
            } else {
                self.raw_piece(path, &buffer, offset, report_before, &mut seen);
            }
            if last {
                break;
            }
            lines_before += bytecount_newlines(&buffer[..report_before]);
            offset += report_before as u64;
            buffer.drain(..report_before);
        }
    }

    fn warning(&mut self, path: &[String], message: String) {
        self.outcome.warnings.push(Warning { path: path.join("!"), message });
    }
}

/// UTF-16 text after its byte-order mark, decoded (unpaired surrogates become U+FFFD).
fn utf16_text(bytes: &[u8]) -> String {
    let little_endian = bytes.starts_with(&[0xff, 0xfe]);
    let units = bytes.get(2..).unwrap_or_default().chunks_exact(2).map(|pair| {
        if little_endian { u16::from_le_bytes([pair[0], pair[1]]) } else { u16::from_be_bytes([pair[0], pair[1]]) }
    });
    char::decode_utf16(units).map(|unit| unit.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
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
            Format::Dart => decode::dart::decode(bytes, &mut sink).map(drop),
            Format::Il2cpp => decode::il2cpp::decode(bytes, &mut sink).map(drop),
            Format::Hermes => decode::hermes::decode(bytes, &mut sink),
            Format::Dotnet => decode::dotnet::decode(bytes, &mut sink),
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
            Format::Text | Format::Utf16 | Format::Raw => Ok(()),
        };
        for (rule, secret, within, name) in found {
            let secret = Secret::with_prefix(secret.clone(), rules.public_prefix(rule, &secret));
            self.push(path, rule, secret, Some(within), None, name.unwrap_or_default());
        }
        if let Err(error) = result {
            self.warning(path, format!("{error}; the whole file is also scanned as raw bytes"));
            // Keep what the decoder found; the raw pass adds only what it missed.
            self.raw(path, bytes, 0, &mut seen);
        }
    }

    /// Printable runs of binary data, each matched on its own.
    fn raw(&mut self, path: &[String], bytes: &[u8], base: u64, seen: &mut HashSet<(usize, String)>) {
        self.raw_piece(path, bytes, base, usize::MAX, seen);
    }

    /// The raw pass over a piece of a stream: runs that start at or after `report_before` are
    /// left to the next piece.
    fn raw_piece(
        &mut self,
        path: &[String],
        bytes: &[u8],
        base: u64,
        report_before: usize,
        seen: &mut HashSet<(usize, String)>,
    ) {
        let rules = self.rules;
        let mut found = Vec::new();
        decode::runs::printable_runs(bytes, MIN_RAW_STRING, |offset, run| {
            if offset >= report_before {
                return;
            }
            for hit in rules.find(run) {
                let secret = &run[hit.start..hit.end];
                if seen.insert((hit.rule, secret.to_owned())) {
                    let at = base + (offset + hit.start) as u64;
                    found.push((hit.rule, secret.to_owned(), format!("offset 0x{at:x}")));
                }
            }
        });
        for (rule, secret, within) in found {
            let secret = Secret::with_prefix(secret.clone(), rules.public_prefix(rule, &secret));
            self.push(path, rule, secret, Some(within), None, String::new());
        }
    }

    fn text(&mut self, path: &[String], text: &str) {
        self.text_piece(path, text, 0, text.len(), &mut HashSet::new());
    }

    /// Matches a piece of text that follows `lines_before` lines of its file; secrets starting
    /// at or after `report_before` are left to the next piece. A secret already reported for
    /// this file (same rule, same value) is not reported again.
    fn text_piece(
        &mut self,
        path: &[String],
        text: &str,
        lines_before: u64,
        report_before: usize,
        seen: &mut HashSet<(usize, String)>,
    ) {
        let rules = self.rules;
        let hits = rules.find(text);
        let mut line = lines_before + 1;
        let mut line_start = 0usize;
        let mut scanned = 0usize;
        // The column of `column_at` (a position on the current line), so columns are counted
        // from the previous secret, not from the start of a long line each time.
        let (mut column_at, mut column) = (0usize, 1u64);
        let mut reported = 0usize;
        for (index, hit) in hits.iter().enumerate() {
            if hit.start >= report_before {
                break;
            }
            for (at, _) in text[scanned..hit.start].match_indices('\n') {
                line += 1;
                line_start = scanned + at + 1;
            }
            scanned = hit.start;
            if column_at < line_start {
                (column_at, column) = (line_start, 1);
            }
            column += text[column_at..hit.start].chars().count() as u64;
            column_at = hit.start;
            let value = &text[hit.start..hit.end];
            if !seen.insert((hit.rule, value.to_owned())) {
                continue;
            }
            if reported == MAX_FINDINGS_PER_FILE {
                self.warning(
                    path,
                    format!("more than {MAX_FINDINGS_PER_FILE} secrets in one file: the rest are not reported"),
                );
                break;
            }
            reported += 1;
            let context = context_line(rules, text, line_start, &hits, index);
            let secret = Secret::with_prefix(value.to_owned(), rules.public_prefix(hit.rule, value));
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

/// One file reports at most this many secrets; a file with more is hostile or generated.
const MAX_FINDINGS_PER_FILE: usize = 1000;

/// The line around `hits[index]`, cut to a window of [`CONTEXT_CHARS`] each side, with every
/// secret in the window redacted (not only the one reported).
fn context_line(rules: &Rules, text: &str, line_start: usize, hits: &[Hit], index: usize) -> String {
    let hit = &hits[index];
    let window_start = text[line_start..hit.start]
        .char_indices()
        .rev()
        .take(CONTEXT_CHARS)
        .last()
        .map_or(hit.start, |(at, _)| line_start + at);
    let window_end = text[hit.end..]
        .char_indices()
        .take_while(|(_, c)| *c != '\n')
        .take(CONTEXT_CHARS)
        .last()
        .map_or(hit.end, |(at, c)| hit.end + at + c.len_utf8());
    let mut out = String::new();
    let mut at = window_start;
    let overlapping =
        hits.iter().skip_while(|other| other.end <= window_start).take_while(|other| other.start < window_end);
    for other in overlapping {
        if other.start > at {
            out.push_str(&text[at..other.start]);
        }
        let value = &text[other.start..other.end];
        out.push_str(&Secret::with_prefix(value.to_owned(), rules.public_prefix(other.rule, value)).redacted());
        at = other.end.max(at);
    }
    if at < window_end {
        out.push_str(&text[at..window_end]);
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests;
