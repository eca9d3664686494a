//! Flutter's Dart AOT snapshots: `lib/<abi>/libapp.so` in an APK, an ELF shared object whose
//! dynamic symbols `_kDartVMSnapshotData` and `_kDartIsolateSnapshotData` mark the snapshot data
//! (`_kDartIsolateSnapshotInstructions` marks the machine code, which holds no strings). Every
//! string literal of the app's Dart code is a `String` object in the isolate snapshot data.
//!
//! A snapshot starts with a header (`runtime/vm/snapshot.h` in the Dart SDK): the magic
//! `0xdcdcf5f5`, the length (less the four magic bytes) and the kind as 64-bit integers, then a
//! 32-character version hash and a NUL-terminated feature string (`product … arm64 android
//! compressed-pointers …`), both kept as provenance in [`SnapshotInfo`]. The clustered objects
//! follow; decoding them all would mean following the SDK's cluster layout version by version,
//! so strings are recognised by their own encoding instead, as current SDKs write them (Dart 3,
//! `runtime/vm/app_snapshot.cc`; older layouts are read as printable runs, see below):
//!
//! - With compressed pointers (64-bit Android and iOS builds), strings are objects of the
//!   `String` cluster. Its fill section is one record per string: the length shifted left by one,
//!   its low bit set for a two-byte (UTF-16) string, written as Dart's variable-length unsigned
//!   (7 bits a byte, low bits first, the last byte marked by its top bit), then the one-byte
//!   (Latin-1) or two-byte code units. A run of at least [`MIN_CHAIN`] such records that follow
//!   each other exactly, each holding text and the first a one-byte one, is read as that fill
//!   section. One-byte text is taken to be ASCII, so no record can swallow the length of the
//!   next (whose last byte has its top bit set); a Latin-1 string ends a run, and the strings
//!   after it start the next.
//! - Without them (32-bit ARM builds, older SDKs), strings are written as read-only heap
//!   objects into the data image that follows the clustered part: a tag word, the length as a
//!   Smi (a word holding the length shifted left by one), on 32-bit targets a hash word, the code
//!   units, and zero padding to the object alignment (8 bytes on 32-bit, 16 on 64-bit targets).
//!
//! Each string is emitted whole, with where its first code unit lies in the snapshot data
//! (`dart:isolate_snapshot_data+0x1a2b`), so two strings stored back to back never run into
//! each other: the length byte of a long string can be a printable character, which a raw pass
//! would glue onto the end of the string before it. Bytes of the data outside any recognised
//! string are still read, as printable runs at their own offsets, so a string in a layout not
//! recognised here is found as the raw pass would find it.
//!
//! Every offset, size and length is checked against the buffer and nothing is allocated from
//! one. A symbol outside the file, a snapshot without its magic or a length past its data ends
//! in a [`DecodeError`] after the readable strings are emitted, and the caller's raw pass reads
//! the whole file.
//!
//! On iOS the same snapshots are in `App.framework/App`, a Mach-O image whose symbol table has
//! the same names (without sizes: a snapshot ends at the next Dart symbol or the end of its
//! section). App Store builds are FairPlay-encrypted there, which is reported as an error; fat
//! files are left to [`super::binary`].

use std::fmt::Write as _;
use std::ops::{ControlFlow, Range};

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::Elf;
use goblin::elf::header::{EI_CLASS, EI_DATA, ELFCLASS32, ELFCLASS64, ELFDATA2LSB};
use goblin::elf::section_header::{SHF_ALLOC, SHT_DYNSYM, SHT_NOBITS, SHT_SYMTAB, SectionHeader};

use super::runs::scan_runs;
use super::{DecodeError, Emitter, Sink, output_budget};
use crate::decode::le::{u32 as u32_le, u64 as u64_le};

