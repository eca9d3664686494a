//! `data scan`: where is personal data, column by column.
//!
//! Each column is classified first: by its header, and after a sample of values by what they
//! are (a column whose sampled values are nearly all one kind becomes that kind). A classified
//! column's values get that kind's validator only; a value that fails it, and every value of an
//! unclassified column, gets the combined pass of all rules.

use std::{collections::BTreeMap, path::Path};

use serde::Serialize;

use crate::{
    Kind,
    column::{kind_in_table, may_hold_person_names},
    date::{Tally, Verdict},
    detect::{Detector, Finding},
    mask,
    read::{self, Format, Problem, ReadError, Record},
};

/// Values sampled before a column without a telling header is classified by its contents.
const SAMPLE: u64 = 200;
/// Share of a sample that must be one kind for the column to be classified as it.
const CLASSIFY_SHARE: f64 = 0.8;
/// Kinds a single value of which needs context, but a column of which is telling: their
/// checksums make a sample of nearly all valid values evidence enough.
const COLUMN_ONLY_KINDS: [Kind; 2] = [Kind::UkNhs, Kind::Imei];

/// Kinds whose values carry a check digit or checksum.
fn checksummed(kind: Kind) -> bool {
    matches!(kind, Kind::PaymentCard | Kind::Iban | Kind::UkNhs | Kind::Imei | Kind::CryptoWallet)
}

/// Masked examples kept per column and kind.
const EXAMPLES: usize = 3;
/// Problems kept for the report (all are counted).
const MAX_PROBLEMS: usize = 100;

/// What one column holds.
#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    pub kind: Kind,
    /// Values with at least one finding of this kind.
    pub values: u64,
    /// `values` over the column's non-empty values.
    pub share: f64,
    /// Mean confidence of its findings.
    pub confidence: f64,
    pub examples: Vec<String>,
    /// The first record (row or line) it was found in.
    pub first_seen: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnReport {
    pub column: String,
    /// What the header says, if anything.
    pub header_kind: Option<Kind>,
    /// The kind the column was classified as (header or sample): `protect` applies that kind's
    /// action to every non-empty value of it, recognised or not.
    pub classified: Option<Kind>,
    /// Why it was classified so (or why not, when a header's kind was vetoed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Values of a classified column that no detector recognised as its kind, counted as it
    /// because the column is (an unusual name in a `last_name` column, any `password`).
    pub whole_values: u64,
    pub non_empty: u64,
    pub findings: Vec<KindReport>,
    /// Kinds found in some values but judged not to be what the column holds, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vetoed: Vec<Veto>,
    /// For a column of dates: what its values say about their order of day and month.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_order: Option<Verdict>,
    /// The evidence behind `date_order`, for `protect` (which reads dates in the column's order).
    #[serde(skip)]
    pub date_tally: Tally,
}

/// A kind set aside for a column: found in some values, but not what the column holds.
#[derive(Debug, Clone, Serialize)]
pub struct Veto {
    pub kind: Kind,
    pub values: u64,
    pub reason: String,
}

/// The report for one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    pub format: &'static str,
    pub records: u64,
    pub bytes: u64,
    pub columns: Vec<ColumnReport>,
    pub problems: u64,
    pub problem_examples: Vec<Problem>,
}

impl FileReport {
    /// The kinds found anywhere in the file.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds: Vec<Kind> =
            self.columns.iter().flat_map(|column| column.findings.iter().map(|finding| finding.kind)).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

#[derive(Debug, Default)]
struct KindState {
    values: u64,
    confidence: f64,
    examples: Vec<String>,
    first_seen: u64,
}

#[derive(Debug)]
struct ColumnState {
    header_kind: Option<Kind>,
    classified: Option<Kind>,
    reason: Option<String>,
    non_empty: u64,
    /// Values that are a number and nothing else (digits, with separators or a decimal point).
    numeric: u64,
    /// Values of a classified column that no detector recognised as its kind.
    whole_values: u64,
    sampled: BTreeMap<Kind, u64>,
    /// For a header whose kind needs the values' agreement: sampled values holding that kind.
    agreeing: u64,
    kinds: BTreeMap<Kind, KindState>,
    dates: Tally,
    /// False for a column whose header names a place or a category: names found in it are not
    /// people's (`Hamilton` in `city`).
    person_names: bool,
}

/// Share of sampled values that must hold an ambiguous header's kind (`name`) for the column
/// to be taken as it.
const AGREE_SHARE: f64 = 0.3;

/// A value that is a number and nothing else: digits with `.`, `,`, `-`, `+`, blanks.
fn is_numeric(value: &str) -> bool {
    let value = value.trim();
    value.bytes().any(|b| b.is_ascii_digit())
        && value.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b',' | b'-' | b'+' | b' '))
}

