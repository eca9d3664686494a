//! Readers at the edge: files in, records out, with bounded memory. Compression (gzip, zstd) is
//! found by magic bytes; the format by extension, else by the first byte (`{` for JSON Lines).
//! A broken row or line is a located [`Problem`]; reading goes on.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    path::Path,
};

/// The longest JSON line or CSV record read; longer ones are skipped as problems.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
}

/// Something wrong with one record, and where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// `row 12` (CSV, 1-based data rows) or `line 7` (JSON Lines).
    pub location: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv { delimiter: u8 },
    JsonLines,
    Parquet,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv { delimiter: b'\t' } => "tsv",
            Format::Csv { .. } => "csv",
            Format::JsonLines => "jsonl",
            Format::Parquet => "parquet",
        }
    }
}

/// One record: its fields as (column or JSON path, text value).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record {
    /// 1-based row (CSV data rows) or line (JSON Lines).
    pub number: u64,
    pub fields: Vec<(String, String)>,
}

/// Counts the bytes read from the file (before decompression), for progress.
#[derive(Debug)]
struct Counted<R> {
    inner: R,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.read.fetch_add(read as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(read)
    }
}

/// Opens `path`, undoing gzip or zstd compression found by magic bytes.
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, ReadError> {
    open_counted(path, std::sync::Arc::default())
}

/// [`open`], adding the bytes read from the file to `read` as it goes.
pub fn open_counted(
    path: &Path,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<Box<dyn BufRead + Send>, ReadError> {
    let shown = path.display().to_string();
    let io = |error| ReadError::Io { path: shown.clone(), error };
    let file = Counted { inner: File::open(path).map_err(io)?, read };
    let mut file = BufReader::with_capacity(1 << 16, file);
    let head = file.fill_buf().map_err(io)?;
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Box::new(BufReader::with_capacity(1 << 16, flate2::bufread::MultiGzDecoder::new(file))));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = ruzstd::decoding::StreamingDecoder::new(file)
            .map_err(|error| ReadError::Format { path: shown.clone(), message: format!("zstd: {error}") })?;
        return Ok(Box::new(BufReader::with_capacity(1 << 16, decoder)));
    }
    Ok(Box::new(file))
}

/// The format of `path`: by extension (compression extensions ignored), else by content.
pub fn detect_format(path: &Path, reader: &mut dyn BufRead) -> Result<Format, ReadError> {
    let name = path.file_name().map(|name| name.to_string_lossy().to_lowercase()).unwrap_or_default();
    let name = name.trim_end_matches(".gz").trim_end_matches(".zst").trim_end_matches(".zstd");
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json") {
        return Ok(Format::JsonLines);
    }
    if name.ends_with(".tsv") || name.ends_with(".tab") {
        return Ok(Format::Csv { delimiter: b'\t' });
    }
    let head = reader.fill_buf().map_err(|error| ReadError::Io { path: path.display().to_string(), error })?;
    let first = head.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        return Ok(Format::JsonLines);
    }
    Ok(Format::Csv { delimiter: sniff_delimiter(head) })
}

/// The delimiter of a CSV: of `,` `;` `\t` `|`, the one that appears most often, outside
/// quotes, on the first line.
pub fn sniff_delimiter(head: &[u8]) -> u8 {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(head);
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0), (b'|', 0)];
    let mut quoted = false;
    for &byte in line {
        if byte == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(count) = counts.iter_mut().find(|(delimiter, _)| *delimiter == byte) {
            count.1 += 1;
        }
    }
    counts.iter().max_by_key(|(_, count)| *count).filter(|(_, count)| *count > 0).map_or(b',', |(d, _)| *d)
}

