//! Writes minimal .NET assemblies and Xamarin assembly stores.
//!
//! An assembly is a PE32 DLL with one `.text` section holding the CLI header and the metadata
//! (ECMA-335 II.24 and II.25): the `BSJB` root, then the `#~` tables (`Module`, one `TypeDef`
//! per class that has constants, `Field` and `Constant` rows), `#Strings`, `#US` (the string
//! literals of the code), `#GUID` and `#Blob` (field signatures and the UTF-16 values of the
//! constants). There is no code, no import table and no relocation: nothing reads them.
//!
//! A store is an `assemblies.blob` as .NET for Android (formerly Xamarin.Android) writes it
//! (`XABA`, <https://github.com/dotnet/android> `Documentation/project-docs/AssemblyStores.md`):
//! version 1 with a 20-byte header and a descriptor (data offset and size, debug and config data)
//! per assembly, or version 2 with the index, descriptors and the names of the assemblies. An
//! assembly is stored as is or LZ4-compressed behind an `XALZ` header (magic, descriptor index,
//! uncompressed size).

/// `const string` fields: the class (`Example.Config`), the field's name and its value.
pub type Constant<'a> = (&'a str, &'a str, &'a str);

const SECTION_RVA: u32 = 0x2000;
const SECTION_FILE_OFFSET: usize = 0x200;
const CLI_HEADER_SIZE: usize = 72;
const ELEMENT_TYPE_STRING: u8 = 0x0e;
const FIELD_SIGNATURE: u8 = 0x06;
/// `public static literal` (what C# makes of `public const`).
const FIELD_PUBLIC_LITERAL: u16 = 0x0001 | 0x0006 | 0x0010 | 0x0040;
/// Where the `XALZ` magic says an assembly is LZ4-compressed.
pub const XALZ: &[u8; 4] = b"XALZ";
pub const XABA: &[u8; 4] = b"XABA";