/// One finding as `--format findings` writes it: where and what, never the value.
#[derive(Debug, Clone, Serialize)]
pub struct Located<'a> {
    pub record: u64,
    pub column: &'a str,
    pub kind: Kind,
    pub rule: &'static str,
    pub start: usize,
    pub end: usize,
    pub confidence: f32,
}

/// Receives each finding as it is made.
pub type Sink<'s> = &'s mut dyn FnMut(&Located<'_>);

/// Accumulates findings over records.
pub struct Scanner<'d, 's> {
    detector: &'d Detector,
    columns: Vec<(String, ColumnState)>,
    /// Column name → index in `columns` (columns keep their first-seen order for the report).
    index: std::collections::HashMap<String, usize>,
    records: u64,
    problems: u64,
    problem_examples: Vec<Problem>,
    sink: Option<Sink<'s>>,
    /// The first record's column names: a header is read among its neighbours (`name` beside
    /// `population` is a place's name).
    headers: Vec<String>,
}

impl std::fmt::Debug for Scanner<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner").field("records", &self.records).finish_non_exhaustive()
    }
}

impl<'d, 's> Scanner<'d, 's> {
    pub fn new(detector: &'d Detector) -> Scanner<'d, 's> {
        Scanner {
            detector,
            columns: Vec::new(),
            index: std::collections::HashMap::new(),
            records: 0,
            problems: 0,
            problem_examples: Vec::new(),
            sink: None,
            headers: Vec::new(),
        }
    }

    /// Also hands every finding to `sink` as it is made.
    pub fn with_sink(mut self, sink: Sink<'s>) -> Scanner<'d, 's> {
        self.sink = Some(sink);
        self
    }

    fn column(&mut self, position: usize, name: &str) -> &mut ColumnState {
        // Fast path: CSV fields arrive in header order, so the field's position is its column.
        if self.columns.get(position).is_some_and(|(known, _)| known == name) {
            return &mut self.columns[position].1;
        }
        let index = match self.index.get(name) {
            Some(index) => *index,
            None => {
                self.index.insert(name.to_owned(), self.columns.len());
                let headers: Vec<&str> = self.headers.iter().map(String::as_str).collect();
                let header_kind = kind_in_table(name, &headers);
                let person_names = may_hold_person_names(name, &headers);
                // An ambiguous header (`name`) waits for its values' agreement.
                let sure = header_kind.filter(|_| !crate::column::header_is_ambiguous(name));
                self.columns.push((
                    name.to_owned(),
                    ColumnState {
                        header_kind,
                        classified: sure,
                        reason: sure.map(|kind| format!("the header '{name}' names {kind}")),
                        non_empty: 0,
                        numeric: 0,
                        whole_values: 0,
                        sampled: BTreeMap::new(),
                        agreeing: 0,
                        kinds: BTreeMap::new(),
                        dates: Tally::default(),
                        person_names,
                    },
                ));
                self.columns.len() - 1
            }
        };
        &mut self.columns[index].1
    }

    pub fn problem(&mut self, problem: Problem) {
        self.problems += 1;
        if self.problem_examples.len() < MAX_PROBLEMS {
            self.problem_examples.push(problem);
        }
    }

