//! How .NET for Android (formerly Xamarin.Android) packs assemblies into an APK: assembly
//! stores (`assemblies.blob`, `assemblies.arm64_v8a.blob`; magic `XABA`) and LZ4-compressed
//! assemblies (magic `XALZ`), read as <https://github.com/dotnet/android> writes them
//! (`Documentation/project-docs/AssemblyStores.md`, `AssemblyStoreGenerator.cs`).
//!
//! A store of version 1 has a 20-byte header (magic, version, local entry count, global entry
//! count, store id) and a 24-byte descriptor per assembly (data offset and size, then the debug
//! and config data, which are not read). Versions 2 to 4 set the ABI and the word size in the
//! upper bits of the version; their header (28 bytes from version 4 on, which adds a content id)
//! gives the entry count and the size of a hash index that comes first, then 28-byte descriptors
//! (a mapping index, then as in version 1) and the assemblies' names (a `u32` length and UTF-8).
//! Offsets are from the start of the store. An `XALZ` assembly is a 12-byte header (magic,
//! descriptor index, uncompressed size) and one LZ4 block.
//!
//! These are containers, not string formats: [`crate::enumerate`] opens them, as it opens zips,
//! under the same caps, and hands each assembly to the scan as a member of the store.

use super::{FORMAT, u32_at};
use crate::decode::{DecodeError, cut_name};

pub const STORE_MAGIC: &[u8; 4] = b"XABA";
pub const LZ4_MAGIC: &[u8; 4] = b"XALZ";
const V1_HEADER_SIZE: usize = 20;
const V1_DESCRIPTOR_SIZE: usize = 24;
const V2_DESCRIPTOR_SIZE: usize = 28;
const XALZ_HEADER_SIZE: usize = 12;