/// Reads CSV records, calling `each` per record; problems go to `problem`.
pub fn csv_records(
    reader: Box<dyn BufRead + Send>,
    delimiter: u8,
    mut each: impl FnMut(&Record),
    mut problem: impl FnMut(Problem),
) -> Result<Vec<String>, ReadError> {
    let mut csv = csv::ReaderBuilder::new().delimiter(delimiter).flexible(true).has_headers(true).from_reader(reader);
    let headers: Vec<String> = csv
        .byte_headers()
        .map_err(|error| ReadError::Format { path: String::new(), message: format!("CSV header: {error}") })?
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let name = String::from_utf8_lossy(name).trim().to_owned();
            if name.is_empty() { format!("column_{}", index + 1) } else { name }
        })
        .collect();
    let mut record = csv::ByteRecord::new();
    let mut current = Record::default();
    let mut number = 0u64;
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(error) => {
                number += 1;
                problem(Problem { location: format!("row {number}"), message: format!("unreadable: {error}") });
                if matches!(error.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        number += 1;
        if record.len() != headers.len() {
            problem(Problem {
                location: format!("row {number}"),
                message: format!("{} fields where the header has {}", record.len(), headers.len()),
            });
        }
        if record.as_slice().len() > MAX_RECORD_BYTES {
            problem(Problem { location: format!("row {number}"), message: "record too long; skipped".into() });
            continue;
        }
        current.number = number;
        // The strings of the previous record are reused: no allocation per field once warm.
        current.fields.truncate(record.len());
        for (index, field) in record.iter().enumerate() {
            if current.fields.len() <= index {
                current.fields.push((String::new(), String::new()));
            }
            let (column, value) = &mut current.fields[index];
            column.clear();
            match headers.get(index) {
                Some(header) => column.push_str(header),
                None => {
                    use std::fmt::Write as _;
                    let _ = write!(column, "column_{}", index + 1);
                }
            }
            value.clear();
            match std::str::from_utf8(field) {
                Ok(text) => value.push_str(text),
                Err(_) => {
                    problem(Problem {
                        location: format!("row {number}, column {column}"),
                        message: "invalid UTF-8 (scanned with replacement characters)".into(),
                    });
                    value.push_str(&String::from_utf8_lossy(field));
                }
            }
        }
        each(&current);
    }
    Ok(headers)
}

/// Reads JSON Lines, calling `each` per object with its leaves flattened to paths
/// (`user.email`, `items[].phone`); problems go to `problem`.
pub fn jsonl_records(
    reader: Box<dyn BufRead + Send>,
    mut each: impl FnMut(&Record),
    problem: impl FnMut(Problem),
) -> Result<(), ReadError> {
    let mut current = Record::default();
    jsonl_values(
        reader,
        |number, value| {
            current.number = number;
            current.fields.clear();
            flatten_into(&value, &mut current.fields);
            each(&current);
        },
        problem,
    )
}

/// Reads JSON Lines, calling `each` with each line's number and parsed value.
pub fn jsonl_values(
    mut reader: Box<dyn BufRead + Send>,
    mut each: impl FnMut(u64, serde_json::Value),
    mut problem: impl FnMut(Problem),
) -> Result<(), ReadError> {
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_RECORD_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|error| ReadError::Io { path: String::new(), error })?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.len() > MAX_RECORD_BYTES && !line.ends_with(b"\n") {
            problem(Problem { location: format!("line {number}"), message: "line too long; skipped".into() });
            // Skip the rest of the line.
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest).map_err(|error| ReadError::Io { path: String::new(), error })?;
            continue;
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_slice(text) {
            Ok(value) => each(number, value),
            Err(error) => {
                problem(Problem { location: format!("line {number}"), message: format!("not JSON: {error}") })
            }
        }
    }
    Ok(())
}

/// A JSON value's leaves as (path, text).
pub fn flatten_into(value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    flatten(value, &mut String::new(), out, 0);
}

/// The deepest nesting followed; deeper values are not scanned.
const MAX_DEPTH: usize = 64;