const FORMAT: &str = "dart";
/// `Snapshot::kMagicValue`, stored little-endian.
pub const MAGIC: u32 = 0xdcdc_f5f5;
/// The magic (4 bytes), the length and the kind (8 bytes each).
const HEADER_SIZE: usize = 20;
/// The version hash after the header: 32 hexadecimal digits.
const VERSION_LEN: usize = 32;
/// A longer feature string is not a snapshot's.
const MAX_FEATURES: usize = 1024;
/// `Snapshot::kFullJIT` and `Snapshot::kFullAOT`: the kinds with code, and so with a data image.
const KIND_FULL_JIT: i64 = 2;
const KIND_FULL_AOT: i64 = 3;
/// The feature that keeps strings out of the read-only data image.
const COMPRESSED_POINTERS: &str = "compressed-pointers";

const VM_DATA: &[u8] = b"_kDartVMSnapshotData";
const ISOLATE_DATA: &[u8] = b"_kDartIsolateSnapshotData";
const ISOLATE_INSTRUCTIONS: &[u8] = b"_kDartIsolateSnapshotInstructions";

/// Strings with fewer characters are not emitted: no key is that short.
const MIN_CHARS: usize = 8;
/// Fewer string records in a row are taken for chance, not for the `String` cluster.
const MIN_CHAIN: usize = 3;
/// A string length fits in five 7-bit groups.
const MAX_VARINT_BYTES: usize = 5;
/// Most symbols read from one symbol table.
const MAX_SYMBOLS: usize = 1 << 20;

/// The provenance of the isolate snapshot: which Dart SDK built it, for which target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The 32-character version hash of the Dart SDK that wrote the snapshot.
    pub version: String,
    /// The feature string: build mode, architecture, OS, `compressed-pointers`, null safety.
    pub features: String,
}

/// Whether `bytes` is an ELF or Mach-O file with a `_kDartIsolateSnapshotData` symbol: a
/// Flutter app's compiled Dart code.
pub fn sniff(bytes: &[u8]) -> bool {
    Image::parse(bytes).is_ok_and(|image| image.symbols.isolate_data.is_some())
}

/// Emits the strings of the isolate and VM snapshot data, each located as
/// `dart:isolate_snapshot_data+0x{offset:x}` (or `dart:vm_snapshot_data+…`), the offset of its
/// first code unit from the start of the symbol; returns the isolate snapshot's provenance.
pub fn decode(bytes: &[u8], sink: &mut dyn Sink) -> Result<SnapshotInfo, DecodeError> {
    decode_within(bytes, sink, output_budget(bytes.len()))
}

fn decode_within(bytes: &[u8], sink: &mut dyn Sink, budget: usize) -> Result<SnapshotInfo, DecodeError> {
    let image = Image::parse(bytes)?;
    let symbols = &image.symbols;
    let isolate = symbols.isolate_data.ok_or_else(|| error(0, "no _kDartIsolateSnapshotData symbol"))?;
    let starts: Vec<u64> =
        [symbols.vm_data, Some(isolate), symbols.isolate_instructions].into_iter().flatten().map(|s| s.value).collect();
    let mut out = Out { emitter: Emitter::new(sink, FORMAT, budget), full: false };
    let mut info = None;
    let mut problem = None;
    for (label, symbol) in [("isolate_snapshot_data", Some(isolate)), ("vm_snapshot_data", symbols.vm_data)] {
        let Some(symbol) = symbol else { continue };
        let range = match image.region(symbol, &starts) {
            Ok((range, None)) => range,
            Ok((range, Some(cut))) => {
                problem.get_or_insert(cut);
                range
            }
            Err(region_problem) => {
                problem.get_or_insert(region_problem);
                continue;
            }
        };
        if image.encrypted.iter().any(|crypt| crypt.start < range.end && range.start < crypt.end) {
            let message =
                format!("{label} is FairPlay-encrypted (App Store): scan a decrypted build or the CI artifact");
            problem.get_or_insert(error(range.start, message));
            continue;
        }
        let data = bytes.get(range.clone()).unwrap_or_default();
        match snapshot(data, label, image.wide, &mut out) {
            Ok(found) if info.is_none() => info = Some(found),
            Ok(_) => {}
            Err(mut snapshot_problem) => {
                snapshot_problem.offset = snapshot_problem.offset.saturating_add(range.start);
                snapshot_problem.message = format!("{label}: {}", snapshot_problem.message);
                if out.full {
                    return Err(snapshot_problem);
                }
                problem.get_or_insert(snapshot_problem);
            }
        }
    }
    match (problem, info) {
        (Some(problem), _) => Err(problem),
        (None, Some(info)) => Ok(info),
        (None, None) => Err(error(0, "no readable isolate snapshot")),
    }
}

