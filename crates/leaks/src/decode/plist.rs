//! Property list reader: `Info.plist`, `GoogleService-Info.plist` and the other plists of an iOS
//! app, binary (`bplist00`), XML or ASCII (OpenStep), parsed by the `plist` crate. Each string
//! value is emitted with its key path as location (`API_KEY`,
//! `NSAppTransportSecurity.NSExceptionDomains[2]`) and the nearest dictionary key as name;
//! `<data>` values that are printable UTF-8 are emitted too; numbers, dates, booleans and UIDs
//! are not, and neither are dictionary keys themselves.
//!
//! The crate parses without recursion but builds the whole tree first, and drops it
//! recursively; a binary plist may also refer to one object from many places, so a small file
//! can stand for a huge tree. Before the crate sees a file, a linear pre-pass therefore bounds
//! what it will build: for XML and ASCII plists the nesting depth, read the way the crate's
//! tokenizers read it (quick-xml for XML); for binary plists the nesting depth and the size of
//! the tree with every shared object counted at each place it is used. Files over either bound
//! are refused with a [`DecodeError`] (the caller's raw-byte pass still reads them). Values
//! nested deeper than [`MAX_DEPTH`] are not emitted.

use std::fmt::Write as _;
use std::io::Cursor;

use plist::Value;

use super::{DecodeError, Emitter, Sink, output_budget};

const BINARY: &str = "binary plist";
const XML: &str = "XML plist";
const ASCII: &str = "ASCII plist";

/// Values nested deeper than this are not emitted.
pub const MAX_DEPTH: usize = 64;
/// Files nested deeper than this are refused before parsing. Dropping a parsed tree takes
/// about 150 bytes of stack per level in a debug build, so 512 levels stay far below a
/// thread's stack.
const MAX_PARSE_DEPTH: usize = 512;
/// How far into the file [`sniff`] looks for the plist markup.
const SNIFF_BYTES: usize = 256;
/// The budget for the tree a binary plist expands to, in bytes: a fixed part plus a multiple
/// of the file size, with every value counted at [`NODE_COST`] plus its payload.
const EXPANSION_BASE: u64 = 16 << 20;
const EXPANSION_PER_BYTE: u64 = 32;
const NODE_COST: u64 = 32;

/// Whether `bytes` look like a plist: the binary magic `bplist00`, or XML markup whose first
/// 256 bytes hold a `<plist` element or a `<!DOCTYPE plist` (other XML is left to the text
/// scan).
pub fn sniff(bytes: &[u8]) -> bool {
    if bytes.starts_with(b"bplist00") {
        return true;
    }
    let head = bytes.get(..SNIFF_BYTES).unwrap_or(bytes);
    starts_with_markup(head) && (contains(head, b"<plist") || contains(head, b"<!DOCTYPE plist"))
}

/// Emits every string value with its key path; see the module documentation.
pub fn decode(bytes: &[u8], sink: &mut dyn Sink) -> Result<(), DecodeError> {
    let (format, value) = parse(bytes)?;
    let mut walker = Walker { out: Emitter::new(sink, format, output_budget(bytes.len())), path: String::new() };
    walker.walk(&value, None, 0)
}

fn parse(bytes: &[u8]) -> Result<(&'static str, Value), DecodeError> {
    let (format, parsed) = if bytes.starts_with(b"bplist00") {
        check_binary(bytes)?;
        (BINARY, Value::from_reader(Cursor::new(bytes)))
    } else if bytes.starts_with(b"bplist") {
        return Err(DecodeError::new(BINARY, 6, "unsupported binary plist version"));
    } else if starts_with_markup(bytes) {
        check_depth(XML, xml_depth(bytes)?)?;
        (XML, Value::from_reader_xml(bytes))
    } else {
        check_depth(ASCII, ascii_depth(bytes))?;
        (ASCII, Value::from_reader_ascii(bytes))
    };
    // The crate's errors carry the offset in their text only.
    let value = parsed.map_err(|error| DecodeError::new(format, 0, error.to_string()))?;
    Ok((format, value))
}

/// Walks the parsed tree and passes strings to the sink through the shared [`Emitter`] caps.
struct Walker<'s> {
    out: Emitter<'s>,
    /// The key path of the value being walked; each level appends to it and truncates back.
    path: String,
}

