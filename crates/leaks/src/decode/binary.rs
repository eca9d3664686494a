//! Native code readers: the strings of ELF shared objects (`lib/<abi>/*.so` in an APK, Flutter's
//! `libapp.so`), Mach-O executables and fat/universal Mach-O files (the main binary and the
//! frameworks of an IPA). Section contents are read with [`super::runs`].
//!
//! goblin reads the headers; only the sections that hold constant data are scanned: ELF
//! `.rodata`, `.rodata.*`, `.data` and `.data.rel.ro`, and Mach-O `__TEXT,__cstring`,
//! `__TEXT,__const`, `__TEXT,__ustring` (UTF-16), `__DATA,__data` and `__DATA_CONST,__const`.
//! Code, symbol tables, `.comment`, `__cfstring` (pointers to `__cstring`) and
//! `__objc_methname` (selector names) are not. App Store binaries are FairPlay-encrypted: an
//! `LC_ENCRYPTION_INFO[_64]` with a non-zero `cryptid` sets [`BinaryInfo::encrypted`], and the
//! sections inside the encrypted range are skipped (they hold ciphertext), the rest still read.
//!
//! Every offset and size from a header is checked against the buffer. A binary whose sections
//! cannot all be read (no section headers, a section outside the file, a broken architecture)
//! ends in a [`DecodeError`] after the readable sections are emitted, so the caller's raw-byte
//! pass covers what was skipped.

use std::fmt::Write as _;
use std::ops::ControlFlow;

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::Elf;
use goblin::elf::header::{EI_CLASS, EI_DATA, ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFDATA2MSB};
use goblin::elf::section_header::{SHN_XINDEX, SHT_NOBITS, SectionHeader};
use goblin::mach::constants::cputype::{CPU_SUBTYPE_MASK, get_arch_name_from_types};
use goblin::mach::constants::{S_GB_ZEROFILL, S_THREAD_LOCAL_ZEROFILL, S_ZEROFILL, SECTION_TYPE};
use goblin::mach::load_command::{
    CommandVariant, LoadCommand, SIZEOF_SECTION_32, SIZEOF_SECTION_64, SIZEOF_SEGMENT_COMMAND_32,
    SIZEOF_SEGMENT_COMMAND_64,
};
use goblin::mach::segment::{Section, Segment};

use super::runs::scan_runs;
use super::{DecodeError, Sink};

const ELF: &str = "ELF";
const MACH_O: &str = "Mach-O";
const MACH_O_FAT: &str = "Mach-O (fat)";

/// Runs shorter than this many characters are not emitted from sections: no key is that short.
const MIN_SECTION_RUN: usize = 8;
/// Most architectures read from a fat binary.
const MAX_ARCHES: usize = 16;

const MH_MAGIC: u32 = 0xfeed_face;
const MH_MAGIC_64: u32 = 0xfeed_facf;
const MH_CIGAM: u32 = 0xcefa_edfe;
const MH_CIGAM_64: u32 = 0xcffa_edfe;
const FAT_MAGIC: u32 = 0xcafe_babe;
const FAT_MAGIC_64: u32 = 0xcafe_babf;
const FAT_HEADER_SIZE: usize = 8;
const FAT_ARCH_SIZE: usize = 20;
const FAT_ARCH_64_SIZE: usize = 32;

/// What [`decode`] found out about a binary besides its strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinaryInfo {
    /// `"ELF"`, `"Mach-O"` or `"Mach-O (fat)"`.
    pub format: &'static str,
    /// An architecture carries FairPlay encryption (`cryptid != 0`): its code and `__TEXT`
    /// strings are ciphertext, and only a decrypted build or the CI artifact can be scanned.
    pub encrypted: bool,
}

/// Names the binary format from its magic bytes: `"ELF"`, `"Mach-O"` or `"Mach-O (fat)"`.
///
/// `0xcafebabe` is also the magic of Java class files, whose next four bytes (the class file
/// version) read as an architecture count of 45 or more; a fat header is accepted only with 1 to
/// 16 architectures whose first slice lies inside the file.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x7fELF") {
        return Some(ELF);
    }
    match u32_be(bytes, 0)? {
        MH_MAGIC | MH_MAGIC_64 | MH_CIGAM | MH_CIGAM_64 => Some(MACH_O),
        FAT_MAGIC | FAT_MAGIC_64 => {
            let count = usize::try_from(u32_be(bytes, 4)?).ok()?;
            let first = fat_arch(bytes, 0)?;
            let table_end = FAT_HEADER_SIZE.checked_add(count.checked_mul(fat_arch_size(bytes)?)?)?;
            let slice_end = first.offset.checked_add(first.size)?;
            let plausible = (1..=MAX_ARCHES).contains(&count)
                && first.size > 0
                && first.offset >= table_end
                && slice_end <= bytes.len();
            plausible.then_some(MACH_O_FAT)
        }
        _ => None,
    }
}

