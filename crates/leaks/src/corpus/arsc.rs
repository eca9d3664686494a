//! Writes `resources.arsc` resource tables: one package (id `0x7f`) with a global value string
//! pool, type-name and key-name pools, and per type a `typeSpec` chunk and one default-config
//! `ResTable_type` chunk, in the chunk layout of AOSP's `ResourceTypes.h`. The entry offset
//! form (dense, 16-bit, sparse) and compact entries can be chosen, so tests cover each form
//! the reader accepts. Also writes the `ResStringPool` chunk the binary XML writer reuses.

const RES_STRING_POOL_TYPE: u16 = 0x0001;
const RES_TABLE_TYPE: u16 = 0x0002;
const RES_TABLE_PACKAGE_TYPE: u16 = 0x0200;
const RES_TABLE_TYPE_TYPE: u16 = 0x0201;
const RES_TABLE_TYPE_SPEC_TYPE: u16 = 0x0202;
const PACKAGE_HEADER_SIZE: usize = 288;
const CONFIG_SIZE: usize = 64;
const TYPE_HEADER_SIZE: usize = 20 + CONFIG_SIZE;
const UTF8_FLAG: u32 = 0x100;
const FLAG_SPARSE: u8 = 0x01;
const FLAG_OFFSET16: u8 = 0x02;
const FLAG_COMPLEX: u16 = 0x0001;
const FLAG_COMPACT: u16 = 0x0008;
const TYPE_STRING: u8 = 0x03;
/// `Res_MAKEARRAY(0)`: the name of the first item of an array map entry.
const ARRAY_ITEM_BASE: u32 = 0x0200_0000;

/// How a type chunk gives its entry offsets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Offsets {
    /// One `u32` per entry.
    #[default]
    Dense,
    /// One `u16` per entry, the offset divided by four (`FLAG_OFFSET16`).
    Offset16,
    /// `(index, offset / 4)` pairs for the entries present only (`FLAG_SPARSE`).
    Sparse,
}

/// How the table is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// A UTF-8 global string pool (aapt2's default) rather than UTF-16.
    pub utf8: bool,
    pub offsets: Offsets,
    /// Compact entries (Android 14): key and value in eight bytes.
    pub compact: bool,
}

/// A resource table with `(type name, entry name, string value)` entries, in dense form.
pub fn build(package: &str, entries: &[(&str, &str, &str)], utf8: bool) -> Vec<u8> {
    build_with(package, entries, Options { utf8, ..Options::default() })
}

/// A resource table with `(type name, entry name, string value)` entries, written as `options`
/// says.
pub fn build_with(package: &str, entries: &[(&str, &str, &str)], options: Options) -> Vec<u8> {
    let entries: Vec<Entry<'_>> =
        entries.iter().map(|&(kind, name, value)| Entry { kind, name, values: vec![value], map: false }).collect();
    table(package, &entries, options)
}

/// A resource table with `(type name, entry name, items)` string-array map entries.
pub fn build_arrays(package: &str, arrays: &[(&str, &str, &[&str])], utf8: bool) -> Vec<u8> {
    let entries: Vec<Entry<'_>> =
        arrays.iter().map(|&(kind, name, items)| Entry { kind, name, values: items.to_vec(), map: true }).collect();
    table(package, &entries, Options { utf8, ..Options::default() })
}

struct Entry<'a> {
    kind: &'a str,
    name: &'a str,
    values: Vec<&'a str>,
    /// A map (complex) entry with one item per value, rather than a single value.
    map: bool,
}

