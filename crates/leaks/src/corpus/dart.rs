//! Writes Flutter-like `libapp.so` files: an ELF shared object whose `.rodata` holds a VM and an
//! isolate snapshot, marked by the dynamic symbols `_kDartVMSnapshotData` and
//! `_kDartIsolateSnapshotData` (and `_kDartIsolateSnapshotInstructions` on a `.text` of a few
//! bytes); and the iOS form, `App.framework/App`, a Mach-O dylib with the same symbols. Each snapshot has the real header (magic, length, kind, version hash, features) and
//! holds its strings the way the Dart SDK writes them: as records of the `String` cluster with
//! compressed pointers ([`Layout::Clustered`]), or as read-only string objects in the data image
//! after the clustered part ([`Layout::ReadOnly`]). The other clusters are stood in for by a few
//! bytes that are not strings.

/// A version hash in the form the SDK writes (32 hexadecimal digits).
pub const VERSION: &str = "90b56a561f70cd55e972cb49b79b3d8b";
/// The features of a 64-bit Android release build.
pub const FEATURES_ARM64: &str = "product no-code_comments no-dwarf_stack_traces_mode dedup_instructions no-tsan no-msan arm64 android compressed-pointers null-safety";
/// The features of a 32-bit ARM Android release build: no compressed pointers.
pub const FEATURES_ARM: &str =
    "product no-code_comments no-dwarf_stack_traces_mode dedup_instructions no-tsan no-msan arm android null-safety";

const MAGIC: u32 = 0xdcdc_f5f5;
const KIND_FULL_AOT: i64 = 3;

/// How a snapshot holds its strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// In the fill section of the `String` cluster (64-bit targets with compressed pointers).
    Clustered,
    /// As read-only objects in the data image (32-bit targets, older SDKs).
    ReadOnly,
}

/// A 64-bit `libapp.so` (arm64, compressed pointers) whose isolate snapshot holds `strings`.
pub fn build(strings: &[&str]) -> Vec<u8> {
    let vm = snapshot(&["dart:core", "_StringBase", "Iterable.generate"], Layout::Clustered, true);
    elf(true, &vm, &snapshot(strings, Layout::Clustered, true))
}

/// A 32-bit ARM `libapp.so` whose isolate snapshot holds `strings` as read-only objects.
pub fn build_arm(strings: &[&str]) -> Vec<u8> {
    let vm = snapshot(&["dart:core", "_StringBase"], Layout::ReadOnly, false);
    elf(false, &vm, &snapshot(strings, Layout::ReadOnly, false))
}

/// An iOS `App.framework/App` (a 64-bit arm64 Mach-O dylib) whose isolate snapshot holds
/// `strings`; `encrypted` adds an `LC_ENCRYPTION_INFO_64` with `cryptid` 1 over `__TEXT`, as an
/// App Store build has (the bytes stay plain here).
pub fn build_ios(strings: &[&str], encrypted: bool) -> Vec<u8> {
    let vm = snapshot(&["dart:core", "_StringBase"], Layout::Clustered, true);
    macho(&vm, &snapshot(strings, Layout::Clustered, true), encrypted)
}