fn error(offset: usize, message: impl Into<String>) -> DecodeError {
    DecodeError::new(FORMAT, offset, message)
}

// The container: where the Dart symbols point, and which file bytes hold those addresses.

#[derive(Debug, Clone, Copy)]
struct Symbol {
    value: u64,
    /// Zero when unknown (Mach-O symbols have no size).
    size: u64,
}

#[derive(Debug, Default)]
struct Symbols {
    vm_data: Option<Symbol>,
    isolate_data: Option<Symbol>,
    isolate_instructions: Option<Symbol>,
}

impl Symbols {
    /// Keeps `symbol` if `name` is one of the Dart symbols not seen yet.
    fn offer(&mut self, name: Option<&[u8]>, symbol: Symbol) {
        let slot = match name {
            Some(VM_DATA) => &mut self.vm_data,
            Some(ISOLATE_DATA) => &mut self.isolate_data,
            Some(ISOLATE_INSTRUCTIONS) => &mut self.isolate_instructions,
            _ => return,
        };
        slot.get_or_insert(symbol);
    }
}

/// A section with contents in the file: its address range and where its bytes lie.
#[derive(Debug, Clone, Copy)]
struct Mapped {
    address: u64,
    size: u64,
    offset: u64,
}

/// What the reader needs of an ELF or Mach-O file.
#[derive(Debug)]
struct Image<'b> {
    bytes: &'b [u8],
    /// A 64-bit file: 64-bit words in the snapshot too.
    wide: bool,
    sections: Vec<Mapped>,
    symbols: Symbols,
    /// File ranges that are FairPlay ciphertext (Mach-O with a non-zero `cryptid`).
    encrypted: Vec<Range<usize>>,
}

impl<'b> Image<'b> {
    fn parse(bytes: &'b [u8]) -> Result<Image<'b>, DecodeError> {
        if bytes.starts_with(b"\x7fELF") {
            elf(bytes)
        } else if matches!(u32_le(bytes, 0), Some(MH_MAGIC | MH_MAGIC_64)) {
            macho(bytes)
        } else {
            Err(error(0, "not an ELF or a little-endian Mach-O file"))
        }
    }

    /// The file bytes of a symbol: from its address, mapped through the section that holds it,
    /// to the first of its declared end, the next Dart symbol and the end of its section. A
    /// region cut short by the end of the file comes with a problem to report.
    fn region(&self, symbol: Symbol, starts: &[u64]) -> Result<(Range<usize>, Option<DecodeError>), DecodeError> {
        let section = self
            .sections
            .iter()
            .find(|s| s.address <= symbol.value && symbol.value - s.address < s.size)
            .ok_or_else(|| error(0, format!("Dart symbol at address {:#x} lies in no section", symbol.value)))?;
        let into = symbol.value - section.address;
        let mut length = section.size - into;
        if symbol.size > 0 {
            length = length.min(symbol.size);
        }
        for &other in starts {
            if other > symbol.value {
                length = length.min(other - symbol.value);
            }
        }
        let start = section.offset.checked_add(into).and_then(|start| usize::try_from(start).ok());
        let start = start.filter(|&start| start < self.bytes.len()).ok_or_else(|| {
            error(usize::try_from(section.offset).unwrap_or(usize::MAX), "snapshot data lies outside the file")
        })?;
        let end = usize::try_from(length).ok().and_then(|length| start.checked_add(length));
        match end {
            Some(end) if end <= self.bytes.len() => Ok((start..end, None)),
            _ => Ok((
                start..self.bytes.len(),
                Some(error(self.bytes.len(), "snapshot data runs past the end of the file")),
            )),
        }
    }
}

/// An ELF file: its allocated sections with contents, and the Dart symbols of its dynamic
/// symbol table (or its full one).
fn elf(bytes: &[u8]) -> Result<Image<'_>, DecodeError> {
    let header = Elf::parse_header(bytes).map_err(|e| error(0, e.to_string()))?;
    let wide = match header.e_ident[EI_CLASS] {
        ELFCLASS64 => true,
        ELFCLASS32 => false,
        class => return Err(error(EI_CLASS, format!("unknown ELF class {class}"))),
    };
    if header.e_ident[EI_DATA] != ELFDATA2LSB {
        return Err(error(EI_DATA, "big-endian ELF is not supported"));
    }
    let shoff = usize::try_from(header.e_shoff).unwrap_or(usize::MAX);
    if shoff == 0 {
        return Err(error(0, "no section headers"));
    }
    let container = if wide { Container::Big } else { Container::Little };
    // goblin checks the count against the buffer size before allocating.
    let headers = SectionHeader::parse(bytes, shoff, usize::from(header.e_shnum), Ctx::new(container, Endian::Little))
        .map_err(|e| error(shoff, format!("section headers: {e}")))?;