fn table(package: &str, entries: &[Entry<'_>], options: Options) -> Vec<u8> {
    let mut values = Interner::default();
    let mut types = Interner::default();
    let mut keys = Interner::default();
    for entry in entries {
        types.index(entry.kind);
        keys.index(entry.name);
        for value in &entry.values {
            values.index(value);
        }
    }

    let mut body = Vec::new();
    let type_pool = string_pool(&types.strings, options.utf8);
    let key_pool = string_pool(&keys.strings, options.utf8);
    body.extend_from_slice(&type_pool);
    body.extend_from_slice(&key_pool);
    for (type_index, kind) in types.strings.iter().enumerate() {
        let of_type: Vec<&Entry<'_>> = entries.iter().filter(|entry| entry.kind == *kind).collect();
        let id = (type_index + 1) as u8;
        body.extend_from_slice(&type_spec(id, of_type.len()));
        body.extend_from_slice(&type_chunk(id, &of_type, &mut keys, &mut values, options));
    }

    let mut package_chunk = Vec::new();
    put_header(&mut package_chunk, RES_TABLE_PACKAGE_TYPE, PACKAGE_HEADER_SIZE, PACKAGE_HEADER_SIZE + body.len());
    put_u32(&mut package_chunk, 0x7f);
    let mut name: Vec<u16> = package.encode_utf16().take(127).collect();
    name.resize(128, 0);
    for unit in name {
        package_chunk.extend_from_slice(&unit.to_le_bytes());
    }
    put_u32(&mut package_chunk, PACKAGE_HEADER_SIZE as u32); // typeStrings
    put_u32(&mut package_chunk, types.strings.len() as u32); // lastPublicType
    put_u32(&mut package_chunk, (PACKAGE_HEADER_SIZE + type_pool.len()) as u32); // keyStrings
    put_u32(&mut package_chunk, keys.strings.len() as u32); // lastPublicKey
    put_u32(&mut package_chunk, 0); // typeIdOffset
    debug_assert_eq!(package_chunk.len(), PACKAGE_HEADER_SIZE);
    package_chunk.extend_from_slice(&body);

    let global_pool = string_pool(&values.strings, options.utf8);
    let mut out = Vec::new();
    put_header(&mut out, RES_TABLE_TYPE, 12, 12 + global_pool.len() + package_chunk.len());
    put_u32(&mut out, 1); // packageCount
    out.extend_from_slice(&global_pool);
    out.extend_from_slice(&package_chunk);
    out
}

fn type_spec(id: u8, entry_count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    put_header(&mut out, RES_TABLE_TYPE_SPEC_TYPE, 16, 16 + 4 * entry_count);
    out.extend_from_slice(&[id, 0]);
    out.extend_from_slice(&1u16.to_le_bytes()); // typesCount
    put_u32(&mut out, entry_count as u32);
    out.resize(16 + 4 * entry_count, 0);
    out
}

fn type_chunk(id: u8, entries: &[&Entry<'_>], keys: &mut Interner, values: &mut Interner, options: Options) -> Vec<u8> {
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for entry in entries {
        offsets.push(data.len());
        let key = keys.index(entry.name);
        if entry.map {
            data.extend_from_slice(&16u16.to_le_bytes());
            data.extend_from_slice(&FLAG_COMPLEX.to_le_bytes());
            put_u32(&mut data, key);
            put_u32(&mut data, 0); // parent
            put_u32(&mut data, entry.values.len() as u32);
            for (item, value) in entry.values.iter().enumerate() {
                put_u32(&mut data, ARRAY_ITEM_BASE + item as u32);
                put_res_value(&mut data, TYPE_STRING, values.index(value));
            }
        } else if options.compact {
            let first_value = values.index(entry.values.first().copied().unwrap_or_default());
            data.extend_from_slice(&(key as u16).to_le_bytes());
            data.extend_from_slice(&(FLAG_COMPACT | u16::from(TYPE_STRING) << 8).to_le_bytes());
            put_u32(&mut data, first_value);
        } else {
            let first_value = values.index(entry.values.first().copied().unwrap_or_default());
            data.extend_from_slice(&8u16.to_le_bytes());
            data.extend_from_slice(&0u16.to_le_bytes());
            put_u32(&mut data, key);
            put_res_value(&mut data, TYPE_STRING, first_value);
        }
    }

    let mut offset_table = Vec::new();
    let flags = match options.offsets {
        Offsets::Dense => {
            for offset in &offsets {
                put_u32(&mut offset_table, *offset as u32);
            }
            0
        }
        Offsets::Offset16 => {
            for offset in &offsets {
                offset_table.extend_from_slice(&((offset / 4) as u16).to_le_bytes());
            }
            offset_table.resize(offset_table.len().next_multiple_of(4), 0);
            FLAG_OFFSET16
        }
        Offsets::Sparse => {
            for (index, offset) in offsets.iter().enumerate() {
                offset_table.extend_from_slice(&(index as u16).to_le_bytes());
                offset_table.extend_from_slice(&((offset / 4) as u16).to_le_bytes());
            }
            FLAG_SPARSE
        }
    };
    let entries_start = TYPE_HEADER_SIZE + offset_table.len();
    let mut out = Vec::new();
    put_header(&mut out, RES_TABLE_TYPE_TYPE, TYPE_HEADER_SIZE, entries_start + data.len());
    out.extend_from_slice(&[id, flags, 0, 0]);
    put_u32(&mut out, entries.len() as u32);
    put_u32(&mut out, entries_start as u32);
    put_u32(&mut out, CONFIG_SIZE as u32);
    out.resize(TYPE_HEADER_SIZE, 0);
    out.extend_from_slice(&offset_table);
    out.extend_from_slice(&data);
    out
}

/// A `ResStringPool` chunk holding `strings`, UTF-8 or UTF-16, without styles.
pub fn string_pool<S: AsRef<str>>(strings: &[S], utf8: bool) -> Vec<u8> {
    let mut data = Vec::new();
    let mut offsets = Vec::with_capacity(strings.len());
    for string in strings {
        let string = string.as_ref();
        offsets.push(data.len() as u32);
        if utf8 {
            put_length8(&mut data, string.encode_utf16().count());
            put_length8(&mut data, string.len());
            data.extend_from_slice(string.as_bytes());
            data.push(0);
        } else {
            let units: Vec<u16> = string.encode_utf16().collect();
            let length = units.len();
            if length > 0x7fff {
                data.extend_from_slice(&((length >> 16) as u16 | 0x8000).to_le_bytes());
            }
            data.extend_from_slice(&(length as u16).to_le_bytes());
            for unit in units.iter().chain(&[0]) {
                data.extend_from_slice(&unit.to_le_bytes());
            }
        }
    }
    data.resize(data.len().next_multiple_of(4), 0);
    let strings_start = 28 + 4 * strings.len();
    let mut out = Vec::new();
    put_header(&mut out, RES_STRING_POOL_TYPE, 28, strings_start + data.len());
    put_u32(&mut out, strings.len() as u32);
    put_u32(&mut out, 0); // styleCount
    put_u32(&mut out, if utf8 { UTF8_FLAG } else { 0 });
    put_u32(&mut out, strings_start as u32);
    put_u32(&mut out, 0); // stylesStart
    for offset in offsets {
        put_u32(&mut out, offset);
    }
    out.extend_from_slice(&data);
    out
}

/// A UTF-8 pool length: one byte, or two with the high bit set (so at most `0x7fff`).
fn put_length8(out: &mut Vec<u8>, length: usize) {
    assert!(length <= 0x7fff, "UTF-8 string pools hold strings up to 0x7fff bytes");
    if length > 0x7f {
        out.push((length >> 8) as u8 | 0x80);
    }
    out.push(length as u8);
}

fn put_res_value(out: &mut Vec<u8>, data_type: u8, data: u32) {
    out.extend_from_slice(&8u16.to_le_bytes());
    out.extend_from_slice(&[0, data_type]);
    put_u32(out, data);
}

/// A `ResChunk_header`.
pub fn put_header(out: &mut Vec<u8>, kind: u16, header_size: usize, size: usize) {
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(header_size as u16).to_le_bytes());
    put_u32(out, size as u32);
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Strings in first-seen order, each with its index.
#[derive(Default)]
pub(crate) struct Interner {
    pub(crate) strings: Vec<String>,
}

impl Interner {
    pub(crate) fn index(&mut self, string: &str) -> u32 {
        let index = match self.strings.iter().position(|known| known == string) {
            Some(index) => index,
            None => {
                self.strings.push(string.to_owned());
                self.strings.len() - 1
            }
        };
        index as u32
    }
}
