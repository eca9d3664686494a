//! Unity IL2CPP metadata: `global-metadata.dat` (`assets/bin/Data/Managed/Metadata/` in an APK,
//! `Data/Managed/Metadata/` in an IPA), where a Unity game compiled with IL2CPP keeps the string
//! literals of its C# code, the names of its types and members, and the values of its constants.
//!
//! The header (`Il2CppGlobalMetadataHeader` in libil2cpp's `GlobalMetadataFileInternals.h`) is
//! the magic `0xfab11baf`, the version, then an (offset, size in bytes) pair per section. The
//! first sections kept their places from version 24 (Unity 2018) to 31 (Unity 2022), which are
//! the versions read here:
//!
//! - String literals: a table with an entry per literal, `{length, offset}`, or in some
//!   version 31 files the offset alone (a literal then ends where the next begins), into a data
//!   section where the literals lie back to back as UTF-8, with nothing between them. Each is
//!   emitted whole as `il2cpp:literal {index}`, so one literal never runs into the next, as it
//!   would for a raw pass.
//! - Constants: `fieldDefaultValues` entries `{field, type, offset}` (and the same for
//!   parameters) into a blob section where a string is its length (a 32-bit integer before
//!   version 29, Unity's compressed integer from 29 on) and its UTF-8 bytes. The type of a
//!   constant lives in the game's binary, not here, so a blob is taken for a string only if its
//!   length and text fill it exactly up to the next blob (or zero padding). A field's value is
//!   emitted as `il2cpp:field {index}` named by the field's name (so `API_SECRET` lends its name
//!   to the value as `BuildConfig.API_SECRET` does in DEX), where the field table's entry size
//!   is known: 12 bytes from version 24.1 on, 16 in 24.0, which also says 24 in its header and
//!   is told apart by which size gives every sampled field a name at the start of an identifier.
//! - Everything else (identifiers, attribute data, tables) is read as printable runs,
//!   `il2cpp:offset 0x{offset:x}`, so nothing a raw pass would find is lost.
//!
//! Every count and offset is checked against the buffer, and nothing is allocated from a
//! declared size. A section that runs past the end of the file, a literal outside its data or a
//! version outside 24 to 31 ends in a [`DecodeError`] after what could be read is emitted, and
//! the caller's raw pass reads the whole file.

use std::fmt::Write as _;
use std::ops::{ControlFlow, Range};

use super::runs::scan_runs;
use super::{DecodeError, Emitter, Sink, cut_name, output_budget};
use crate::decode::le::u32 as u32_le;

const FORMAT: &str = "il2cpp";
/// `kSanity`, stored little-endian.
pub const MAGIC: u32 = 0xfab1_1baf;
const MIN_VERSION: u32 = 24;
const MAX_VERSION: u32 = 31;
/// From this version the literal table may hold offsets alone.
const OFFSETS_ONLY: u32 = 31;
/// From this version blob lengths are compressed integers.
const COMPRESSED_LENGTHS: u32 = 29;
/// From this version (24.1 and later also say 24) a field entry is 12 bytes.
const TWELVE_BYTE_FIELDS: u32 = 25;

/// Header entries: the (offset, size) pair of each section read.
const STRING_LITERALS: usize = 8;
const STRING_LITERAL_DATA: usize = 16;
const IDENTIFIERS: usize = 24;
const PARAMETER_DEFAULT_VALUES: usize = 56;
const FIELD_DEFAULT_VALUES: usize = 64;
const DEFAULT_VALUE_DATA: usize = 72;
const FIELDS: usize = 96;
const HEADER_SIZE: usize = 104;
/// `Il2CppFieldDefaultValue` and `Il2CppParameterDefaultValue`: index, type, data offset.
const DEFAULT_VALUE_SIZE: usize = 12;
/// Literal table words sampled to tell pairs from offsets alone.
const LAYOUT_SAMPLE: usize = 32;
/// Fields sampled to tell the 12-byte from the 16-byte field table in version 24.
const FIELD_SAMPLE: usize = 64;

/// Strings with fewer characters are not emitted: no key is that short.
const MIN_CHARS: usize = 8;
/// Longer identifiers are not names.
const MAX_NAME_BYTES: usize = 1024;