    let mut symbols = Symbols::default();
    let entry_size = if wide { 24 } else { 16 };
    for table in headers.iter().filter(|s| s.sh_type == SHT_DYNSYM || s.sh_type == SHT_SYMTAB) {
        let Some(entries) = file_range(bytes, table.sh_offset, table.sh_size) else { continue };
        let names = usize::try_from(table.sh_link)
            .ok()
            .and_then(|index| headers.get(index))
            .and_then(|names| file_range(bytes, names.sh_offset, names.sh_size));
        let Some(names) = names else { continue };
        for entry in entries.chunks_exact(entry_size).take(MAX_SYMBOLS) {
            let (value, size) = if wide {
                (u64_le(entry, 8), u64_le(entry, 16))
            } else {
                (u32_le(entry, 4).map(u64::from), u32_le(entry, 8).map(u64::from))
            };
            let (Some(name_at), Some(value), Some(size)) = (u32_le(entry, 0), value, size) else { continue };
            symbols.offer(c_string(names, name_at as usize), Symbol { value, size });
        }
    }
    let sections = headers
        .iter()
        .filter(|s| s.sh_type != SHT_NOBITS && s.sh_flags & u64::from(SHF_ALLOC) != 0)
        .map(|s| Mapped { address: s.sh_addr, size: s.sh_size, offset: s.sh_offset })
        .collect();
    Ok(Image { bytes, wide, sections, symbols, encrypted: Vec::new() })
}

const MH_MAGIC: u32 = 0xfeed_face;
const MH_MAGIC_64: u32 = 0xfeed_facf;
const LC_SEGMENT: u32 = 0x1;
const LC_SYMTAB: u32 = 0x2;
const LC_SEGMENT_64: u32 = 0x19;
const LC_ENCRYPTION_INFO: u32 = 0x21;
const LC_ENCRYPTION_INFO_64: u32 = 0x2c;
/// `S_ZEROFILL`, `S_GB_ZEROFILL`, `S_THREAD_LOCAL_ZEROFILL`: section types without file bytes.
const ZEROFILL_TYPES: [u32; 3] = [0x1, 0xc, 0x12];
/// `N_STAB` bits, and the `N_TYPE` value of a symbol defined in a section.
const N_STAB: u8 = 0xe0;
const N_TYPE: u8 = 0x0e;
const N_SECT: u8 = 0x0e;

