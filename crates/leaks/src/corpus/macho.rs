//! Writes minimal Mach-O images: a 64-bit arm64 `MH_EXECUTE` with an `LC_SEGMENT_64` `__TEXT`
//! holding `__cstring`, an `LC_SEGMENT_64` `__DATA` holding `__data`, and optionally the
//! `LC_ENCRYPTION_INFO_64` an App Store build carries, and fat (universal) files holding several
//! images. The layout follows `<mach-o/loader.h>` and `<mach-o/fat.h>`. There is no code, no
//! `__PAGEZERO`, no `LC_MAIN` and no symbol table: nothing reads them.

const MH_MAGIC_64: u32 = 0xfeed_facf;
const FAT_MAGIC: u32 = 0xcafe_babe;
const MH_EXECUTE: u32 = 2;
const LC_SEGMENT_64: u32 = 0x19;
const LC_ENCRYPTION_INFO_64: u32 = 0x2c;
const CPU_TYPE_ARM64: u32 = 0x0100_000c;
const CPU_TYPE_X86_64: u32 = 0x0100_0007;
const CPU_SUBTYPE_ARM64_ALL: u32 = 0;
const CPU_SUBTYPE_ARM64E: u32 = 2;
const CPU_SUBTYPE_X86_64_ALL: u32 = 3;
const S_CSTRING_LITERALS: u32 = 0x2;
const HEADER_SIZE: usize = 32;
const SEGMENT_SIZE: usize = 72;
const SECTION_SIZE: usize = 80;
const ENCRYPTION_INFO_SIZE: usize = 24;
const VM_BASE: u64 = 0x1_0000_0000;
const PAGE: u64 = 0x4000;
/// Fat slices start on 4 KiB boundaries (`align` 12).
const FAT_ALIGN_LOG2: u32 = 12;
/// The architectures given to the images of a fat file, in order.
const FAT_CPUS: [(u32, u32); 3] = [
    (CPU_TYPE_ARM64, CPU_SUBTYPE_ARM64_ALL),
    (CPU_TYPE_X86_64, CPU_SUBTYPE_X86_64_ALL),
    (CPU_TYPE_ARM64, CPU_SUBTYPE_ARM64E),
];

/// A Mach-O executable whose `__TEXT,__cstring` holds `cstrings` (each NUL-terminated) and whose
/// `__DATA,__data` holds `data`. With `encrypted`, an `LC_ENCRYPTION_INFO_64` with `cryptid` 1
/// covers `__TEXT` after the load commands, as FairPlay does; the bytes are left in the clear, so
/// a test can tell whether a reader skips the range.
pub fn build(cstrings: &[&str], data: &[u8], encrypted: bool) -> Vec<u8> {
    let mut cstring_bytes = Vec::new();
    for string in cstrings {
        cstring_bytes.extend_from_slice(string.as_bytes());
        cstring_bytes.push(0);
    }
    let ncmds = if encrypted { 3 } else { 2 };
    let sizeofcmds = 2 * (SEGMENT_SIZE + SECTION_SIZE) + if encrypted { ENCRYPTION_INFO_SIZE } else { 0 };
    let cstring_off = (HEADER_SIZE + sizeofcmds).next_multiple_of(16);
    let text_filesize = cstring_off + cstring_bytes.len();
    let data_off = text_filesize.next_multiple_of(16);
    let text_vmsize = (text_filesize as u64).next_multiple_of(PAGE);
    let data_vmaddr = VM_BASE + text_vmsize;

    let mut out = Vec::with_capacity(data_off + data.len());
    for field in [MH_MAGIC_64, CPU_TYPE_ARM64, CPU_SUBTYPE_ARM64_ALL, MH_EXECUTE, ncmds, sizeofcmds as u32, 0, 0] {
        put_u32(&mut out, field);
    }
    let text =
        Segment { name: "__TEXT", vmaddr: VM_BASE, vmsize: text_vmsize, fileoff: 0, filesize: text_filesize, prot: 5 };
    text.write(&mut out, "__cstring", cstring_off, cstring_bytes.len(), S_CSTRING_LITERALS);
    let data_vmsize = (data.len() as u64).next_multiple_of(PAGE);
    let data_segment = Segment {
        name: "__DATA",
        vmaddr: data_vmaddr,
        vmsize: data_vmsize,
        fileoff: data_off,
        filesize: data.len(),
        prot: 3,
    };
    data_segment.write(&mut out, "__data", data_off, data.len(), 0);
    if encrypted {
        put_u32(&mut out, LC_ENCRYPTION_INFO_64);
        put_u32(&mut out, ENCRYPTION_INFO_SIZE as u32);
        put_u32(&mut out, cstring_off as u32); // cryptoff
        put_u32(&mut out, (text_filesize - cstring_off) as u32); // cryptsize
        put_u32(&mut out, 1); // cryptid
        put_u32(&mut out, 0); // pad
    }
    debug_assert_eq!(out.len(), HEADER_SIZE + sizeofcmds);
    out.resize(cstring_off, 0);
    out.extend_from_slice(&cstring_bytes);
    out.resize(data_off, 0);
    out.extend_from_slice(data);
    out
}