/// Whether `bytes` starts with the IL2CPP metadata magic.
pub fn sniff(bytes: &[u8]) -> bool {
    u32_le(bytes, 0) == Some(MAGIC)
}

/// Emits the string constants of fields and parameters, then each string literal, then the
/// printable runs of the rest of the file; returns the metadata version.
pub fn decode(bytes: &[u8], sink: &mut dyn Sink) -> Result<u32, DecodeError> {
    decode_within(bytes, sink, output_budget(bytes.len()))
}

fn decode_within(bytes: &[u8], sink: &mut dyn Sink, budget: usize) -> Result<u32, DecodeError> {
    let version = check_header(bytes)?;
    let mut out = Emitter::new(sink, FORMAT, budget);
    // Constants first: when a value is also a literal, the scan keeps the named one.
    let constants = constants(bytes, version, &mut out)?;
    let literals = literals(bytes, version, &mut out)?;
    rest(bytes, &mut out)?;
    match constants.or(literals) {
        Some(problem) => Err(problem),
        None => Ok(version),
    }
}

fn error(offset: usize, message: impl Into<String>) -> DecodeError {
    DecodeError::new(FORMAT, offset, message)
}

fn check_header(bytes: &[u8]) -> Result<u32, DecodeError> {
    match u32_le(bytes, 0) {
        Some(MAGIC) => {}
        Some(_) => return Err(error(0, "no IL2CPP metadata magic")),
        None => return Err(error(0, "too short for the IL2CPP metadata magic")),
    }
    let version = u32_le(bytes, 4).ok_or_else(|| error(4, "header truncated"))?;
    if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
        return Err(error(4, format!("metadata version {version} is not one of 24 to 31")));
    }
    if bytes.len() < HEADER_SIZE {
        return Err(error(bytes.len(), "header truncated"));
    }
    Ok(version)
}

/// The section whose (offset, size) pair is at `at` in the header: the part inside the file,
/// and a problem if some of it is not.
fn section(bytes: &[u8], at: usize, what: &str) -> (Range<usize>, Option<DecodeError>) {
    let offset = u32_le(bytes, at).unwrap_or(0) as usize;
    let size = u32_le(bytes, at + 4).unwrap_or(0) as usize;
    match offset.checked_add(size) {
        Some(end) if end <= bytes.len() => (offset..end, None),
        _ => {
            (offset.min(bytes.len())..bytes.len(), Some(error(offset, format!("{what} runs past the end of the file"))))
        }
    }
}

/// The string literals; `Ok` carries a problem found on the way, `Err` a cap reached.
fn literals(bytes: &[u8], version: u32, out: &mut Emitter<'_>) -> Result<Option<DecodeError>, DecodeError> {
    let (table_range, mut problem) = section(bytes, STRING_LITERALS, "string literal table");
    let (data_range, data_problem) = section(bytes, STRING_LITERAL_DATA, "string literal data");
    problem = problem.or(data_problem);
    let table = &bytes[table_range.clone()];
    let data = &bytes[data_range.clone()];
    let declared_data_size = u32_le(bytes, STRING_LITERAL_DATA + 4).unwrap_or(0) as usize;
    let offsets_only = offsets_only(version, table);
    let entry_size = if offsets_only { 4 } else { 8 };
    let mut location = String::new();
    for (index, entry) in table.chunks_exact(entry_size).enumerate() {
        let entry_at = table_range.start + index * entry_size;
        let (start, end) = if offsets_only {
            let start = u32_le(entry, 0).unwrap_or(0) as usize;
            let next = u32_le(table, (index + 1) * 4).map_or(declared_data_size, |next| next as usize);
            (start, next)
        } else {
            let length = u32_le(entry, 0).unwrap_or(0) as usize;
            let start = u32_le(entry, 4).unwrap_or(0) as usize;
            (start, start.saturating_add(length))
        };
        let Some(literal) = data.get(start..end) else {
            let message = format!("string literal {index} lies outside its data");
            problem.get_or_insert_with(|| error(entry_at, message));
            continue;
        };
        if literal.len() < MIN_CHARS {
            continue;
        }
        let text = String::from_utf8_lossy(literal);
        if text.chars().nth(MIN_CHARS - 1).is_none() {
            continue;
        }
        location.clear();
        let _ = write!(location, "il2cpp:literal {index}");
        out.emit(data_range.start + start, &location, None, &text)?;
    }
    Ok(problem)
}