/// One snapshot's data: header, stand-in clusters, then `strings` as `layout` says; `wide` is a
/// 64-bit target (16-byte object alignment rather than 8).
pub fn snapshot(strings: &[&str], layout: Layout, wide: bool) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&0i64.to_le_bytes()); // The length, written below.
    out.extend_from_slice(&KIND_FULL_AOT.to_le_bytes());
    out.extend_from_slice(VERSION.as_bytes());
    out.extend_from_slice(if layout == Layout::Clustered { FEATURES_ARM64 } else { FEATURES_ARM }.as_bytes());
    out.push(0);
    // Stand-ins for the alloc sections and the fill of other clusters: counts, references and
    // a `Class` cluster's fields, none of which reads as a string record.
    out.extend_from_slice(&[0x81, 0x00, 0x07, 0x9f, 0x02, 0x00, 0x00, 0x11, 0x83, 0x01, 0x02, 0xc1, 0x00]);
    if layout == Layout::Clustered {
        for string in strings {
            let (units, two_byte) = code_units(string);
            let length = if two_byte { units.len() / 2 } else { units.len() };
            write_unsigned(&mut out, ((length as u64) << 1) | u64::from(two_byte));
            out.extend_from_slice(&units);
        }
    }
    // The roots and the end of the stream.
    out.extend_from_slice(&[0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x00]);
    let length = out.len() as i64 - 4;
    out[4..12].copy_from_slice(&length.to_le_bytes());
    if layout == Layout::ReadOnly {
        let alignment = if wide { 16 } else { 8 };
        out.resize(out.len().next_multiple_of(2 * alignment), 0);
        // The image header: its size, then padding to two alignments.
        let image = out.len();
        out.extend_from_slice(&[0x40, 0x10, 0, 0]);
        out.resize(image + 2 * alignment, 0);
        for (index, string) in strings.iter().enumerate() {
            let (units, two_byte) = code_units(string);
            let length = if two_byte { units.len() / 2 } else { units.len() };
            object(&mut out, wide, 0x5e + u32::from(two_byte), length, index as u32 + 1, &units);
            // A `PcDescriptors` object between strings: not text.
            object(&mut out, wide, 0x20, 3, 0, &[0x01, 0x02, 0x03]);
        }
    }
    out
}

/// A read-only object: the tag word (size and class id), the length as a Smi, on 32-bit
/// targets a hash word (on 64-bit ones the hash sits in the tag word), the payload, and zero
/// padding to the object alignment.
fn object(out: &mut Vec<u8>, wide: bool, class_id: u32, length: usize, hash: u32, payload: &[u8]) {
    let alignment = if wide { 16 } else { 8 };
    let header = if wide { 16 } else { 12 };
    let size = (header + payload.len()).next_multiple_of(alignment);
    let tags = (class_id << 16) | (((size / alignment) as u32 & 0xff) << 8) | 0x0a;
    let start = out.len();
    if wide {
        out.extend_from_slice(&tags.to_le_bytes());
        out.extend_from_slice(&hash.to_le_bytes());
        out.extend_from_slice(&((length as u64) << 1).to_le_bytes());
    } else {
        out.extend_from_slice(&tags.to_le_bytes());
        out.extend_from_slice(&((length as u32) << 1).to_le_bytes());
        out.extend_from_slice(&hash.to_le_bytes());
    }
    out.extend_from_slice(payload);
    out.resize(start + size, 0);
}

/// The code units of `string`: one byte each if every character fits, else UTF-16LE.
fn code_units(string: &str) -> (Vec<u8>, bool) {
    if string.chars().all(|c| u32::from(c) <= 0xff) {
        (string.chars().map(|c| u32::from(c) as u8).collect(), false)
    } else {
        (string.encode_utf16().flat_map(u16::to_le_bytes).collect(), true)
    }
}

/// Dart's `WriteUnsigned`: 7 bits a byte, low bits first, the last byte marked by its top bit.
pub fn write_unsigned(out: &mut Vec<u8>, mut value: u64) {
    while value > 0x7f {
        out.push((value & 0x7f) as u8);
        value >>= 7;
    }
    out.push(value as u8 | 0x80);
}