/// A thin little-endian Mach-O image (`App.framework/App` in an IPA): its sections with
/// contents, the Dart symbols of its symbol table, and its FairPlay-encrypted range.
fn macho(bytes: &[u8]) -> Result<Image<'_>, DecodeError> {
    let wide = u32_le(bytes, 0) == Some(MH_MAGIC_64);
    let header_size = if wide { 32 } else { 28 };
    let (Some(ncmds), Some(sizeofcmds)) = (u32_le(bytes, 16), u32_le(bytes, 20)) else {
        return Err(error(0, "Mach-O header truncated"));
    };
    let commands_end = (sizeofcmds as usize).checked_add(header_size).filter(|&end| end <= bytes.len());
    let commands_end = commands_end.ok_or_else(|| error(20, "load commands run past the end of the file"))?;
    let mut sections = Vec::new();
    let mut encrypted = Vec::new();
    let mut symtab = None;
    let mut at = header_size;
    for _ in 0..ncmds {
        let (Some(command), Some(size)) = (u32_le(bytes, at), u32_le(bytes, at + 4)) else {
            return Err(error(at, "load command truncated"));
        };
        let end = at.checked_add(size as usize).filter(|&end| size >= 8 && end <= commands_end);
        let end = end.ok_or_else(|| error(at, format!("load command of {size} bytes does not fit")))?;
        let body = &bytes[at..end];
        match command {
            LC_SEGMENT_64 | LC_SEGMENT => {
                // `section_64` is 80 bytes (64-bit address and size), `section` 68.
                let (first, stride) = if command == LC_SEGMENT_64 { (72, 80) } else { (56, 68) };
                let nsects = u32_le(body, first - 8).unwrap_or(0) as usize;
                let headers = body.get(first..).unwrap_or_default().chunks_exact(stride).take(nsects);
                for header in headers {
                    let fields = if command == LC_SEGMENT_64 {
                        (u64_le(header, 32), u64_le(header, 40), u32_le(header, 48), u32_le(header, 64))
                    } else {
                        let word = |at| u32_le(header, at).map(u64::from);
                        (word(32), word(36), u32_le(header, 40), u32_le(header, 56))
                    };
                    let (Some(address), Some(size), Some(offset), Some(flags)) = fields else { continue };
                    let offset = u64::from(offset);
                    if offset != 0 && !ZEROFILL_TYPES.contains(&(flags & 0xff)) {
                        sections.push(Mapped { address, size, offset });
                    }
                }
            }
            LC_SYMTAB => symtab = Some((u32_le(body, 8), u32_le(body, 12), u32_le(body, 16), u32_le(body, 20))),
            LC_ENCRYPTION_INFO | LC_ENCRYPTION_INFO_64 => {
                if let (Some(offset), Some(size), Some(id)) = (u32_le(body, 8), u32_le(body, 12), u32_le(body, 16))
                    && id != 0
                {
                    encrypted.push(offset as usize..(offset as usize).saturating_add(size as usize));
                }
            }
            _ => {}
        }
        at = end;
    }

    let mut symbols = Symbols::default();
    if let Some((Some(symoff), Some(nsyms), Some(stroff), Some(strsize))) = symtab {
        let entry_size = if wide { 16 } else { 12 };
        let entries = bytes.get(symoff as usize..).unwrap_or_default();
        let names = bytes.get(stroff as usize..).unwrap_or_default();
        let names = names.get(..strsize as usize).unwrap_or(names);
        for entry in entries.chunks_exact(entry_size).take((nsyms as usize).min(MAX_SYMBOLS)) {
            let value = if wide { u64_le(entry, 8) } else { u32_le(entry, 8).map(u64::from) };
            let (Some(name_at), Some(&kind), Some(value)) = (u32_le(entry, 0), entry.get(4), value) else { continue };
            if kind & N_STAB == 0 && kind & N_TYPE == N_SECT {
                symbols.offer(c_string(names, name_at as usize), Symbol { value, size: 0 });
            }
        }
    }
    Ok(Image { bytes, wide, sections, symbols, encrypted })
}

// The snapshot.

/// The emitter, and whether one of its caps was reached (which stops the whole file).
struct Out<'s> {
    emitter: Emitter<'s>,
    full: bool,
}

impl Out<'_> {
    fn emit(&mut self, offset: usize, location: &str, value: &str) -> Result<(), DecodeError> {
        let result = self.emitter.emit(offset, location, None, value);
        self.full |= result.is_err();
        result
    }

    fn charge(&mut self, offset: usize, cost: usize) -> Result<(), DecodeError> {
        let result = self.emitter.charge(offset, cost);
        self.full |= result.is_err();
        result
    }
}