impl Walker<'_> {
    fn walk(&mut self, value: &Value, name: Option<&str>, depth: usize) -> Result<(), DecodeError> {
        match value {
            Value::String(text) => self.emit(name, text),
            Value::Data(data) => match std::str::from_utf8(data) {
                Ok(text) if is_printable(text) => self.emit(name, text),
                _ => Ok(()),
            },
            Value::Array(items) if depth < MAX_DEPTH => {
                let parent = self.path.len();
                for (index, item) in items.iter().enumerate() {
                    let _ = write!(self.path, "[{index}]");
                    let walked = self.walk(item, name, depth + 1);
                    self.path.truncate(parent);
                    walked?;
                }
                Ok(())
            }
            Value::Dictionary(entries) if depth < MAX_DEPTH => {
                let parent = self.path.len();
                for (key, item) in entries {
                    if parent > 0 {
                        self.path.push('.');
                    }
                    self.path.push_str(key);
                    let walked = self.walk(item, Some(key), depth + 1);
                    self.path.truncate(parent);
                    walked?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn emit(&mut self, name: Option<&str>, value: &str) -> Result<(), DecodeError> {
        let location = if self.path.is_empty() { "(root)" } else { self.path.as_str() };
        self.out.emit(0, location, name, value)
    }
}

/// Printable text: no control characters other than tab, newline and carriage return.
fn is_printable(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Where `needle` next occurs in `bytes` at or after `from`.
fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let position = bytes.get(from..)?.windows(needle.len()).position(|window| window == needle)?;
    Some(from + position)
}

/// Whether the first thing after an optional UTF-8 byte order mark and white space is `<`.
fn starts_with_markup(bytes: &[u8]) -> bool {
    let body = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

fn check_depth(format: &'static str, depth: usize) -> Result<(), DecodeError> {
    if depth > MAX_PARSE_DEPTH {
        return Err(DecodeError::new(format, 0, format!("nested deeper than {MAX_PARSE_DEPTH} levels")));
    }
    Ok(())
}

/// The deepest element nesting of an XML document, as quick-xml (with the plist crate's
/// settings: end names checked, empty elements expanded) reads it: comments end at the first
/// `-->` after `<!--`, CDATA at `]]>`, processing instructions at `?>`, tags at the first `>`
/// outside quotes. Every element counts, not only `<array>` and `<dict>`, so the result is at
/// least the depth the crate builds. A document type with an internal subset is refused rather
/// than parsed, and so is any other `<!` markup quick-xml would not read as a comment or CDATA.
fn xml_depth(bytes: &[u8]) -> Result<usize, DecodeError> {
    let refuse = |at: usize| Err(DecodeError::new(XML, at, "unsupported <! markup"));
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut i = 0;
    while let Some(at) = bytes.get(i..).and_then(|rest| rest.iter().position(|&b| b == b'<')).map(|p| i + p) {
        let rest = bytes.get(at..).unwrap_or_default();
        // Each arm finds where the markup ends; an unclosed one is an error for the crate too.
        let end = if rest.starts_with(b"<!--") {
            find(bytes, at + 4, b"-->").map(|end| end + 3)
        } else if rest.starts_with(b"<![CDATA[") {
            find(bytes, at + 9, b"]]>").map(|end| end + 3)
        } else if rest.starts_with(b"<!D") || rest.starts_with(b"<!d") {
            match doctype_end(bytes, at + 2) {
                Ok(end) => end,
                Err(()) => return refuse(at),
            }
        } else if rest.starts_with(b"<!") {
            return refuse(at);
        } else if rest.starts_with(b"<?") {
            find(bytes, at + 2, b"?>").map(|end| end + 2)
        } else {
            let end = tag_end(bytes, at + 1);
            if let Some(end) = end {
                let tag = bytes.get(at + 1..end).unwrap_or_default();
                if tag.starts_with(b"/") {
                    depth = depth.saturating_sub(1);
                } else if !tag.ends_with(b"/") {
                    depth += 1;
                    deepest = deepest.max(depth);
                    if deepest > MAX_PARSE_DEPTH {
                        return Ok(deepest);
                    }
                }
            }
            end.map(|end| end + 1)
        };
        match end {
            Some(end) => i = end,
            None => break,
        }
    }
    Ok(deepest)
}

/// The end (just past `>`) of a tag whose name starts at `from`: the first `>` outside single
/// or double quotes, as quick-xml's element parser finds it.
fn tag_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in bytes.get(from..)?.iter().enumerate() {
        match (quote, b) {
            (None, b'>') => return Some(from + i),
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(open), _) if open == b => quote = None,
            _ => {}
        }
    }
    None
}

/// The end (just past `>`) of a document type declaration starting at `from`: the first `>`
/// outside quotes. `Err` for an internal subset (`[`), which is refused.
fn doctype_end(bytes: &[u8], from: usize) -> Result<Option<usize>, ()> {
    let mut quote = None;
    for (i, &b) in bytes.get(from..).unwrap_or_default().iter().enumerate() {
        match (quote, b) {
            (None, b'>') => return Ok(Some(from + i + 1)),
            (None, b'[') => return Err(()),
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(open), _) if open == b => quote = None,
            _ => {}
        }
    }
    Ok(None)
}

/// The deepest `(`/`{` nesting of an ASCII plist, read the way the crate's ASCII tokenizer
/// reads it (quoted strings with their escapes, `//` and `/* */` comments, and unquoted words,
/// which run until a space, tab, carriage return, `)`, `;` or `,`). Where the tokenizer would
/// stop with an error, counting may stop too; counting on is never lower.
fn ascii_depth(bytes: &[u8]) -> usize {
    let mut reader = ByteReader { bytes, at: 0 };
    let (mut depth, mut deepest) = (0usize, 0usize);
    while let Some(c) = reader.next() {
        match c {
            b'(' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b'}' => depth = depth.saturating_sub(1),
            b'\'' | b'"' => {
                if reader.quoted(c).is_none() {
                    break;
                }
            }
            b'/' => match reader.peek() {
                Some(b'/') => {
                    while reader.peek().is_some_and(|b| b != b'\n') {
                        reader.next();
                    }
                }
                Some(b'*') => {
                    if reader.block_comment().is_none() {
                        break;
                    }
                }
                Some(_) => reader.word(),
                None => break,
            },
            b',' | b';' | b'=' | b' ' | b'\r' | b'\t' | b'\n' => {}
            _ => reader.word(),
        }
    }
    deepest
}

/// A cursor over the bytes of an ASCII plist, with the tokenizer's look-ahead of one byte.
struct ByteReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl ByteReader<'_> {
    fn next(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// The rest of an unquoted word.
    fn word(&mut self) {
        while self.peek().is_some_and(|b| !matches!(b, b' ' | b')' | b'\r' | b'\t' | b';' | b',')) {
            self.next();
        }
    }

    /// The rest of a quoted string; `None` where the tokenizer fails for sure.
    fn quoted(&mut self, quote: u8) -> Option<()> {
        loop {
            let c = self.next()?;
            if c == quote {
                return Some(());
            }
            if c != b'\\' {
                continue;
            }
            match self.next()? {
                b'\\' | b'"' | b'\'' | b'a' | b'b' | b'f' | b'n' | b'r' | b't' | b'v' => {}
                b'0'..=b'7' => {
                    self.next()?;
                    self.next()?;
                }
                b'U' => {
                    let unit = self.hex_unit()?;
                    if (0xd800..=0xdfff).contains(&unit) {
                        if self.next()? != b'\\' || !matches!(self.peek(), Some(b'u' | b'U')) {
                            return None;
                        }
                        self.next()?;
                        self.hex_unit()?;
                    }
                }
                _ => return None,
            }
        }
    }

    /// Four hex digits of a `\U` escape, parsed as the tokenizer parses them.
    fn hex_unit(&mut self) -> Option<u16> {
        let digits = [self.next()?, self.next()?, self.next()?, self.next()?];
        u16::from_str_radix(std::str::from_utf8(&digits).ok()?, 16).ok()
    }

    /// A `/* */` comment, the `*` not yet read. Like the tokenizer, a `/` right after any `*`
    /// read as the last byte of a step ends it, the opening one included (`/*/` is a comment).
    fn block_comment(&mut self) -> Option<()> {
        let mut latest = b' ';
        loop {
            if latest == b'*' && matches!(self.next(), Some(b'/') | None) {
                return Some(());
            }
            latest = self.next()?;
        }
    }
}

/// A value of a binary plist, as far as the expansion check needs it.
enum Object {
    /// A scalar, string or data value with the bytes it takes once parsed.
    Leaf(u64),
    /// An array or dictionary: where its `count` object references start.
    Container { refs_at: usize, count: usize },
}

/// An array or dictionary being walked by [`check_binary`].
struct Frame {
    index: usize,
    refs_at: usize,
    count: usize,
    next: usize,
    cost: u64,
    height: usize,
}

/// Checks that the binary plist's tree, with every shared object counted at each place it is
/// used, stays within the expansion budget and [`MAX_PARSE_DEPTH`] levels, and has no cycles.
/// It reads the trailer, offset table and objects as the crate does, each object once
/// (memoised), so the check is linear in the file.
fn check_binary(bytes: &[u8]) -> Result<(), DecodeError> {
    let error = |offset: usize, message: &str| DecodeError::new(BINARY, offset, message);
    let trailer_at = bytes.len().checked_sub(32).filter(|&at| at >= 8).ok_or_else(|| error(0, "too short"))?;
    let field = |at: usize| be_uint(bytes, trailer_at + at, 8).ok_or_else(|| error(trailer_at, "trailer truncated"));
    let (offset_size, ref_size) = (
        bytes.get(trailer_at + 6).copied().map_or(0, usize::from),
        bytes.get(trailer_at + 7).copied().map_or(0, usize::from),
    );
    if !matches!(offset_size, 1..=4 | 8) || !matches!(ref_size, 1..=4 | 8) {
        return Err(error(trailer_at + 6, "bad offset or reference size"));
    }
    let (count, root, table_at) = (field(8)?, field(16)?, field(24)?);
    let table_end = count.checked_mul(offset_size as u64).and_then(|size| size.checked_add(table_at));
    let (count, table_at) = match (table_end, usize::try_from(count), usize::try_from(table_at)) {
        (Some(end), Ok(count), Ok(table_at)) if end <= trailer_at as u64 => (count, table_at),
        _ => return Err(error(trailer_at + 24, "offset table lies outside the file")),
    };
    let budget = EXPANSION_BASE
        .saturating_add(EXPANSION_PER_BYTE.saturating_mul(u64::try_from(bytes.len()).unwrap_or(u64::MAX)));
    let too_big = || error(0, "expands to too large a tree (objects shared many times)");

    // Per object: 0 not seen, 1 being walked, 2 done (with its cost and height memoised).
    let mut state = vec![0u8; count];
    let mut cost = vec![0u64; count];
    let mut height = vec![0usize; count];
    let object = |index: usize| -> Result<Object, DecodeError> {
        let offset = be_uint(bytes, table_at + index * offset_size, offset_size)
            .and_then(|offset| usize::try_from(offset).ok())
            .filter(|&offset| offset < trailer_at)
            .ok_or_else(|| error(table_at, "object offset lies outside the file"))?;
        parse_object(bytes, offset, ref_size, trailer_at).ok_or_else(|| error(offset, "malformed object"))
    };
    let root =
        usize::try_from(root).ok().filter(|&root| root < count).ok_or_else(|| error(trailer_at + 16, "bad root"))?;

    let enter = |index: usize, stack: &mut Vec<Frame>, state: &mut [u8]| -> Result<Option<u64>, DecodeError> {
        match object(index)? {
            Object::Leaf(leaf) => Ok(Some(leaf)),
            Object::Container { refs_at, count } => {
                if stack.len() >= MAX_PARSE_DEPTH {
                    return Err(error(0, "nested too deep"));
                }
                state[index] = 1;
                stack.push(Frame { index, refs_at, count, next: 0, cost: NODE_COST, height: 1 });
                Ok(None)
            }
        }
    };
    let mut stack: Vec<Frame> = Vec::new();
    if let Some(leaf) = enter(root, &mut stack, &mut state)? {
        return if leaf > budget { Err(too_big()) } else { Ok(()) };
    }
    while let Some(frame) = stack.last_mut() {
        if frame.next == frame.count {
            // The container is done: memoise it and add it to its parent.
            let Some(done) = stack.pop() else { break };
            state[done.index] = 2;
            cost[done.index] = done.cost;
            height[done.index] = done.height;
            if let Some(parent) = stack.last_mut() {
                parent.cost = parent.cost.saturating_add(done.cost);
                parent.height = parent.height.max(done.height + 1);
                if parent.cost > budget {
                    return Err(too_big());
                }
                if parent.height > MAX_PARSE_DEPTH {
                    return Err(error(0, "nested too deep"));
                }
            }
            continue;
        }
        let at = frame.refs_at + frame.next * ref_size;
        frame.next += 1;
        let child = be_uint(bytes, at, ref_size)
            .and_then(|child| usize::try_from(child).ok())
            .filter(|&child| child < count)
            .ok_or_else(|| error(at, "object reference out of range"))?;
        let (child_cost, child_height) = match state[child] {
            0 => match enter(child, &mut stack, &mut state)? {
                Some(leaf) => {
                    state[child] = 2;
                    cost[child] = leaf;
                    (leaf, 0)
                }
                // A container is added to this frame when it is done.
                None => continue,
            },
            1 => return Err(error(at, "object contains itself")),
            _ => (cost[child], height[child]),
        };
        if let Some(frame) = stack.last_mut() {
            frame.cost = frame.cost.saturating_add(child_cost);
            frame.height = frame.height.max(child_height + 1);
            if frame.cost > budget {
                return Err(too_big());
            }
            if frame.height > MAX_PARSE_DEPTH {
                return Err(error(0, "nested too deep"));
            }
        }
    }
    Ok(())
}

/// The object at `offset`: its marker byte, its length (inline, or a following integer object
/// as the crate reads it) and, for arrays and dictionaries, where the references start. `None`
/// for anything the crate would refuse to read.
fn parse_object(bytes: &[u8], offset: usize, ref_size: usize, trailer_at: usize) -> Option<Object> {
    let marker = *bytes.get(offset)?;
    let (kind, low) = (marker >> 4, marker & 0x0f);
    let length = || -> Option<(u64, usize)> {
        if low != 0x0f {
            return Some((u64::from(low), offset + 1));
        }
        let size = 1usize << (bytes.get(offset + 1)? & 0x03);
        Some((be_uint(bytes, offset + 2, size)?, offset + 2 + size))
    };
    let leaf = |payload: u64| Some(Object::Leaf(NODE_COST.saturating_add(payload)));
    match kind {
        0x0..=0x3 | 0x8 => leaf(16),
        0x4 | 0x5 => leaf(length()?.0),
        // UTF-16 is read as two bytes per unit and may become three bytes of UTF-8.
        0x6 => leaf(length()?.0.saturating_mul(5)),
        0xa | 0xd => {
            let (entries, refs_at) = length()?;
            let count = if kind == 0xd { entries.checked_mul(2)? } else { entries };
            // The crate checks that the references end before the trailer; so does this.
            let end = count.checked_mul(ref_size as u64)?.checked_add(refs_at as u64)?;
            (end <= trailer_at as u64).then_some(Object::Container { refs_at, count: usize::try_from(count).ok()? })
        }
        _ => None,
    }
}

/// The big-endian unsigned integer of `size` bytes (1 to 8) at `at`.
fn be_uint(bytes: &[u8], at: usize, size: usize) -> Option<u64> {
    let field = bytes.get(at..at.checked_add(size)?)?;
    Some(field.iter().fold(0u64, |value, &b| (value << 8) | u64::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::testing::{Found, collect, found};
    use plist::{Date, Dictionary};
    use proptest::prelude::*;

    fn run(bytes: &[u8]) -> (Found, Result<(), DecodeError>) {
        collect(|sink| decode(bytes, sink))
    }

    const KEY: &str = "AIzaSyD-planted-key-0123456789abcdefghi";
    const SECRET: &str = "sk_live_planted0123456789abcdefABCDEF";

    /// A plist like an app's `Info.plist`: a nested dictionary and array, and values that are
    /// not emitted (numbers, booleans, dates, binary data).
    fn info_plist() -> Value {
        let mut ats = Dictionary::new();
        ats.insert(
            "NSExceptionDomains".into(),
            Value::Array(vec!["a.example.com".into(), "b.example.com".into(), SECRET.into()]),
        );
        let mut root = Dictionary::new();
        root.insert("API_KEY".into(), KEY.into());
        root.insert("NSAppTransportSecurity".into(), Value::Dictionary(ats));
        root.insert("Count".into(), 3.into());
        root.insert("Enabled".into(), true.into());
        root.insert("Built".into(), Value::Date(Date::from(std::time::SystemTime::UNIX_EPOCH)));
        root.insert("Token".into(), Value::Data(b"printable data value".to_vec()));
        root.insert("Icon".into(), Value::Data(vec![0x89, b'P', b'N', b'G', 0, 1]));
        Value::Dictionary(root)
    }

    fn info_plist_found() -> Found {
        vec![
            found("API_KEY", Some("API_KEY"), KEY),
            found("NSAppTransportSecurity.NSExceptionDomains[0]", Some("NSExceptionDomains"), "a.example.com"),
            found("NSAppTransportSecurity.NSExceptionDomains[1]", Some("NSExceptionDomains"), "b.example.com"),
            found("NSAppTransportSecurity.NSExceptionDomains[2]", Some("NSExceptionDomains"), SECRET),
            found("Token", Some("Token"), "printable data value"),
        ]
    }

    fn binary(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        value.to_writer_binary(&mut out).unwrap_or_default();
        out
    }

    fn xml(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        value.to_writer_xml(&mut out).unwrap_or_default();
        out
    }

    #[test]
    fn binary_plist_round_trip_with_nested_dict_and_array() {
        let bytes = binary(&info_plist());
        assert!(bytes.starts_with(b"bplist00") && sniff(&bytes));
        assert_eq!(run(&bytes), (info_plist_found(), Ok(())));
    }

    #[test]
    fn xml_plist_round_trip_with_nested_dict_and_array() {
        let bytes = xml(&info_plist());
        assert!(sniff(&bytes));
        assert_eq!(run(&bytes), (info_plist_found(), Ok(())));
    }

    #[test]
    fn google_service_info_api_key_is_named_by_its_key() {
        let bytes = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>CLIENT_ID</key>
	<string>123456789012-abcdefghijklmnopqrstuvwxyz012345.apps.googleusercontent.com</string>
	<key>API_KEY</key>
	<string>{KEY}</string>
	<key>GCM_SENDER_ID</key>
	<string>123456789012</string>
	<key>PLIST_VERSION</key>
	<string>1</string>
	<key>IS_ADS_ENABLED</key>
	<false></false>
	<!-- A comment with a </dict> in it. -->
</dict>
</plist>
"#
        );
        assert!(sniff(bytes.as_bytes()));
        let (found_strings, result) = run(bytes.as_bytes());
        assert_eq!(result, Ok(()));
        assert_eq!(found_strings[1], found("API_KEY", Some("API_KEY"), KEY));
        assert_eq!(found_strings.len(), 4);
    }

    #[test]
    fn ascii_plist_is_read() {
        let bytes =
            format!("// An OpenStep plist.\n{{ API_KEY = \"{KEY}\"; list = (one, \"two three\"); /* done */ }}");
        assert!(!sniff(bytes.as_bytes()));
        let (found_strings, result) = run(bytes.as_bytes());
        assert_eq!(result, Ok(()));
        assert_eq!(
            found_strings,
            [
                found("API_KEY", Some("API_KEY"), KEY),
                found("list[0]", Some("list"), "one"),
                found("list[1]", Some("list"), "two three"),
            ]
        );
    }

    #[test]
    fn root_string_and_root_array_are_located() {
        assert_eq!(run(&binary(&KEY.into())).0, [found("(root)", None, KEY)]);
        let array = Value::Array(vec![KEY.into()]);
        assert_eq!(run(&xml(&array)).0, [found("[0]", None, KEY)]);
    }

    #[test]
    fn sniff_takes_plists_and_leaves_other_xml_and_json() {
        assert!(sniff(b"bplist00"));
        assert!(sniff(b"\xef\xbb\xbf  <?xml version=\"1.0\"?>\n<plist version=\"1.0\"><dict/></plist>"));
        assert!(sniff(b"<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"x\">"));
        assert!(!sniff(b"<?xml version=\"1.0\"?>\n<manifest package=\"com.example\"/>"));
        assert!(!sniff(b"{\"api_key\": \"<plist\"}"));
        assert!(!sniff(b"bplist15"));
        assert!(!sniff(b""));
    }

    #[test]
    fn values_deeper_than_the_cap_are_not_emitted() {
        // Strings at depths 10, 64 and 65 (each array adds one level).
        let mut value = Value::from("depth-65-string");
        for depth in (0..65).rev() {
            let mut items = vec![value];
            if depth == 63 || depth == 9 {
                items.push(format!("depth-{}-string", depth + 1).into());
            }
            value = Value::Array(items);
        }
        for bytes in [binary(&value), xml(&value)] {
            let (found_strings, result) = run(&bytes);
            assert_eq!(result, Ok(()));
            let values: Vec<_> = found_strings.iter().map(|(_, _, value)| value.as_str()).collect();
            assert_eq!(values, ["depth-64-string", "depth-10-string"]);
        }
    }

    /// Runs `f` on a thread with a small stack (256 KiB), so unbounded recursion would overflow.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::thread::Result<T> {
        std::thread::Builder::new().stack_size(256 << 10).spawn(f).map_err(|e| Box::new(e) as _)?.join()
    }

    fn nested_xml(depth: usize, trailer: &str) -> Vec<u8> {
        let mut text = String::from("<plist>");
        text.push_str(&"<array>".repeat(depth));
        text.push_str("<string>bottom-string</string>");
        text.push_str(&"</array>".repeat(depth));
        text.push_str(trailer);
        text.push_str("</plist>");
        text.into_bytes()
    }

    #[test]
    fn plist_nested_10000_deep_is_refused_without_stack_overflow() {
        let deep = [
            nested_xml(10_000, ""),
            // Content after the root makes the crate fail after building the whole tree.
            nested_xml(10_000, "<string>after</string>"),
            format!("{}x{}", "(".repeat(10_000), ")".repeat(10_000)).into_bytes(),
            format!("{}a = b;{}", "{a = ".repeat(10_000), "};".repeat(10_000)).into_bytes(),
            chain_bplist(10_000),
        ];
        for (index, bytes) in deep.into_iter().enumerate() {
            let result = on_small_stack(move || run(&bytes).1);
            assert!(
                matches!(&result, Ok(Err(error)) if error.message.contains("deep")),
                "input {index}: {:?}",
                result.map_err(|_| "panicked")
            );
        }
    }

    #[test]
    fn plist_nested_to_the_parse_limit_is_read_without_stack_overflow() {
        for bytes in [nested_xml(MAX_PARSE_DEPTH - 2, ""), chain_bplist(MAX_PARSE_DEPTH - 1)] {
            let result = on_small_stack(move || run(&bytes));
            // The string at the bottom is deeper than MAX_DEPTH: nothing is emitted.
            assert!(result.is_ok_and(|(found_strings, result)| found_strings.is_empty() && result.is_ok()));
        }
    }

    /// A minimal binary plist writer for hostile layouts: the objects as given, a four-byte
    /// offset table, and a trailer naming `ref_size` and the root.
    fn bplist(objects: &[Vec<u8>], root: u64, ref_size: u8) -> Vec<u8> {
        let mut out = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        for object in objects {
            offsets.push(out.len() as u32);
            out.extend_from_slice(object);
        }
        let table_at = out.len() as u64;
        for offset in offsets {
            out.extend_from_slice(&offset.to_be_bytes());
        }
        out.extend_from_slice(&[0; 6]);
        out.extend_from_slice(&[4, ref_size]);
        out.extend_from_slice(&(objects.len() as u64).to_be_bytes());
        out.extend_from_slice(&root.to_be_bytes());
        out.extend_from_slice(&table_at.to_be_bytes());
        out
    }

    /// An array object of two-byte references (marker, then a two-byte count when long).
    fn array(refs: &[u16]) -> Vec<u8> {
        let mut out = if refs.len() < 15 { vec![0xa0 | refs.len() as u8] } else { vec![0xaf, 0x11] };
        if refs.len() >= 15 {
            out.extend_from_slice(&(refs.len() as u16).to_be_bytes());
        }
        for reference in refs {
            out.extend_from_slice(&reference.to_be_bytes());
        }
        out
    }

    fn ascii_string(text: &str) -> Vec<u8> {
        let mut out = vec![0x5f, 0x11];
        out.extend_from_slice(&(text.len() as u16).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
        out
    }

    /// Arrays nested `depth` deep, each holding the next, with a string at the bottom.
    fn chain_bplist(depth: usize) -> Vec<u8> {
        let mut objects: Vec<Vec<u8>> = (1..=depth).map(|next| array(&[next as u16])).collect();
        objects.push(ascii_string("bottom-string"));
        bplist(&objects, 0, 2)
    }

    #[test]
    fn hand_written_binary_plist_is_read() {
        let bytes = bplist(&[array(&[1, 1]), ascii_string(KEY)], 0, 2);
        assert_eq!(run(&bytes), (vec![found("[0]", None, KEY), found("[1]", None, KEY)], Ok(())));
    }

    #[test]
    fn binary_plist_offset_table_out_of_range_is_an_error() {
        let good = bplist(&[array(&[1]), ascii_string(KEY)], 0, 2);
        let trailer = good.len() - 32;
        for table_at in [good.len() as u64, u64::MAX - 2, (trailer - 4) as u64] {
            let mut bytes = good.clone();
            bytes[trailer + 24..].copy_from_slice(&table_at.to_be_bytes());
            assert!(run(&bytes).1.is_err(), "table at {table_at:#x}");
        }
        // An entry of the table pointing past the objects, and a huge object count.
        let mut bytes = good.clone();
        let table_at = trailer - 8;
        bytes[table_at + 4..table_at + 8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(run(&bytes).1.is_err());
        let mut bytes = good.clone();
        bytes[trailer + 8..trailer + 16].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(run(&bytes).1.is_err());
        // A reference and a root past the last object.
        assert!(run(&bplist(&[array(&[7]), ascii_string(KEY)], 0, 2)).1.is_err());
        assert!(run(&bplist(&[array(&[1]), ascii_string(KEY)], 9, 2)).1.is_err());
    }

    #[test]
    fn binary_plist_sharing_objects_exponentially_is_refused() {
        // Forty arrays, each referring twice to the next: 2^40 strings once expanded.
        let mut objects: Vec<Vec<u8>> = (1..=40u16).map(|next| array(&[next, next])).collect();
        objects.push(ascii_string(KEY));
        let (found_strings, result) = run(&bplist(&objects, 0, 2));
        assert!(found_strings.is_empty());
        assert!(result.is_err_and(|e| e.message.contains("too large")));

        // One 60 KB string referred to 20,000 times: 1.2 GB from a 100 KB file.
        let mut objects = vec![array(&[1; 20_000]), ascii_string(&"k".repeat(60_000))];
        objects.truncate(2);
        assert!(run(&bplist(&objects, 0, 2)).1.is_err_and(|e| e.message.contains("too large")));
    }

    #[test]
    fn binary_plist_shared_objects_within_the_budget_are_read() {
        let bytes = bplist(&[array(&[1; 100]), ascii_string(KEY)], 0, 2);
        let (found_strings, result) = run(&bytes);
        assert_eq!(result, Ok(()));
        assert_eq!(found_strings.len(), 100);
    }

    #[test]
    fn binary_plist_that_contains_itself_is_refused() {
        assert!(run(&bplist(&[array(&[0])], 0, 2)).1.is_err());
        assert!(run(&bplist(&[array(&[1]), array(&[0])], 0, 2)).1.is_err());
    }

    #[test]
    fn every_truncation_of_a_binary_or_xml_plist_never_panics() {
        for bytes in [binary(&info_plist()), xml(&info_plist())] {
            for len in 0..bytes.len() {
                let (found_strings, _) = run(&bytes[..len]);
                assert!(found_strings.len() <= 5);
            }
        }
    }

    #[test]
    fn string_limit_ends_in_an_error_for_the_raw_pass() {
        let mut count = 0;
        let mut sink = |_: &str, _: Option<&str>, _: &str| count += 1;
        let mut out = Emitter::new(&mut sink, XML, 1 << 20);
        out.strings = crate::decode::MAX_STRINGS - 1;
        let mut walker = Walker { out, path: String::new() };
        let value = Value::Array(vec![KEY.into(), KEY.into()]);
        assert!(walker.walk(&value, None, 0).is_err());
        assert_eq!(count, 1);
    }

    fn check_xml(input: &str, expected: usize) {
        assert_eq!(xml_depth(input.as_bytes()), Ok(expected), "{input}");
    }

    #[test]
    fn xml_depth_reads_markup_as_quick_xml_does() {
        check_xml("<plist><dict><key>a</key><string>b</string></dict></plist>", 3);
        check_xml("<a><!-- </a></a> --><b><c/></b></a>", 2);
        check_xml("<a><![CDATA[ </a></a> ]]><b/></a>", 1);
        check_xml("<?xml version=\"1.0\"?><a x='>' y=\"</a>\"><b></b></a>", 2);
        check_xml("<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"a>b\"><a/>", 0);
        check_xml("<!---->x<!--->still a comment</a>--><a>", 1);
        check_xml("<?pi </a> ?><a><a>", 2);
        check_xml("<a><b", 1);
        assert!(xml_depth(b"<!DOCTYPE x [ <!ENTITY e \"</a>\"> ]><a/>").is_err());
        assert!(xml_depth(b"<!ELEMENT a><a/>").is_err());
    }

    fn check_ascii(input: &str, expected: usize) {
        assert_eq!(ascii_depth(input.as_bytes()), expected, "{input}");
    }

    #[test]
    fn ascii_depth_reads_tokens_as_the_plist_crate_does() {
        check_ascii("{ a = (1, 2); b = { c = d; }; }", 2);
        check_ascii("( \"))}\", '))' )", 1);
        check_ascii("( \"a\\\")\" ( ) )", 2);
        check_ascii("( // ) comment\n ( ) )", 2);
        check_ascii("( /* ) */ ( ) )", 2);
        check_ascii("( /*/ ( )", 2);
        // A word runs over `(`, `{` and `}`: they are not structure inside it.
        check_ascii("( a{{{ b}}} )", 1);
        check_ascii("( \"\\U0041\\101\" ( ) )", 2);
    }

    /// The depth of a parsed tree, counting each array and dictionary as one level.
    fn value_depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
            Value::Dictionary(entries) => 1 + entries.values().map(value_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn xml_token() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "<array>",
            "</array>",
            "<dict>",
            "</dict>",
            "<key>k</key>",
            "<string>",
            "</string>",
            "<array/>",
            "<!--",
            "-->",
            "<![CDATA[",
            "]]>",
            "<?",
            "?>",
            "\"",
            "'",
            ">",
            "<",
            "x",
            " ",
        ])
    }

    fn ascii_token() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "(", ")", "{", "}", "\"", "'", "\\", "/*", "*/", "//", "\n", "a", " ", ";", "=", ",", "/", "*", "\\U",
        ])
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = run(&bytes);
            let _ = sniff(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_each_magic_never_panic(
            magic in prop::sample::select(vec!["bplist00", "<plist>", "<?xml version=\"1.0\"?><plist><dict>", "{", "("]),
            rest in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let mut bytes = magic.as_bytes().to_vec();
            bytes.extend_from_slice(&rest);
            let _ = run(&bytes);
        }

        #[test]
        fn patched_binary_plist_never_panics(patches in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = binary(&info_plist());
            let len = bytes.len();
            for (at, value) in patches {
                bytes[at % len] = value;
            }
            let _ = run(&bytes);
        }

        #[test]
        fn xml_depth_is_never_below_what_the_crate_builds(tokens in proptest::collection::vec(xml_token(), 0..40)) {
            let text = format!("<plist>{}</plist>", tokens.concat());
            if let (Ok(depth), Ok(value)) = (xml_depth(text.as_bytes()), Value::from_reader_xml(text.as_bytes())) {
                prop_assert!(value_depth(&value) <= depth, "{}", text);
            }
        }

        #[test]
        fn repeated_tricky_tokens_never_overflow_the_stack(
            xml_runs in proptest::collection::vec((xml_token(), 1usize..3000), 1..6),
            ascii_runs in proptest::collection::vec((ascii_token(), 1usize..3000), 1..6),
        ) {
            let mut xml_text = String::from("<plist>");
            for (token, times) in xml_runs {
                xml_text.push_str(&token.repeat(times));
            }
            let mut ascii_text = String::new();
            for (token, times) in ascii_runs {
                ascii_text.push_str(&token.repeat(times));
            }
            // A stack overflow aborts the test binary; an error or a parse is fine.
            let result = on_small_stack(move || (run(xml_text.as_bytes()).1.is_ok(), run(ascii_text.as_bytes()).1.is_ok()));
            prop_assert!(result.is_ok());
        }

        #[test]
        fn ascii_depth_is_never_below_what_the_crate_builds(tokens in proptest::collection::vec(ascii_token(), 0..40)) {
            let text = tokens.concat();
            if let Ok(value) = Value::from_reader_ascii(text.as_bytes()) {
                prop_assert!(value_depth(&value) <= ascii_depth(text.as_bytes()), "{}", text);
            }
        }
    }
}
