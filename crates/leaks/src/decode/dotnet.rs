//! .NET assembly reader: the strings of a managed DLL (a Xamarin or .NET MAUI app's own code and
//! its libraries, in an APK's `assemblies/`, an assembly store or an IPA).
//!
//! Read as ECMA-335 Partition II lays it out: the PE file's CLI header (data directory 14) gives
//! the metadata root (`BSJB`), whose stream headers give the heaps. Three things are emitted, in
//! this order:
//!
//! 1. the value of each `const string` field, from the `Constant` table (its `Parent` a field,
//!    its value a UTF-16 blob), named by the field and its class: `Config.ApiSecret` at
//!    `Example.Config::ApiSecret` ([`table`]);
//! 2. each entry of `#US`, the string literals of the code (`ldstr`), at `user_strings[0x1a]`
//!    (its offset in the heap, the low bits of the `ldstr` token): a compressed length in bytes,
//!    UTF-16LE units, then one flag byte;
//! 3. each entry of `#Strings`, the identifiers (type, member and resource names), NUL-terminated
//!    UTF-8, at `strings[0x2f]`.
//!
//! A constant is often also an `ldstr` in the code; the scan keeps the first, named, finding.
//! Every offset and size comes from the input and is checked against the buffer before use.
//! Strings shorter than eight characters are skipped.

pub mod store;
mod table;

use super::{DecodeError, Emitter, Sink, output_budget};
use crate::decode::le::{u16 as u16_at, u32 as u32_at};

const FORMAT: &str = "dotnet";
/// Strings with fewer characters are not emitted.
const MIN_CHARS: usize = 8;
/// Longer strings are cut off at this many bytes.
const MAX_STRING_BYTES: usize = 1 << 20;
const CLI_DIRECTORY: usize = 14;
const METADATA_SIGNATURE: &[u8; 4] = b"BSJB";
/// Stream headers read before the rest are ignored (real assemblies have five).
const MAX_STREAMS: usize = 16;

/// Whether `bytes` are a PE image with a CLI header, that is a .NET assembly.
pub fn sniff(bytes: &[u8]) -> bool {
    bytes.starts_with(b"MZ")
        && Pe::parse(bytes).is_ok_and(|pe| pe.directory(CLI_DIRECTORY).is_some_and(|(rva, _)| rva != 0))
}

/// Emits the named constants, then `#US`, then `#Strings` (see the module documentation).
pub fn decode(bytes: &[u8], sink: &mut dyn Sink) -> Result<(), DecodeError> {
    decode_within(bytes, sink, output_budget(bytes.len()))
}

fn decode_within(bytes: &[u8], sink: &mut dyn Sink, budget: usize) -> Result<(), DecodeError> {
    let metadata = Metadata::find(bytes)?;
    let mut out = Emitter::new(sink, FORMAT, budget);
    // A broken table loses only the names: the heaps are read all the same.
    let constants = match (metadata.tables, metadata.strings, metadata.blob) {
        (Some(tables), Some(strings), Some(blob)) => table::constants(tables, strings, blob, &mut out),
        _ => Ok(()),
    };
    if let Some(user) = metadata.user_strings {
        user_strings(user, &mut out)?;
    }
    if let Some(strings) = metadata.strings {
        identifiers(strings, &mut out)?;
    }
    constants
}

/// A heap: its bytes (cut to the file) and where they start in the file, for error offsets.
#[derive(Debug, Clone, Copy)]
struct Heap<'b> {
    bytes: &'b [u8],
    at: usize,
}

/// The streams of the metadata that are read.
#[derive(Debug, Default)]
struct Metadata<'b> {
    tables: Option<Heap<'b>>,
    strings: Option<Heap<'b>>,
    user_strings: Option<Heap<'b>>,
    blob: Option<Heap<'b>>,
}