/// Emits the strings of the constant-data sections of an ELF, Mach-O or fat Mach-O file, each
/// located as `{section}+0x{offset:x}` (ELF), `{segment},{section}+0x{offset:x}` (Mach-O) or
/// `{arch}:{segment},{section}+0x{offset:x}` (an architecture of a fat binary), where the offset
/// is the start of the string inside its section.
pub fn decode(bytes: &[u8], sink: &mut dyn Sink) -> Result<BinaryInfo, DecodeError> {
    let mut out = Emitter::new(sink, bytes.len());
    match sniff(bytes) {
        Some(ELF) => elf(bytes, &mut out).map(|()| BinaryInfo { format: ELF, encrypted: false }),
        Some(MACH_O) => macho(bytes, None, &mut out).map(|encrypted| BinaryInfo { format: MACH_O, encrypted }),
        Some(MACH_O_FAT) => fat(bytes, &mut out).map(|encrypted| BinaryInfo { format: MACH_O_FAT, encrypted }),
        Some(_) | None => Err(DecodeError::new("binary", 0, "not an ELF or Mach-O file")),
    }
}

/// Passes section strings through the shared [`super::Emitter`] caps (overlapping section
/// headers could otherwise have one region read many times).
struct Emitter<'s> {
    out: super::Emitter<'s>,
    /// Set when a cap was reached; no more strings are emitted.
    full: Option<String>,
}

impl<'s> Emitter<'s> {
    fn new(sink: &'s mut dyn Sink, input_len: usize) -> Emitter<'s> {
        Emitter { out: super::Emitter::new(sink, "binary", super::output_budget(input_len)), full: None }
    }

    /// Emits the printable runs of one section; `Break` once a cap is reached.
    fn section(&mut self, data: &[u8], section: &str) -> ControlFlow<()> {
        let mut location = String::new();
        scan_runs(data, MIN_SECTION_RUN, &mut |offset, run| {
            location.clear();
            let _ = write!(location, "{section}+0x{offset:x}");
            match self.out.emit(offset, &location, None, run) {
                Ok(()) => ControlFlow::Continue(()),
                Err(error) => {
                    self.full = Some(error.message);
                    ControlFlow::Break(())
                }
            }
        })
    }
}

/// The bytes of the file range `offset..offset + size`, if it lies inside `bytes`.
fn file_range(bytes: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    bytes.get(start..end)
}

fn u32_be(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_be_bytes(field.try_into().ok()?))
}

fn u64_be(bytes: &[u8], offset: usize) -> Option<u64> {
    let field = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_be_bytes(field.try_into().ok()?))
}

fn u32_in(bytes: &[u8], offset: usize, endian: Endian) -> Option<u32> {
    let field: [u8; 4] = bytes.get(offset..offset.checked_add(4)?)?.try_into().ok()?;
    Some(if endian.is_little() { u32::from_le_bytes(field) } else { u32::from_be_bytes(field) })
}

// ELF.

fn is_elf_string_section(name: &str) -> bool {
    matches!(name, ".rodata" | ".data" | ".data.rel.ro") || name.starts_with(".rodata.")
}

fn elf(bytes: &[u8], out: &mut Emitter<'_>) -> Result<(), DecodeError> {
    let error = |offset: usize, message: String| DecodeError::new(ELF, offset, message);
    let header = Elf::parse_header(bytes).map_err(|e| error(0, e.to_string()))?;
    let container = match header.e_ident[EI_CLASS] {
        ELFCLASS64 => Container::Big,
        ELFCLASS32 => Container::Little,
        class => return Err(error(EI_CLASS, format!("unknown class {class}"))),
    };
    let endian = match header.e_ident[EI_DATA] {
        ELFDATA2LSB => Endian::Little,
        ELFDATA2MSB => Endian::Big,
        data => return Err(error(EI_DATA, format!("unknown byte order {data}"))),
    };
    let shoff = usize::try_from(header.e_shoff).unwrap_or(usize::MAX);
    if shoff == 0 {
        return Err(error(0, "no section headers (stripped or packed)".into()));
    }
    // goblin checks the count against the buffer size before allocating.
    let sections = SectionHeader::parse(bytes, shoff, usize::from(header.e_shnum), Ctx::new(container, endian))
        .map_err(|e| error(shoff, format!("section headers: {e}")))?;
    let names_index = match u32::from(header.e_shstrndx) {
        SHN_XINDEX => sections.first().map_or(0, |first| first.sh_link),
        index => index,
    };
    let names = usize::try_from(names_index)
        .ok()
        .and_then(|index| sections.get(index))
        .and_then(|table| file_range(bytes, table.sh_offset, table.sh_size))
        .ok_or_else(|| error(shoff, "section name table lies outside the file".into()))?;

    let mut found = 0;
    let mut problem = None;
    for section in &sections {
        let Some(name) = section_name(names, section.sh_name) else { continue };
        if section.sh_type == SHT_NOBITS || !is_elf_string_section(name) {
            continue;
        }
        found += 1;
        let Some(data) = file_range(bytes, section.sh_offset, section.sh_size) else {
            let offset = usize::try_from(section.sh_offset).unwrap_or(usize::MAX);
            problem.get_or_insert_with(|| error(offset, format!("section {name} lies outside the file")));
            continue;
        };
        if out.section(data, name).is_break() {
            return Err(error(0, out.full.take().unwrap_or_default()));
        }
    }
    match problem {
        Some(problem) => Err(problem),
        None if found == 0 => Err(error(0, "no .rodata or .data section".into())),
        None => Ok(()),
    }
}