fn flatten(value: &serde_json::Value, path: &mut String, out: &mut Vec<(String, String)>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match value {
        serde_json::Value::Object(members) => {
            for (name, member) in members {
                let length = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
                flatten(member, path, out, depth + 1);
                path.truncate(length);
            }
        }
        serde_json::Value::Array(items) => {
            let length = path.len();
            path.push_str("[]");
            for item in items {
                flatten(item, path, out, depth + 1);
            }
            path.truncate(length);
        }
        serde_json::Value::String(text) => out.push((path.clone(), text.clone())),
        serde_json::Value::Number(number) => out.push((path.clone(), number.to_string())),
        serde_json::Value::Bool(_) | serde_json::Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_are_sniffed_outside_quotes() {
        assert_eq!(sniff_delimiter(b"a,b,c\n1,2,3"), b',');
        assert_eq!(sniff_delimiter(b"a;b;c\n"), b';');
        assert_eq!(sniff_delimiter(b"\"x,y\"\tb\tc\n"), b'\t');
        assert_eq!(sniff_delimiter(b"single"), b',');
    }

    #[test]
    fn ragged_rows_and_bad_lines_are_located_and_reading_goes_on() {
        let csv = b"name,email\nJane,j@example.com\nonly-one\nBob,b@example.com,extra\n".to_vec();
        let (mut records, mut problems) = (Vec::new(), Vec::new());
        csv_records(Box::new(std::io::Cursor::new(csv)), b',', |r| records.push(r.clone()), |p| problems.push(p))
            .unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(problems.iter().map(|p| p.location.as_str()).collect::<Vec<_>>(), ["row 2", "row 3"]);

        let jsonl = b"{\"user\":{\"email\":\"a@example.com\"},\"tags\":[{\"phone\":\"+44 20 7946 0958\"}]}\nnot json\n\n{\"n\":1}\n";
        let (mut records, mut problems) = (Vec::new(), Vec::new());
        jsonl_records(
            Box::new(std::io::Cursor::new(jsonl.to_vec())),
            |r| records.push(r.clone()),
            |p| problems.push(p),
        )
        .unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].fields[0], ("tags[].phone".to_owned(), "+44 20 7946 0958".to_owned()));
        assert_eq!(records[0].fields[1].0, "user.email");
        assert_eq!(problems[0].location, "line 2");
    }

    #[test]
    fn invalid_utf8_is_reported_and_scanned_lossily() {
        let csv = b"note\nabc\xff\n".to_vec();
        let (mut records, mut problems) = (Vec::new(), Vec::new());
        csv_records(Box::new(std::io::Cursor::new(csv)), b',', |r| records.push(r.clone()), |p| problems.push(p))
            .unwrap();
        assert_eq!(records.len(), 1);
        assert!(problems[0].message.contains("UTF-8"));
    }
}

#[cfg(test)]
mod bad_input {
    use super::*;

    fn csv(bytes: Vec<u8>) -> (Vec<Record>, Vec<Problem>) {
        let (mut records, mut problems) = (Vec::new(), Vec::new());
        csv_records(Box::new(std::io::Cursor::new(bytes)), b',', |r| records.push(r.clone()), |p| problems.push(p))
            .unwrap();
        (records, problems)
    }

    #[test]
    fn a_giant_field_is_skipped_and_located_and_reading_goes_on() {
        let mut bytes = b"note\nfirst\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + 10));
        bytes.extend_from_slice(b"\nlast\n");
        let (records, problems) = csv(bytes);
        let values: Vec<&str> = records.iter().map(|r| r.fields[0].1.as_str()).collect();
        assert_eq!(values, ["first", "last"]);
        assert_eq!(problems[0].location, "row 2");
        assert!(problems[0].message.contains("too long"));

        let mut lines = b"{\"a\":\"first\"}\n{\"a\":\"".to_vec();
        lines.extend(std::iter::repeat_n(b'y', MAX_RECORD_BYTES + 10));
        lines.extend_from_slice(b"\"}\n{\"a\":\"last\"}\n");
        let (mut records, mut problems) = (Vec::new(), Vec::new());
        jsonl_records(Box::new(std::io::Cursor::new(lines)), |r| records.push(r.clone()), |p| problems.push(p))
            .unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(problems[0].location, "line 2");
    }

    #[test]
    fn broken_quoting_is_read_to_the_end_without_losing_later_rows() {
        // An unterminated quote swallows the rest of the file into one field: the row is kept
        // (and scanned), and the file ends cleanly.
        let (records, _) = csv(b"a,b\n1,\"open quote\n2,ok\n".to_vec());
        assert_eq!(records.len(), 1);
        assert!(records[0].fields[1].1.contains("2,ok"));
        // A stray quote inside a field is taken literally.
        let (records, problems) = csv(b"a,b\n1,x\"y\n2,z\n".to_vec());
        assert_eq!(records.len(), 2);
        assert!(problems.is_empty());
    }

    #[test]
    fn mixed_types_in_a_json_column_are_all_scanned_as_text() {
        let lines = b"{\"id\":1}\n{\"id\":\"two\"}\n{\"id\":[3,4]}\n{\"id\":{\"n\":5}}\n{\"id\":null}\n".to_vec();
        let (mut records, mut problems) = (Vec::new(), Vec::new());
        jsonl_records(Box::new(std::io::Cursor::new(lines)), |r| records.push(r.clone()), |p| problems.push(p))
            .unwrap();
        let paths: Vec<Vec<&str>> =
            records.iter().map(|r| r.fields.iter().map(|(path, _)| path.as_str()).collect()).collect();
        assert_eq!(paths, [vec!["id"], vec!["id"], vec!["id[]", "id[]"], vec!["id.n"], vec![]]);
        assert!(problems.is_empty());
    }
}