/// Reads one snapshot's header and strings; offsets in errors are relative to `data`.
fn snapshot(data: &[u8], label: &'static str, wide: bool, out: &mut Out<'_>) -> Result<SnapshotInfo, DecodeError> {
    match u32_le(data, 0) {
        Some(MAGIC) => {}
        Some(_) => return Err(error(0, "no Dart snapshot magic")),
        None => return Err(error(0, "too short for the snapshot magic")),
    }
    let (Some(stored_length), Some(kind)) = (i64_le(data, 4), i64_le(data, 12)) else {
        return Err(error(data.len(), "snapshot header truncated"));
    };
    let version = data
        .get(HEADER_SIZE..HEADER_SIZE + VERSION_LEN)
        .filter(|hash| hash.iter().all(u8::is_ascii_alphanumeric))
        .ok_or_else(|| error(HEADER_SIZE, "no version hash"))?;
    let features_at = HEADER_SIZE + VERSION_LEN;
    let features_window = data.get(features_at..).unwrap_or_default();
    let features_window = features_window.get(..MAX_FEATURES).unwrap_or(features_window);
    let features_len = features_window
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| error(features_at, "feature string not terminated"))?;
    let features = String::from_utf8_lossy(features_window.get(..features_len).unwrap_or_default()).into_owned();
    let info = SnapshotInfo { version: String::from_utf8_lossy(version).into_owned(), features };
    let header_end = features_at + features_len + 1;

    // The declared length counts the magic; `Snapshot::length()` adds it back.
    let length = stored_length.checked_add(4).and_then(|length| usize::try_from(length).ok());
    let (clustered_end, problem) = match length {
        Some(length) if (header_end..=data.len()).contains(&length) => (length, None),
        _ => (data.len(), Some(error(4, format!("declared length {stored_length} does not fit the snapshot data")))),
    };

    let mut strings = Strings { data, label, out, done: header_end, location: String::new() };
    strings.clustered(header_end, clustered_end)?;
    let strings_in_image = matches!(kind, KIND_FULL_JIT | KIND_FULL_AOT)
        && !info.features.split(' ').any(|feature| feature == COMPRESSED_POINTERS);
    if strings_in_image && problem.is_none() {
        let alignment = if wide { 16 } else { 8 };
        let image = clustered_end.next_multiple_of(alignment).min(data.len());
        strings.read_only(image, wide)?;
    }
    strings.gap_to(data.len())?;
    match problem {
        Some(problem) => Err(problem),
        None => Ok(info),
    }
}

/// One string found: where its code units lie, and how wide they are.
#[derive(Debug, Clone)]
struct Found {
    /// Where the record or object starts (its length, its header).
    start: usize,
    units: Range<usize>,
    two_byte: bool,
}

/// Emits the strings of one snapshot's data in order, and the printable runs of the bytes
/// between them.
struct Strings<'d, 'o, 's> {
    data: &'d [u8],
    label: &'static str,
    out: &'o mut Out<'s>,
    /// Bytes before this offset have been emitted (as strings or runs) or skipped.
    done: usize,
    location: String,
}