/// Whether the literal table holds offsets alone. Some version 31 files (Unity 2022) keep the
/// `{length, offset}` pairs and some (Unity 6) drop the lengths; pairs have each offset equal
/// to the one before plus its length (the literals lie in table order), offsets alone start at
/// zero and never decrease. The first entries decide.
fn offsets_only(version: u32, table: &[u8]) -> bool {
    if version < OFFSETS_ONLY {
        return false;
    }
    let words: Vec<u32> = table.chunks_exact(4).take(LAYOUT_SAMPLE).filter_map(|word| u32_le(word, 0)).collect();
    let pairs: Vec<&[u32]> = words.chunks_exact(2).collect();
    let contiguous_pairs = pairs.windows(2).all(|two| two[1][1] == two[0][1].wrapping_add(two[0][0]));
    let sorted_offsets = words.first() == Some(&0) && words.windows(2).all(|two| two[0] <= two[1]);
    sorted_offsets && !(contiguous_pairs && pairs.len() > 1)
}

/// The string constants of fields (named by their field where the field table can be read)
/// and of parameters; `Ok` carries a problem found on the way, `Err` a cap reached.
fn constants(bytes: &[u8], version: u32, out: &mut Emitter<'_>) -> Result<Option<DecodeError>, DecodeError> {
    let (fields_range, problem) = section(bytes, FIELD_DEFAULT_VALUES, "field default values");
    let (parameters_range, parameters_problem) = section(bytes, PARAMETER_DEFAULT_VALUES, "parameter default values");
    let (data_range, data_problem) = section(bytes, DEFAULT_VALUE_DATA, "default value data");
    let problem = problem.or(parameters_problem).or(data_problem);
    let field_values = &bytes[fields_range];
    let parameter_values = &bytes[parameters_range];
    let data = &bytes[data_range.clone()];
    // Where each blob starts: a string must end where the next blob starts.
    let mut starts: Vec<usize> = field_values
        .chunks_exact(DEFAULT_VALUE_SIZE)
        .chain(parameter_values.chunks_exact(DEFAULT_VALUE_SIZE))
        .filter_map(|entry| u32_le(entry, 8))
        .map(|start| start as usize)
        .collect();
    starts.sort_unstable();
    starts.dedup();
    let names = FieldNames::new(bytes, version);
    let mut location = String::new();
    for (table, what) in [(field_values, "field"), (parameter_values, "parameter")] {
        for entry in table.chunks_exact(DEFAULT_VALUE_SIZE) {
            let (Some(owner), Some(start)) = (u32_le(entry, 0), u32_le(entry, 8)) else { continue };
            let start = start as usize;
            let next = starts.get(starts.partition_point(|&s| s <= start)).copied().unwrap_or(data.len());
            let Some(value) = string_blob(data, start, next.min(data.len()), version) else { continue };
            let name = if what == "field" { names.as_ref().and_then(|names| names.name(owner as usize)) } else { None };
            location.clear();
            let _ = write!(location, "il2cpp:{what} {owner}");
            out.emit(data_range.start + start, &location, name.as_deref(), &value)?;
        }
    }
    Ok(problem)
}