    /// Scans one record.
    pub fn record(&mut self, record: &Record) {
        self.records += 1;
        if self.headers.is_empty() {
            self.headers = record.fields.iter().map(|(column, _)| column.clone()).collect();
        }
        for (position, (column, value)) in record.fields.iter().enumerate() {
            if value.trim().is_empty() {
                continue;
            }
            let detector = self.detector;
            let state = self.column(position, column);
            state.non_empty += 1;
            if is_numeric(value) {
                state.numeric += 1;
            }
            state.dates.add(value);
            // One finding for a classified value (no allocation), else the combined pass.
            let (single, mut many);
            let findings: &[Finding] = match state.classified.and_then(|kind| detector.value_is(kind, value)) {
                Some(finding) => {
                    single = [finding];
                    &single
                }
                None => {
                    many = detector.find(value, state.header_kind);
                    if !state.person_names {
                        many.retain(|finding| finding.kind != Kind::PersonName);
                    }
                    &many
                }
            };
            // Classify by the sample: a column whose values are nearly all one whole-value kind.
            if state.classified.is_none() && state.non_empty <= SAMPLE {
                if let Some(kind) = state.header_kind
                    && findings.iter().any(|finding| finding.kind == kind)
                {
                    state.agreeing += 1;
                }
                if let [only] = findings
                    && only.end - only.start >= value.trim().len()
                {
                    *state.sampled.entry(only.kind).or_default() += 1;
                }
                for kind in COLUMN_ONLY_KINDS {
                    if !findings.iter().any(|finding| finding.kind == kind) && detector.value_is(kind, value).is_some()
                    {
                        *state.sampled.entry(kind).or_default() += 1;
                    }
                }
                if state.non_empty == SAMPLE {
                    // Of the kinds most values are, a checksummed one wins: a column of valid
                    // NHS numbers is not a column of phone numbers that happen to validate.
                    let chosen = state
                        .sampled
                        .iter()
                        .filter(|(_, count)| (**count as f64) >= CLASSIFY_SHARE * SAMPLE as f64)
                        .max_by_key(|(kind, count)| (checksummed(**kind), **count))
                        .map(|(kind, count)| (*kind, *count));
                    if let Some((kind, count)) = chosen {
                        state.classified = Some(kind);
                        state.reason = Some(format!("{count} of the first {SAMPLE} values are wholly {kind}"));
                    } else {
                        agree(state);
                    }
                }
            }
            if let Some(sink) = self.sink.as_mut() {
                for finding in findings {
                    sink(&Located {
                        record: record.number,
                        column,
                        kind: finding.kind,
                        rule: finding.rule,
                        start: finding.start,
                        end: finding.end,
                        confidence: finding.confidence,
                    });
                }
            }
            let state = self.column(position, column);
            // A classified column is one kind whole: a value no detector recognised as it is
            // still counted as it (and `protect` treats it so).
            if let Some(kind) = state.classified
                && !findings.iter().any(|finding| finding.kind == kind)
            {
                state.whole_values += 1;
                let kind_state = state.kinds.entry(kind).or_default();
                kind_state.values += 1;
                kind_state.confidence += 0.6;
                if kind_state.first_seen == 0 {
                    kind_state.first_seen = record.number;
                }
                if kind_state.examples.len() < EXAMPLES {
                    kind_state.examples.push(mask::example(kind, value.trim()));
                }
            }
            let mut seen: Vec<Kind> = Vec::new();
            for finding in findings {
                let kind_state = state.kinds.entry(finding.kind).or_default();
                kind_state.confidence += f64::from(finding.confidence);
                if !seen.contains(&finding.kind) {
                    seen.push(finding.kind);
                    kind_state.values += 1;
                    if kind_state.first_seen == 0 {
                        kind_state.first_seen = record.number;
                    }
                }
                if kind_state.examples.len() < EXAMPLES
                    && let Some(text) = value.get(finding.start..finding.end)
                {
                    kind_state.examples.push(mask::example(finding.kind, text));
                }
            }
        }
    }

