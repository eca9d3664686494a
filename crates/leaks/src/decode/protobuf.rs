//! Protocol Buffers reader for the protobuf files of an Android App Bundle: `resources.pb` (an
//! aapt2 `ResourceTable`), `manifest/AndroidManifest.xml` and `res/xml/*` (aapt2 `XmlNode`) and
//! `BundleConfig.pb`, the AAB counterparts of `resources.arsc` and binary XML.
//!
//! The wire format is specified at <https://protobuf.dev/programming-guides/encoding/>, the
//! aapt2 messages in AOSP's `frameworks/base/tools/aapt2/Resources.proto`. The reader is a
//! generic wire-format walker: a length-delimited field is read as a nested message when it
//! parses completely and cleanly (and does not read as text), else as a string when it is valid
//! UTF-8 without control characters, else skipped as bytes. On top of that it follows the
//! aapt2 schema where the data fits it, for context:
//!
//! - `ResourceTable.package` (2) → `Package.type` (3) → `Type{name: 2, entry: 3}` →
//!   `Entry{name: 2}`: every string inside an entry (`ConfigValue` → `Value.item` (4) →
//!   `Item.str` (2) → `String.value` (1), and arrays, plurals and styles alike) is emitted as
//!   `{type}/{entry}` named `entry`.
//! - `XmlNode{element: 1, text: 2}` → `XmlElement{name: 3, attribute: 4, child: 5}` →
//!   `XmlAttribute{name: 2, value: 3}`: attribute values as `{element path}@{attribute}`, the
//!   `value` attribute named by its sibling `name` attribute's value as in binary XML; text as
//!   `{element path}`.
//!
//! Any other string is emitted at its field-number path (`4.1`), unnamed. Names (of packages,
//! types, entries, elements, attributes) are structure and are not emitted themselves, nor
//! are strings shorter than eight characters. Groups (wire types 3 and 4) are an error, as are
//! field number 0, a truncated varint and a length past the end; messages nest at most 64 deep.

use super::{DecodeError, Emitter, Sink, cut_name, output_budget};
use std::borrow::Cow;

const FORMAT: &str = "protobuf";
const MAX_DEPTH: usize = 64;
/// Strings with fewer characters are not emitted.
const MIN_CHARS: usize = 8;

/// Emits the strings of the message in `bytes`.
pub fn decode(bytes: &[u8], sink: &mut dyn Sink) -> Result<(), DecodeError> {
    decode_within(bytes, sink, output_budget(bytes.len()))
}

fn decode_within(bytes: &[u8], sink: &mut dyn Sink, budget: usize) -> Result<(), DecodeError> {
    let mut walker = Walker { out: Emitter::new(sink, FORMAT, budget), numbers: Vec::new() };
    walker.message(bytes, 0, 0, Hint::Root, &Scope::Generic)
}

/// One field's value, by wire type.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Scalar,
    Bytes(&'a [u8]),
}

#[derive(Debug, Clone, Copy)]
struct Field<'a> {
    number: u32,
    value: Value<'a>,
    /// Where the payload of a length-delimited field starts, relative to the message.
    payload_at: usize,
}

/// The fields of one message, in order; an error ends the iteration.
struct Fields<'a> {
    bytes: &'a [u8],
    position: usize,
    failed: bool,
}

fn fields(bytes: &[u8]) -> Fields<'_> {
    Fields { bytes, position: 0, failed: false }
}

impl<'a> Iterator for Fields<'a> {
    /// A field, or the relative offset and reason it could not be read.
    type Item = Result<Field<'a>, (usize, &'static str)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.bytes.len() {
            return None;
        }
        let field = self.field();
        self.failed = field.is_err();
        Some(field)
    }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<Field<'a>, (usize, &'static str)> {
        let start = self.position;
        let tag = self.varint().ok_or((start, "truncated or overlong tag"))?;
        let number = u32::try_from(tag >> 3).map_err(|_| (start, "field number too large"))?;
        if number == 0 {
            return Err((start, "field number 0"));
        }
        let value = match tag & 7 {
            0 => {
                self.varint().ok_or((start, "truncated or overlong varint"))?;
                Value::Scalar
            }
            1 => self.skip(8).map(|_| Value::Scalar).ok_or((start, "truncated 64-bit field"))?,
            5 => self.skip(4).map(|_| Value::Scalar).ok_or((start, "truncated 32-bit field"))?,
            2 => {
                let length = self.varint().ok_or((start, "truncated or overlong length"))?;
                let length = usize::try_from(length).map_err(|_| (start, "length past the end"))?;
                Value::Bytes(self.skip(length).ok_or((start, "length past the end"))?)
            }
            3 | 4 => return Err((start, "groups are not supported")),
            _ => return Err((start, "unknown wire type")),
        };
        let payload_at = match value {
            Value::Bytes(payload) => self.position - payload.len(),
            Value::Scalar => self.position,
        };
        Ok(Field { number, value, payload_at })
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in 0..10 {
            let byte = *self.bytes.get(self.position)?;
            self.position += 1;
            value |= u64::from(byte & 0x7f) << (shift * 7);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn skip(&mut self, length: usize) -> Option<&'a [u8]> {
        let end = self.position.checked_add(length)?;
        let taken = self.bytes.get(self.position..end)?;
        self.position = end;
        Some(taken)
    }
}

