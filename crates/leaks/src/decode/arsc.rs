//! `resources.arsc` reader: the string resources of an APK with their names, so a value comes
//! with the `google_api_key` that labels it.
//!
//! The format is the chunked resource table of AOSP's `ResourceTypes.h`
//! (`frameworks/base/libs/androidfw/include/androidfw/ResourceTypes.h`): a `RES_TABLE_TYPE`
//! chunk holding the global value string pool (`ResStringPool_header`, UTF-8 or UTF-16) and one
//! `ResTable_package` per package, each with its type-name and key-name pools, `typeSpec`
//! chunks and `ResTable_type` chunks (dense 32-bit, 16-bit or sparse entry offsets; full or
//! compact entries; map entries for arrays and plurals). Every entry whose `Res_value` is a
//! string is emitted as `{type}/{key}` named `key`; map entries as `{type}/{key}[{i}]`. Global
//! pool strings no entry referenced follow as `string_pool[{i}]` when eight characters or longer.
//! Styles (span lists) are not read, and neither are configurations: a value is emitted once
//! per configuration that defines it.
//!
//! The chunk walker and the string pool reader are shared with the binary XML reader
//! ([`super::axml`]), which uses the same chunk and pool layout.

use super::{DecodeError, Emitter, Sink, output_budget};

const FORMAT: &str = "arsc";
pub(crate) const RES_STRING_POOL_TYPE: u16 = 0x0001;
const RES_TABLE_TYPE: u16 = 0x0002;
const RES_TABLE_PACKAGE_TYPE: u16 = 0x0200;
const RES_TABLE_TYPE_TYPE: u16 = 0x0201;
const CHUNK_HEADER_SIZE: usize = 8;
const STRING_POOL_HEADER_SIZE: usize = 28;
const UTF8_FLAG: u32 = 0x100;
/// `ResTable_package` up to and including `lastPublicKey` (older files stop there).
const PACKAGE_HEADER_MIN: usize = 284;
const TYPE_HEADER_MIN: usize = 20;
const FLAG_SPARSE: u8 = 0x01;
const FLAG_OFFSET16: u8 = 0x02;
const NO_ENTRY: u32 = 0xffff_ffff;
const NO_ENTRY16: u16 = 0xffff;
const FLAG_COMPLEX: u16 = 0x0001;
const FLAG_COMPACT: u16 = 0x0008;
pub(crate) const TYPE_STRING: u8 = 0x03;
/// Unreferenced pool strings with fewer characters are not emitted.
const MIN_CHARS: usize = 8;
/// Names (of types, keys, elements, attributes) are read up to this many bytes.
pub(crate) const MAX_NAME_BYTES: usize = 1024;

/// Emits the table's string values with their resource names, then the unreferenced rest of
/// the global string pool.
pub fn decode(bytes: &[u8], sink: &mut dyn Sink) -> Result<(), DecodeError> {
    decode_within(bytes, sink, output_budget(bytes.len()))
}

fn decode_within(bytes: &[u8], sink: &mut dyn Sink, budget: usize) -> Result<(), DecodeError> {
    // The table's declared size is not checked against the buffer here: a truncated file is
    // read up to the cut, which its innermost chunk reports.
    let table = Chunk::at(bytes, 0, usize::MAX, FORMAT)?;
    if table.kind != RES_TABLE_TYPE {
        return Err(DecodeError::new(FORMAT, 0, "not a resource table"));
    }
    let mut reader = TableReader { out: Emitter::new(sink, FORMAT, budget), global: None, referenced: Vec::new() };
    let walked = reader.table(bytes, &table);
    // The unreferenced pool strings are emitted even after an error in a package, so a broken
    // type chunk loses context but not the strings.
    let rest = reader.unreferenced();
    walked.and(rest)
}

struct TableReader<'a, 's> {
    out: Emitter<'s>,
    global: Option<StringPool<'a>>,
    /// Which global pool strings an entry has used; as long as the pool's offset array, which
    /// was checked against the chunk size.
    referenced: Vec<bool>,
}