/// Calls `each(name, bytes)` for every assembly of the store in `bytes`, in descriptor order.
/// Version 1 stores keep no names; their assemblies are `assembly-{index}.dll`. An entry that
/// points outside the store is skipped and reported as the error once the others are given.
pub fn entries<'b>(bytes: &'b [u8], mut each: impl FnMut(&str, &'b [u8])) -> Result<(), DecodeError> {
    if !bytes.starts_with(STORE_MAGIC) {
        return Err(DecodeError::new(FORMAT, 0, "no assembly store magic (XABA)"));
    }
    let field =
        |at: usize| u32_at(bytes, at).ok_or_else(|| DecodeError::new(FORMAT, at, "assembly store header truncated"));
    let version = field(4)?;
    let count = field(8)? as usize;
    let (descriptors, descriptor_size, data_in_descriptor) = match version & 0xffff {
        1 => (V1_HEADER_SIZE, V1_DESCRIPTOR_SIZE, 0),
        number @ 2..=4 => {
            let header_size: usize = if number >= 4 { 28 } else { 20 };
            let index_size = field(16)? as usize;
            (header_size.saturating_add(index_size), V2_DESCRIPTOR_SIZE, 4)
        }
        _ => return Err(DecodeError::new(FORMAT, 4, format!("assembly store version 0x{version:x} is not known"))),
    };
    let names_at = count
        .checked_mul(descriptor_size)
        .and_then(|size| size.checked_add(descriptors))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| {
            DecodeError::new(FORMAT, 8, format!("{count} assembly descriptors run past the end of the store"))
        })?;
    // Version 2 and later: the names follow the descriptors, read one by one as the entries are.
    let mut name_at = (version & 0xffff >= 2).then_some(names_at);
    let mut first_error = None;
    for index in 0..count {
        let descriptor = descriptors + index * descriptor_size + data_in_descriptor;
        let name = match name_at.and_then(|at| stored_name(bytes, at)) {
            Some((name, next)) => {
                name_at = Some(next);
                name
            }
            None => {
                name_at = None;
                format!("assembly-{index}.dll")
            }
        };
        let (offset, size) =
            (u32_at(bytes, descriptor).unwrap_or(0) as usize, u32_at(bytes, descriptor + 4).unwrap_or(0) as usize);
        match offset.checked_add(size).and_then(|end| bytes.get(offset..end)) {
            Some(data) if size > 0 => each(&name, data),
            Some(_) => {}
            None => {
                first_error.get_or_insert_with(|| {
                    DecodeError::new(FORMAT, descriptor, format!("assembly {index} ({name}) lies outside the store"))
                });
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The name at `at` (a `u32` length, then UTF-8) and where the next one starts.
fn stored_name(bytes: &[u8], at: usize) -> Option<(String, usize)> {
    let length = u32_at(bytes, at)? as usize;
    let start = at.checked_add(4)?;
    let end = start.checked_add(length)?;
    let name = String::from_utf8_lossy(bytes.get(start..end)?);
    let name = cut_name(&name).replace(['/', '\\', '!'], "_");
    Some((if name.is_empty() { "(unnamed)".to_owned() } else { name }, end))
}

/// The `payload` section of an ELF shared library, when it holds an assembly store or an
/// assembly: how .NET for Android 9 and later wrap them (`lib/arm64-v8a/libassembly-store.so`,
/// `libassemblies.arm64-v8a.blob.so`, `lib_Example.dll.so`) so that they pass as native code.
/// Only the section headers are read, by hand: this runs on every ELF file.
pub fn elf_payload(bytes: &[u8]) -> Option<&[u8]> {
    if !bytes.starts_with(b"\x7fELF") || bytes.get(5) != Some(&1) {
        return None;
    }
    let wide = bytes.get(4) == Some(&2);
    let word = |at: usize| -> Option<usize> {
        if wide {
            let field = bytes.get(at..at.checked_add(8)?)?;
            usize::try_from(u64::from_le_bytes(field.try_into().ok()?)).ok()
        } else {
            u32_at(bytes, at).map(|value| value as usize)
        }
    };
    let half = |at: usize| bytes.get(at..at + 2).map(|field| usize::from(u16::from_le_bytes([field[0], field[1]])));
    let (section_headers, entry_size, count, names_index) = if wide {
        (word(0x28)?, half(0x3a)?, half(0x3c)?, half(0x3e)?)
    } else {
        (word(0x20)?, half(0x2e)?, half(0x30)?, half(0x32)?)
    };
    // sh_offset and sh_size: at 24 and 32 in a 64-bit header, at 16 and 20 in a 32-bit one.
    let (offset_in, size_in) = if wide { (24, 32) } else { (16, 20) };
    let section = |index: usize| -> Option<(usize, usize, usize)> {
        let header = index.checked_mul(entry_size)?.checked_add(section_headers)?;
        let name = u32_at(bytes, header)? as usize;
        Some((name, word(header.checked_add(offset_in)?)?, word(header.checked_add(size_in)?)?))
    };
    let (_, names_at, names_size) = section(names_index)?;
    let names = bytes.get(names_at..names_at.checked_add(names_size)?)?;
    (0..count).find_map(|index| {
        let (name, offset, size) = section(index)?;
        if !names.get(name..)?.starts_with(b"payload\0") {
            return None;
        }
        let payload = bytes.get(offset..offset.checked_add(size)?)?;
        let known = payload.starts_with(STORE_MAGIC) || payload.starts_with(LZ4_MAGIC) || payload.starts_with(b"MZ");
        known.then_some(payload)
    })
}

/// Why an `XALZ` assembly was not decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XalzError {
    #[error("LZ4 assembly header truncated")]
    Truncated,
    #[error("LZ4 assembly declares {declared} bytes, more than the {allowed} allowed")]
    TooLarge { declared: usize, allowed: usize },
    #[error("corrupt LZ4 assembly: {0}")]
    Corrupt(String),
}

/// The declared uncompressed size of the `XALZ` assembly in `bytes`.
pub fn xalz_size(bytes: &[u8]) -> Option<usize> {
    bytes.starts_with(LZ4_MAGIC).then(|| u32_at(bytes, 8)).flatten().map(|size| size as usize)
}

/// Decompresses the `XALZ` assembly in `bytes` if it declares at most `allowed` bytes; the
/// buffer is never larger than that, whatever the header says.
pub fn xalz(bytes: &[u8], allowed: usize) -> Result<Vec<u8>, XalzError> {
    let declared = xalz_size(bytes).ok_or(XalzError::Truncated)?;
    if declared > allowed {
        return Err(XalzError::TooLarge { declared, allowed });
    }
    let block = bytes.get(XALZ_HEADER_SIZE..).ok_or(XalzError::Truncated)?;
    let mut image = vec![0u8; declared];
    let written =
        lz4_flex::block::decompress_into(block, &mut image).map_err(|error| XalzError::Corrupt(error.to_string()))?;
    image.truncate(written);
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::dotnet::{store, xalz as compress};

    /// The assemblies listed (name, bytes), and the result.
    type Listed = (Vec<(String, Vec<u8>)>, Result<(), DecodeError>);

    fn listed(bytes: &[u8]) -> Listed {
        let mut found = Vec::new();
        let result = entries(bytes, |name, data| found.push((name.to_owned(), data.to_vec())));
        (found, result)
    }

    #[test]
    fn both_store_versions_list_their_assemblies_compressed_or_not() {
        let a = b"MZ first assembly".to_vec();
        let b = b"MZ second assembly, compressed, compressed, compressed".to_vec();
        for version in [1, 2] {
            let blob = store(version, &[("Example.dll", a.clone(), false), ("Example.Core.dll", b.clone(), true)]);
            let (found, result) = listed(&blob);
            assert_eq!(result, Ok(()));
            assert_eq!(found.len(), 2);
            assert_eq!(found[0].1, a);
            assert_eq!(xalz(&found[1].1, 1 << 20), Ok(b.clone()));
            let names: Vec<&str> = found.iter().map(|(name, _)| name.as_str()).collect();
            if version == 1 {
                assert_eq!(names, ["assembly-0.dll", "assembly-1.dll"]);
            } else {
                assert_eq!(names, ["Example.dll", "Example.Core.dll"]);
            }
        }
    }

    #[test]
    fn huge_counts_and_lying_offsets_are_errors_without_allocation() {
        let mut blob = store(1, &[("A.dll", b"MZ a".to_vec(), false), ("B.dll", b"MZ b".to_vec(), false)]);
        let mut huge = blob.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(listed(&huge).1.unwrap_err().message.contains("run past the end"));
        // The first descriptor's data offset points far away: the second assembly is still given.
        blob[20..24].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
        let (found, result) = listed(&blob);
        assert_eq!(found.len(), 1);
        assert!(result.unwrap_err().message.contains("assembly 0"));
    }

    #[test]
    fn truncated_stores_never_panic() {
        let blob = store(2, &[("A.dll", b"MZ a".to_vec(), true), ("B.dll", b"MZ b".to_vec(), false)]);
        for len in 0..blob.len() {
            let _ = listed(&blob[..len]);
        }
    }

    #[test]
    fn a_store_or_an_assembly_wrapped_in_an_elf_payload_section_is_found() {
        let blob = store(2, &[("A.dll", b"MZ a".to_vec(), false)]);
        assert_eq!(elf_payload(&crate::corpus::dotnet::elf_wrapped(&blob)), Some(blob.as_slice()));
        let assembly = b"MZ an assembly".to_vec();
        assert_eq!(elf_payload(&crate::corpus::dotnet::elf_wrapped(&assembly)), Some(assembly.as_slice()));
        // A payload that is none of them, and a native library with no payload section.
        assert_eq!(elf_payload(&crate::corpus::dotnet::elf_wrapped(b"config data")), None);
        assert_eq!(elf_payload(&crate::corpus::elf::build(b"XABA in .rodata")), None);
        let wrapped = crate::corpus::dotnet::elf_wrapped(&blob);
        for len in 0..wrapped.len() {
            let _ = elf_payload(&wrapped[..len]);
        }
    }

    #[test]
    fn xalz_never_allocates_more_than_allowed() {
        let image = vec![b'x'; 10_000];
        let packed = compress(0, &image);
        assert_eq!(xalz(&packed, 10_000), Ok(image));
        assert_eq!(xalz(&packed, 9_999), Err(XalzError::TooLarge { declared: 10_000, allowed: 9_999 }));
        let mut lying = packed.clone();
        lying[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(xalz(&lying, 1 << 20), Err(XalzError::TooLarge { .. })));
        assert!(matches!(xalz(&packed[..packed.len() / 2], 10_000), Err(XalzError::Corrupt(_))));
        assert_eq!(xalz(b"XALZ", 10), Err(XalzError::Truncated));
    }
}