/// Whether `bytes` is a complete, well-formed message (at its own level; nested fields are
/// checked when they are walked).
fn parses_cleanly(bytes: &[u8]) -> bool {
    fields(bytes).all(|field| field.is_ok())
}

/// Valid UTF-8 with no control characters other than tab and line breaks.
fn as_text(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r')).then_some(text)
}

/// The text of field `number` in `message`, when it is one.
fn text_field(message: &[u8], number: u32) -> Option<&str> {
    fields(message).map_while(Result::ok).find_map(|field| match field.value {
        Value::Bytes(payload) if field.number == number => as_text(payload),
        _ => None,
    })
}

/// What the schema says a message is, where the data fits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    /// The top level: a `ResourceTable` or an `XmlNode`.
    Root,
    Package,
    Type,
    Entry,
    XmlNode,
    XmlElement,
    XmlAttribute,
    Unknown,
}

/// The context strings inside a message are emitted in.
#[derive(Debug, Clone)]
enum Scope {
    Generic,
    /// Inside a resource `Type`, with its name.
    Type(String),
    /// Inside a resource `Entry` (`{type}/{entry}`, named `entry`) or an XML attribute
    /// (`{path}@{attribute}`, named by the attribute or its sibling `name`).
    Named {
        location: String,
        name: String,
    },
    /// Inside an XML element: its path and its `name` attribute's value.
    Xml {
        path: String,
        context: Option<String>,
    },
}

struct Walker<'s> {
    out: Emitter<'s>,
    /// The field numbers from the top level down to the current field.
    numbers: Vec<u32>,
}