const SHT_PROGBITS: u32 = 1;
const SHT_STRTAB: u32 = 3;
const SHT_DYNSYM: u32 = 11;
const SHF_ALLOC: u64 = 0x2;
const SHF_EXECINSTR: u64 = 0x4;
/// Sections are linked this far above their file offsets, as in a real shared object.
const LOAD_BIAS: u64 = 0x1_0000;
const TEXT: &[u8] = &[0x1f, 0x20, 0x03, 0xd5, 0xc0, 0x03, 0x5f, 0xd6, 0, 0, 0, 0, 0, 0, 0, 0];
const DYNSTR: &[u8] = b"\0_kDartVMSnapshotData\0_kDartIsolateSnapshotData\0_kDartIsolateSnapshotInstructions\0";
const NAME_VM_DATA: u32 = 1;
const NAME_ISOLATE_DATA: u32 = 22;
const NAME_ISOLATE_INSTRUCTIONS: u32 = 48;
const SHSTRTAB: &[u8] = b"\0.text\0.rodata\0.dynsym\0.dynstr\0.shstrtab\0";

struct Shdr {
    name: u32,
    kind: u32,
    flags: u64,
    offset: usize,
    size: usize,
    link: u32,
    entsize: u64,
}

/// An ELF shared object (64-bit AArch64 if `wide`, else 32-bit ARM) whose `.rodata` holds the
/// two snapshots, each marked by its dynamic symbol.
pub fn elf(wide: bool, vm_data: &[u8], isolate_data: &[u8]) -> Vec<u8> {
    let ehdr_size: usize = if wide { 64 } else { 52 };
    let shdr_size = if wide { 64 } else { 40 };
    let sym_size = if wide { 24 } else { 16 };
    let text_off = ehdr_size.next_multiple_of(16);
    let rodata_off = (text_off + TEXT.len()).next_multiple_of(32);
    let isolate_at = (rodata_off + vm_data.len()).next_multiple_of(32);
    let rodata_size = isolate_at + isolate_data.len() - rodata_off;
    let dynsym_off = (rodata_off + rodata_size).next_multiple_of(8);
    let symbols = [
        (NAME_VM_DATA, 2u16, rodata_off, vm_data.len()),
        (NAME_ISOLATE_DATA, 2, isolate_at, isolate_data.len()),
        (NAME_ISOLATE_INSTRUCTIONS, 1, text_off, TEXT.len()),
    ];
    let dynsym_size = sym_size * (symbols.len() + 1);
    let dynstr_off = dynsym_off + dynsym_size;
    let shstrtab_off = dynstr_off + DYNSTR.len();
    let shoff = (shstrtab_off + SHSTRTAB.len()).next_multiple_of(8);
    let sections = [
        Shdr { name: 0, kind: 0, flags: 0, offset: 0, size: 0, link: 0, entsize: 0 },
        Shdr {
            name: 1,
            kind: SHT_PROGBITS,
            flags: SHF_ALLOC | SHF_EXECINSTR,
            offset: text_off,
            size: TEXT.len(),
            link: 0,
            entsize: 0,
        },
        Shdr {
            name: 7,
            kind: SHT_PROGBITS,
            flags: SHF_ALLOC,
            offset: rodata_off,
            size: rodata_size,
            link: 0,
            entsize: 0,
        },
        Shdr {
            name: 15,
            kind: SHT_DYNSYM,
            flags: SHF_ALLOC,
            offset: dynsym_off,
            size: dynsym_size,
            link: 4,
            entsize: sym_size as u64,
        },
        Shdr {
            name: 23,
            kind: SHT_STRTAB,
            flags: SHF_ALLOC,
            offset: dynstr_off,
            size: DYNSTR.len(),
            link: 0,
            entsize: 0,
        },
        Shdr { name: 31, kind: SHT_STRTAB, flags: 0, offset: shstrtab_off, size: SHSTRTAB.len(), link: 0, entsize: 0 },
    ];

    let mut out = Vec::new();
    // e_ident: magic, class, little-endian, EV_CURRENT, the System V ABI, padding.
    out.extend_from_slice(b"\x7fELF");
    out.extend_from_slice(&[if wide { 2 } else { 1 }, 1, 1, 0]);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&3u16.to_le_bytes()); // ET_DYN
    out.extend_from_slice(&(if wide { 183u16 } else { 40 }).to_le_bytes()); // EM_AARCH64, EM_ARM
    out.extend_from_slice(&1u32.to_le_bytes()); // e_version
    word(&mut out, wide, 0); // e_entry
    word(&mut out, wide, 0); // e_phoff: no program headers.
    word(&mut out, wide, shoff as u64);
    out.extend_from_slice(&(if wide { 0u32 } else { 0x0500_0000 }).to_le_bytes()); // e_flags
    out.extend_from_slice(&(ehdr_size as u16).to_le_bytes());
    out.extend_from_slice(&(if wide { 56u16 } else { 32 }).to_le_bytes()); // e_phentsize
    out.extend_from_slice(&0u16.to_le_bytes()); // e_phnum
    out.extend_from_slice(&(shdr_size as u16).to_le_bytes());
    out.extend_from_slice(&(sections.len() as u16).to_le_bytes());
    out.extend_from_slice(&5u16.to_le_bytes()); // e_shstrndx: `.shstrtab`.

    out.resize(text_off, 0);
    out.extend_from_slice(TEXT);
    out.resize(rodata_off, 0);
    out.extend_from_slice(vm_data);
    out.resize(isolate_at, 0);
    out.extend_from_slice(isolate_data);
    out.resize(dynsym_off, 0);
    out.resize(dynsym_off + sym_size, 0); // The null symbol.
    for (name, section, offset, size) in symbols {
        let value = offset as u64 + LOAD_BIAS;
        out.extend_from_slice(&name.to_le_bytes());
        if wide {
            out.extend_from_slice(&[0x11, 0]); // STB_GLOBAL, STT_OBJECT; default visibility.
            out.extend_from_slice(&section.to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
            out.extend_from_slice(&(size as u64).to_le_bytes());
        } else {
            out.extend_from_slice(&(value as u32).to_le_bytes());
            out.extend_from_slice(&(size as u32).to_le_bytes());
            out.extend_from_slice(&[0x11, 0]);
            out.extend_from_slice(&section.to_le_bytes());
        }
    }
    out.extend_from_slice(DYNSTR);
    out.extend_from_slice(SHSTRTAB);
    out.resize(shoff, 0);
    for section in &sections {
        let address = if section.flags & SHF_ALLOC != 0 { section.offset as u64 + LOAD_BIAS } else { 0 };
        out.extend_from_slice(&section.name.to_le_bytes());
        out.extend_from_slice(&section.kind.to_le_bytes());
        word(&mut out, wide, section.flags);
        word(&mut out, wide, address);
        word(&mut out, wide, section.offset as u64);
        word(&mut out, wide, section.size as u64);
        out.extend_from_slice(&section.link.to_le_bytes());
        out.extend_from_slice(&u32::from(section.kind == SHT_DYNSYM).to_le_bytes()); // sh_info
        word(&mut out, wide, if section.kind == SHT_PROGBITS { 16 } else { 1 });
        word(&mut out, wide, section.entsize);
    }
    out
}