/// A fat file holding `images`, labelled arm64, x86_64 and then arm64e (the CPU fields of each
/// 64-bit image's own header are set to match).
pub fn fat(images: &[Vec<u8>]) -> Vec<u8> {
    let align = 1usize << FAT_ALIGN_LOG2;
    let mut offset = (8 + 20 * images.len()).next_multiple_of(align);
    let mut header = Vec::new();
    put_u32_be(&mut header, FAT_MAGIC);
    put_u32_be(&mut header, images.len() as u32);
    let mut body = Vec::new();
    for (index, image) in images.iter().enumerate() {
        let (cputype, cpusubtype) = FAT_CPUS[index % FAT_CPUS.len()];
        for field in [cputype, cpusubtype, offset as u32, image.len() as u32, FAT_ALIGN_LOG2] {
            put_u32_be(&mut header, field);
        }
        let mut image = image.clone();
        if image.starts_with(&MH_MAGIC_64.to_le_bytes()) && image.len() >= 12 {
            image[4..8].copy_from_slice(&cputype.to_le_bytes());
            image[8..12].copy_from_slice(&cpusubtype.to_le_bytes());
        }
        body.push((offset, image));
        offset = (offset + body.last().map_or(0, |(_, image)| image.len())).next_multiple_of(align);
    }
    let mut out = header;
    for (at, image) in body {
        out.resize(at, 0);
        out.extend_from_slice(&image);
    }
    out
}

/// An `LC_SEGMENT_64` with one section.
struct Segment {
    name: &'static str,
    vmaddr: u64,
    vmsize: u64,
    fileoff: usize,
    filesize: usize,
    /// `maxprot` and `initprot`: 5 is read and execute, 3 read and write.
    prot: u32,
}

impl Segment {
    fn write(&self, out: &mut Vec<u8>, section: &str, offset: usize, size: usize, flags: u32) {
        put_u32(out, LC_SEGMENT_64);
        put_u32(out, (SEGMENT_SIZE + SECTION_SIZE) as u32);
        put_name(out, self.name);
        put_u64(out, self.vmaddr);
        put_u64(out, self.vmsize);
        put_u64(out, self.fileoff as u64);
        put_u64(out, self.filesize as u64);
        put_u32(out, self.prot);
        put_u32(out, self.prot);
        put_u32(out, 1); // nsects
        put_u32(out, 0); // flags
        put_name(out, section);
        put_name(out, self.name);
        put_u64(out, self.vmaddr + (offset - self.fileoff) as u64);
        put_u64(out, size as u64);
        put_u32(out, offset as u32);
        put_u32(out, 0); // align
        put_u32(out, 0); // reloff
        put_u32(out, 0); // nreloc
        put_u32(out, flags);
        for _ in 0..3 {
            put_u32(out, 0); // reserved1 to reserved3
        }
    }
}

/// A 16-byte, NUL-padded segment or section name.
fn put_name(out: &mut Vec<u8>, name: &str) {
    let mut field = [0u8; 16];
    let len = name.len().min(16);
    field[..len].copy_from_slice(&name.as_bytes()[..len]);
    out.extend_from_slice(&field);
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u32_be(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}