    pub fn finish(self, path: &str, format: Format, bytes: u64) -> FileReport {
        let columns = self
            .columns
            .into_iter()
            .map(|(column, mut state)| {
                // A short column never reached the sample's end: judge it on what it has.
                if state.classified.is_none() && state.non_empty > 0 && state.non_empty < SAMPLE {
                    agree(&mut state);
                }
                let non_empty = state.non_empty;
                let mut findings: Vec<KindReport> = state
                    .kinds
                    .into_iter()
                    .map(|(kind, kind_state)| KindReport {
                        kind,
                        values: kind_state.values,
                        share: if non_empty == 0 { 0.0 } else { kind_state.values as f64 / non_empty as f64 },
                        confidence: if kind_state.values == 0 {
                            0.0
                        } else {
                            (kind_state.confidence / kind_state.values as f64).min(1.0)
                        },
                        examples: kind_state.examples,
                        first_seen: kind_state.first_seen,
                    })
                    .collect();
                let vetoed = judge(&column, state.classified, non_empty, state.numeric, &mut findings);
                findings.sort_by_key(|finding| std::cmp::Reverse(finding.values));
                ColumnReport {
                    column,
                    header_kind: state.header_kind,
                    classified: state.classified,
                    reason: state.reason,
                    whole_values: state.whole_values,
                    non_empty,
                    findings,
                    vetoed,
                    date_order: state.dates.verdict(),
                    date_tally: state.dates,
                }
            })
            .collect();
        FileReport {
            path: path.to_owned(),
            format: format.name(),
            records: self.records,
            bytes,
            columns,
            problems: self.problems,
            problem_examples: self.problem_examples,
        }
    }
}

/// Takes an ambiguous header's kind when enough sampled values hold it; says why either way.
fn agree(state: &mut ColumnState) {
    let Some(kind) = state.header_kind else { return };
    let seen = state.non_empty.min(SAMPLE);
    if seen > 0 && state.agreeing as f64 >= AGREE_SHARE * seen as f64 {
        state.classified = Some(kind);
        state.reason =
            Some(format!("the header names {kind}, and {} of {seen} sampled values hold it", state.agreeing));
    } else {
        state.reason =
            Some(format!("the header could name {kind}, but only {} of {seen} sampled values hold it", state.agreeing));
    }
}

/// Header words that name a quantity or an identifier of a thing, not of a person.
const THING_WORDS: &[&str] = &[
    "version",
    "build",
    "release",
    "sku",
    "order",
    "invoice",
    "amount",
    "price",
    "fare",
    "hash",
    "checksum",
    "total",
    "cost",
    "fee",
    "balance",
    "quantity",
    "qty",
    "count",
    "weight",
    "height",
    "size",
    "score",
    "rate",
    "ratio",
    "product",
    "item",
    "ticket",
    "serial",
    "model",
    "part",
    "batch",
    "lot",
    "transaction",
    "txn",
    "sensor",
];

/// The share of random numbers a checksummed kind's check accepts: a column of numbers of which
/// no more than about this share pass is showing chance, not the kind.
fn chance_share(kind: Kind) -> Option<f64> {
    match kind {
        // Luhn and mod 11 accept about one number in ten; IBAN's mod 97 one in 97.
        Kind::PaymentCard | Kind::Imei | Kind::UkNhs => Some(0.1),
        Kind::Iban => Some(0.0103),
        _ => None,
    }
}

/// Judges a column's findings as a whole: sets aside the kinds its values show by chance, and
/// the format-only kinds a header naming a thing rules out. Returns what was set aside.
fn judge(
    column: &str,
    classified: Option<Kind>,
    non_empty: u64,
    numeric: u64,
    findings: &mut Vec<KindReport>,
) -> Vec<Veto> {
    let normal = crate::column::normalise(column);
    let thing = normal.split('_').find(|word| THING_WORDS.contains(word));
    let mut vetoed = Vec::new();
    findings.retain(|finding| {
        if classified == Some(finding.kind) {
            return true;
        }
        let numeric_column = non_empty > 0 && numeric * 10 >= non_empty * 9;
        if let Some(chance) = chance_share(finding.kind)
            && numeric_column
            && finding.share <= (chance * 3.0).max(0.05)
            && finding.share < 0.5
        {
            vetoed.push(Veto {
                kind: finding.kind,
                values: finding.values,
                reason: format!(
                    "{:.1}% of a column of numbers pass the {} check, about what chance gives ({:.0}%)",
                    finding.share * 100.0,
                    finding.kind,
                    chance * 100.0
                ),
            });
            return false;
        }
        if let Some(word) = thing
            && !checksummed(finding.kind)
            && finding.kind != Kind::Email
            && finding.share < 0.95
        {
            vetoed.push(Veto {
                kind: finding.kind,
                values: finding.values,
                reason: format!(
                    "the header word '{word}' names a thing, not a person, and only {:.1}% of values are {}",
                    finding.share * 100.0,
                    finding.kind
                ),
            });
            return false;
        }
        true
    });
    vetoed
}

