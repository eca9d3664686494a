//! `data protect`: a policy decides, per column or per kind, what happens to personal data;
//! the output keeps the input's format; a manifest records what was done (never a value or a
//! key). The output is written to a temporary file beside the target and renamed at the end,
//! so it is whole or absent.

use std::{
    collections::BTreeMap,
    io::{BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    Kind,
    act::{self, DataKey, Generalise},
    column::kind_from_header,
    date::{self, DateOrder, Tally, Verdict},
    detect::Detector,
    read::{self, Format, Problem, ReadError, Record},
};

#[derive(Debug, thiserror::Error)]
pub enum ProtectError {
    #[error("policy: {0}")]
    Policy(String),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("cannot write {path}: {error}")]
    Write { path: String, error: std::io::Error },
}

/// What to do with a value or span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Keep,
    Drop,
    Redact,
    Mask {
        keep: usize,
    },
    Pseudonymise {
        key: String,
    },
    Generalise(Generalise),
    DateShift {
        key: String,
        subject: String,
        max_days: u32,
    },
    /// FF1 format-preserving encryption, reversible by `data reveal` (columns only).
    Tokenise {
        key: String,
    },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::Redact => "redact",
            Action::Mask { .. } => "mask",
            Action::Pseudonymise { .. } => "pseudonymise",
            Action::Generalise(_) => "generalise",
            Action::DateShift { .. } => "date_shift",
            Action::Tokenise { .. } => "tokenise",
        }
    }
}

/// An action as written: a name (`"drop"`), or a table with its settings.
#[derive(Debug)]
enum RawAction {
    Name(String),
    Full(RawActionTable),
}

/// An action's settings; a key it does not know is an error, never ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActionTable {
    action: String,
    key: Option<String>,
    keep: Option<usize>,
    to: Option<String>,
    width: Option<u32>,
    decimals: Option<u32>,
    subject: Option<String>,
    max_days: Option<u32>,
}