/// The NUL-terminated name at `offset` in the section name table.
fn section_name(names: &[u8], offset: usize) -> Option<&str> {
    let rest = names.get(offset..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    std::str::from_utf8(rest.get(..end)?).ok()
}

// Mach-O.

/// The `(segment, section)` pairs that hold constant data worth reading.
const MACHO_STRING_SECTIONS: [(&str, &str); 5] = [
    ("__TEXT", "__cstring"),
    ("__TEXT", "__const"),
    ("__TEXT", "__ustring"),
    ("__DATA", "__data"),
    ("__DATA_CONST", "__const"),
];

/// A fixed-size, NUL-padded Mach-O name.
fn macho_name(raw: &[u8; 16]) -> Option<&str> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    std::str::from_utf8(raw.get(..end)?).ok()
}

/// Reads one Mach-O image (a whole file, or one architecture of a fat file); returns whether it
/// is FairPlay-encrypted. Load commands are walked here rather than through `MachO::parse`, which
/// also reads symbols, dylib names and the entry point, none of which is needed.
fn macho(bytes: &[u8], arch: Option<&str>, out: &mut Emitter<'_>) -> Result<bool, DecodeError> {
    let error = |offset: usize, message: String| DecodeError::new(MACH_O, offset, message);
    let (_, ctx) = goblin::mach::parse_magic_and_ctx(bytes, 0).map_err(|e| error(0, e.to_string()))?;
    let ctx = ctx.ok_or_else(|| error(0, "no Mach-O magic".into()))?;
    let (header_size, segment_size, section_size) = if ctx.is_big() {
        (32, SIZEOF_SEGMENT_COMMAND_64, SIZEOF_SECTION_64)
    } else {
        (28, SIZEOF_SEGMENT_COMMAND_32, SIZEOF_SECTION_32)
    };
    let (Some(ncmds), Some(sizeofcmds)) = (u32_in(bytes, 16, ctx.le), u32_in(bytes, 20, ctx.le)) else {
        return Err(error(0, "header truncated".into()));
    };
    let commands_end = usize::try_from(sizeofcmds).ok().and_then(|size| size.checked_add(header_size));
    let commands_end = match commands_end {
        Some(end) if end <= bytes.len() && ncmds <= sizeofcmds / 8 => end,
        _ => return Err(error(16, format!("{ncmds} load commands in {sizeofcmds} bytes do not fit the file"))),
    };

    let mut sections: Vec<Section> = Vec::new();
    let mut encrypted_ranges: Vec<(u64, u64)> = Vec::new();
    let mut offset = header_size;
    for _ in 0..ncmds {
        let start = offset;
        if start >= commands_end {
            return Err(error(start, "load commands run past sizeofcmds".into()));
        }
        let command = LoadCommand::parse(bytes, &mut offset, ctx.le).map_err(|e| error(start, e.to_string()))?;
        let size = command.command.cmdsize();
        if size < 8 {
            return Err(error(start, format!("load command of {size} bytes")));
        }
        // A segment's section headers follow its command and must fit inside it.
        let (segment, room) = match command.command {
            CommandVariant::Segment64(segment) => {
                (Segment::from_64_lossy(bytes, &segment, start, ctx), size.saturating_sub(segment_size) / section_size)
            }
            CommandVariant::Segment32(segment) => {
                (Segment::from_32_lossy(bytes, &segment, start, ctx), size.saturating_sub(segment_size) / section_size)
            }
            CommandVariant::EncryptionInfo64(info) => {
                if info.cryptid != 0 {
                    encrypted_ranges.push((info.cryptoff.into(), info.cryptsize.into()));
                }
                continue;
            }
            CommandVariant::EncryptionInfo32(info) => {
                if info.cryptid != 0 {
                    encrypted_ranges.push((info.cryptoff.into(), info.cryptsize.into()));
                }
                continue;
            }
            _ => continue,
        };
        let segment = segment.map_err(|e| error(start, e.to_string()))?;
        let count = usize::try_from(segment.nsects).unwrap_or(usize::MAX).min(room);
        for section in (&segment).into_iter().take(count) {
            let (section, _) = section.map_err(|e| error(start, e.to_string()))?;
            sections.push(section);
        }
    }

    let prefix = arch.map(|arch| format!("{arch}:")).unwrap_or_default();
    let mut found = 0;
    let mut problem = None;
    for section in &sections {
        let (Some(segname), Some(sectname)) = (macho_name(&section.segname), macho_name(&section.sectname)) else {
            continue;
        };
        if !MACHO_STRING_SECTIONS.contains(&(segname, sectname)) {
            continue;
        }
        found += 1;
        let section_type = section.flags & SECTION_TYPE;
        if matches!(section_type, S_ZEROFILL | S_GB_ZEROFILL | S_THREAD_LOCAL_ZEROFILL) {
            continue;
        }
        let start = u64::from(section.offset);
        let end = start.saturating_add(section.size);
        if encrypted_ranges.iter().any(|&(off, size)| start < off.saturating_add(size) && off < end) {
            continue;
        }
        let Some(data) = file_range(bytes, start, section.size) else {
            let at = usize::try_from(start).unwrap_or(usize::MAX);
            problem.get_or_insert_with(|| error(at, format!("section {segname},{sectname} lies outside the file")));
            continue;
        };
        if out.section(data, &format!("{prefix}{segname},{sectname}")).is_break() {
            return Err(error(0, out.full.take().unwrap_or_default()));
        }
    }
    match problem {
        Some(problem) => Err(problem),
        None if found == 0 => Err(error(0, "no __cstring, __const or __data section".into())),
        None => Ok(!encrypted_ranges.is_empty()),
    }
}