impl Walker<'_> {
    /// Walks the message in `bytes`, which starts at `base` in the file.
    fn message(
        &mut self,
        bytes: &[u8],
        base: usize,
        depth: usize,
        hint: Hint,
        scope: &Scope,
    ) -> Result<(), DecodeError> {
        let (hint, scope) = self.enter(bytes, hint, scope);
        for field in fields(bytes) {
            let field = field.map_err(|(at, message)| DecodeError::new(FORMAT, base + at, message))?;
            let Value::Bytes(payload) = field.value else { continue };
            self.numbers.push(field.number);
            let result = self.bytes_field(payload, base + field.payload_at, depth, hint, field.number, &scope);
            self.numbers.pop();
            result?;
        }
        Ok(())
    }

    /// Checks that a message fits its hint (else it is walked as [`Hint::Unknown`]) and gives
    /// the scope its strings are emitted in.
    fn enter<'c>(&self, bytes: &[u8], hint: Hint, scope: &'c Scope) -> (Hint, Cow<'c, Scope>) {
        let name = |number| text_field(bytes, number).map(cut_name);
        match (hint, scope) {
            (Hint::Type, _) => match name(2) {
                Some(type_name) => (Hint::Type, Cow::Owned(Scope::Type(type_name))),
                None => (Hint::Unknown, Cow::Borrowed(scope)),
            },
            (Hint::Entry, Scope::Type(type_name)) => match name(2) {
                Some(entry) => {
                    (Hint::Entry, Cow::Owned(Scope::Named { location: format!("{type_name}/{entry}"), name: entry }))
                }
                None => (Hint::Unknown, Cow::Borrowed(scope)),
            },
            (Hint::XmlElement, Scope::Generic | Scope::Xml { .. }) => {
                let Some(element) = name(3) else { return (Hint::Unknown, Cow::Borrowed(scope)) };
                let path = match scope {
                    Scope::Xml { path, .. } => format!("{path}/{element}"),
                    _ => element,
                };
                (Hint::XmlElement, Cow::Owned(Scope::Xml { path, context: name_attribute(bytes) }))
            }
            (Hint::XmlAttribute, Scope::Xml { path, context }) => match name(2) {
                Some(attribute) => {
                    let label = match context {
                        Some(context) if attribute == "value" => context.clone(),
                        _ => attribute.clone(),
                    };
                    (
                        Hint::XmlAttribute,
                        Cow::Owned(Scope::Named { location: format!("{path}@{attribute}"), name: label }),
                    )
                }
                None => (Hint::Unknown, Cow::Borrowed(scope)),
            },
            (Hint::Package, _) if name(2).is_none() => (Hint::Unknown, Cow::Borrowed(scope)),
            (Hint::Root | Hint::Package | Hint::XmlNode | Hint::Unknown, _) => (hint, Cow::Borrowed(scope)),
            // A hint whose parent did not fit the schema.
            _ => (Hint::Unknown, Cow::Borrowed(scope)),
        }
    }

    fn bytes_field(
        &mut self,
        payload: &[u8],
        at: usize,
        depth: usize,
        hint: Hint,
        number: u32,
        scope: &Scope,
    ) -> Result<(), DecodeError> {
        let child = match (hint, number) {
            (Hint::Root, 1) | (Hint::XmlNode, 1) => Some(Hint::XmlElement),
            (Hint::Root, 2) => Some(Hint::Package),
            (Hint::Package, 3) => Some(Hint::Type),
            (Hint::Type, 3) => Some(Hint::Entry),
            (Hint::XmlElement, 4) => Some(Hint::XmlAttribute),
            (Hint::XmlElement, 5) => Some(Hint::XmlNode),
            // Names, namespaces and the compiled copy of an attribute value: structure, or a
            // string emitted elsewhere.
            (Hint::Package | Hint::Type | Hint::Entry, 2)
            | (Hint::XmlElement, 1..=3)
            | (Hint::XmlAttribute, 1 | 2 | 6)
            | (Hint::XmlNode, 3) => return Ok(()),
            _ => None,
        };
        let text = as_text(payload);
        let nested = !payload.is_empty() && parses_cleanly(payload);
        // A payload that parses is a message when the schema expects one there, when it is not
        // text, or when it starts with a tab or line break: the tags of fields 1 (`\t`, `\n`,
        // `\r`) are those, and strings seldom start so. Otherwise text wins: it parsed by chance.
        let control_first = payload.first().is_some_and(|&b| matches!(b, b'\t' | b'\n' | b'\r'));
        if nested && (child.is_some() || text.is_none() || control_first) {
            if depth + 1 >= MAX_DEPTH {
                return Err(DecodeError::new(FORMAT, at, "messages nested deeper than 64"));
            }
            return self.message(payload, at, depth + 1, child.unwrap_or(Hint::Unknown), scope);
        }
        let Some(text) = text else { return Ok(()) };
        match scope {
            Scope::Named { location, name } => self.emit(at, location, Some(name), text),
            Scope::Xml { path, context } if hint == Hint::XmlNode && number == 2 => {
                self.emit(at, path, context.as_deref(), text)
            }
            _ => {
                let location = self.numbers.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
                self.emit(at, &location, None, text)
            }
        }
    }

    fn emit(&mut self, at: usize, location: &str, name: Option<&str>, value: &str) -> Result<(), DecodeError> {
        if value.chars().nth(MIN_CHARS - 1).is_none() {
            return Ok(());
        }
        self.out.emit(at, location, name, value)
    }
}