/// Scans one file (CSV/TSV or JSON Lines, optionally gzip or zstd compressed).
pub fn scan_file(detector: &Detector, path: &Path) -> Result<FileReport, ReadError> {
    scan_file_with(detector, path, None)
}

/// Progress on a terminal: bytes, rows per second and the time left, twice a second.
#[derive(Debug)]
struct Progress {
    total: u64,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
    started: std::time::Instant,
    last: std::time::Instant,
}

impl Progress {
    fn tick(&mut self, rows: u64) {
        if !rows.is_multiple_of(1024) || self.last.elapsed() < std::time::Duration::from_millis(500) {
            return;
        }
        self.last = std::time::Instant::now();
        let read = self.read.load(std::sync::atomic::Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = read as f64 / seconds;
        let left = if rate > 0.0 { (self.total.saturating_sub(read)) as f64 / rate } else { 0.0 };
        eprint!(
            "\r{:>8.1} / {:.1} MB  {:>10.0} rows/s  {:>6.1} MB/s  ETA {:>4.0} s ",
            read as f64 / 1e6,
            self.total as f64 / 1e6,
            rows as f64 / seconds,
            rate / 1e6,
            left
        );
    }

    fn done(&self) {
        eprint!("\r{:80}\r", "");
    }
}

/// [`scan_file`], handing each finding to `sink` as well.
pub fn scan_file_with(detector: &Detector, path: &Path, sink: Option<Sink<'_>>) -> Result<FileReport, ReadError> {
    scan_file_reporting(detector, path, sink, false)
}

/// [`scan_file_with`], showing progress on stderr when `progress` is set (a terminal).
pub fn scan_file_reporting(
    detector: &Detector,
    path: &Path,
    sink: Option<Sink<'_>>,
    progress: bool,
) -> Result<FileReport, ReadError> {
    let bytes = std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
    if crate::parquet::is_parquet(path) {
        let mut scanner = Scanner::new(detector);
        if let Some(sink) = sink {
            scanner = scanner.with_sink(sink);
        }
        let scanner = std::cell::RefCell::new(scanner);
        crate::parquet::records(
            path,
            |record| scanner.borrow_mut().record(record),
            |problem| scanner.borrow_mut().problem(problem),
        )?;
        return Ok(scanner.into_inner().finish(&path.display().to_string(), Format::Parquet, bytes));
    }
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut reader = read::open_counted(path, std::sync::Arc::clone(&counter))?;
    let now = std::time::Instant::now();
    let progress =
        std::cell::RefCell::new(progress.then_some(Progress { total: bytes, read: counter, started: now, last: now }));
    let format = read::detect_format(path, &mut reader)?;
    let shown = path.display().to_string();
    let mut scanner = Scanner::new(detector);
    if let Some(sink) = sink {
        scanner = scanner.with_sink(sink);
    }
    let scanner = std::cell::RefCell::new(scanner);
    let located = |error: ReadError| match error {
        ReadError::Io { error, .. } => ReadError::Io { path: shown.clone(), error },
        ReadError::Format { message, .. } => ReadError::Format { path: shown.clone(), message },
    };
    match format {
        Format::Csv { delimiter } => {
            read::csv_records(
                reader,
                delimiter,
                |record| {
                    scanner.borrow_mut().record(record);
                    if let Some(progress) = progress.borrow_mut().as_mut() {
                        progress.tick(record.number);
                    }
                },
                |problem| scanner.borrow_mut().problem(problem),
            )
            .map_err(located)?;
        }
        Format::Parquet => {}
        Format::JsonLines => {
            read::jsonl_records(
                reader,
                |record| {
                    scanner.borrow_mut().record(record);
                    if let Some(progress) = progress.borrow_mut().as_mut() {
                        progress.tick(record.number);
                    }
                },
                |problem| scanner.borrow_mut().problem(problem),
            )
            .map_err(located)?;
        }
    }
    if let Some(progress) = progress.borrow().as_ref() {
        progress.done();
    }
    Ok(scanner.into_inner().finish(&shown, format, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(name: &str, contents: &[u8]) -> FileReport {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        scan_file(&Detector::new(), &path).unwrap()
    }

    fn kinds_of(report: &FileReport, column: &str) -> Vec<Kind> {
        report
            .columns
            .iter()
            .find(|c| c.column == column)
            .map(|c| c.findings.iter().map(|f| f.kind).collect())
            .unwrap_or_default()
    }

    fn column<'r>(report: &'r FileReport, name: &str) -> &'r ColumnReport {
        report.columns.iter().find(|c| c.column == name).unwrap()
    }

    /// `Password` values are no pattern, but the column is credentials: reported, counted whole.
    #[test]
    fn a_password_column_is_reported_as_credentials() {
        let report = scan(
            "creds.csv",
            b"user,Password
alice,eiZookooB7
bob,Wasco1982
",
        );
        assert_eq!(kinds_of(&report, "Password"), [Kind::Credential]);
        assert_eq!(column(&report, "Password").whole_values, 2);
        assert!(report.kinds().contains(&Kind::Credential), "scan reports personal data (exit 1)");
    }

    #[test]
    fn a_chance_share_of_luhn_numbers_is_not_a_card_column() {
        // Sequential 16-digit numbers: about one in ten passes Luhn by chance.
        let mut text = String::from("reference\n");
        for i in 0..500u64 {
            text.push_str(&format!("{}\n", 4_000_000_000_000_000 + i * 7_919));
        }
        let report = scan("refs.csv", text.as_bytes());
        assert!(kinds_of(&report, "reference").is_empty(), "{:?}", column(&report, "reference"));
        let vetoed = &column(&report, "reference").vetoed;
        assert_eq!(vetoed.first().map(|veto| veto.kind), Some(Kind::PaymentCard), "{vetoed:?}");
        assert!(vetoed[0].reason.contains("chance"), "{vetoed:?}");
    }

    #[test]
    fn a_header_naming_a_thing_vetoes_format_only_kinds() {
        let mut text = String::from("product_sku,note\n");
        for i in 0..50u64 {
            // Every fourth code reads like a phone number.
            let sku = if i % 4 == 0 { "+44 20 7946 0958".to_owned() } else { format!("AB-{i:04}") };
            text.push_str(&format!("{sku},ok\n"));
        }
        let report = scan("skus.csv", text.as_bytes());
        assert!(kinds_of(&report, "product_sku").is_empty(), "{:?}", column(&report, "product_sku"));
        assert!(
            column(&report, "product_sku")
                .vetoed
                .iter()
                .any(|veto| veto.kind == Kind::Phone && veto.reason.contains("names a thing"))
        );
    }

    #[test]
    fn a_name_column_of_cities_is_not_a_person_name_column() {
        let report = scan(
            "cities.csv",
            b"ID,Name,CountryCode\n1,Kabul,AFG\n2,Qandahar,AFG\n3,Herat,AFG\n4,Amsterdam,NLD\n5,Rotterdam,NLD\n",
        );
        let name = column(&report, "Name");
        assert_eq!(name.classified, None, "{name:?}");
        assert!(name.findings.is_empty(), "{name:?}");
        // Without other headers to tell, the values decide: too few of them are names.
        let alone = scan("names.csv", b"Name\nKabul\nQandahar\nHerat\nAmsterdam\nRotterdam\n");
        let name = column(&alone, "Name");
        assert_eq!(name.classified, None, "{name:?}");
        assert!(name.reason.as_deref().unwrap_or("").contains("only"), "{name:?}");
        let people = scan("people.csv", b"id,name\n1,John Smith\n2,Mary Jones\n3,Peter Brown\n");
        assert_eq!(column(&people, "name").classified, Some(Kind::PersonName));
    }

    #[test]
    fn a_csv_is_scanned_column_by_column() {
        let report = scan(
            "people.csv",
            b"id,name,email,notes,zip\n1,Jane Smith,jane@example.com,call +44 20 7946 0958,94105\n2,Bob Jones,bob@example.org,nothing here,10001\n",
        );
        assert_eq!(report.records, 2);
        assert_eq!(kinds_of(&report, "email"), [Kind::Email]);
        assert_eq!(kinds_of(&report, "name"), [Kind::PersonName]);
        assert_eq!(kinds_of(&report, "notes"), [Kind::Phone]);
        assert_eq!(kinds_of(&report, "zip"), [Kind::Postcode]);
        assert!(kinds_of(&report, "id").is_empty());
        let email = &report.columns[2].findings[0];
        assert_eq!((email.values, email.share), (2, 1.0));
        assert_eq!(email.examples, ["j***@e***.com", "b***@e***.org"]);
    }

    #[test]
    fn jsonl_paths_and_compressed_input() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(
            &mut gz,
            b"{\"user\":{\"contact\":\"x@example.com\",\"card\":\"4111 1111 1111 1111\"}}\n",
        )
        .unwrap();
        let report = scan("events.jsonl.gz", &gz.finish().unwrap());
        assert_eq!(kinds_of(&report, "user.contact"), [Kind::Email]);
        assert_eq!(kinds_of(&report, "user.card"), [Kind::PaymentCard]);
    }