/// A .NET assembly whose `#US` heap holds `user_strings` and whose classes hold `constants`.
pub fn build(user_strings: &[&str], constants: &[Constant<'_>]) -> Vec<u8> {
    let metadata = metadata(user_strings, constants);
    let cli_size = CLI_HEADER_SIZE + metadata.len();
    let raw_size = cli_size.next_multiple_of(0x200);
    let mut out = Vec::with_capacity(SECTION_FILE_OFFSET + raw_size);

    // DOS header: the magic and, at 0x3c, where the PE header is.
    out.extend_from_slice(b"MZ");
    out.resize(0x3c, 0);
    put_u32(&mut out, 0x80);
    out.resize(0x80, 0);
    out.extend_from_slice(b"PE\0\0");
    // COFF header: i386, one section, a PE32 optional header, an executable DLL.
    put_u16(&mut out, 0x014c);
    put_u16(&mut out, 1);
    put_u32(&mut out, 0); // TimeDateStamp
    put_u32(&mut out, 0); // PointerToSymbolTable
    put_u32(&mut out, 0); // NumberOfSymbols
    put_u16(&mut out, 224);
    put_u16(&mut out, 0x2102);
    let optional = out.len();
    put_u16(&mut out, 0x010b); // PE32
    out.resize(optional + 28, 0);
    put_u32(&mut out, 0x1000_0000); // ImageBase
    put_u32(&mut out, 0x2000); // SectionAlignment
    put_u32(&mut out, 0x200); // FileAlignment
    out.resize(optional + 56, 0);
    put_u32(&mut out, SECTION_RVA + (cli_size as u32).next_multiple_of(0x2000)); // SizeOfImage
    put_u32(&mut out, SECTION_FILE_OFFSET as u32); // SizeOfHeaders
    out.resize(optional + 92, 0);
    put_u32(&mut out, 16); // NumberOfRvaAndSizes
    for directory in 0..16 {
        if directory == 14 {
            // The CLI header, at the start of the section.
            put_u32(&mut out, SECTION_RVA);
            put_u32(&mut out, CLI_HEADER_SIZE as u32);
        } else {
            put_u32(&mut out, 0);
            put_u32(&mut out, 0);
        }
    }
    debug_assert_eq!(out.len(), optional + 224);
    out.extend_from_slice(b".text\0\0\0");
    put_u32(&mut out, cli_size as u32); // VirtualSize
    put_u32(&mut out, SECTION_RVA);
    put_u32(&mut out, raw_size as u32);
    put_u32(&mut out, SECTION_FILE_OFFSET as u32);
    out.resize(out.len() + 12, 0); // Relocations and line numbers: none.
    put_u32(&mut out, 0x6000_0020); // Code, executable, readable.
    out.resize(SECTION_FILE_OFFSET, 0);

    // The CLI header, then the metadata right after it.
    put_u32(&mut out, CLI_HEADER_SIZE as u32);
    put_u16(&mut out, 2);
    put_u16(&mut out, 5);
    put_u32(&mut out, SECTION_RVA + CLI_HEADER_SIZE as u32);
    put_u32(&mut out, metadata.len() as u32);
    put_u32(&mut out, 1); // Flags: IL only.
    out.resize(SECTION_FILE_OFFSET + CLI_HEADER_SIZE, 0);
    out.extend_from_slice(&metadata);
    out.resize(SECTION_FILE_OFFSET + raw_size, 0);
    out
}

/// The metadata root and its five streams.
fn metadata(user_strings: &[&str], constants: &[Constant<'_>]) -> Vec<u8> {
    let mut strings = vec![0u8];
    let mut string = |text: &str| -> u16 {
        let at = strings.len() as u16;
        strings.extend_from_slice(text.as_bytes());
        strings.push(0);
        at
    };
    let mut blob = vec![0u8];
    let mut add_blob = |bytes: &[u8]| -> u16 {
        let at = blob.len() as u16;
        compressed_length(&mut blob, bytes.len());
        blob.extend_from_slice(bytes);
        at
    };

    // Tables, with every index two bytes wide (small heaps and tables).
    let module_name = string("Example.dll");
    let mut module = Vec::new();
    put_u16(&mut module, 0); // Generation
    put_u16(&mut module, module_name);
    put_u16(&mut module, 1); // Mvid: the first GUID.
    put_u16(&mut module, 0);
    put_u16(&mut module, 0);

    let mut classes: Vec<&str> = vec!["<Module>"];
    for (class, _, _) in constants {
        if !classes.contains(class) {
            classes.push(class);
        }
    }
    let signature = add_blob(&[FIELD_SIGNATURE, ELEMENT_TYPE_STRING]);
    let mut type_defs = Vec::new();
    let mut fields = Vec::new();
    let mut constant_rows = Vec::new();
    let mut field_count = 0u16;
    for class in &classes {
        let (namespace, name) = class.rsplit_once('.').unwrap_or(("", class));
        let name_at = string(name);
        let namespace_at = string(namespace);
        put_u32(&mut type_defs, if *class == "<Module>" { 0 } else { 0x0010_0001 });
        put_u16(&mut type_defs, name_at);
        put_u16(&mut type_defs, namespace_at);
        put_u16(&mut type_defs, 0); // Extends: nothing.
        put_u16(&mut type_defs, field_count + 1); // FieldList
        put_u16(&mut type_defs, 1); // MethodList: the (empty) method table.
        for (_, field, value) in constants.iter().filter(|(owner, _, _)| owner == class) {
            field_count += 1;
            put_u16(&mut fields, FIELD_PUBLIC_LITERAL);
            put_u16(&mut fields, string(field));
            put_u16(&mut fields, signature);
            let utf16: Vec<u8> = value.encode_utf16().flat_map(u16::to_le_bytes).collect();
            let value_at = add_blob(&utf16);
            constant_rows.push(ELEMENT_TYPE_STRING);
            constant_rows.push(0);
            // HasConstant: a Field is tag 0 in the low two bits.
            put_u16(&mut constant_rows, field_count << 2);
            put_u16(&mut constant_rows, value_at);
        }
    }

    let mut tables = Vec::new();
    put_u32(&mut tables, 0); // Reserved
    tables.extend_from_slice(&[2, 0, 0, 1]); // Version 2.0, small heaps, reserved.
    let present: u64 = (1 << 0x00) | (1 << 0x02) | (1 << 0x04) | (1 << 0x0b);
    tables.extend_from_slice(&present.to_le_bytes());
    tables.extend_from_slice(&present.to_le_bytes()); // Sorted
    put_u32(&mut tables, 1);
    put_u32(&mut tables, classes.len() as u32);
    put_u32(&mut tables, u32::from(field_count));
    put_u32(&mut tables, constants.len() as u32);
    for rows in [module, type_defs, fields, constant_rows] {
        tables.extend_from_slice(&rows);
    }

    let mut user = vec![0u8];
    for text in user_strings {
        let units: Vec<u16> = text.encode_utf16().collect();
        compressed_length(&mut user, units.len() * 2 + 1);
        for unit in &units {
            user.extend_from_slice(&unit.to_le_bytes());
        }
        // The final byte: 1 when a unit needs more than the low byte of UTF-16 to be handled.
        user.push(u8::from(units.iter().any(|&unit| unit >= 0x80)));
    }
    let guid = vec![0x42u8; 16];

    let version = b"v4.0.30319\0\0";
    let streams: [(&str, Vec<u8>); 5] =
        [("#~", tables), ("#Strings", strings), ("#US", user), ("#GUID", guid), ("#Blob", blob)];
    let header_size = 16
        + version.len()
        + 4
        + streams.iter().map(|(name, _)| 8 + (name.len() + 1).next_multiple_of(4)).sum::<usize>();
    let mut out = Vec::new();
    out.extend_from_slice(b"BSJB");
    put_u16(&mut out, 1);
    put_u16(&mut out, 1);
    put_u32(&mut out, 0);
    put_u32(&mut out, version.len() as u32);
    out.extend_from_slice(version);
    put_u16(&mut out, 0); // Flags
    put_u16(&mut out, streams.len() as u16);
    let mut offset = header_size;
    for (name, data) in &streams {
        put_u32(&mut out, offset as u32);
        put_u32(&mut out, data.len().next_multiple_of(4) as u32);
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        offset += data.len().next_multiple_of(4);
    }
    debug_assert_eq!(out.len(), header_size);
    for (_, data) in &streams {
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    out
}

/// `image` LZ4-compressed behind an `XALZ` header, as .NET for Android stores assemblies.
pub fn xalz(descriptor_index: u32, image: &[u8]) -> Vec<u8> {
    let mut out = XALZ.to_vec();
    put_u32(&mut out, descriptor_index);
    put_u32(&mut out, image.len() as u32);
    out.extend_from_slice(&lz4_flex::block::compress(image));
    out
}

/// An assembly store of `version` 1 or 2 holding `assemblies` (name, image, whether to
/// compress it). Version 1 keeps no names (they are in `assemblies.manifest`).
pub fn store(version: u32, assemblies: &[(&str, Vec<u8>, bool)]) -> Vec<u8> {
    let count = assemblies.len();
    let payloads: Vec<Vec<u8>> = assemblies
        .iter()
        .enumerate()
        .map(|(index, (_, image, compress))| if *compress { xalz(index as u32, image) } else { image.clone() })
        .collect();
    let mut head = Vec::new();
    head.extend_from_slice(XABA);
    if version == 1 {
        put_u32(&mut head, 1);
        put_u32(&mut head, count as u32); // Local entries
        put_u32(&mut head, 0); // Global entries: the index is in another store.
        put_u32(&mut head, 1); // Store id
        let mut data_at = 20 + 24 * count;
        for payload in &payloads {
            put_u32(&mut head, data_at as u32);
            put_u32(&mut head, payload.len() as u32);
            head.extend_from_slice(&[0; 16]); // No debug or config data.
            data_at += payload.len();
        }
    } else {
        // 64-bit, arm64: index entries are a 64-bit hash, a descriptor index, an ignore flag.
        put_u32(&mut head, 0x8001_0002);
        put_u32(&mut head, count as u32);
        put_u32(&mut head, count as u32);
        put_u32(&mut head, (13 * count) as u32);
        for index in 0..count {
            head.extend_from_slice(&(0x1234_5678_9abc_def0u64 ^ index as u64).to_le_bytes());
            put_u32(&mut head, index as u32);
            head.push(0);
        }
        let names_size: usize = assemblies.iter().map(|(name, _, _)| 4 + name.len()).sum();
        let mut data_at = head.len() + 28 * count + names_size;
        for (index, payload) in payloads.iter().enumerate() {
            put_u32(&mut head, index as u32); // Mapping index
            put_u32(&mut head, data_at as u32);
            put_u32(&mut head, payload.len() as u32);
            head.extend_from_slice(&[0; 16]);
            data_at += payload.len();
        }
        for (name, _, _) in assemblies {
            put_u32(&mut head, name.len() as u32);
            head.extend_from_slice(name.as_bytes());
        }
    }
    for payload in payloads {
        head.extend_from_slice(&payload);
    }
    head
}

/// A 64-bit little-endian ELF shared object whose only content is a `payload` section holding
/// `payload` at offset 0x4000, as .NET for Android 9 and later wrap assembly stores and
/// assemblies (`Documentation/project-docs/ApkSharedLibraries.md`): null section, `.shstrtab`,
/// `payload`. There are no program headers: nothing reads them.
pub fn elf_wrapped(payload: &[u8]) -> Vec<u8> {
    const NAMES: &[u8] = b"\0.shstrtab\0payload\0";
    const PAYLOAD_AT: usize = 0x4000;
    let names_at = 64;
    let headers_at = (PAYLOAD_AT + payload.len()).next_multiple_of(8);
    let mut out = Vec::with_capacity(headers_at + 3 * 64);
    out.extend_from_slice(b"\x7fELF");
    out.extend_from_slice(&[2, 1, 1, 0]);
    out.resize(16, 0);
    put_u16(&mut out, 3); // ET_DYN
    put_u16(&mut out, 183); // AArch64
    put_u32(&mut out, 1);
    out.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    out.extend_from_slice(&0u64.to_le_bytes()); // e_phoff
    out.extend_from_slice(&(headers_at as u64).to_le_bytes());
    put_u32(&mut out, 0); // e_flags
    put_u16(&mut out, 64);
    put_u16(&mut out, 56);
    put_u16(&mut out, 0);
    put_u16(&mut out, 64);
    put_u16(&mut out, 3);
    put_u16(&mut out, 1); // e_shstrndx
    out.extend_from_slice(NAMES);
    out.resize(PAYLOAD_AT, 0);
    out.extend_from_slice(payload);
    out.resize(headers_at, 0);
    // (name, type, offset, size, alignment)
    let sections: [(u32, u32, usize, usize, u64); 3] =
        [(0, 0, 0, 0, 0), (1, 3, names_at, NAMES.len(), 1), (11, 1, PAYLOAD_AT, payload.len(), 0x4000)];
    for (name, kind, offset, size, align) in sections {
        put_u32(&mut out, name);
        put_u32(&mut out, kind);
        out.extend_from_slice(&0u64.to_le_bytes()); // sh_flags: not loaded.
        out.extend_from_slice(&0u64.to_le_bytes()); // sh_addr
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        out.extend_from_slice(&(size as u64).to_le_bytes());
        put_u32(&mut out, 0);
        put_u32(&mut out, 0);
        out.extend_from_slice(&align.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
    }
    out
}

/// ECMA-335 II.24.2.4: one byte below 0x80, two below 0x4000, else four.
pub fn compressed_length(out: &mut Vec<u8>, length: usize) {
    if length < 0x80 {
        out.push(length as u8);
    } else if length < 0x4000 {
        out.extend_from_slice(&(0x8000 | length as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&(0xc000_0000 | length as u32).to_be_bytes());
    }
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}
