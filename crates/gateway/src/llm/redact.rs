//! Personal data kept out of prompts: found by the `pii` detector, replaced with typed
//! placeholders before the request leaves, and put back in the answer for the same caller.
//!
//! [`Redactor::redact`] walks the text fields the route sends the model (the same ones a prompt
//! is made of: chat message contents and text parts, a completion's prompt and suffix, a
//! response's input and instructions, Ollama's prompt, system prompt and message contents,
//! embedding inputs) and nothing else: roles, the model, tool schemas and images are never
//! touched. Each value found becomes `<KIND_N>` (`<EMAIL_1>`, `<PHONE_2>`), numbered per kind;
//! the same value is the same placeholder throughout the request, so the model can still tell
//! who is who. A number already written literally in the prompt is skipped, so restoring never
//! turns the caller's own text into someone's data.
//!
//! The [`Redaction`] is the table from placeholders back to values for this one request: it is
//! never stored, its `Debug` shows counts only, the values are overwritten when it is dropped, and only
//! the counts per kind go to the audit record. With `restore_redacted`, the answer's text gets
//! the values back ([`Redaction::restore_answer`] for whole answers, [`StreamRestore`] for
//! streams, which holds back the tail of a delta that may be a placeholder cut in two).
//!
//! What is redacted (see [`REDACTED`] and [`MIN_CONFIDENCE`]): the kinds the detector validates
//! (checksums, numbering plans, public suffixes) or finds by a context word, at a confidence of
//! 0.6 or more. Person names, postcodes and coordinates are not: measured on realistic prompts,
//! the name finder also takes product, place and title-case phrases for names, and replacing
//! those changes what the model is asked.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashSet},
    fmt,
    sync::Arc,
};

use pii::Kind;
use serde_json::{Map, Value};
use zeroize::Zeroize;

use super::body::Route;

/// The kinds replaced in prompts.
pub const REDACTED: &[Kind] = &[
    Kind::Email,
    Kind::Phone,
    Kind::PaymentCard,
    Kind::Iban,
    Kind::UsSsn,
    Kind::UkNhs,
    Kind::UkNino,
    Kind::Passport,
    Kind::IpAddress,
    Kind::MacAddress,
    Kind::CryptoWallet,
    Kind::Imei,
    Kind::Credential,
    Kind::DateOfBirth,
];

/// Findings less sure than this stay. Every rule of a redacted kind reports at least this when it
/// validates (a national phone number without a phone word is 0.6, a US SSN without context
/// 0.65; rules that need a context word report 0.7 with it).
pub const MIN_CONFIDENCE: f32 = 0.6;

/// The longest placeholder: `<`, the longest kind tag (`DATE_OF_BIRTH`), `_`, a `u32`, `>`.
const MAX_PLACEHOLDER: usize = 1 + 13 + 1 + 10 + 1;

/// Finds personal data in prompts. Compiling the detector takes milliseconds: build one and share
/// it (`Arc`); it is `Send + Sync`.
#[derive(Debug, Default)]
pub struct Redactor {
    detector: pii::Detector,
}

impl Redactor {
    pub fn new() -> Redactor {
        Redactor { detector: pii::Detector::new() }
    }

    /// Replaces the personal data in the prompt fields of `body` with placeholders, and returns
    /// the table to put it back.
    pub fn redact(&self, route: Route, body: &mut Map<String, Value>) -> Redaction {
        let mut texts = prompt_texts(route, body);
        let mut table = Table::default();
        // Placeholders the caller wrote themselves are not ours to hand out.
        for text in texts.iter().filter(|text| text.contains('<')) {
            for (start, end) in placeholders_in(text) {
                table.taken.insert(text[start..end].to_owned());
            }
        }
        let mut counts = BTreeMap::new();
        for text in texts.iter_mut() {
            let findings: Vec<pii::Finding> = self
                .detector
                .find(text, None)
                .into_iter()
                .filter(|finding| finding.confidence >= MIN_CONFIDENCE && REDACTED.contains(&finding.kind))
                .collect();
            if findings.is_empty() {
                continue;
            }
            let mut redacted = String::with_capacity(text.len());
            let mut from = 0;
            for finding in findings {
                // Findings are in text order and do not overlap; a span off a character boundary
                // (which the detector does not produce) is left as it is.
                let Some(value) = text.get(finding.start..finding.end) else {
                    continue;
                };
                if finding.start < from {
                    continue;
                }
                redacted.push_str(&text[from..finding.start]);
                redacted.push_str(table.placeholder(finding.kind, value));
                from = finding.end;
                let count: &mut u32 = counts.entry(finding.kind.name()).or_default();
                *count = count.saturating_add(1);
            }
            redacted.push_str(&text[from..]);
            **text = redacted;
        }
        table.taken = HashSet::new();
        table.given = BTreeMap::new();
        Redaction { table: Arc::new(table), counts }
    }
}