impl RawAction {
    /// Reads one entry of `[kinds]` or `[columns]`; anything but a name or an action table
    /// (a number, a nested table such as a misplaced setting) is an error that says where.
    fn read(value: toml::Value, at: &str) -> Result<RawAction, String> {
        match value {
            toml::Value::String(name) => Ok(RawAction::Name(name)),
            toml::Value::Table(table) => table
                .try_into::<RawActionTable>()
                .map(RawAction::Full)
                .map_err(|error| format!("{at}: {}", error.to_string().trim())),
            other => Err(format!(
                "{at}: an action is a name (\"redact\") or a table ({{ action = \"mask\", keep = 4 }}), not a {}",
                other.type_str()
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    env: Option<String>,
    file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    keys: BTreeMap<String, RawKey>,
    #[serde(default)]
    kinds: BTreeMap<String, toml::Value>,
    #[serde(default)]
    columns: BTreeMap<String, toml::Value>,
    /// What to do with personal data the policy does not name: "redact" (default) or "keep".
    unmatched: Option<String>,
}

/// A validated policy, with its keys loaded.
#[derive(Debug)]
pub struct Policy {
    pub kinds: BTreeMap<Kind, Action>,
    pub columns: BTreeMap<String, Action>,
    pub unmatched: Action,
    pub keys: BTreeMap<String, DataKey>,
    /// SHA-256 of the policy text, for the manifest.
    pub sha256: String,
}

fn action(raw: &RawAction, keys: &BTreeMap<String, RawKey>, at: &str) -> Result<Action, String> {
    let (name, key, keep, to, width, decimals, subject, max_days) = match raw {
        RawAction::Name(name) => (name.as_str(), None, None, None, None, None, None, None),
        RawAction::Full(RawActionTable { action, key, keep, to, width, decimals, subject, max_days }) => {
            (action.as_str(), key.as_ref(), *keep, to.as_deref(), *width, *decimals, subject.as_ref(), *max_days)
        }
    };
    let need_key = || -> Result<String, String> {
        let key = key.ok_or_else(|| format!("{at}: '{name}' needs key = \"<name of a [keys] entry>\""))?;
        if !keys.contains_key(key) {
            return Err(format!("{at}: no key named '{key}' in [keys]"));
        }
        Ok(key.clone())
    };
    Ok(match name {
        "keep" => Action::Keep,
        "drop" => Action::Drop,
        "redact" => Action::Redact,
        "mask" => Action::Mask { keep: keep.unwrap_or(4) },
        "pseudonymise" | "pseudonymize" => Action::Pseudonymise { key: need_key()? },
        "generalise" | "generalize" => Action::Generalise(match to {
            Some("year") => Generalise::Year,
            Some("month") => Generalise::Month,
            Some("age_band") => Generalise::AgeBand { width: width.unwrap_or(10), reference_year: current_year() },
            Some("truncate") => Generalise::Truncate { keep: keep.unwrap_or(3) },
            Some("round") => Generalise::Round { decimals: decimals.unwrap_or(2) },
            other => {
                return Err(format!(
                    "{at}: generalise needs to = year, month, age_band, truncate or round (got {other:?})"
                ));
            }
        }),
        "date_shift" => Action::DateShift {
            key: need_key()?,
            subject: subject.cloned().ok_or_else(|| format!("{at}: date_shift needs subject = \"<column>\""))?,
            max_days: max_days.unwrap_or(30).clamp(1, 3650),
        },
        "tokenise" | "tokenize" => Action::Tokenise { key: need_key()? },
        other => {
            return Err(format!(
                "{at}: unknown action '{other}': use keep, drop, redact, mask, pseudonymise, generalise, date_shift, tokenise"
            ));
        }
    })
}

fn current_year() -> i32 {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    1970 + i32::try_from(seconds / 31_556_952).unwrap_or(56)
}

impl Policy {
    /// Parses a policy and loads its keys (from the environment or files). A missing or short
    /// key is an error here, before any output exists.
    pub fn load(text: &str, base: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Policy, ProtectError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| ProtectError::Policy(e.to_string()))?;
        let mut keys = BTreeMap::new();
        for (id, source) in &raw.keys {
            let text = match (&source.env, &source.file) {
                (Some(variable), None) => env(variable).ok_or_else(|| {
                    ProtectError::Policy(format!("key '{id}': the environment variable {variable} is not set"))
                })?,
                (None, Some(file)) => {
                    let path = base.join(file);
                    std::fs::read_to_string(&path)
                        .map_err(|e| ProtectError::Policy(format!("key '{id}': cannot read {}: {e}", path.display())))?
                }
                _ => return Err(ProtectError::Policy(format!("key '{id}': give env or file, one of them"))),
            };
            keys.insert(id.clone(), DataKey::parse(id, &text).map_err(ProtectError::Policy)?);
        }
        let mut kinds = BTreeMap::new();
        for (name, value) in raw.kinds {
            let kind = Kind::parse(&name).ok_or_else(|| {
                let hint = if name == "unmatched" {
                    ": `unmatched` is a top-level setting, so it goes before the first [table]"
                } else {
                    ""
                };
                ProtectError::Policy(format!("[kinds]: unknown kind '{name}'{hint}"))
            })?;
            let at = format!("[kinds] {name}");
            let raw_action = RawAction::read(value, &at).map_err(ProtectError::Policy)?;
            let kind_action = action(&raw_action, &raw.keys, &at).map_err(ProtectError::Policy)?;
            if matches!(kind_action, Action::Tokenise { .. }) {
                return Err(ProtectError::Policy(format!(
                    "[kinds] {name}: tokenise applies to whole columns ([columns]), so that `data reveal` finds every token"
                )));
            }
            kinds.insert(kind, kind_action);
        }
        let mut columns = BTreeMap::new();
        for (name, value) in raw.columns {
            // TOML puts every key after `[columns]` into that table: a top-level setting
            // written there would silently become a column's action.
            if name == "unmatched" {
                return Err(ProtectError::Policy(
                    "[columns] unmatched: `unmatched` is a top-level setting, so it goes before the first [table] \
                     (it would otherwise be read as the action for a column named `unmatched`)"
                        .into(),
                ));
            }
            let at = format!("[columns] {name}");
            let raw_action = RawAction::read(value, &at).map_err(ProtectError::Policy)?;
            columns.insert(name, action(&raw_action, &raw.keys, &at).map_err(ProtectError::Policy)?);
        }
        let unmatched = match raw.unmatched.as_deref() {
            None | Some("redact") => Action::Redact,
            Some("keep") => Action::Keep,
            Some(other) => return Err(ProtectError::Policy(format!("unmatched = '{other}': use redact or keep"))),
        };
        Ok(Policy { kinds, columns, unmatched, keys, sha256: hex(&Sha256::digest(text.as_bytes())) })
    }

    /// The action for `kind`: the policy's, else `unmatched`; credentials the policy does not
    /// name are redacted even when `unmatched = "keep"` (a password is never personal data one
    /// meant to keep).
    fn for_kind(&self, kind: Kind) -> &Action {
        match self.kinds.get(&kind) {
            Some(action) => action,
            None if kind == Kind::Credential => &Action::Redact,
            None => &self.unmatched,
        }
    }

    /// Whether `column`'s dates are read with an order: its own action needs one, or a kind's
    /// action does (which applies to any column).
    fn reads_dates_of(&self, column: &str) -> bool {
        let needs =
            |action: &Action| matches!(action, Action::Generalise(Generalise::Month) | Action::DateShift { .. });
        self.columns.get(column).map_or_else(|| self.kinds.values().any(needs), needs)
    }

    /// Whether some action needs to know a column's order of day and month (a month, or a
    /// shift; a year is certain without it).
    fn reads_dates(&self) -> bool {
        self.columns
            .values()
            .chain(self.kinds.values())
            .any(|action| matches!(action, Action::Generalise(Generalise::Month) | Action::DateShift { .. }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The manifest: what was done, with hashes, never values or keys.
#[derive(Debug, Serialize)]
pub struct Manifest {
    pub tool: String,
    pub input: FileDigest,
    pub output: FileDigest,
    pub format: &'static str,
    pub policy_sha256: String,
    pub key_ids: Vec<String>,
    pub records: u64,
    /// column → action → values changed.
    pub counts: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Columns protected whole because the scan classified them (column → kind and why):
    /// every non-empty value got the kind's action, recognised by a detector or not.
    pub classified: BTreeMap<String, ClassifiedColumn>,
    pub rejected: u64,
    pub rejected_examples: Vec<Problem>,
    /// Per column whose dates a month or a shift needed to read: what its values say about
    /// their order of day and month (`month_first`, `day_first`, `ambiguous`, `mixed`, ...).
    pub date_order: BTreeMap<String, Verdict>,
    /// Per column: dates redacted rather than generalised or shifted because their day and
    /// month could be read either way and the column's values did not tell the order.
    pub ambiguous_dates: BTreeMap<String, u64>,
    /// The `age` recipients the output is encrypted to (public keys), if any.
    pub encrypted_to: Vec<String>,
}

/// Parses `age` recipients (`age1...`) given for `--encrypt-to`.
pub fn parse_recipients(texts: &[String]) -> Result<Vec<age::x25519::Recipient>, ProtectError> {
    texts
        .iter()
        .map(|text| {
            text.trim().parse::<age::x25519::Recipient>().map_err(|error| {
                ProtectError::Policy(format!("--encrypt-to '{text}' is not an age recipient: {error}"))
            })
        })
        .collect()
}

/// Encrypts `plain` into `output` (through a temporary file) to `recipients`.
fn encrypt_into(plain: &Path, output: &Path, recipients: &[age::x25519::Recipient]) -> Result<(), ProtectError> {
    let write_error = |error: std::io::Error| ProtectError::Write { path: output.display().to_string(), error };
    let staged = Staged::new(output);
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|error| write_error(std::io::Error::other(error.to_string())))?;
    let file = create_private(&staged.temporary).map_err(write_error)?;
    let mut writer = encryptor.wrap_output(BufWriter::new(file)).map_err(write_error)?;
    let mut source = std::fs::File::open(plain).map_err(write_error)?;
    std::io::copy(&mut source, &mut writer).map_err(write_error)?;
    let file = writer.finish().map_err(write_error)?.into_inner().map_err(|e| write_error(e.into_error()))?;
    file.sync_all().map_err(write_error)?;
    staged.commit()
}

/// A column the scan classified, as the manifest records it.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifiedColumn {
    pub kind: Kind,
    pub action: &'static str,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct FileDigest {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

fn digest_file(path: &Path) -> Result<FileDigest, ProtectError> {
    let shown = path.display().to_string();
    let mut file =
        std::fs::File::open(path).map_err(|error| ProtectError::Read(ReadError::Io { path: shown.clone(), error }))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let read =
            file.read(&mut buffer).map_err(|error| ProtectError::Read(ReadError::Io { path: shown.clone(), error }))?;
        if read == 0 {
            break;
        }
        bytes += read as u64;
        hasher.update(&buffer[..read]);
    }
    Ok(FileDigest { path: shown, sha256: hex(&hasher.finalize()), bytes })
}

/// Applies the policy to one record's fields in place; `None` for a dropped column.
struct Protector<'a> {
    policy: &'a Policy,
    detector: &'a Detector,
    counts: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Columns the scan classified (by header or by their values), with their kind.
    classified: std::collections::HashMap<String, Kind>,
    /// Kinds the scan set aside per column (chance checksums, a header naming a thing).
    vetoed: std::collections::HashMap<String, Vec<Kind>>,
    /// Per column: the kind its header names in this table, and whether it may hold names.
    headers: std::collections::HashMap<String, (Option<Kind>, bool)>,
    /// Each column's date order evidence, from a first pass (empty when no action needs it).
    dates: BTreeMap<String, Tally>,
    ambiguous_dates: BTreeMap<String, u64>,
}

impl Protector<'_> {
    fn count(&mut self, column: &str, action: &Action) {
        *self.counts.entry(column.to_owned()).or_default().entry(action.name()).or_default() += 1;
    }

    /// The value that replaces `value` (a whole value or a span) of `kind` under `action`.
    fn apply(&mut self, action: &Action, kind: Kind, column: &str, value: &str, record: &Record) -> String {
        let order = self.dates.get(column).and_then(Tally::order);
        let replaced = self.apply_with(action, kind, column, value, record, order);
        if matches!(action, Action::Generalise(_) | Action::DateShift { .. })
            && replaced.is_none()
            && matches!(date::read(value), Some(date::Written::Either { .. }))
        {
            *self.ambiguous_dates.entry(column.to_owned()).or_default() += 1;
        }
        replaced.unwrap_or_else(|| act::redaction(kind))
    }

    /// [`Protector::apply`]; `None` where a generalisation or shift does not apply (redacted).
    fn apply_with(
        &self,
        action: &Action,
        kind: Kind,
        column: &str,
        value: &str,
        record: &Record,
        order: Option<DateOrder>,
    ) -> Option<String> {
        Some(match action {
            Action::Generalise(how) => return act::generalise(*how, value, order),
            Action::DateShift { key, subject, max_days } => {
                let subject_value =
                    record.fields.iter().find(|(name, _)| name == subject).map_or("", |(_, v)| v.as_str());
                return act::date_shift(self.policy.keys.get(key)?, subject_value, value, *max_days, order);
            }
            other => self.apply_plain(other, kind, column, value),
        })
    }

    /// The actions that need no date order.
    fn apply_plain(&self, action: &Action, kind: Kind, column: &str, value: &str) -> String {
        match action {
            Action::Tokenise { key } => {
                match self.policy.keys.get(key).map(|key| act::tokenise(key, column, kind, value)) {
                    Some(Ok(token)) => token,
                    // Too short a value to tokenise safely: redacted instead.
                    _ => act::redaction(kind),
                }
            }
            Action::Keep | Action::Drop => value.to_owned(),
            Action::Redact => act::redaction(kind),
            Action::Mask { keep } => act::mask(value, *keep),
            Action::Pseudonymise { key } => match self.policy.keys.get(key) {
                Some(key) => act::pseudonym(key, kind, value),
                None => act::redaction(kind),
            },
            // Handled by `apply_with`, which knows the column's date order.
            Action::Generalise(_) | Action::DateShift { .. } => act::redaction(kind),
        }
    }

    /// Protects one field; `None` when its column is dropped.
    fn field(&mut self, column: &str, value: &str, record: &Record) -> Option<String> {
        if let Some(action) = self.policy.columns.get(column).cloned() {
            if action == Action::Drop {
                self.count(column, &action);
                return None;
            }
            if value.trim().is_empty() || action == Action::Keep {
                return Some(value.to_owned());
            }
            let kind = kind_from_header(column).unwrap_or(Kind::PersonName);
            // A column action on free text applies to the spans found in it; on a value of
            // one kind, to the whole value.
            // A column whose header names a kind is one value: what the validators do not
            // recognise in it (an unusual name, an ITIN in `ssn`) is still covered.
            let whole = kind_from_header(column).is_some()
                || !matches!(action, Action::Redact | Action::Mask { .. } | Action::Pseudonymise { .. });
            self.count(column, &action);
            if whole {
                return Some(self.apply(&action, kind, column, value, record));
            }
            return Some(self.spans(column, value, record, Some(&action)));
        }
        if value.trim().is_empty() {
            return Some(value.to_owned());
        }
        // A classified column is one kind whole: its kind's action applies to every value,
        // whether or not a detector recognises it (an unusual surname, any password).
        if let Some(kind) = self.classified.get(column).copied() {
            let action = self.policy.for_kind(kind).clone();
            match action {
                Action::Keep => {}
                Action::Drop => {
                    self.count(column, &action);
                    return None;
                }
                _ => {
                    self.count(column, &action);
                    return Some(self.apply(&action, kind, column, value.trim(), record));
                }
            }
        }
        Some(self.spans(column, value, record, None))
    }

    /// Replaces every finding in `value`, by `forced` or by its kind's action.
    fn spans(&mut self, column: &str, value: &str, record: &Record, forced: Option<&Action>) -> String {
        // What the table's headers say of this column, worked out once per column, not per value.
        let (header, person_names) = *self.headers.entry(column.to_owned()).or_insert_with(|| {
            let headers: Vec<&str> = record.fields.iter().map(|(name, _)| name.as_str()).collect();
            (crate::column::kind_in_table(column, &headers), crate::column::may_hold_person_names(column, &headers))
        });
        let mut findings = match header.and_then(|kind| self.detector.value_is(kind, value)) {
            Some(finding) => vec![finding],
            None => self.detector.find(value, header),
        };
        if let Some(vetoed) = self.vetoed.get(column) {
            findings.retain(|finding| !vetoed.contains(&finding.kind));
        }
        // Names in a column of places or categories are not people's (as `data scan` reads it).
        if !person_names {
            findings.retain(|finding| finding.kind != Kind::PersonName);
        }
        if findings.is_empty() {
            return value.to_owned();
        }
        let mut out = String::with_capacity(value.len());
        let mut at = 0;
        for finding in findings {
            let action = forced.cloned().unwrap_or_else(|| self.policy.for_kind(finding.kind).clone());
            out.push_str(&value[at..finding.start]);
            let span = &value[finding.start..finding.end];
            if action == Action::Drop || action == Action::Keep {
                // Drop is a column action; for a span in free text it means redact.
                let replaced = if action == Action::Keep { span.to_owned() } else { act::redaction(finding.kind) };
                out.push_str(&replaced);
            } else {
                out.push_str(&self.apply(&action, finding.kind, column, span, record));
            }
            if forced.is_none() {
                self.count(column, &action);
            }
            at = finding.end;
        }
        out.push_str(&value[at..]);
        out
    }
}

/// Writes through a temporary file that becomes `target` only when complete.
struct Staged {
    temporary: PathBuf,
    target: PathBuf,
}

impl Staged {
    fn new(target: &Path) -> Staged {
        let mut suffix = [0u8; 6];
        // A failed draw leaves zeros: the file is still created new (0600), never reused.
        let _ = getrandom::fill(&mut suffix);
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Staged { temporary: target.with_file_name(format!(".{name}.{}.tmp", hex(&suffix))), target: target.to_owned() }
    }

    fn commit(self) -> Result<(), ProtectError> {
        std::fs::rename(&self.temporary, &self.target)
            .map_err(|error| ProtectError::Write { path: self.target.display().to_string(), error })
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// A new file readable by its owner only, never an existing one (nor a planted symlink).
pub(crate) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// What a rewrite did.
struct Rewritten {
    format: Format,
    records: u64,
    rejected: Vec<Problem>,
    /// JSON paths removed whole, with how many times.
    json_drops: BTreeMap<String, u64>,
}

/// Rewrites `input` into `output` (same format), field by field: `field` returns the new value,
/// or `None` to drop it; `dropped` names columns (and JSON paths) removed whole. The output
/// appears only when complete.
/// How a rewrite treats what it cannot inspect: columns of types it does not scan (Parquet)
/// and header cells.
struct Guards<'a> {
    /// Whether a column it cannot scan may be copied as it is (else the run fails).
    may_copy_unscanned: &'a dyn Fn(&str) -> bool,
    /// Whether a header cell looks like personal data (a file without a header row).
    header_is_data: &'a dyn Fn(&str) -> bool,
}

fn rewrite(
    input: &Path,
    output: &Path,
    dropped: &dyn Fn(&str) -> bool,
    field: &mut dyn FnMut(&str, &str, &Record) -> Option<String>,
    guards: &Guards<'_>,
) -> Result<Rewritten, ProtectError> {
    if crate::parquet::is_parquet(input) {
        let staged = Staged::new(output);
        let mut rejected = Vec::new();
        let records = crate::parquet::rewrite(
            input,
            &staged.temporary,
            dropped,
            field,
            &mut |p| rejected.push(p),
            guards.may_copy_unscanned,
        )?;
        staged.commit()?;
        return Ok(Rewritten { format: Format::Parquet, records, rejected, json_drops: BTreeMap::new() });
    }
    let mut reader = read::open(input)?;
    let format = read::detect_format(input, &mut reader)?;
    let staged = Staged::new(output);
    let write_error = |error: std::io::Error| ProtectError::Write { path: output.display().to_string(), error };
    let file = create_private(&staged.temporary).map_err(write_error)?;
    let mut rejected = Vec::<Problem>::new();
    let mut records = 0u64;
    let mut failure: Option<std::io::Error> = None;
    let mut json_drops = BTreeMap::new();
    let mut header_error: Option<String> = None;
    match format {
        Format::Csv { delimiter } => {
            let mut writer =
                csv::WriterBuilder::new().delimiter(delimiter).flexible(true).from_writer(BufWriter::new(file));
            let mut header_written = false;
            let headers = read::csv_records(
                reader,
                delimiter,
                |record| {
                    records += 1;
                    if !header_written {
                        if let Some((name, _)) = record.fields.iter().find(|(name, _)| (guards.header_is_data)(name)) {
                            header_error.get_or_insert_with(|| name.clone());
                        }
                        let kept: Vec<&String> =
                            record.fields.iter().map(|(name, _)| name).filter(|name| !dropped(name)).collect();
                        if let Err(error) = writer.write_record(kept) {
                            failure.get_or_insert(error.into());
                        }
                        header_written = true;
                    }
                    let values: Vec<String> =
                        record.fields.iter().filter_map(|(column, value)| field(column, value, record)).collect();
                    if let Err(error) = writer.write_record(&values) {
                        failure.get_or_insert(error.into());
                    }
                },
                |problem| rejected.push(problem),
            )?;
            if !header_written {
                let kept: Vec<&String> = headers.iter().filter(|name| !dropped(name)).collect();
                writer.write_record(kept).map_err(|e| write_error(e.into()))?;
            }
            let inner = writer.into_inner().map_err(|e| write_error(std::io::Error::other(e.to_string())))?;
            let file = inner.into_inner().map_err(|e| write_error(e.into_error()))?;
            file.sync_all().map_err(write_error)?;
        }
        Format::Parquet => {
            return Err(ProtectError::Policy("a Parquet file is read by its own path".into()));
        }
        Format::JsonLines => {
            let mut writer = BufWriter::new(file);
            // JSON lines are rewritten from their parsed form with new leaves.
            read::jsonl_values(
                reader,
                |number, mut value| {
                    records += 1;
                    let mut flat = Vec::new();
                    read::flatten_into(&value, &mut flat);
                    let record = Record { number, fields: flat };
                    rewrite_json(&mut value, &mut String::new(), (dropped, &mut json_drops), field, &record, 0);
                    let written = serde_json::to_writer(&mut writer, &value)
                        .map_err(std::io::Error::other)
                        .and_then(|()| writer.write_all(b"\n"));
                    if let Err(error) = written {
                        failure.get_or_insert(error);
                    }
                },
                |problem| rejected.push(problem),
            )?;
            let file = writer.into_inner().map_err(|e| write_error(e.into_error()))?;
            file.sync_all().map_err(write_error)?;
        }
    }
    if header_error.is_some() {
        return Err(ProtectError::Policy(
            "the first row holds personal data, so it is not a header: give the file a header row".into(),
        ));
    }
    if let Some(error) = failure {
        return Err(write_error(error));
    }
    staged.commit()?;
    Ok(Rewritten { format, records, rejected, json_drops })
}

/// Protects `input` into `output` by `policy`; returns the manifest (the caller writes it).
pub fn protect_file(
    detector: &Detector,
    policy: &Policy,
    input: &Path,
    output: &Path,
) -> Result<Manifest, ProtectError> {
    protect_file_to(detector, policy, input, output, &[])
}

/// [`protect_file`], with the output encrypted to `recipients` when there are any (the
/// protected plaintext exists only as a temporary file beside the output, removed at the end).
pub fn protect_file_to(
    detector: &Detector,
    policy: &Policy,
    input: &Path,
    output: &Path,
    recipients: &[age::x25519::Recipient],
) -> Result<Manifest, ProtectError> {
    let plain = Staged::new(output);
    let written_to = if recipients.is_empty() { output } else { plain.temporary.as_path() };
    let mut manifest = protect_plain(detector, policy, input, written_to)?;
    if !recipients.is_empty() {
        encrypt_into(written_to, output, recipients)?;
        manifest.output = digest_file(output)?;
        manifest.encrypted_to = recipients.iter().map(ToString::to_string).collect();
    }
    drop(plain);
    Ok(manifest)
}

fn protect_plain(detector: &Detector, policy: &Policy, input: &Path, output: &Path) -> Result<Manifest, ProtectError> {
    let input_digest = digest_file(input)?;
    // First the scan's judgement of each column (by header, by its values as a whole), so that
    // protect protects what scan reports: a classified column whole, vetoed kinds not at all.
    let report = crate::scan::scan_file(detector, input)?;
    let mut classified = std::collections::HashMap::new();
    let mut vetoed = std::collections::HashMap::new();
    let mut manifest_classified = BTreeMap::new();
    for column in &report.columns {
        if !column.vetoed.is_empty() {
            vetoed.insert(column.column.clone(), column.vetoed.iter().map(|veto| veto.kind).collect::<Vec<_>>());
        }
        let Some(kind) = column.classified else { continue };
        if policy.columns.contains_key(&column.column) {
            continue;
        }
        classified.insert(column.column.clone(), kind);
        manifest_classified.insert(
            column.column.clone(),
            ClassifiedColumn {
                kind,
                action: policy.for_kind(kind).name(),
                reason: column.reason.clone().unwrap_or_default(),
            },
        );
    }
    let classified_drops: std::collections::HashSet<String> = classified
        .iter()
        .filter(|(_, kind)| *policy.for_kind(**kind) == Action::Drop)
        .map(|(column, _)| column.clone())
        .collect();
    // The day/month order of each date column, from the scan's evidence (no extra read).
    let dates: BTreeMap<String, Tally> = if policy.reads_dates() {
        report.columns.iter().map(|column| (column.column.clone(), column.date_tally)).collect()
    } else {
        BTreeMap::new()
    };
    let date_order: BTreeMap<String, Verdict> = dates
        .iter()
        .filter(|(column, _)| policy.reads_dates_of(column))
        .filter_map(|(column, tally)| Some((column.clone(), tally.verdict()?)))
        .collect();
    let mut protector = Protector {
        policy,
        detector,
        counts: BTreeMap::new(),
        classified,
        vetoed,
        headers: std::collections::HashMap::new(),
        dates,
        ambiguous_dates: BTreeMap::new(),
    };
    let dropped = |column: &str| policy.columns.get(column) == Some(&Action::Drop) || classified_drops.contains(column);
    let mut field = |column: &str, value: &str, record: &Record| protector.field(column, value, record);
    let may_copy = |column: &str| match policy.columns.get(column) {
        Some(action) => *action == Action::Keep,
        None => policy.unmatched == Action::Keep,
    };
    let header_is_data = |name: &str| !detector.find(name, None).is_empty();
    let guards = Guards { may_copy_unscanned: &may_copy, header_is_data: &header_is_data };
    let rewritten = rewrite(input, output, &dropped, &mut field, &guards)?;
    // JSON members dropped whole are counted by the rewrite (CSV drops count per value in `field`).
    let (mut counts, ambiguous_dates) = (protector.counts, protector.ambiguous_dates);
    for (path, count) in rewritten.json_drops {
        *counts.entry(path).or_default().entry("drop").or_default() += count;
    }
    Ok(Manifest {
        tool: concat!("portcullis ", env!("CARGO_PKG_VERSION")).to_owned(),
        input: input_digest,
        output: digest_file(output)?,
        format: rewritten.format.name(),
        policy_sha256: policy.sha256.clone(),
        key_ids: policy.keys.keys().cloned().collect(),
        records: rewritten.records,
        counts,
        classified: manifest_classified,
        rejected: rewritten.rejected.len() as u64,
        rejected_examples: rewritten.rejected.into_iter().take(100).collect(),
        date_order,
        ambiguous_dates,
        encrypted_to: Vec::new(),
    })
}

/// What `data reveal` did.
#[derive(Debug, Serialize)]
pub struct Revealed {
    pub records: u64,
    /// column → values revealed.
    pub columns: BTreeMap<String, u64>,
    /// Values that were not tokens of this key and column (left as they were).
    pub failed: u64,
}

/// Reverses `tokenise` for every column the policy tokenises, with the same keys.
pub fn reveal_file(policy: &Policy, input: &Path, output: &Path) -> Result<Revealed, ProtectError> {
    let tokenised: BTreeMap<&String, &DataKey> = policy
        .columns
        .iter()
        .filter_map(|(column, action)| match action {
            Action::Tokenise { key } => policy.keys.get(key).map(|key| (column, key)),
            _ => None,
        })
        .collect();
    if tokenised.is_empty() {
        return Err(ProtectError::Policy("the policy tokenises no column: there is nothing to reveal".into()));
    }
    let mut columns: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed = 0u64;
    let mut field = |column: &str, value: &str, _: &Record| {
        let Some(key) = tokenised.get(&column.to_owned()) else {
            return Some(value.to_owned());
        };
        if value.trim().is_empty() {
            return Some(value.to_owned());
        }
        let kind = kind_from_header(column).unwrap_or(Kind::PersonName);
        match act::reveal(key, column, kind, value) {
            Ok(clear) => {
                *columns.entry(column.to_owned()).or_default() += 1;
                Some(clear)
            }
            Err(_) => {
                failed += 1;
                Some(value.to_owned())
            }
        }
    };
    let guards = Guards { may_copy_unscanned: &|_| true, header_is_data: &|_| false };
    let rewritten = rewrite(input, output, &|_| false, &mut field, &guards)?;
    Ok(Revealed { records: rewritten.records, columns, failed })
}

type Drops<'a> = (&'a dyn Fn(&str) -> bool, &'a mut BTreeMap<String, u64>);

fn rewrite_json(
    value: &mut serde_json::Value,
    path: &mut String,
    drops: Drops<'_>,
    field: &mut dyn FnMut(&str, &str, &Record) -> Option<String>,
    record: &Record,
    depth: usize,
) {
    if depth > 64 {
        // Deeper than we follow: never copied unprotected.
        *value = serde_json::Value::Null;
        return;
    }
    match value {
        serde_json::Value::Object(members) => {
            let names: Vec<String> = members.keys().cloned().collect();
            for name in names {
                let length = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&name);
                if (drops.0)(path) {
                    members.remove(&name);
                    *drops.1.entry(path.clone()).or_default() += 1;
                } else if let Some(member) = members.get_mut(&name) {
                    rewrite_json(member, path, (drops.0, &mut *drops.1), field, record, depth + 1);
                }
                path.truncate(length);
            }
        }
        serde_json::Value::Array(items) => {
            let length = path.len();
            path.push_str("[]");
            for item in items {
                rewrite_json(item, path, (drops.0, &mut *drops.1), field, record, depth + 1);
            }
            path.truncate(length);
        }
        // A leaf the policy drops (`tags[] = "drop"`) becomes null: it is never kept.
        serde_json::Value::String(text) => match field(path, text, record) {
            Some(new) => *text = new,
            None => *value = serde_json::Value::Null,
        },
        serde_json::Value::Number(number) => {
            let text = number.to_string();
            match field(path, &text, record) {
                Some(new) if new != text => *value = serde_json::Value::String(new),
                Some(_) => {}
                None => *value = serde_json::Value::Null,
            }
        }
        serde_json::Value::Bool(_) | serde_json::Value::Null => {}
    }
}

#[cfg(test)]
mod tests;