impl Strings<'_, '_, '_> {
    /// The `String` cluster's fill section, found by its records in `start..end`.
    fn clustered(&mut self, start: usize, end: usize) -> Result<(), DecodeError> {
        let data = self.data.get(..end).unwrap_or(self.data);
        let mut at = start;
        while at < end {
            at = match self.chain(data, at)? {
                Some(chain_end) => chain_end,
                None => at + 1,
            };
        }
        Ok(())
    }

    /// If at least [`MIN_CHAIN`] string records follow each other from `start`, emits them and
    /// every further record of the run, and returns where the run ends.
    fn chain(&mut self, data: &[u8], start: usize) -> Result<Option<usize>, DecodeError> {
        let mut first: [Option<Found>; MIN_CHAIN] = Default::default();
        let mut at = start;
        for (index, slot) in first.iter_mut().enumerate() {
            // Arbitrary bytes, and ASCII text with the length byte before it, often read as
            // UTF-16: a run may go on with a two-byte record but not start with one.
            let (record, cost) = record(data, at, index > 0);
            self.out.charge(at, cost)?;
            let Some(record) = record else { return Ok(None) };
            at = record.units.end;
            *slot = Some(record);
        }
        for record in first.into_iter().flatten() {
            self.string(&record)?;
        }
        loop {
            let (record, cost) = record(data, at, true);
            self.out.charge(at, cost)?;
            let Some(record) = record else { return Ok(Some(at)) };
            at = record.units.end;
            self.string(&record)?;
        }
    }

    /// Read-only `OneByteString` and `TwoByteString` objects in the data image from `image`.
    fn read_only(&mut self, image: usize, wide: bool) -> Result<(), DecodeError> {
        let layout = if wide { ObjectLayout::WIDE } else { ObjectLayout::NARROW };
        let mut at = image;
        while at.saturating_add(layout.units_at) <= self.data.len() {
            let (object, cost) = layout.string_at(self.data, image, at);
            self.out.charge(at, cost)?;
            match object {
                Some(object) => {
                    self.string(&object)?;
                    at = image + (object.units.end - image).next_multiple_of(layout.alignment);
                }
                None => at += layout.alignment,
            }
        }
        Ok(())
    }

    fn string(&mut self, found: &Found) -> Result<(), DecodeError> {
        self.gap_to(found.start)?;
        let units = self.data.get(found.units.clone()).unwrap_or_default();
        let text = if found.two_byte {
            let code_units = units.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
            char::decode_utf16(code_units).map(|unit| unit.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
        } else {
            units.iter().map(|&byte| char::from(byte)).collect::<String>()
        };
        self.done = self.done.max(found.units.end);
        if text.chars().nth(MIN_CHARS - 1).is_none() {
            return Ok(());
        }
        self.location.clear();
        let _ = write!(self.location, "dart:{}+0x{:x}", self.label, found.units.start);
        self.out.emit(found.units.start, &self.location, &text)
    }

    /// Emits the printable runs of the bytes from `done` to `end`, which no string covers.
    fn gap_to(&mut self, end: usize) -> Result<(), DecodeError> {
        if end <= self.done {
            return Ok(());
        }
        let base = self.done;
        self.done = end;
        let gap = self.data.get(base..end).unwrap_or_default();
        let (label, out, location) = (self.label, &mut *self.out, &mut self.location);
        let mut failure = None;
        let _ = scan_runs(gap, MIN_CHARS, &mut |offset, run| {
            location.clear();
            let _ = write!(location, "dart:{label}+0x{:x}", base + offset);
            match out.emit(base + offset, location, run) {
                Ok(()) => ControlFlow::Continue(()),
                Err(problem) => {
                    failure = Some(problem);
                    ControlFlow::Break(())
                }
            }
        });
        failure.map_or(Ok(()), Err)
    }
}

/// The string record of the `String` cluster's fill section at `at`, if the bytes there read as
/// one holding text (one-byte text unless `two_byte_too`), and the number of bytes looked at.
fn record(data: &[u8], at: usize, two_byte_too: bool) -> (Option<Found>, usize) {
    let Some((encoded, length_bytes)) = read_unsigned(data, at) else { return (None, 1) };
    let two_byte = encoded & 1 == 1;
    if two_byte && !two_byte_too {
        return (None, length_bytes);
    }
    let Some(units) = usize::try_from(encoded >> 1).ok().filter(|&units| units > 0) else {
        return (None, length_bytes);
    };
    let start = at + length_bytes;
    let end = units.checked_mul(if two_byte { 2 } else { 1 }).and_then(|len| start.checked_add(len));
    let Some(bytes) = end.and_then(|end| data.get(start..end)) else { return (None, length_bytes) };
    let (text, looked) = if two_byte { utf16_text(bytes) } else { one_byte_text(bytes) };
    let found = text.then(|| Found { start: at, units: start..start + bytes.len(), two_byte });
    (found, length_bytes + looked)
}

/// Dart's variable-length unsigned integer at `at` (`ReadStream::ReadUnsigned`): 7 bits a byte,
/// low bits first, the last byte marked by its top bit; its value and size.
fn read_unsigned(data: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for index in 0..MAX_VARINT_BYTES {
        let byte = *data.get(at.checked_add(index)?)?;
        let shift = 7 * index as u32;
        if byte & 0x80 != 0 {
            return Some((value | (u64::from(byte & 0x7f) << shift), index + 1));
        }
        value |= u64::from(byte) << shift;
    }
    None
}