/// The placeholders of one request and the values they stand for.
#[derive(Default)]
struct Table {
    /// Placeholder → value.
    values: BTreeMap<String, Wiped>,
    /// (kind, value) → placeholder, while redacting.
    given: BTreeMap<(Kind, Wiped), String>,
    /// The last number given per kind.
    numbers: BTreeMap<Kind, u32>,
    /// Placeholders written in the prompt itself.
    taken: HashSet<String>,
}

impl Table {
    fn placeholder(&mut self, kind: Kind, value: &str) -> &str {
        let key = (kind, Wiped(value.to_owned()));
        if !self.given.contains_key(&key) {
            let number = self.numbers.entry(kind).or_default();
            let placeholder = loop {
                *number = number.saturating_add(1);
                let candidate = format!("<{}_{number}>", kind.name().to_ascii_uppercase());
                if !self.taken.contains(&candidate) || *number == u32::MAX {
                    break candidate;
                }
            };
            self.values.insert(placeholder.clone(), Wiped(value.to_owned()));
            self.given.insert((kind, Wiped(value.to_owned())), placeholder);
        }
        self.given.get(&key).map_or("", String::as_str)
    }

    /// Whether `tail` is the start of one of the placeholders.
    fn may_start(&self, tail: &str) -> bool {
        self.values.range(tail.to_owned()..).next().is_some_and(|(placeholder, _)| placeholder.starts_with(tail))
    }

    fn restore<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.values.is_empty() || !text.contains('<') {
            return Cow::Borrowed(text);
        }
        let mut restored = String::new();
        let mut from = 0;
        for (start, end) in placeholders_in(text) {
            if let Some(value) = self.values.get(&text[start..end]) {
                restored.push_str(&text[from..start]);
                restored.push_str(&value.0);
                from = end;
            }
        }
        if from == 0 {
            return Cow::Borrowed(text);
        }
        restored.push_str(&text[from..]);
        Cow::Owned(restored)
    }
}

/// A value found in a prompt: its bytes are overwritten when it is dropped.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Wiped(String);

impl Drop for Wiped {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The spans of text shaped like a placeholder: `<`, capitals and `_`, `_`, digits, `>`.
fn placeholders_in(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().filter(|(_, byte)| **byte == b'<').filter_map(move |(start, _)| {
        let rest = &bytes[start + 1..bytes.len().min(start + MAX_PLACEHOLDER)];
        let close = rest.iter().position(|byte| *byte == b'>')?;
        let inner = &rest[..close];
        let underscore = inner.iter().rposition(|byte| *byte == b'_')?;
        let (tag, number) = (&inner[..underscore], &inner[underscore + 1..]);
        let shaped = !tag.is_empty()
            && tag.iter().all(|byte| byte.is_ascii_uppercase() || *byte == b'_')
            && !number.is_empty()
            && number.iter().all(u8::is_ascii_digit);
        shaped.then_some((start, start + close + 2))
    })
}

/// What was redacted from one request: counts per kind, and the way back.
pub struct Redaction {
    table: Arc<Table>,
    counts: BTreeMap<&'static str, u32>,
}

impl fmt::Debug for Redaction {
    /// Counts per kind only: never a value, nor a placeholder that would say how many there are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redaction").field("counts", &self.counts).finish_non_exhaustive()
    }
}

impl Redaction {
    /// Whether nothing was redacted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// How many values of each kind (by [`Kind::name`]) were replaced, for the audit record.
    pub fn counts(&self) -> &BTreeMap<&'static str, u32> {
        &self.counts
    }

    /// `text` with this request's placeholders replaced by their values.
    pub fn restore<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.table.restore(text)
    }

    /// Restores the text of a whole answer, or of one stream chunk without holding anything
    /// back: OpenAI's `choices[]` (`message.content` and its tool call arguments, `text`,
    /// `delta.content`), Ollama's `message.content` and `response`, and the Responses API's
    /// `output[].content[].text`, `output_text` and its stream events' `delta` and `response`.
    pub fn restore_answer(&self, object: &mut Map<String, Value>) {
        if self.table.values.is_empty() {
            return;
        }
        let restore = |value: Option<&mut Value>| {
            if let Some(Value::String(text)) = value
                && let Cow::Owned(restored) = self.table.restore(text)
            {
                *text = restored;
            }
        };
        let restore_message = |message: Option<&mut Value>| {
            let Some(Value::Object(message)) = message else {
                return;
            };
            restore(message.get_mut("content"));
            if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
                for call in calls.iter_mut().filter_map(Value::as_object_mut) {
                    if let Some(Value::Object(function)) = call.get_mut("function") {
                        restore(function.get_mut("arguments"));
                    }
                }
            }
        };
        if let Some(Value::Array(choices)) = object.get_mut("choices") {
            for choice in choices.iter_mut().filter_map(Value::as_object_mut) {
                restore_message(choice.get_mut("message"));
                restore_message(choice.get_mut("delta"));
                restore(choice.get_mut("text"));
            }
        }
        restore_message(object.get_mut("message"));
        restore(object.get_mut("response"));
        restore(object.get_mut("output_text"));
        restore(object.get_mut("delta"));
        if let Some(Value::Array(items)) = object.get_mut("output") {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                if let Some(Value::Array(parts)) = item.get_mut("content") {
                    for part in parts.iter_mut().filter_map(Value::as_object_mut) {
                        restore(part.get_mut("text"));
                    }
                }
                restore(item.get_mut("arguments"));
            }
        }
        // A Responses stream event carries the response object itself (one level down).
        if let Some(Value::Object(response)) = object.get_mut("response") {
            self.restore_answer(response);
        }
    }

    /// A restorer for a stream's deltas. It owns what it needs, so it can live in the stream.
    pub fn stream(&self) -> StreamRestore {
        StreamRestore { table: Arc::clone(&self.table), held: BTreeMap::new() }
    }
}