    #[test]
    fn a_column_is_classified_by_its_sample() {
        let mut csv = b"c\n".to_vec();
        for i in 0..250 {
            csv.extend_from_slice(format!("user{i}@example.com\n").as_bytes());
        }
        let report = scan("x.csv", &csv);
        assert_eq!(report.columns[0].classified, Some(Kind::Email));
        assert_eq!(report.columns[0].findings[0].values, 250);
    }

    #[test]
    fn a_column_of_checksummed_numbers_is_classified_by_its_values() {
        // Valid NHS numbers in a column with no telling header: alone each needs context, but
        // 250 of them that all pass modulus 11 are an NHS column, not phone numbers.
        let mut csv = b"c1\n".to_vec();
        let mut written = 0;
        let mut n: u64 = 400_000_000;
        while written < 250 {
            n += 7;
            let digits: Vec<u64> = n.to_string().bytes().map(|b| u64::from(b - b'0')).collect();
            let sum: u64 = digits.iter().enumerate().map(|(i, d)| d * (10 - i as u64)).sum();
            let check = (11 - sum % 11) % 11;
            if check == 10 {
                continue;
            }
            let text = format!("{n}{check}");
            csv.extend_from_slice(format!("{} {} {}\n", &text[..3], &text[3..6], &text[6..]).as_bytes());
            written += 1;
        }
        let report = scan("nhs.csv", &csv);
        assert_eq!(report.columns[0].classified, Some(Kind::UkNhs));
        let nhs = report.columns[0].findings.iter().find(|f| f.kind == Kind::UkNhs).unwrap();
        assert!(nhs.values >= 50, "{:?}", report.columns[0].findings);
    }