/// Whether one-byte code units are text: printable ASCII, tab and line breaks. Latin-1 letters
/// are left out, so that a record can never swallow the length byte of the next (which always
/// has its top bit set). Returns the verdict and the bytes looked at.
fn one_byte_text(bytes: &[u8]) -> (bool, usize) {
    match bytes.iter().position(|&b| !(matches!(b, 0x20..=0x7e) || matches!(b, b'\t' | b'\n' | b'\r'))) {
        Some(bad) => (false, bad + 1),
        None => (true, bytes.len()),
    }
}

/// Whether two-byte code units are text: well-formed UTF-16 without control characters, with at
/// least one unit above 0xff (Dart stores a string in one byte a unit whenever it fits).
fn utf16_text(bytes: &[u8]) -> (bool, usize) {
    let units = bytes.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    let mut wide = false;
    for (index, unit) in char::decode_utf16(units).enumerate() {
        match unit {
            Ok(c) if !c.is_control() || matches!(c, '\t' | '\n' | '\r') => wide |= u32::from(c) > 0xff,
            _ => return (false, 2 * (index + 1)),
        }
    }
    (wide, bytes.len())
}

/// Where a read-only string object keeps its length and code units.
struct ObjectLayout {
    alignment: usize,
    length_at: usize,
    length_size: usize,
    units_at: usize,
}

impl ObjectLayout {
    /// 64-bit: the tag word (the hash in its upper half), the length word, the code units.
    const WIDE: ObjectLayout = ObjectLayout { alignment: 16, length_at: 8, length_size: 8, units_at: 16 };
    /// 32-bit: the tag word, the length word, the hash word, the code units.
    const NARROW: ObjectLayout = ObjectLayout { alignment: 8, length_at: 4, length_size: 4, units_at: 12 };

    /// The string object at `at` (an aligned offset from `image`), if its length is a Smi whose
    /// code units are text followed by zero padding to the alignment; and the bytes looked at.
    fn string_at(&self, data: &[u8], image: usize, at: usize) -> (Option<Found>, usize) {
        let length = if self.length_size == 8 {
            u64_le(data, at + self.length_at)
        } else {
            u32_le(data, at + self.length_at).map(u64::from)
        };
        let Some(units) = length.filter(|length| length & 1 == 0).and_then(|length| usize::try_from(length >> 1).ok())
        else {
            return (None, self.units_at);
        };
        if units == 0 {
            return (None, self.units_at);
        }
        let start = at + self.units_at;
        let mut looked = self.units_at;
        for two_byte in [false, true] {
            let Some(end) = units.checked_mul(if two_byte { 2 } else { 1 }).and_then(|len| start.checked_add(len))
            else {
                continue;
            };
            let Some(bytes) = data.get(start..end) else { continue };
            let (text, seen) = if two_byte { utf16_text(bytes) } else { one_byte_text(bytes) };
            looked += seen;
            let padding_end = (image + (end - image).next_multiple_of(self.alignment)).min(data.len());
            let padded = data.get(end..padding_end).is_some_and(|padding| padding.iter().all(|&b| b == 0));
            if text && padded {
                return (Some(Found { start: at, units: start..end, two_byte }), looked);
            }
        }
        (None, looked)
    }
}

// Bounded reads.

/// The bytes of the file range `offset..offset + size`, if it lies inside `bytes`.
fn file_range(bytes: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    bytes.get(start..end)
}

/// The NUL-terminated bytes at `offset` in a string table.
fn c_string(table: &[u8], offset: usize) -> Option<&[u8]> {
    let rest = table.get(offset..)?;
    rest.get(..rest.iter().position(|&b| b == 0)?)
}

fn i64_le(bytes: &[u8], offset: usize) -> Option<i64> {
    u64_le(bytes, offset).map(|value| value as i64)
}

#[cfg(test)]
mod tests;