/// The value of the `name` attribute among an `XmlElement`'s attributes (field 4).
fn name_attribute(element: &[u8]) -> Option<String> {
    fields(element).map_while(Result::ok).find_map(|field| match field.value {
        Value::Bytes(attribute) if field.number == 4 && text_field(attribute, 2) == Some("name") => {
            text_field(attribute, 3).map(str::to_owned)
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::axml::Element;
    use crate::corpus::protobuf::{bytes, message, resource_table, varint, varint_field, xml};
    use crate::decode::MAX_NAME_CHARS;
    use crate::decode::testing::{Found, collect, found};
    use proptest::prelude::*;

    fn run(input: &[u8]) -> (Found, Result<(), DecodeError>) {
        collect(|sink| decode(input, sink))
    }

    const KEY: &str = "AIzaSyD-planted-key-0123456789abcdefghi";
    /// Printable, and also a well-formed message (field 4, 32 bytes): text must win.
    const MESSAGE_LOOKALIKE: &str = "\" abcdefghijklmnopqrstuvwxyz012345";
    const ENTRIES: &[(&str, &str, &str)] = &[
        ("string", "app_name", "Example"),
        ("string", "google_api_key", KEY),
        ("string", "gcm_defaultSenderId", "123456789012"),
        ("bool", "flag_something", "unused"),
        ("xml", "config", "res/xml/network_security_config.xml"),
        ("string", "lookalike", MESSAGE_LOOKALIKE),
    ];

    #[test]
    fn planted_key_in_a_resource_table_comes_back_named() {
        assert!(parses_cleanly(MESSAGE_LOOKALIKE.as_bytes()));
        let (found_strings, result) = run(&resource_table("com.example", ENTRIES));
        assert_eq!(result, Ok(()));
        assert_eq!(
            found_strings,
            [
                found("string/google_api_key", Some("google_api_key"), KEY),
                found("string/gcm_defaultSenderId", Some("gcm_defaultSenderId"), "123456789012"),
                found("string/lookalike", Some("lookalike"), MESSAGE_LOOKALIKE),
                found("xml/config", Some("config"), "res/xml/network_security_config.xml"),
                found("4.1", None, "Android Asset Packaging Tool (aapt)"),
                found("4.2", None, "2.19-SOONG BUILD NUMBER PLACEHOLDER"),
            ]
        );
    }

    fn manifest() -> Element {
        Element::new("manifest").attribute("package", "com.example.app").child(
            Element::new("application")
                .attribute("android:label", "Example")
                .child(
                    Element::new("meta-data")
                        .attribute("android:value", KEY)
                        .attribute("android:name", "com.google.android.geo.API_KEY"),
                )
                .child(Element::new("meta-data").attribute("android:value", "value-without-a-name")),
        )
    }

    #[test]
    fn manifest_meta_data_value_is_named_by_its_sibling_name() {
        let (found_strings, result) = run(&xml(&manifest()));
        assert_eq!(result, Ok(()));
        assert_eq!(
            found_strings,
            [
                found("manifest@package", Some("package"), "com.example.app"),
                found("manifest/application/meta-data@value", Some("com.google.android.geo.API_KEY"), KEY),
                found("manifest/application/meta-data@name", Some("name"), "com.google.android.geo.API_KEY"),
                found("manifest/application/meta-data@value", Some("value"), "value-without-a-name"),
            ]
        );
    }

    #[test]
    fn xml_text_is_emitted_with_the_element_path_and_name() {
        let root = Element::new("resources")
            .child(Element::new("string").attribute("name", "backend_secret").child(Element::text(KEY)));
        let (found_strings, result) = run(&xml(&root));
        assert_eq!(result, Ok(()));
        assert_eq!(
            found_strings,
            [
                found("resources/string@name", Some("name"), "backend_secret"),
                found("resources/string", Some("backend_secret"), KEY),
            ]
        );
    }

    #[test]
    fn unknown_messages_give_their_strings_at_field_paths() {
        // Shaped like BundleConfig.pb: nothing in the aapt2 schema fits, so nothing is named.
        let mut inner = Vec::new();
        bytes(&mut inner, 3, b"some-unknown-config-value");
        bytes(&mut inner, 4, &[0xff, 0x00, 0x01]);
        inner.extend_from_slice(&varint_field(5, 300));
        let mut file = Vec::new();
        message(&mut file, 2, &inner);
        bytes(&mut file, 7, b"short");
        bytes(&mut file, 9, KEY.as_bytes());
        file.extend_from_slice(&[0x0d, 1, 2, 3, 4, 0x11, 1, 2, 3, 4, 5, 6, 7, 8]);
        let (found_strings, result) = run(&file);
        assert_eq!(result, Ok(()));
        assert_eq!(found_strings, [found("2.3", None, "some-unknown-config-value"), found("9", None, KEY)]);
    }

    #[test]
    fn truncation_at_every_length_never_panics() {
        let file = resource_table("com.example", ENTRIES);
        for len in 0..file.len() {
            let (found_strings, _) = run(&file[..len]);
            assert!(found_strings.len() <= 6);
        }
        // A cut inside the package (the second top-level field, after the source pool and
        // before the 76-byte tool fingerprint) is an error at the package's tag.
        let package_at = 2 + usize::from(file[1]);
        assert_eq!(file[package_at], 0x12);
        assert_eq!(run(&file[..file.len() - 100]).1.unwrap_err().offset, package_at);
    }

    #[test]
    fn malformed_wire_data_is_an_error_at_its_offset() {
        let mut prefix = Vec::new();
        bytes(&mut prefix, 1, KEY.as_bytes());
        let cases: &[(&[u8], &str)] = &[
            (&[0x02, 0x00], "field number 0"),
            (&[0x08, 0xff], "truncated or overlong varint"),
            (&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], "truncated or overlong varint"),
            (&[0x0a, 0x05, b'a'], "length past the end"),
            (&[0x0b], "groups are not supported"),
            (&[0x0c], "groups are not supported"),
            (&[0x0e], "unknown wire type"),
            (&[0x09, 1, 2, 3], "truncated 64-bit field"),
            (&[0x0d, 1, 2], "truncated 32-bit field"),
        ];
        for (tail, message) in cases {
            let mut file = prefix.clone();
            file.extend_from_slice(tail);
            let (found_strings, result) = run(&file);
            // The field before the bad one is still emitted.
            assert_eq!(found_strings, [found("1", None, KEY)], "{message}");
            assert_eq!(result, Err(DecodeError::new(FORMAT, prefix.len(), *message)));
        }
    }

    #[test]
    fn huge_declared_length_allocates_nothing() {
        let mut file = vec![0x0a];
        varint(&mut file, 1 << 62);
        file.extend_from_slice(b"tiny");
        assert_eq!(run(&file).1.unwrap_err().message, "length past the end");
    }

    #[test]
    fn deep_nesting_stops_at_64_levels_without_overflowing_the_stack() {
        let mut file = Vec::new();
        bytes(&mut file, 2, KEY.as_bytes());
        for _ in 0..10_000 {
            let mut outer = Vec::new();
            message(&mut outer, 1, &file);
            file = outer;
        }
        let (found_strings, result) = run(&file);
        assert!(found_strings.is_empty());
        assert!(result.unwrap_err().message.contains("deeper than 64"));
    }

    #[test]
    fn nesting_up_to_the_cap_is_read() {
        let mut file = Vec::new();
        bytes(&mut file, 2, KEY.as_bytes());
        for _ in 0..MAX_DEPTH - 1 {
            let mut outer = Vec::new();
            message(&mut outer, 3, &file);
            file = outer;
        }
        let (found_strings, result) = run(&file);
        assert_eq!(result, Ok(()));
        assert_eq!(found_strings.len(), 1);
        assert_eq!(found_strings[0].2, KEY);
    }

    #[test]
    fn long_names_are_cut_in_locations() {
        let long = "n".repeat(10_000);
        let (found_strings, result) = run(&resource_table("p", &[("string", &long, KEY)]));
        assert_eq!(result, Ok(()));
        assert_eq!(found_strings[0].0.len(), "string/".len() + MAX_NAME_CHARS);
    }

    #[test]
    fn many_strings_under_one_long_name_hit_the_output_budget() {
        // An entry with a 256-character name and thousands of short strings: each emission
        // repeats the name, so the output budget, not the file size, bounds the work.
        let mut value = Vec::new();
        for _ in 0..20_000 {
            bytes(&mut value, 2, b"abcdefgh");
        }
        let long = "n".repeat(MAX_NAME_CHARS);
        let mut entry = Vec::new();
        bytes(&mut entry, 2, long.as_bytes());
        message(&mut entry, 6, &value);
        let mut kind = Vec::new();
        bytes(&mut kind, 2, b"string");
        message(&mut kind, 3, &entry);
        let mut package = Vec::new();
        bytes(&mut package, 2, b"p");
        message(&mut package, 3, &kind);
        let mut file = Vec::new();
        message(&mut file, 2, &package);
        let mut total = 0usize;
        let result = decode_within(
            &file,
            &mut |location: &str, name: Option<&str>, value: &str| {
                total += location.len() + name.map_or(0, str::len) + value.len();
            },
            1 << 20,
        );
        assert!(result.unwrap_err().message.contains("budget"));
        assert!(total <= 1 << 20);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = run(&input);
        }

        #[test]
        fn mutated_tables_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut file = resource_table("com.example", ENTRIES);
            for (index, byte) in flips {
                let at = index.index(file.len());
                file[at] = byte;
            }
            let _ = run(&file);
        }
    }
}