impl<'b> Metadata<'b> {
    fn find(bytes: &'b [u8]) -> Result<Metadata<'b>, DecodeError> {
        let pe = Pe::parse(bytes)?;
        let (cli_rva, _) = pe
            .directory(CLI_DIRECTORY)
            .filter(|(rva, _)| *rva != 0)
            .ok_or_else(|| DecodeError::new(FORMAT, pe.optional, "no CLI header: not a .NET assembly"))?;
        let cli = pe
            .offset(cli_rva)
            .ok_or_else(|| DecodeError::new(FORMAT, pe.optional, "the CLI header lies outside every section"))?;
        let (Some(metadata_rva), Some(metadata_size)) = (u32_at(bytes, cli + 8), u32_at(bytes, cli + 12)) else {
            return Err(DecodeError::new(FORMAT, cli, "CLI header truncated"));
        };
        let root = pe
            .offset(metadata_rva)
            .ok_or_else(|| DecodeError::new(FORMAT, cli + 8, "the metadata lies outside every section"))?;
        let root_bytes = bytes.get(root..).unwrap_or_default();
        let root_bytes = root_bytes.get(..metadata_size as usize).unwrap_or(root_bytes);
        Metadata::parse(root_bytes, root)
    }

    /// The metadata root (II.24.2.1) at `root` in the file, and its stream headers (II.24.2.2).
    fn parse(metadata: &'b [u8], root: usize) -> Result<Metadata<'b>, DecodeError> {
        if !metadata.starts_with(METADATA_SIGNATURE) {
            return Err(DecodeError::new(FORMAT, root, "no metadata signature (BSJB)"));
        }
        let version_length =
            u32_at(metadata, 12).ok_or_else(|| DecodeError::new(FORMAT, root, "metadata root truncated"))?;
        let flags_at = (version_length as usize)
            .checked_add(16)
            .filter(|&at| at < metadata.len())
            .ok_or_else(|| DecodeError::new(FORMAT, root + 12, "the metadata version string runs past the end"))?;
        let count = u16_at(metadata, flags_at + 2)
            .ok_or_else(|| DecodeError::new(FORMAT, root + flags_at, "metadata root truncated"))?;
        let mut found = Metadata::default();
        let mut at = flags_at + 4;
        for index in 0..usize::from(count).min(MAX_STREAMS) {
            let (Some(offset), Some(size)) = (u32_at(metadata, at), u32_at(metadata, at + 4)) else {
                return Err(DecodeError::new(
                    FORMAT,
                    root + at,
                    format!("stream header {index} lies outside the metadata"),
                ));
            };
            let name_bytes = metadata.get(at + 8..).unwrap_or_default();
            let name_length = name_bytes.iter().take(32).position(|&byte| byte == 0).ok_or_else(|| {
                DecodeError::new(FORMAT, root + at + 8, format!("stream header {index}: name not terminated"))
            })?;
            let name = &name_bytes[..name_length];
            at += 8 + (name_length + 1).next_multiple_of(4);
            let start = offset as usize;
            let Some(data) = metadata.get(start..) else {
                return Err(DecodeError::new(
                    FORMAT,
                    root + at,
                    format!("stream {} lies outside the metadata", String::from_utf8_lossy(name)),
                ));
            };
            // A stream that claims more than there is keeps what there is.
            let heap = Heap { bytes: data.get(..size as usize).unwrap_or(data), at: root + start };
            match name {
                b"#~" | b"#-" => found.tables = Some(heap),
                b"#Strings" => found.strings = Some(heap),
                b"#US" => found.user_strings = Some(heap),
                b"#Blob" => found.blob = Some(heap),
                _ => {}
            }
        }
        Ok(found)
    }
}

/// The PE headers: where the optional header starts and the sections, to turn RVAs into file
/// offsets.
struct Pe<'b> {
    bytes: &'b [u8],
    optional: usize,
    /// Offset of the first data directory and how many there are.
    directories: (usize, usize),
    sections: (usize, usize),
}

impl<'b> Pe<'b> {
    fn parse(bytes: &'b [u8]) -> Result<Pe<'b>, DecodeError> {
        if !bytes.starts_with(b"MZ") {
            return Err(DecodeError::new(FORMAT, 0, "no MZ magic"));
        }
        let pe = u32_at(bytes, 0x3c).ok_or_else(|| DecodeError::new(FORMAT, 0x3c, "DOS header truncated"))? as usize;
        if bytes.get(pe..pe.saturating_add(4)) != Some(b"PE\0\0") {
            return Err(DecodeError::new(FORMAT, pe, "no PE signature"));
        }
        let section_count = u16_at(bytes, pe + 6).map(usize::from);
        let optional_size = u16_at(bytes, pe + 20).map(usize::from);
        let optional = pe + 24;
        let (Some(section_count), Some(optional_size), Some(magic)) =
            (section_count, optional_size, u16_at(bytes, optional))
        else {
            return Err(DecodeError::new(FORMAT, pe, "PE header truncated"));
        };
        let (count_at, directories_at) = match magic {
            0x010b => (optional + 92, optional + 96),
            0x020b => (optional + 108, optional + 112),
            _ => return Err(DecodeError::new(FORMAT, optional, "unknown optional header magic")),
        };
        let directory_count = u32_at(bytes, count_at).unwrap_or(0) as usize;
        // Directories past the optional header's declared size are not read.
        let fit = (optional + optional_size).saturating_sub(directories_at) / 8;
        Ok(Pe {
            bytes,
            optional,
            directories: (directories_at, directory_count.min(fit).min(16)),
            sections: (optional + optional_size, section_count),
        })
    }

    /// Data directory `index`: its RVA and size.
    fn directory(&self, index: usize) -> Option<(u32, u32)> {
        if index >= self.directories.1 {
            return None;
        }
        let at = self.directories.0 + 8 * index;
        Some((u32_at(self.bytes, at)?, u32_at(self.bytes, at + 4)?))
    }

    /// The file offset of `rva`, from the section that holds it.
    fn offset(&self, rva: u32) -> Option<usize> {
        (0..self.sections.1).find_map(|index| {
            let header = self.sections.0 + 40 * index;
            let virtual_size = u32_at(self.bytes, header + 8)?;
            let address = u32_at(self.bytes, header + 12)?;
            let raw_size = u32_at(self.bytes, header + 16)?;
            let raw_at = u32_at(self.bytes, header + 20)?;
            // Only the part of the section that is in the file: the metadata is never in the
            // zero-filled rest.
            let in_file = if virtual_size == 0 { raw_size } else { virtual_size.min(raw_size) };
            let inside = rva.checked_sub(address).filter(|&delta| delta < in_file)?;
            let offset = (raw_at as usize).checked_add(inside as usize)?;
            (offset < self.bytes.len()).then_some(offset)
        })
    }
}

/// `#US` (II.24.2.4): from offset 1, a compressed length in bytes, that many bytes of UTF-16LE
/// and a final flag byte (counted in the length). Zero bytes between entries are padding.
fn user_strings(heap: Heap<'_>, out: &mut Emitter<'_>) -> Result<(), DecodeError> {
    let mut at = 1usize;
    while at < heap.bytes.len() {
        let Some((length, prefix)) = compressed_length(heap.bytes.get(at..).unwrap_or_default()) else {
            return Err(DecodeError::new(FORMAT, heap.at + at, format!("user_strings[0x{at:x}]: bad length")));
        };
        if length == 0 {
            at += prefix;
            continue;
        }
        let start = at + prefix;
        let end = start.saturating_add(length);
        let Some(data) = heap.bytes.get(start..end) else {
            return Err(DecodeError::new(
                FORMAT,
                heap.at + at,
                format!("user_strings[0x{at:x}] runs past the end of #US"),
            ));
        };
        // The last byte is the flag; a string is (length - 1) / 2 units.
        let text = data.get(..(length - 1) & !1).unwrap_or_default();
        let text = text.get(..MAX_STRING_BYTES).unwrap_or(text);
        if text.len() >= 2 * MIN_CHARS {
            out.charge(heap.at + at, text.len())?;
            let units = text.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
            let value: String =
                char::decode_utf16(units).map(|unit| unit.unwrap_or(char::REPLACEMENT_CHARACTER)).collect();
            out.emit(heap.at + start, &format!("user_strings[0x{at:x}]"), None, &value)?;
        }
        at = end;
    }
    Ok(())
}

/// `#Strings` (II.24.2.3): NUL-terminated UTF-8, one after another from offset 0.
fn identifiers(heap: Heap<'_>, out: &mut Emitter<'_>) -> Result<(), DecodeError> {
    let mut at = 0usize;
    while let Some(rest) = heap.bytes.get(at..).filter(|rest| !rest.is_empty()) {
        let length = rest.iter().position(|&byte| byte == 0).unwrap_or(rest.len());
        let text = &rest[..length.min(MAX_STRING_BYTES)];
        if text.len() >= MIN_CHARS {
            let value = String::from_utf8_lossy(text);
            if value.chars().nth(MIN_CHARS - 1).is_some() {
                out.emit(heap.at + at, &format!("strings[0x{at:x}]"), None, &value)?;
            }
        }
        at += length + 1;
    }
    Ok(())
}

/// A compressed length (II.24.2.4) at the start of `bytes`: the value and how many bytes it took.
fn compressed_length(bytes: &[u8]) -> Option<(usize, usize)> {
    let first = *bytes.first()?;
    match first {
        0x00..=0x7f => Some((usize::from(first), 1)),
        0x80..=0xbf => Some(((usize::from(first & 0x3f) << 8) | usize::from(*bytes.get(1)?), 2)),
        0xc0..=0xdf => {
            let rest = bytes.get(1..4)?;
            let value = (usize::from(first & 0x1f) << 24)
                | (usize::from(rest[0]) << 16)
                | (usize::from(rest[1]) << 8)
                | usize::from(rest[2]);
            Some((value, 4))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