impl<'a> TableReader<'a, '_> {
    fn table(&mut self, bytes: &'a [u8], table: &Chunk<'a>) -> Result<(), DecodeError> {
        for child in table.children(bytes, FORMAT) {
            let child = child?;
            match child.kind {
                RES_STRING_POOL_TYPE if self.global.is_none() => {
                    let pool = StringPool::parse(&child, FORMAT)?;
                    self.referenced = vec![false; pool.len()];
                    self.global = Some(pool);
                }
                RES_TABLE_PACKAGE_TYPE => self.package(bytes, &child)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn package(&mut self, bytes: &'a [u8], package: &Chunk<'a>) -> Result<(), DecodeError> {
        if package.header_size < PACKAGE_HEADER_MIN {
            return Err(DecodeError::new(FORMAT, package.offset, "package header too small"));
        }
        let type_strings = package.u32(268).unwrap_or(0) as usize;
        let key_strings = package.u32(276).unwrap_or(0) as usize;
        let mut types: Option<StringPool<'a>> = None;
        let mut keys: Option<StringPool<'a>> = None;
        for child in package.children(bytes, FORMAT) {
            let child = child?;
            match child.kind {
                RES_STRING_POOL_TYPE => {
                    // The header names each pool's offset; a file that gets them wrong still has
                    // the type names first and the key names second.
                    let relative = child.offset - package.offset;
                    let pool = StringPool::parse(&child, FORMAT)?;
                    if relative == type_strings || (types.is_none() && relative != key_strings) {
                        types = Some(pool);
                    } else if keys.is_none() || relative == key_strings {
                        keys = Some(pool);
                    }
                }
                RES_TABLE_TYPE_TYPE => self.type_chunk(&child, types.as_ref(), keys.as_ref())?,
                _ => {}
            }
        }
        Ok(())
    }

    fn type_chunk(
        &mut self,
        chunk: &Chunk<'a>,
        types: Option<&StringPool<'a>>,
        keys: Option<&StringPool<'a>>,
    ) -> Result<(), DecodeError> {
        let bad = |at: usize, message: &str| DecodeError::new(FORMAT, chunk.offset.saturating_add(at), message);
        if chunk.header_size < TYPE_HEADER_MIN {
            return Err(bad(0, "type chunk header too small"));
        }
        let id = chunk.u8(8).unwrap_or(0);
        let flags = chunk.u8(9).unwrap_or(0);
        let entry_count = chunk.u32(12).unwrap_or(0) as usize;
        let entries_start = chunk.u32(16).unwrap_or(0) as usize;
        let type_name = usize::from(id)
            .checked_sub(1)
            .and_then(|index| types?.get_name(index).ok())
            .unwrap_or_else(|| format!("type{id:#04x}"));
        self.out.charge(chunk.offset, type_name.len())?;
        // The loop is bounded by the declared count, but every step reads from the chunk first,
        // so a count larger than the chunk ends at the first offset past its end.
        for index in 0..entry_count {
            let entry_at = if flags & FLAG_SPARSE != 0 {
                let at = chunk.header_size + index * 4;
                let offset = chunk.u16(at + 2).ok_or_else(|| bad(at, "sparse entry past the chunk"))?;
                usize::from(offset) * 4
            } else if flags & FLAG_OFFSET16 != 0 {
                let at = chunk.header_size + index * 2;
                match chunk.u16(at).ok_or_else(|| bad(at, "entry offset past the chunk"))? {
                    NO_ENTRY16 => continue,
                    offset => usize::from(offset) * 4,
                }
            } else {
                let at = chunk.header_size + index * 4;
                match chunk.u32(at).ok_or_else(|| bad(at, "entry offset past the chunk"))? {
                    NO_ENTRY => continue,
                    offset => offset as usize,
                }
            };
            let at = entries_start.saturating_add(entry_at);
            self.entry(chunk, at, index, &type_name, keys)?;
        }
        Ok(())
    }

    /// One `ResTable_entry` at `at` (relative to the type chunk).
    fn entry(
        &mut self,
        chunk: &Chunk<'a>,
        at: usize,
        index: usize,
        type_name: &str,
        keys: Option<&StringPool<'a>>,
    ) -> Result<(), DecodeError> {
        let bad = |at: usize, message: &str| DecodeError::new(FORMAT, chunk.offset.saturating_add(at), message);
        if at >= chunk.bytes.len() {
            return Err(bad(at, "entry past the chunk"));
        }
        let (Some(size), Some(flags), Some(word)) = (chunk.u16(at), chunk.u16(at + 2), chunk.u32(at + 4)) else {
            return Err(bad(at, "entry past the chunk"));
        };
        let mut entry = Entry {
            at: chunk.offset.saturating_add(at),
            index,
            type_name,
            keys,
            key: word as usize,
            name: None,
            map: false,
        };
        if flags & FLAG_COMPACT != 0 {
            // Compact entries hold the key in the size field and the value inline.
            entry.key = usize::from(size);
            return self.value(&mut entry, 0, (flags >> 8) as u8, word);
        }
        if flags & FLAG_COMPLEX == 0 {
            if usize::from(size) < 8 {
                return Err(bad(at, "entry size too small"));
            }
            let value_at = at + usize::from(size);
            let (data_type, data) = res_value(chunk, value_at).ok_or_else(|| bad(value_at, "value past the chunk"))?;
            return self.value(&mut entry, 0, data_type, data);
        }
        entry.map = true;
        let count = chunk.u32(at + 12).ok_or_else(|| bad(at, "map entry past the chunk"))? as usize;
        let maps_at = at + usize::from(size);
        for map in 0..count {
            // Many entries may share one map; charging each item read keeps that linear.
            self.out.charge(entry.at, 12)?;
            let value_at = maps_at + map * 12 + 4;
            let (data_type, data) =
                res_value(chunk, value_at).ok_or_else(|| bad(value_at, "map value past the chunk"))?;
            self.value(&mut entry, map, data_type, data)?;
        }
        Ok(())
    }

    /// Item `position` of an entry: emitted when it is a string.
    fn value(
        &mut self,
        entry: &mut Entry<'_, 'a>,
        position: usize,
        data_type: u8,
        data: u32,
    ) -> Result<(), DecodeError> {
        if data_type != TYPE_STRING {
            return Ok(());
        }
        let global = self
            .global
            .as_ref()
            .ok_or_else(|| DecodeError::new(FORMAT, entry.at, "string value without a global string pool"))?;
        let value = global.get(data as usize)?;
        self.out.charge(entry.at, value.len())?;
        if let Some(seen) = self.referenced.get_mut(data as usize) {
            *seen = true;
        }
        // The key name is looked up once, at the entry's first string.
        if entry.name.is_none() {
            let name = entry.keys.and_then(|keys| keys.get_name(entry.key).ok());
            self.out.charge(entry.at, name.as_ref().map_or(0, String::len))?;
            entry.name = Some(name);
        }
        let name = entry.name.as_ref().and_then(Option::as_deref);
        let base = match name {
            Some(key) => format!("{}/{key}", entry.type_name),
            None => format!("{}/#{}", entry.type_name, entry.index),
        };
        let location = if entry.map { format!("{base}[{position}]") } else { base };
        self.out.emit(entry.at, &location, name, &value)
    }

    fn unreferenced(&mut self) -> Result<(), DecodeError> {
        let Some(global) = &self.global else { return Ok(()) };
        for (index, &seen) in self.referenced.iter().enumerate() {
            if seen {
                continue;
            }
            let value = global.get(index)?;
            self.out.charge(global.offset, value.len())?;
            if value.chars().nth(MIN_CHARS - 1).is_some() {
                self.out.emit(global.offset, &format!("string_pool[{index}]"), None, &value)?;
            }
        }
        Ok(())
    }
}

/// An entry being read: where it is, its type name, and its key name once looked up.
struct Entry<'t, 'a> {
    /// Where the entry starts in the file.
    at: usize,
    index: usize,
    type_name: &'t str,
    keys: Option<&'t StringPool<'a>>,
    key: usize,
    /// The key name, once looked up (`Some(None)` when it could not be read).
    name: Option<Option<String>>,
    /// A map entry, whose items are located by position.
    map: bool,
}

/// The `(dataType, data)` of the `Res_value` at `at`.
fn res_value(chunk: &Chunk<'_>, at: usize) -> Option<(u8, u32)> {
    Some((chunk.u8(at.checked_add(3)?)?, chunk.u32(at.checked_add(4)?)?))
}

/// One `ResChunk_header` and its bytes: `bytes` is the whole chunk, header included, cut to the
/// buffer. A chunk declared longer than the buffer (a truncated file) is still read up to the
/// cut; its parent's iterator then reports the truncation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk<'a> {
    pub(crate) kind: u16,
    pub(crate) header_size: usize,
    /// The declared size.
    pub(crate) size: usize,
    /// Where the chunk starts in the file.
    pub(crate) offset: usize,
    pub(crate) bytes: &'a [u8],
}

impl<'a> Chunk<'a> {
    /// The chunk starting at `offset`, which must end by `end` (its parent's end).
    pub(crate) fn at(
        file: &'a [u8],
        offset: usize,
        end: usize,
        format: &'static str,
    ) -> Result<Chunk<'a>, DecodeError> {
        let bad = |message: &str| DecodeError::new(format, offset, message);
        let header = file
            .get(offset..)
            .and_then(|rest| rest.get(..CHUNK_HEADER_SIZE))
            .ok_or_else(|| bad("chunk header truncated"))?;
        let kind = u16::from_le_bytes([header[0], header[1]]);
        let header_size = usize::from(u16::from_le_bytes([header[2], header[3]]));
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if header_size < CHUNK_HEADER_SIZE || header_size > size {
            return Err(bad("bad chunk header size"));
        }
        if offset.checked_add(size).is_none_or(|chunk_end| chunk_end > end) {
            return Err(bad("chunk runs past its parent"));
        }
        let bytes = file.get(offset..).unwrap_or_default();
        let bytes = bytes.get(..size).unwrap_or(bytes);
        if bytes.len() < header_size {
            return Err(bad("chunk header truncated"));
        }
        Ok(Chunk { kind, header_size, size, offset, bytes })
    }

    /// The chunks inside this one, after its header. A chunk that runs past this one is an
    /// error; one cut short by the end of the buffer is yielded, then reported as an error.
    pub(crate) fn children(&self, file: &'a [u8], format: &'static str) -> Children<'a> {
        Children {
            file,
            position: self.offset.saturating_add(self.header_size),
            end: self.offset.saturating_add(self.size),
            format,
            failed: false,
            truncated_at: None,
        }
    }

    pub(crate) fn u8(&self, at: usize) -> Option<u8> {
        self.bytes.get(at).copied()
    }

    pub(crate) fn u16(&self, at: usize) -> Option<u16> {
        let field = self.bytes.get(at..at.checked_add(2)?)?;
        Some(u16::from_le_bytes(field.try_into().ok()?))
    }

    pub(crate) fn u32(&self, at: usize) -> Option<u32> {
        let field = self.bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(field.try_into().ok()?))
    }
}