// Fat (universal) Mach-O.

/// One entry of a fat header: the CPU and where its image lies.
struct FatArch {
    cputype: u32,
    cpusubtype: u32,
    offset: usize,
    size: usize,
}

fn fat_arch_size(bytes: &[u8]) -> Option<usize> {
    match u32_be(bytes, 0)? {
        FAT_MAGIC => Some(FAT_ARCH_SIZE),
        FAT_MAGIC_64 => Some(FAT_ARCH_64_SIZE),
        _ => None,
    }
}

/// Entry `index` of the fat header (`fat_arch` or `fat_arch_64`, always big-endian).
fn fat_arch(bytes: &[u8], index: usize) -> Option<FatArch> {
    let entry_size = fat_arch_size(bytes)?;
    let at = FAT_HEADER_SIZE.checked_add(index.checked_mul(entry_size)?)?;
    let cputype = u32_be(bytes, at)?;
    let cpusubtype = u32_be(bytes, at + 4)?;
    let (offset, size) = if entry_size == FAT_ARCH_64_SIZE {
        (u64_be(bytes, at + 8)?, u64_be(bytes, at + 16)?)
    } else {
        (u64::from(u32_be(bytes, at + 8)?), u64::from(u32_be(bytes, at + 12)?))
    };
    Some(FatArch { cputype, cpusubtype, offset: usize::try_from(offset).ok()?, size: usize::try_from(size).ok()? })
}