/// Restores placeholders in a stream's deltas, one choice at a time, holding back the tail of a
/// delta that may be the first part of a placeholder the next delta completes.
pub struct StreamRestore {
    table: Arc<Table>,
    /// Per choice, the held-back tail (at most a placeholder's length).
    held: BTreeMap<usize, String>,
}

impl fmt::Debug for StreamRestore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held: BTreeMap<usize, usize> = self.held.iter().map(|(index, tail)| (*index, tail.len())).collect();
        f.debug_struct("StreamRestore").field("held_bytes", &held).finish_non_exhaustive()
    }
}

impl StreamRestore {
    /// Text of one delta for choice `index`: returns what can be sent now, holding back a
    /// trailing part that may be the start of a placeholder split across chunks.
    pub fn push(&mut self, index: usize, text: &str) -> String {
        if self.table.values.is_empty() {
            return text.to_owned();
        }
        let mut pending = self.held.remove(&index).unwrap_or_default();
        pending.push_str(text);
        // Only the last `<` can open a placeholder that is not yet closed: a placeholder holds
        // no `<` of its own.
        let hold_from = pending.rfind('<').filter(|start| {
            let tail = &pending[*start..];
            tail.len() < MAX_PLACEHOLDER && !tail.ends_with('>') && self.table.may_start(tail)
        });
        let tail = match hold_from {
            Some(start) => pending.split_off(start),
            None => String::new(),
        };
        if !tail.is_empty() {
            self.held.insert(index, tail);
        }
        self.table.restore(&pending).into_owned()
    }

    /// What is held back for `index` at the end of the stream (or of that choice).
    pub fn finish(&mut self, index: usize) -> String {
        self.held.remove(&index).unwrap_or_default()
    }
}

/// The text fields of `body` that `route` sends the model as prompt, to be redacted in place.
fn prompt_texts(route: Route, body: &mut Map<String, Value>) -> Vec<&mut String> {
    let mut texts = Vec::new();
    let (messages, strings, items): (&[&str], &[&str], &[&str]) = match route {
        Route::ChatCompletions | Route::OllamaChat => (&["messages"], &[], &[]),
        Route::Completions => (&[], &["suffix"], &["prompt"]),
        Route::OllamaGenerate => (&[], &["prompt", "system", "suffix"], &[]),
        Route::Embeddings | Route::OllamaEmbed => (&[], &[], &["input"]),
        Route::Responses => (&["input"], &["instructions"], &[]),
        Route::OllamaShow => (&[], &[], &[]),
    };
    for (key, value) in body.iter_mut() {
        let key = key.as_str();
        let is_items = items.contains(&key);
        if !(is_items || messages.contains(&key) || strings.contains(&key)) {
            continue;
        }
        match value {
            Value::String(text) => texts.push(text),
            // For `items`, a string or strings (token ids are numbers and stay as they are); for
            // `messages`, messages (chat) or items (responses): their content, a string or text
            // parts, and a tool's output.
            Value::Array(values) => {
                if is_items {
                    texts.extend(values.iter_mut().filter_map(|value| match value {
                        Value::String(text) => Some(text),
                        _ => None,
                    }));
                } else if messages.contains(&key) {
                    for message in values.iter_mut().filter_map(Value::as_object_mut) {
                        message_texts(message, &mut texts);
                    }
                }
            }
            _ => {}
        }
    }
    texts
}

/// A message's (or a response item's) content, a string or text parts, and a tool's output.
fn message_texts<'a>(message: &'a mut Map<String, Value>, texts: &mut Vec<&'a mut String>) {
    for (field, value) in message.iter_mut() {
        match (field.as_str(), value) {
            ("content" | "output", Value::String(text)) => texts.push(text),
            ("content", Value::Array(parts)) => {
                for part in parts.iter_mut().filter_map(Value::as_object_mut) {
                    if let Some(Value::String(text)) = part.get_mut("text") {
                        texts.push(text);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