/// The string in the blob `data[start..next]`, if the blob is exactly one: a length, that many
/// bytes of UTF-8 text without control characters, then nothing but zero padding.
fn string_blob(data: &[u8], start: usize, next: usize, version: u32) -> Option<String> {
    let blob = data.get(start..next)?;
    let (length, header) = if version >= COMPRESSED_LENGTHS {
        compressed_i32(blob)?
    } else {
        (i32::from_le_bytes(blob.get(..4)?.try_into().ok()?), 4)
    };
    let length = usize::try_from(length).ok()?;
    let text = blob.get(header..header.checked_add(length)?)?;
    if !blob.get(header + length..)?.iter().all(|&b| b == 0) {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    if text.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        || text.chars().nth(MIN_CHARS - 1).is_none()
    {
        return None;
    }
    Some(text.to_owned())
}

/// Unity's compressed signed integer (`il2cpp::utils::ReadCompressedInt32`) at the start of
/// `bytes`: an unsigned one in 1, 2, 4 or 5 bytes (its first byte says which), whose low bit is
/// the sign; its value and size.
fn compressed_i32(bytes: &[u8]) -> Option<(i32, usize)> {
    let first = *bytes.first()?;
    let byte = |index: usize| bytes.get(index).map(|&b| u32::from(b));
    let (unsigned, size) = match first {
        0x00..=0x7f => (u32::from(first), 1),
        0xf0 => (u32_le(bytes, 1)?, 5),
        0xfe => (u32::MAX - 1, 1),
        0xff => (u32::MAX, 1),
        _ if first & 0xc0 == 0xc0 => {
            ((u32::from(first & 0x3f) << 24) | (byte(1)? << 16) | (byte(2)? << 8) | byte(3)?, 4)
        }
        _ => ((u32::from(first & 0x7f) << 8) | byte(1)?, 2),
    };
    if unsigned == u32::MAX {
        return Some((i32::MIN, size));
    }
    let magnitude = (unsigned >> 1) as i32;
    Some((if unsigned & 1 == 1 { -magnitude - 1 } else { magnitude }, size))
}

/// The field table and the identifiers, to name a field by its index.
struct FieldNames<'b> {
    fields: &'b [u8],
    identifiers: &'b [u8],
    entry_size: usize,
}

impl<'b> FieldNames<'b> {
    /// The field table if its entry size is known: 12 bytes from version 24.1 on; in a file that
    /// says 24, whichever of 12 and 16 gives every sampled field a name, if only one does.
    fn new(bytes: &'b [u8], version: u32) -> Option<FieldNames<'b>> {
        let (fields, _) = section(bytes, FIELDS, "fields");
        let (identifiers, _) = section(bytes, IDENTIFIERS, "identifiers");
        let names = |entry_size| FieldNames {
            fields: &bytes[fields.clone()],
            identifiers: &bytes[identifiers.clone()],
            entry_size,
        };
        if version >= TWELVE_BYTE_FIELDS {
            return Some(names(12));
        }
        let mut fitting = [12, 16].into_iter().map(names).filter(FieldNames::fits);
        match (fitting.next(), fitting.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }

    /// Whether every sampled entry's name index points at the start of an identifier.
    fn fits(&self) -> bool {
        let entries = self.fields.len() / self.entry_size;
        entries > 0
            && self.fields.len().is_multiple_of(self.entry_size)
            && (0..entries.min(FIELD_SAMPLE)).all(|index| {
                let at = u32_le(self.fields, index * self.entry_size).map(|at| at as usize);
                at.is_some_and(|at| at < self.identifiers.len() && (at == 0 || self.identifiers[at - 1] == 0))
            })
    }

    fn name(&self, field: usize) -> Option<String> {
        let at = u32_le(self.fields, field.checked_mul(self.entry_size)?)? as usize;
        let rest = self.identifiers.get(at..)?;
        let rest = rest.get(..MAX_NAME_BYTES).unwrap_or(rest);
        let name = std::str::from_utf8(rest.get(..rest.iter().position(|&b| b == 0)?)?).ok()?;
        (!name.is_empty()).then(|| cut_name(name))
    }
}

/// The printable runs of every byte outside the literal data and the default value data (whose
/// strings lie back to back, and were read whole above).
fn rest(bytes: &[u8], out: &mut Emitter<'_>) -> Result<(), DecodeError> {
    let mut skipped = [section(bytes, STRING_LITERAL_DATA, "").0, section(bytes, DEFAULT_VALUE_DATA, "").0];
    skipped.sort_by_key(|range| range.start);
    let mut pieces = Vec::new();
    let mut at = HEADER_SIZE;
    for range in skipped {
        if range.start > at {
            pieces.push(at..range.start);
        }
        at = at.max(range.end);
    }
    pieces.push(at..bytes.len());
    let mut location = String::new();
    let mut failure = None;
    for piece in pieces {
        let base = piece.start;
        let _ = scan_runs(bytes.get(piece).unwrap_or_default(), MIN_CHARS, &mut |offset, run| {
            location.clear();
            let _ = write!(location, "il2cpp:offset 0x{:x}", base + offset);
            match out.emit(base + offset, &location, None, run) {
                Ok(()) => ControlFlow::Continue(()),
                Err(problem) => {
                    failure = Some(problem);
                    ControlFlow::Break(())
                }
            }
        });
        if let Some(failure) = failure {
            return Err(failure);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
