//! Writes minimal ELF shared objects: a 64-bit little-endian `ET_DYN` for AArch64 (what an
//! APK's `lib/arm64-v8a/*.so` holds) with four sections, the null section, `.text` (a few zero
//! bytes), `.rodata` holding the given bytes and `.shstrtab`. There are no program headers,
//! symbols or dynamic section: nothing reads them. The layout follows the System V ABI
//! (<https://refspecs.linuxfoundation.org/elf/gabi4+/ch4.eheader.html>).

const EHDR_SIZE: usize = 64;
const SHDR_SIZE: usize = 64;
const ET_DYN: u16 = 3;
const EM_AARCH64: u16 = 183;
const SHT_PROGBITS: u32 = 1;
const SHT_STRTAB: u32 = 3;
const SHF_ALLOC: u64 = 0x2;
const SHF_EXECINSTR: u64 = 0x4;
const TEXT: &[u8] = &[0; 16];
const SHSTRTAB: &[u8] = b"\0.text\0.rodata\0.shstrtab\0";
/// Offsets of the section names in [`SHSTRTAB`].
const NAME_TEXT: u32 = 1;
const NAME_RODATA: u32 = 7;
const NAME_SHSTRTAB: u32 = 15;

/// One section header's fields, in file order.
struct Shdr {
    name: u32,
    kind: u32,
    flags: u64,
    offset: usize,
    size: usize,
    align: u64,
}

/// An ELF shared object whose `.rodata` section holds `rodata`.
pub fn build(rodata: &[u8]) -> Vec<u8> {
    let text_off = EHDR_SIZE;
    let rodata_off = text_off + TEXT.len();
    let shstrtab_off = rodata_off + rodata.len();
    let shoff = (shstrtab_off + SHSTRTAB.len()).next_multiple_of(8);
    let sections = [
        Shdr { name: 0, kind: 0, flags: 0, offset: 0, size: 0, align: 0 },
        Shdr {
            name: NAME_TEXT,
            kind: SHT_PROGBITS,
            flags: SHF_ALLOC | SHF_EXECINSTR,
            offset: text_off,
            size: TEXT.len(),
            align: 4,
        },
        Shdr {
            name: NAME_RODATA,
            kind: SHT_PROGBITS,
            flags: SHF_ALLOC,
            offset: rodata_off,
            size: rodata.len(),
            align: 1,
        },
        Shdr { name: NAME_SHSTRTAB, kind: SHT_STRTAB, flags: 0, offset: shstrtab_off, size: SHSTRTAB.len(), align: 1 },
    ];

    let mut out = Vec::with_capacity(shoff + SHDR_SIZE * sections.len());
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, the System V ABI, padding.
    out.extend_from_slice(b"\x7fELF");
    out.extend_from_slice(&[2, 1, 1, 0]);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&ET_DYN.to_le_bytes());
    out.extend_from_slice(&EM_AARCH64.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // e_version
    out.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    out.extend_from_slice(&0u64.to_le_bytes()); // e_phoff: no program headers.
    out.extend_from_slice(&(shoff as u64).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    out.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    out.extend_from_slice(&0u16.to_le_bytes()); // e_phnum
    out.extend_from_slice(&(SHDR_SIZE as u16).to_le_bytes());
    out.extend_from_slice(&(sections.len() as u16).to_le_bytes());
    out.extend_from_slice(&3u16.to_le_bytes()); // e_shstrndx: `.shstrtab`.
    debug_assert_eq!(out.len(), EHDR_SIZE);

    out.extend_from_slice(TEXT);
    out.extend_from_slice(rodata);
    out.extend_from_slice(SHSTRTAB);
    out.resize(shoff, 0);
    for section in &sections {
        out.extend_from_slice(&section.name.to_le_bytes());
        out.extend_from_slice(&section.kind.to_le_bytes());
        out.extend_from_slice(&section.flags.to_le_bytes());
        // A shared object is linked at 0, so a section's address is its file offset.
        let address = if section.flags & SHF_ALLOC != 0 { section.offset as u64 } else { 0 };
        out.extend_from_slice(&address.to_le_bytes());
        out.extend_from_slice(&(section.offset as u64).to_le_bytes());
        out.extend_from_slice(&(section.size as u64).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // sh_link
        out.extend_from_slice(&0u32.to_le_bytes()); // sh_info
        out.extend_from_slice(&section.align.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // sh_entsize
    }
    out
}