/// Iterator over the child chunks of a chunk.
#[derive(Debug)]
pub(crate) struct Children<'a> {
    file: &'a [u8],
    position: usize,
    end: usize,
    format: &'static str,
    failed: bool,
    truncated_at: Option<usize>,
}

impl<'a> Iterator for Children<'a> {
    type Item = Result<Chunk<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(at) = self.truncated_at.take() {
            self.failed = true;
            return Some(Err(DecodeError::new(self.format, at, "file truncated")));
        }
        if self.failed || self.position >= self.end {
            return None;
        }
        match Chunk::at(self.file, self.position, self.end, self.format) {
            Ok(chunk) if chunk.bytes.len() < chunk.size => {
                // A cut chunk is read as far as it goes; the next call reports the cut.
                self.position = self.end;
                self.truncated_at = Some(chunk.offset + chunk.bytes.len());
                Some(Ok(chunk))
            }
            Ok(chunk) => {
                self.position += chunk.size;
                Some(Ok(chunk))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

/// A `ResStringPool`: string `i` is read (and decoded) on request, never all at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StringPool<'a> {
    chunk: Chunk<'a>,
    format: &'static str,
    count: usize,
    utf8: bool,
    strings_start: usize,
    /// Where the pool starts in the file.
    pub(crate) offset: usize,
}

impl<'a> StringPool<'a> {
    pub(crate) fn parse(chunk: &Chunk<'a>, format: &'static str) -> Result<StringPool<'a>, DecodeError> {
        let bad = |message: &str| DecodeError::new(format, chunk.offset, message);
        if chunk.header_size < STRING_POOL_HEADER_SIZE {
            return Err(bad("string pool header too small"));
        }
        let count = chunk.u32(8).unwrap_or(0) as usize;
        let flags = chunk.u32(16).unwrap_or(0);
        let strings_start = chunk.u32(20).unwrap_or(0) as usize;
        // The offset array must fit in the chunk: this bounds the count by the buffer before
        // anything is sized from it.
        let offsets_end = count.checked_mul(4).and_then(|n| n.checked_add(chunk.header_size));
        if offsets_end.is_none_or(|end| end > chunk.bytes.len()) {
            return Err(bad("string count larger than the pool"));
        }
        Ok(StringPool {
            chunk: *chunk,
            format,
            count,
            utf8: flags & UTF8_FLAG != 0,
            strings_start,
            offset: chunk.offset,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// String `index`, with invalid UTF-8 or UTF-16 replaced by U+FFFD.
    pub(crate) fn get(&self, index: usize) -> Result<String, DecodeError> {
        self.read(index, usize::MAX)
    }

    /// String `index` as a name: at most [`MAX_NAME_BYTES`] of it are read, so a name used
    /// over and over costs little however long the pool string is.
    pub(crate) fn get_name(&self, index: usize) -> Result<String, DecodeError> {
        self.read(index, MAX_NAME_BYTES)
    }

    /// String `index`, of which at most `limit` bytes are read.
    fn read(&self, index: usize, limit: usize) -> Result<String, DecodeError> {
        let bad = |at: usize, message: String| DecodeError::new(self.format, self.offset.saturating_add(at), message);
        if index >= self.count {
            return Err(bad(0, format!("string index {index} outside the pool of {}", self.count)));
        }
        let offset_at = self.chunk.header_size + index * 4;
        let relative = self.chunk.u32(offset_at).ok_or_else(|| bad(offset_at, format!("string {index} offset")))?;
        let at = self.strings_start.saturating_add(relative as usize);
        let text = if self.utf8 { self.utf8_at(at, limit) } else { self.utf16_at(at, limit) };
        text.ok_or_else(|| bad(at, format!("string {index} runs past the pool")))
    }

    /// UTF-8 pools: the length in UTF-16 units, then in bytes (each one byte, or two with the
    /// high bit set), then the bytes.
    fn utf8_at(&self, at: usize, limit: usize) -> Option<String> {
        let length8 = |at: usize| -> Option<(usize, usize)> {
            let first = usize::from(self.chunk.u8(at)?);
            if first & 0x80 == 0 {
                return Some((first, 1));
            }
            Some((((first & 0x7f) << 8) | usize::from(self.chunk.u8(at + 1)?), 2))
        };
        let (_, skip) = length8(at)?;
        let (length, more) = length8(at.checked_add(skip)?)?;
        let start = at + skip + more;
        let body = self.chunk.bytes.get(start..start.checked_add(length)?)?;
        Some(String::from_utf8_lossy(body.get(..limit).unwrap_or(body)).into_owned())
    }

    /// UTF-16 pools: the length in units (one unit, or two with the high bit set), then the units.
    fn utf16_at(&self, at: usize, limit: usize) -> Option<String> {
        let first = usize::from(self.chunk.u16(at)?);
        let (length, skip) = if first & 0x8000 == 0 {
            (first, 2)
        } else {
            (((first & 0x7fff) << 16) | usize::from(self.chunk.u16(at + 2)?), 4)
        };
        let start = at + skip;
        let body = self.chunk.bytes.get(start..start.checked_add(length.checked_mul(2)?)?)?;
        let body = body.get(..limit & !1).unwrap_or(body);
        let units: Vec<u16> = body.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]])).collect();
        Some(String::from_utf16_lossy(&units))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::arsc::{Offsets, Options, build, build_arrays, build_with};
    use crate::decode::testing::{Found, collect, found};
    use proptest::prelude::*;

    fn run(bytes: &[u8]) -> (Found, Result<(), DecodeError>) {
        run_within(bytes, output_budget(bytes.len()))
    }

    fn run_within(bytes: &[u8], budget: usize) -> (Found, Result<(), DecodeError>) {
        collect(|sink| decode_within(bytes, sink, budget))
    }

    const KEY: &str = "AIzaSyD-planted-key-0123456789abcdefghi";
    const ENTRIES: &[(&str, &str, &str)] = &[
        ("string", "app_name", "Example"),
        ("string", "google_api_key", KEY),
        ("string", "gcm_defaultSenderId", "123456789012"),
        ("bool", "flag_something", "unused"),
        ("xml", "config", "res/xml/network_security_config.xml"),
        ("string", "duplicate_of_key", KEY),
    ];

    fn expected() -> Found {
        vec![
            found("string/app_name", Some("app_name"), "Example"),
            found("string/google_api_key", Some("google_api_key"), KEY),
            found("string/gcm_defaultSenderId", Some("gcm_defaultSenderId"), "123456789012"),
            found("string/duplicate_of_key", Some("duplicate_of_key"), KEY),
            found("bool/flag_something", Some("flag_something"), "unused"),
            found("xml/config", Some("config"), "res/xml/network_security_config.xml"),
        ]
    }

    #[test]
    fn planted_key_comes_back_named_from_a_utf8_pool() {
        assert_eq!(run(&build("com.example", ENTRIES, true)), (expected(), Ok(())));
    }

    #[test]
    fn planted_key_comes_back_named_from_a_utf16_pool() {
        assert_eq!(run(&build("com.example", ENTRIES, false)), (expected(), Ok(())));
    }

    #[test]
    fn offset16_sparse_and_compact_entries_decode_alike() {
        for offsets in [Offsets::Dense, Offsets::Offset16, Offsets::Sparse] {
            for compact in [false, true] {
                for utf8 in [false, true] {
                    let table = build_with("com.example", ENTRIES, Options { utf8, offsets, compact });
                    assert_eq!(run(&table), (expected(), Ok(())), "{offsets:?} compact={compact} utf8={utf8}");
                }
            }
        }
    }

    #[test]
    fn map_entry_string_items_are_emitted_with_their_position() {
        let table = build_arrays("com.example", &[("array", "backend_keys", &["first-value-here", KEY])], true);
        let (found_strings, result) = run(&table);
        assert_eq!(result, Ok(()));
        assert_eq!(
            found_strings,
            [
                found("array/backend_keys[0]", Some("backend_keys"), "first-value-here"),
                found("array/backend_keys[1]", Some("backend_keys"), KEY),
            ]
        );
    }

    #[test]
    fn long_strings_use_the_two_unit_length_forms() {
        // UTF-8 pools hold up to 0x7fff bytes; UTF-16 pools take the two-unit form past 0x7fff.
        for (utf8, extra) in [(true, 30_000), (false, 40_000)] {
            let long = format!("{KEY}{}", "x".repeat(extra));
            let (found_strings, result) = run(&build("p", &[("string", "long_key", &long)], utf8));
            assert_eq!(result, Ok(()));
            assert_eq!(found_strings, [found("string/long_key", Some("long_key"), &long)]);
        }
    }

    #[test]
    fn non_ascii_strings_round_trip_in_both_encodings() {
        let text = "clé-secrète-\u{1F511}-ключ";
        for utf8 in [true, false] {
            let (found_strings, _) = run(&build("p", &[("string", "k", text)], utf8));
            assert_eq!(found_strings[0].2, text);
        }
    }

    #[test]
    fn unreferenced_pool_strings_are_emitted_once_when_long_enough() {
        let mut table = build("p", &[("string", "k", "referenced-value"), ("string", "j", "second-value")], true);
        // Turn the second entry's value into an integer: its string is now unreferenced.
        let at = find(&table, &1u32.to_le_bytes(), |at| table[at - 1] == TYPE_STRING).unwrap();
        table[at - 1] = 0x10;
        let (found_strings, result) = run(&table);
        assert_eq!(result, Ok(()));
        assert_eq!(
            found_strings,
            [found("string/k", Some("k"), "referenced-value"), found("string_pool[1]", None, "second-value")]
        );
    }

    /// The first position of `needle` in `bytes` for which `accept` holds.
    fn find(bytes: &[u8], needle: &[u8], accept: impl Fn(usize) -> bool) -> Option<usize> {
        (1..=bytes.len().saturating_sub(needle.len())).find(|&at| bytes[at..].starts_with(needle) && accept(at))
    }

    #[test]
    fn truncation_at_every_length_never_panics() {
        let table = build("com.example", ENTRIES, false);
        for len in 0..table.len() {
            let (found_strings, result) = run(&table[..len]);
            assert!(result.is_err(), "length {len}");
            assert!(found_strings.len() <= expected().len() + 1);
        }
    }

    #[test]
    fn not_a_table_is_rejected() {
        assert!(run(b"").1.is_err());
        assert!(run(&[3, 0, 8, 0, 8, 0, 0, 0]).1.is_err());
    }

    #[test]
    fn huge_declared_string_count_allocates_nothing() {
        let mut table = build("p", &[("string", "k", "value-value")], true);
        // The global pool's stringCount, right after the table header and the pool's chunk header.
        table[12 + 8..12 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let (found_strings, result) = run(&table);
        assert!(found_strings.is_empty());
        assert_eq!(result.unwrap_err().message, "string count larger than the pool");
    }

    #[test]
    fn huge_declared_entry_count_stops_at_the_chunk_end() {
        let mut table = build("p", &[("string", "k", "value-value")], true);
        let type_at = find(&table, &RES_TABLE_TYPE_TYPE.to_le_bytes(), |at| table[at + 2] == 84).unwrap();
        table[type_at + 12..type_at + 16].copy_from_slice(&u32::MAX.to_le_bytes());
        let (found_strings, result) = run(&table);
        assert_eq!(found_strings, [found("string/k", Some("k"), "value-value")]);
        assert!(result.unwrap_err().message.contains("past the chunk"));
    }

    #[test]
    fn entry_offset_outside_the_chunk_is_an_error_that_keeps_the_pool() {
        let mut table = build("p", &[("string", "k", "value-value")], true);
        let type_at = find(&table, &RES_TABLE_TYPE_TYPE.to_le_bytes(), |at| table[at + 2] == 84).unwrap();
        table[type_at + 84..type_at + 88].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
        let (found_strings, result) = run(&table);
        // The entry is lost, its value is not: it comes back as an unreferenced pool string.
        assert_eq!(found_strings, [found("string_pool[0]", None, "value-value")]);
        assert!(result.is_err());
    }

    #[test]
    fn string_length_longer_than_the_pool_is_an_error() {
        for utf8 in [true, false] {
            let mut table = build("p", &[("string", "k", "value-value")], utf8);
            // The first string's length, at the pool's stringsStart (28 + 4 for one offset).
            let at = 12 + 28 + 4;
            if utf8 {
                table[at + 1] = 0x7f;
            } else {
                table[at..at + 2].copy_from_slice(&0x7fffu16.to_le_bytes());
            }
            let (found_strings, result) = run(&table);
            assert!(found_strings.is_empty());
            assert!(result.unwrap_err().message.contains("runs past the pool"));
        }
    }

    #[test]
    fn chunk_size_past_the_parent_is_an_error() {
        let mut table = build("p", &[("string", "k", "value-value")], true);
        table[12 + 4..12 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(run(&table).1.unwrap_err().message.contains("past its parent"));
    }

    #[test]
    fn many_entries_sharing_one_long_string_hit_the_output_budget() {
        let long = "v".repeat(30_000);
        let entries: Vec<(&str, String, &str)> =
            (0..200).map(|i| ("string", format!("key_{i}"), long.as_str())).collect();
        let entries: Vec<(&str, &str, &str)> = entries.iter().map(|(t, k, v)| (*t, k.as_str(), *v)).collect();
        let table = build("p", &entries, true);
        assert!(table.len() < 1 << 17);
        let (found_strings, result) = run_within(&table, 1 << 20);
        assert!(result.unwrap_err().message.contains("budget"));
        assert!(found_strings.len() < 40);
    }

    #[test]
    fn many_entries_sharing_one_large_map_are_charged_per_item() {
        // 2000 entries all pointing at one 2000-item map of integers: nothing is emitted, so only
        // charging each item read keeps the work linear in the file size.
        let items: Vec<String> = (0..2000).map(|i| format!("item-{i}")).collect();
        let big: Vec<&str> = items.iter().map(String::as_str).collect();
        let names: Vec<String> = (0..2000).map(|i| format!("array_{i}")).collect();
        let mut arrays: Vec<(&str, &str, &[&str])> = vec![("array", "big", &big)];
        arrays.extend(names.iter().skip(1).map(|name| ("array", name.as_str(), &big[..1])));
        let mut table = build_arrays("p", &arrays, true);
        let type_at = find(&table, &RES_TABLE_TYPE_TYPE.to_le_bytes(), |at| table[at + 2] == 84).unwrap();
        let offsets_at = type_at + 84;
        table[offsets_at..offsets_at + 4 * 2000].fill(0);
        let first_entry = offsets_at + 4 * 2000;
        for item in 0..2000 {
            table[first_entry + 16 + item * 12 + 7] = 0x10;
        }
        let (found_strings, result) = run_within(&table, 1 << 20);
        assert!(result.unwrap_err().message.contains("budget"));
        assert!(
            found_strings.iter().all(|(location, _, _)| location.starts_with("string_pool["))
                || found_strings.is_empty()
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = run(&bytes);
        }

        #[test]
        fn mutated_tables_never_panic(
            utf8 in any::<bool>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut table = build("com.example", ENTRIES, utf8);
            for (index, byte) in flips {
                let at = index.index(table.len());
                table[at] = byte;
            }
            let _ = run(&table);
        }
    }
}