/// Reads each architecture (at most [`MAX_ARCHES`]); returns whether any is encrypted. One
/// broken architecture does not stop the others; its error is returned at the end.
fn fat(bytes: &[u8], out: &mut Emitter<'_>) -> Result<bool, DecodeError> {
    let count = u32_be(bytes, 4).and_then(|count| usize::try_from(count).ok()).unwrap_or(0);
    let mut encrypted = false;
    let mut problem = None;
    for index in 0..count.min(MAX_ARCHES) {
        let Some(arch) = fat_arch(bytes, index) else {
            problem.get_or_insert_with(|| DecodeError::new(MACH_O, FAT_HEADER_SIZE, "fat header truncated"));
            break;
        };
        let name = get_arch_name_from_types(arch.cputype, arch.cpusubtype & !CPU_SUBTYPE_MASK)
            .map_or_else(|| format!("cputype{:#x}", arch.cputype), str::to_owned);
        let Some(image) = arch.offset.checked_add(arch.size).and_then(|end| bytes.get(arch.offset..end)) else {
            let message = format!("architecture {name} lies outside the file");
            problem.get_or_insert_with(|| DecodeError::new(MACH_O, arch.offset, message));
            continue;
        };
        match macho(image, Some(&name), out) {
            Ok(arch_encrypted) => encrypted |= arch_encrypted,
            Err(mut error) => {
                error.offset = error.offset.saturating_add(arch.offset);
                error.message = format!("{name}: {}", error.message);
                if out.full.is_some() {
                    return Err(error);
                }
                problem.get_or_insert(error);
            }
        }
    }
    if count > MAX_ARCHES {
        let message = format!("{count} architectures; only the first {MAX_ARCHES} are read");
        problem.get_or_insert_with(|| DecodeError::new(MACH_O, 4, message));
    }
    match problem {
        Some(problem) => Err(problem),
        None => Ok(encrypted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{elf, macho};
    use crate::decode::MAX_STRINGS;
    use crate::decode::testing::{Found, collect};
    use proptest::prelude::*;

    fn run(bytes: &[u8]) -> (Found, Result<BinaryInfo, DecodeError>) {
        collect(|sink| decode(bytes, sink))
    }

    fn found(location: &str, value: &str) -> (String, Option<String>, String) {
        (location.to_owned(), None, value.to_owned())
    }

    fn put_u32_le(bytes: &mut [u8], at: usize, value: u32) {
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn put_u64_le(bytes: &mut [u8], at: usize, value: u64) {
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    const KEY: &str = "AIzaSyD-planted-key-0123456789abcdefghi";
    const SECRET: &str = "sk_live_planted0123456789abcdefABCDEF";
    const ELF_OK: Result<BinaryInfo, DecodeError> = Ok(BinaryInfo { format: "ELF", encrypted: false });
    const MACHO_OK: Result<BinaryInfo, DecodeError> = Ok(BinaryInfo { format: "Mach-O", encrypted: false });

    /// Where the corpus ELF's section headers start, and the `.rodata` header (index 2) in them.
    fn elf_rodata_header(elf: &[u8]) -> usize {
        let shoff = u64::from_le_bytes(elf[0x28..0x30].try_into().unwrap_or_default());
        usize::try_from(shoff).unwrap_or(usize::MAX) + 2 * 64
    }

    /// Offsets inside the corpus Mach-O (unencrypted): the `__cstring` and `__data` section
    /// headers, which follow the 32-byte header and each segment command's 72 bytes.
    const CSTRING_HEADER: usize = 32 + 72;
    const DATA_SEGMENT: usize = 32 + 72 + 80;
    const DATA_HEADER: usize = DATA_SEGMENT + 72;

    fn rodata_with_key() -> Vec<u8> {
        let mut rodata = b"\x01\x02".to_vec();
        rodata.extend_from_slice(KEY.as_bytes());
        rodata.extend_from_slice(b"\0short\0\xff");
        rodata
    }

    #[test]
    fn corpus_elf_parses_with_goblin() -> Result<(), goblin::error::Error> {
        let bytes = elf::build(b"hello world");
        let elf = Elf::parse(&bytes)?;
        assert!(elf.is_64 && elf.is_lib && elf.little_endian);
        assert_eq!(elf.header.e_machine, goblin::elf::header::EM_AARCH64);
        let names: Vec<_> = elf.section_headers.iter().filter_map(|s| elf.shdr_strtab.get_at(s.sh_name)).collect();
        assert_eq!(names, ["", ".text", ".rodata", ".shstrtab"]);
        Ok(())
    }

    #[test]
    fn elf_rodata_key_comes_back_with_section_and_offset() {
        let (found_strings, result) = run(&elf::build(&rodata_with_key()));
        assert_eq!(result, ELF_OK);
        assert_eq!(found_strings, [found(".rodata+0x2", KEY)]);
    }

    #[test]
    fn corpus_macho_and_fat_parse_with_goblin() -> Result<(), goblin::error::Error> {
        let image = macho::build(&[KEY], b"data", true);
        let goblin::mach::Mach::Binary(parsed) = goblin::mach::Mach::parse(&image)? else {
            return Err(goblin::error::Error::Malformed("not a single image".into()));
        };
        let segments: Vec<_> = parsed.segments.iter().filter_map(|s| s.name().ok()).collect();
        assert_eq!(segments, ["__TEXT", "__DATA"]);
        let encryption = parsed
            .load_commands
            .iter()
            .any(|c| matches!(c.command, CommandVariant::EncryptionInfo64(info) if info.cryptid == 1));
        assert!(encryption);

        let universal = macho::fat(&[image.clone(), image]);
        let goblin::mach::Mach::Fat(multi) = goblin::mach::Mach::parse(&universal)? else {
            return Err(goblin::error::Error::Malformed("not a fat file".into()));
        };
        let cputypes: Vec<_> = multi.arches()?.iter().map(|arch| arch.cputype).collect();
        assert_eq!(cputypes, [0x0100_000c, 0x0100_0007]);
        Ok(())
    }

    #[test]
    fn macho_cstring_and_data_keys_come_back() {
        let mut data = vec![0u8; 8];
        data.extend_from_slice(SECRET.as_bytes());
        let image = macho::build(&["hello", KEY, "https://api.example.com/v1"], &data, false);
        let (found_strings, result) = run(&image);
        assert_eq!(result, MACHO_OK);
        assert_eq!(
            found_strings,
            [
                found("__TEXT,__cstring+0x6", KEY),
                found(&format!("__TEXT,__cstring+0x{:x}", 7 + KEY.len()), "https://api.example.com/v1"),
                found("__DATA,__data+0x8", SECRET),
            ]
        );
    }

    #[test]
    fn fat_binary_keys_are_prefixed_with_their_arch() {
        let universal = macho::fat(&[macho::build(&[KEY], &[], false), macho::build(&[SECRET], &[], false)]);
        assert_eq!(sniff(&universal), Some("Mach-O (fat)"));
        let (found_strings, result) = run(&universal);
        assert_eq!(result, Ok(BinaryInfo { format: "Mach-O (fat)", encrypted: false }));
        assert_eq!(
            found_strings,
            [found("arm64:__TEXT,__cstring+0x0", KEY), found("x86_64:__TEXT,__cstring+0x0", SECRET)]
        );
    }

    #[test]
    fn fairplay_encrypted_text_is_flagged_and_skipped_but_data_is_read() {
        let image = macho::build(&[KEY], SECRET.as_bytes(), true);
        let (found_strings, result) = run(&image);
        assert_eq!(result, Ok(BinaryInfo { format: "Mach-O", encrypted: true }));
        assert_eq!(found_strings, [found("__DATA,__data+0x0", SECRET)]);

        let universal = macho::fat(&[macho::build(&[KEY], &[], false), image]);
        let (found_strings, result) = run(&universal);
        assert_eq!(result, Ok(BinaryInfo { format: "Mach-O (fat)", encrypted: true }));
        assert_eq!(
            found_strings,
            [found("arm64:__TEXT,__cstring+0x0", KEY), found("x86_64:__DATA,__data+0x0", SECRET)]
        );
    }

    #[test]
    fn encryption_info_with_cryptid_zero_is_not_encrypted() {
        let mut image = macho::build(&[KEY], &[], true);
        // The encryption command follows both segment commands; cryptid is its fifth field.
        put_u32_le(&mut image, 32 + 2 * (72 + 80) + 16, 0);
        let (found_strings, result) = run(&image);
        assert_eq!(result, MACHO_OK);
        assert_eq!(found_strings, [found("__TEXT,__cstring+0x0", KEY)]);
    }

    #[test]
    fn utf16_ustring_section_is_read() {
        let wide: Vec<u8> = KEY.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut image = macho::build(&[], &wide, false);
        // Rename `__DATA,__data` to `__TEXT,__ustring`, as a Swift or Objective-C UTF-16 literal is.
        image[DATA_HEADER..DATA_HEADER + 16].copy_from_slice(b"__ustring\0\0\0\0\0\0\0");
        image[DATA_HEADER + 16..DATA_HEADER + 32].copy_from_slice(b"__TEXT\0\0\0\0\0\0\0\0\0\0");
        let (found_strings, result) = run(&image);
        assert_eq!(result, MACHO_OK);
        assert_eq!(found_strings, [found("__TEXT,__ustring+0x0", KEY)]);
    }

    #[test]
    fn zero_fill_sections_are_not_read() {
        let mut image = macho::build(&[KEY], SECRET.as_bytes(), false);
        put_u32_le(&mut image, DATA_HEADER + 64, S_ZEROFILL);
        let (found_strings, result) = run(&image);
        assert_eq!(result, MACHO_OK);
        assert_eq!(found_strings, [found("__TEXT,__cstring+0x0", KEY)]);

        let mut elf = elf::build(&rodata_with_key());
        let header = elf_rodata_header(&elf);
        put_u32_le(&mut elf, header + 4, SHT_NOBITS);
        assert!(run(&elf).0.is_empty());
    }

    #[test]
    fn code_sections_are_not_read() {
        let mut elf = elf::build(&rodata_with_key());
        // Rename `.rodata` to `.text` (name offset 1): no section is read, so nothing comes back
        // and the error asks for the raw pass.
        let header = elf_rodata_header(&elf);
        put_u32_le(&mut elf, header, 1);
        let (found_strings, result) = run(&elf);
        assert!(found_strings.is_empty());
        assert!(result.is_err());
    }

    #[test]
    fn stripped_elf_without_section_headers_asks_for_the_raw_pass() {
        let mut elf = elf::build(&rodata_with_key());
        put_u64_le(&mut elf, 0x28, 0);
        let (found_strings, result) = run(&elf);
        assert!(found_strings.is_empty());
        assert_eq!(result.map_err(|e| e.format), Err("ELF"));
    }

    #[test]
    fn section_header_pointing_past_the_end_is_skipped_not_a_panic() {
        let good = elf::build(&rodata_with_key());
        let header = elf_rodata_header(&good);
        for (offset, size) in [(good.len() as u64, 8), (u64::MAX - 4, 64), (64, u64::MAX), (u64::MAX, u64::MAX)] {
            let mut elf = good.clone();
            put_u64_le(&mut elf, header + 24, offset);
            put_u64_le(&mut elf, header + 32, size);
            let (found_strings, result) = run(&elf);
            assert!(found_strings.is_empty(), "{offset:#x}+{size:#x}");
            assert!(result.is_err_and(|e| e.message.contains("outside the file")), "{offset:#x}+{size:#x}");
        }

        let good = macho::build(&[KEY], SECRET.as_bytes(), false);
        for (offset, size) in [(good.len() as u32, 8u64), (u32::MAX, 1), (200, u64::MAX)] {
            let mut image = good.clone();
            put_u64_le(&mut image, CSTRING_HEADER + 40, size);
            put_u32_le(&mut image, CSTRING_HEADER + 48, offset);
            let (found_strings, result) = run(&image);
            // The section that lies outside is skipped; the other one is still read.
            assert_eq!(found_strings, [found("__DATA,__data+0x0", SECRET)], "{offset:#x}+{size:#x}");
            assert!(result.is_err(), "{offset:#x}+{size:#x}");
        }
    }

    #[test]
    fn section_header_table_past_the_end_is_an_error() {
        let mut elf = elf::build(&rodata_with_key());
        put_u64_le(&mut elf, 0x28, u64::MAX - 8);
        assert!(run(&elf).1.is_err());
        let mut elf = elf::build(&rodata_with_key());
        // 65,535 section headers declared: goblin refuses before allocating.
        elf[0x3c..0x3e].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(run(&elf).1.is_err());
    }

    #[test]
    fn load_command_of_size_zero_is_an_error_not_a_loop() {
        let mut image = macho::build(&[KEY], &[], false);
        put_u32_le(&mut image, 32 + 4, 0);
        assert!(run(&image).1.is_err());
    }

    #[test]
    fn huge_section_count_is_bounded_by_the_command_size() {
        let mut image = macho::build(&[KEY], SECRET.as_bytes(), false);
        put_u32_le(&mut image, 32 + 64, u32::MAX);
        let (found_strings, result) = run(&image);
        assert_eq!(result, MACHO_OK);
        assert_eq!(found_strings.len(), 2);
    }

    #[test]
    fn huge_load_command_count_is_an_error() {
        let mut image = macho::build(&[KEY], &[], false);
        put_u32_le(&mut image, 16, u32::MAX);
        assert!(run(&image).1.is_err());
        put_u32_le(&mut image, 20, u32::MAX);
        assert!(run(&image).1.is_err());
    }

    #[test]
    fn fat_header_with_huge_arch_count_is_not_read() {
        let mut universal = macho::fat(&[macho::build(&[KEY], &[], false)]);
        universal[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(sniff(&universal), None);
        let (found_strings, result) = run(&universal);
        assert!(found_strings.is_empty());
        assert!(result.is_err());

        // Sixteen architectures are read; a seventeenth is not a fat file.
        let image = macho::build(&[KEY], &[], false);
        let sixteen = macho::fat(&vec![image.clone(); 16]);
        let (found_strings, result) = run(&sixteen);
        assert!(result.is_ok());
        assert_eq!(found_strings.len(), 16);
        assert_eq!(sniff(&macho::fat(&vec![image; 17])), None);
    }

    #[test]
    fn fat_arch_outside_the_file_is_skipped_and_the_others_read() {
        let mut universal = macho::fat(&[macho::build(&[KEY], &[], false), macho::build(&[SECRET], &[], false)]);
        // The second entry's offset (fat header 8 bytes, entries 20, offset at +8).
        universal[8 + 20 + 8..8 + 20 + 12].copy_from_slice(&u32::MAX.to_be_bytes());
        let (found_strings, result) = run(&universal);
        assert_eq!(found_strings, [found("arm64:__TEXT,__cstring+0x0", KEY)]);
        assert!(result.is_err_and(|e| e.message.contains("x86_64")));
    }

    #[test]
    fn java_class_file_is_not_a_fat_binary() {
        let mut class = vec![0xca, 0xfe, 0xba, 0xbe, 0x00, 0x00, 0x00, 0x34];
        class.extend_from_slice(&[0; 64]);
        assert_eq!(sniff(&class), None);
        // Even a class file whose version reads as one architecture fails the slice check.
        class[4..8].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(sniff(&class), None);
    }

    #[test]
    fn sniff_knows_each_magic() {
        assert_eq!(sniff(&elf::build(b"")), Some("ELF"));
        assert_eq!(sniff(&macho::build(&[], &[], false)), Some("Mach-O"));
        for magic in [MH_MAGIC, MH_MAGIC_64, MH_CIGAM, MH_CIGAM_64] {
            assert_eq!(sniff(&magic.to_be_bytes()), Some("Mach-O"));
        }
        assert_eq!(sniff(b"PK\x03\x04"), None);
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"\x7fEL"), None);
    }

    #[test]
    fn fat_64_header_is_read() {
        let image = macho::build(&[KEY], &[], false);
        let mut universal = Vec::new();
        universal.extend_from_slice(&FAT_MAGIC_64.to_be_bytes());
        universal.extend_from_slice(&1u32.to_be_bytes());
        universal.extend_from_slice(&0x0100_000cu32.to_be_bytes());
        universal.extend_from_slice(&0u32.to_be_bytes());
        universal.extend_from_slice(&64u64.to_be_bytes());
        universal.extend_from_slice(&(image.len() as u64).to_be_bytes());
        universal.extend_from_slice(&[0; 8]);
        universal.resize(64, 0);
        universal.extend_from_slice(&image);
        assert_eq!(sniff(&universal), Some("Mach-O (fat)"));
        let (found_strings, result) = run(&universal);
        assert!(result.is_ok());
        assert_eq!(found_strings, [found("arm64:__TEXT,__cstring+0x0", KEY)]);
    }

    #[test]
    fn every_truncation_of_an_elf_or_macho_never_panics() {
        let files = [
            elf::build(&rodata_with_key()),
            macho::build(&["hello", KEY], SECRET.as_bytes(), false),
            macho::build(&[KEY], SECRET.as_bytes(), true),
            macho::fat(&[macho::build(&[KEY], &[], false), macho::build(&[SECRET], &[], true)]),
        ];
        for file in &files {
            for len in 0..file.len() {
                let (found_strings, _) = run(&file[..len]);
                assert!(found_strings.len() <= 3);
            }
        }
    }

    #[test]
    fn string_limit_ends_in_an_error_for_the_raw_pass() {
        let mut found_count = 0;
        let mut sink = |_: &str, _: Option<&str>, _: &str| found_count += 1;
        let mut out = Emitter::new(&mut sink, 0);
        out.out.strings = MAX_STRINGS - 1;
        assert!(out.section(b"first-string\0second-string", ".rodata").is_break());
        assert!(out.full.is_some());
        assert_eq!(found_count, 1);
    }

    #[test]
    fn output_budget_stops_overlapping_sections_from_multiplying() {
        let mut found_count = 0;
        let mut sink = |_: &str, _: Option<&str>, _: &str| found_count += 1;
        let mut out = Emitter::new(&mut sink, 0);
        out.out.budget = 40;
        assert!(out.section(b"first-string\0second-string", ".rodata").is_break());
        assert_eq!(found_count, 1);
    }

    /// Byte patches (offset modulo the file length, value) applied to a well-formed file.
    fn patched(mut file: Vec<u8>, patches: &[(usize, u8)]) -> Vec<u8> {
        let len = file.len();
        for &(at, value) in patches {
            file[at % len] = value;
        }
        file
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = run(&bytes);
            let _ = sniff(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_each_magic_never_panic(
            magic in prop::sample::select(vec![
                b"\x7fELF\x02\x01\x01\x00".to_vec(), b"\x7fELF\x01\x02\x01\x00".to_vec(),
                b"\xcf\xfa\xed\xfe".to_vec(), b"\xfe\xed\xfa\xce".to_vec(),
                b"\xca\xfe\xba\xbe\x00\x00\x00\x02".to_vec(), b"\xca\xfe\xba\xbf\x00\x00\x00\x01".to_vec(),
            ]),
            rest in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let mut bytes = magic;
            bytes.extend_from_slice(&rest);
            let _ = run(&bytes);
        }

        #[test]
        fn patched_elf_and_macho_never_panic(
            patches in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let _ = run(&patched(elf::build(&rodata_with_key()), &patches));
            let _ = run(&patched(macho::build(&[KEY], SECRET.as_bytes(), true), &patches));
            let _ = run(&patched(macho::fat(&[macho::build(&[KEY], &[], false)]), &patches));
        }

    }
}