/// A word of the ELF class: 8 bytes if `wide`, else 4.
fn word(out: &mut Vec<u8>, wide: bool, value: u64) {
    if wide {
        out.extend_from_slice(&value.to_le_bytes());
    } else {
        out.extend_from_slice(&(value as u32).to_le_bytes());
    }
}

const MH_MAGIC_64: u32 = 0xfeed_facf;
const CPU_TYPE_ARM64: u32 = 0x0100_000c;
const MH_DYLIB: u32 = 6;
const LC_SEGMENT_64: u32 = 0x19;
const LC_SYMTAB: u32 = 0x2;
const LC_ENCRYPTION_INFO_64: u32 = 0x2c;
const SEGMENT_SIZE: usize = 72;
const SECTION_SIZE: usize = 80;

/// A 64-bit Mach-O dylib with one `__TEXT` segment holding `__text` (a few instructions) and
/// `__const` (the two snapshots), and a symbol table naming them as Flutter's build does.
pub fn macho(vm_data: &[u8], isolate_data: &[u8], encrypted: bool) -> Vec<u8> {
    let segment_size = SEGMENT_SIZE + 2 * SECTION_SIZE;
    let commands = [(LC_SEGMENT_64, segment_size), (LC_SYMTAB, 24)]
        .into_iter()
        .chain(encrypted.then_some((LC_ENCRYPTION_INFO_64, 24)))
        .collect::<Vec<_>>();
    let sizeofcmds: usize = commands.iter().map(|(_, size)| size).sum();
    let text_off = (32 + sizeofcmds).next_multiple_of(16);
    let const_off = (text_off + TEXT.len()).next_multiple_of(32);
    let isolate_at = (const_off + vm_data.len()).next_multiple_of(32);
    let const_size = isolate_at + isolate_data.len() - const_off;
    let symoff = (const_off + const_size).next_multiple_of(8);
    let symbols =
        [(NAME_VM_DATA, 2u8, const_off), (NAME_ISOLATE_DATA, 2, isolate_at), (NAME_ISOLATE_INSTRUCTIONS, 1, text_off)];
    let stroff = symoff + 16 * symbols.len();
    let end = stroff + DYNSTR.len();

    let mut out = Vec::with_capacity(end);
    for value in [MH_MAGIC_64, CPU_TYPE_ARM64, 0, MH_DYLIB, commands.len() as u32, sizeofcmds as u32, 0x0010_0085, 0] {
        out.extend_from_slice(&value.to_le_bytes());
    }
    // LC_SEGMENT_64 __TEXT, mapped at address 0 like a dylib's first segment.
    out.extend_from_slice(&LC_SEGMENT_64.to_le_bytes());
    out.extend_from_slice(&(segment_size as u32).to_le_bytes());
    out.extend_from_slice(&name16("__TEXT"));
    for value in [0u64, symoff as u64, 0, symoff as u64] {
        out.extend_from_slice(&value.to_le_bytes()); // vmaddr, vmsize, fileoff, filesize
    }
    for value in [5u32, 5, 2, 0] {
        out.extend_from_slice(&value.to_le_bytes()); // maxprot, initprot, nsects, flags
    }
    for (name, offset, size, flags) in
        [("__text", text_off, TEXT.len(), 0x8000_0400u32), ("__const", const_off, const_size, 0)]
    {
        out.extend_from_slice(&name16(name));
        out.extend_from_slice(&name16("__TEXT"));
        out.extend_from_slice(&(offset as u64).to_le_bytes()); // addr
        out.extend_from_slice(&(size as u64).to_le_bytes());
        for value in [offset as u32, 4, 0, 0, flags, 0, 0, 0] {
            out.extend_from_slice(&value.to_le_bytes()); // offset, align, reloff, nreloc, flags, reserved
        }
    }
    for value in [LC_SYMTAB, 24, symoff as u32, symbols.len() as u32, stroff as u32, DYNSTR.len() as u32] {
        out.extend_from_slice(&value.to_le_bytes());
    }
    if encrypted {
        for value in [LC_ENCRYPTION_INFO_64, 24, text_off as u32, (symoff - text_off) as u32, 1, 0] {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out.resize(text_off, 0);
    out.extend_from_slice(TEXT);
    out.resize(const_off, 0);
    out.extend_from_slice(vm_data);
    out.resize(isolate_at, 0);
    out.extend_from_slice(isolate_data);
    out.resize(symoff, 0);
    for (name, section, address) in symbols {
        out.extend_from_slice(&name.to_le_bytes());
        out.extend_from_slice(&[0x0f, section]); // N_SECT | N_EXT, the section's number
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(address as u64).to_le_bytes());
    }
    out.extend_from_slice(DYNSTR);
    out
}

/// A NUL-padded 16-byte Mach-O name.
fn name16(name: &str) -> [u8; 16] {
    let mut out = [0; 16];
    out[..name.len()].copy_from_slice(name.as_bytes());
    out
}