    #[test]
    fn a_date_column_whose_order_cannot_be_told_is_reported() {
        let report = scan(
            "d.csv",
            b"id,Birthday,visit,seen
1,3/29/1982,3/4/2020,2020-01-02
2,4/5/1990,4/3/2020,2020-02-03
",
        );
        let order = |column: &str| report.columns.iter().find(|c| c.column == column).and_then(|c| c.date_order);
        assert_eq!(order("Birthday"), Some(Verdict::MonthFirst));
        assert_eq!(order("visit"), Some(Verdict::Ambiguous));
        assert_eq!(order("seen"), Some(Verdict::Unambiguous));
        assert_eq!(order("id"), None);
        assert!(crate::report::human(std::slice::from_ref(&report)).contains("visit: dates ambiguous"));
    }

    #[test]
    fn a_city_table_has_no_person_names() {
        let report = scan(
            "cities.csv",
            "id,name,country_code,district,population\n1,Hamilton,NZL,Waikato,117100\n2,San Jose,USA,California,894943\n3,Jackson,USA,Mississippi,184256\n4,Santiago,CHL,Santiago,4703954\n".as_bytes(),
        );
        assert!(report.kinds().is_empty(), "{report:?}");
        assert_eq!(report.columns[1].header_kind, None);
    }

    #[test]
    fn a_clean_file_has_no_findings() {
        let report = scan("clean.csv", b"product,qty,price\nwidget,3,9.99\ngadget,10,19.50\n");
        assert!(report.kinds().is_empty(), "{report:?}");
    }
}
