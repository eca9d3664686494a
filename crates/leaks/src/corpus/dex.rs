//! Writes minimal DEX files (version 035) that hold a given set of strings and, optionally,
//! classes with `static final String` fields and their values: a header, the `string_ids`,
//! `type_ids`, `field_ids` and `class_defs` tables, the `string_data_item`s in MUTF-8, each
//! class's `class_data_item` and `encoded_array_item` of static values, and a map list, laid out
//! as <https://source.android.com/docs/core/runtime/dex-format> requires. The Adler-32 checksum
//! is computed; the SHA-1 signature is left zeroed (nothing here checks it).

const HEADER_SIZE: usize = 0x70;
const ENDIAN_CONSTANT: u32 = 0x1234_5678;
const TYPE_HEADER_ITEM: u16 = 0x0000;
const TYPE_STRING_ID_ITEM: u16 = 0x0001;
const TYPE_TYPE_ID_ITEM: u16 = 0x0002;
const TYPE_FIELD_ID_ITEM: u16 = 0x0004;
const TYPE_CLASS_DEF_ITEM: u16 = 0x0006;
const TYPE_MAP_LIST: u16 = 0x1000;
const TYPE_CLASS_DATA_ITEM: u16 = 0x2000;
const TYPE_STRING_DATA_ITEM: u16 = 0x2002;
const TYPE_ENCODED_ARRAY_ITEM: u16 = 0x2005;
/// `VALUE_STRING` in an `encoded_value`.
pub const VALUE_STRING: u8 = 0x17;
/// `public static final`.
const ACC_PUBLIC_STATIC_FINAL: u32 = 0x19;
const STRING_DESCRIPTOR: &str = "Ljava/lang/String;";

/// A `static final String` field: the class descriptor (`Lcom/example/BuildConfig;`), the
/// field's name and its constant value.
pub type StaticField<'a> = (&'a str, &'a str, &'a str);

/// A DEX file whose string pool holds `strings`, sorted by UTF-16 code units and deduplicated as
/// real DEX files require.
pub fn build(strings: &[&str]) -> Vec<u8> {
    build_with_fields(strings, &[])
}

/// A DEX file with `strings` in its pool and one class per distinct descriptor of `fields`, each
/// with its static fields and their values (every name, descriptor and value is in the pool too).
pub fn build_with_fields(strings: &[&str], fields: &[StaticField<'_>]) -> Vec<u8> {
    let mut all: Vec<&str> = strings.to_vec();
    if !fields.is_empty() {
        all.push(STRING_DESCRIPTOR);
    }
    for (class, name, value) in fields {
        all.extend([*class, *name, *value]);
    }
    let mut sorted: Vec<Vec<u16>> = all.iter().map(|s| s.encode_utf16().collect()).collect();
    sorted.sort();
    sorted.dedup();
    let count = sorted.len();
    let string_index = |text: &str| -> u32 {
        let units: Vec<u16> = text.encode_utf16().collect();
        sorted.binary_search(&units).map_or(0, |at| at as u32)
    };

    // Types: the class descriptors and String, ordered by string index as the format requires.
    let mut types: Vec<u32> = fields.iter().map(|(class, _, _)| string_index(class)).collect();
    if !fields.is_empty() {
        types.push(string_index(STRING_DESCRIPTOR));
    }
    types.sort_unstable();
    types.dedup();
    let type_index = |text: &str| -> u16 { types.binary_search(&string_index(text)).map_or(0, |at| at as u16) };
    let string_type = type_index(STRING_DESCRIPTOR);
    // Fields: (class type, field type, name), sorted as the format requires.
    let mut field_ids: Vec<(u16, u16, u32)> =
        fields.iter().map(|(class, name, _)| (type_index(class), string_type, string_index(name))).collect();
    field_ids.sort_unstable();
    field_ids.dedup();
    let mut classes: Vec<u16> = field_ids.iter().map(|(class, _, _)| *class).collect();
    classes.dedup();

    let ids_off = HEADER_SIZE;
    let type_ids_off = ids_off + 4 * count;
    let field_ids_off = type_ids_off + 4 * types.len();
    let class_defs_off = field_ids_off + 8 * field_ids.len();
    let data_off = class_defs_off + 32 * classes.len();
    let mut data = Vec::new();
    let mut offsets = Vec::with_capacity(count);
    for units in &sorted {
        offsets.push(data_off + data.len());
        uleb128(&mut data, units.len() as u32);
        data.extend_from_slice(&encode_mutf8(units));
        data.push(0);
    }
    // Each class: its class_data_item, then its static values; (class_data_off, static_values_off).
    let mut class_offsets = Vec::with_capacity(classes.len());
    for &class in &classes {
        let own: Vec<(usize, &(u16, u16, u32))> =
            field_ids.iter().enumerate().filter(|(_, (owner, _, _))| *owner == class).collect();
        let class_data_off = data_off + data.len();
        uleb128(&mut data, own.len() as u32);
        for _ in 0..3 {
            // Instance fields, direct and virtual methods: none.
            uleb128(&mut data, 0);
        }
        let mut previous = 0usize;
        for (position, (index, _)) in own.iter().enumerate() {
            let diff = if position == 0 { *index } else { index - previous };
            uleb128(&mut data, diff as u32);
            uleb128(&mut data, ACC_PUBLIC_STATIC_FINAL);
            previous = *index;
        }
        let static_values_off = data_off + data.len();
        uleb128(&mut data, own.len() as u32);
        for (_, (_, _, name)) in &own {
            let value = fields
                .iter()
                .find(|(class_name, field, _)| type_index(class_name) == class && string_index(field) == *name)
                .map_or(0, |(_, _, value)| string_index(value));
            let bytes = value.to_le_bytes();
            let used = 4 - bytes.iter().rev().take_while(|&&byte| byte == 0).count().min(3);
            data.push(VALUE_STRING | (((used - 1) as u8) << 5));
            data.extend_from_slice(&bytes[..used]);
        }
        class_offsets.push((class_data_off, static_values_off));
    }
    while !(data_off + data.len()).is_multiple_of(4) {
        data.push(0);
    }
    let map_off = data_off + data.len();

    let mut map: Vec<(u16, u32, u32)> = vec![(TYPE_HEADER_ITEM, 1, 0)];
    if count > 0 {
        map.push((TYPE_STRING_ID_ITEM, count as u32, ids_off as u32));
    }
    if !types.is_empty() {
        map.push((TYPE_TYPE_ID_ITEM, types.len() as u32, type_ids_off as u32));
        map.push((TYPE_FIELD_ID_ITEM, field_ids.len() as u32, field_ids_off as u32));
        map.push((TYPE_CLASS_DEF_ITEM, classes.len() as u32, class_defs_off as u32));
    }
    if count > 0 {
        map.push((TYPE_STRING_DATA_ITEM, count as u32, data_off as u32));
    }
    if let Some((first_class_data, first_values)) = class_offsets.first() {
        map.push((TYPE_CLASS_DATA_ITEM, classes.len() as u32, *first_class_data as u32));
        map.push((TYPE_ENCODED_ARRAY_ITEM, classes.len() as u32, *first_values as u32));
    }
    map.push((TYPE_MAP_LIST, 1, map_off as u32));
    let file_size = map_off + 4 + 12 * map.len();
    let table =
        |size: usize, offset: usize| -> [u32; 2] { if size > 0 { [size as u32, offset as u32] } else { [0, 0] } };

    let mut out = Vec::with_capacity(file_size);
    out.extend_from_slice(b"dex\n035\0");
    out.extend_from_slice(&[0; 4]); // Checksum, filled in below.
    out.extend_from_slice(&[0; 20]); // SHA-1 signature, left zeroed.
    put_u32(&mut out, file_size as u32);
    put_u32(&mut out, HEADER_SIZE as u32);
    put_u32(&mut out, ENDIAN_CONSTANT);
    put_u32(&mut out, 0); // link_size
    put_u32(&mut out, 0); // link_off
    put_u32(&mut out, map_off as u32);
    // string_ids, type_ids, proto_ids (none), field_ids, method_ids (none), class_defs.
    for [size, offset] in [
        table(count, ids_off),
        table(types.len(), type_ids_off),
        [0, 0],
        table(field_ids.len(), field_ids_off),
        [0, 0],
        table(classes.len(), class_defs_off),
    ] {
        put_u32(&mut out, size);
        put_u32(&mut out, offset);
    }
    put_u32(&mut out, (file_size - data_off) as u32); // data_size
    put_u32(&mut out, data_off as u32); // data_off
    debug_assert_eq!(out.len(), HEADER_SIZE);
    for offset in offsets {
        put_u32(&mut out, offset as u32);
    }
    for string in &types {
        put_u32(&mut out, *string);
    }
    for (class, kind, name) in &field_ids {
        out.extend_from_slice(&class.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        put_u32(&mut out, *name);
    }
    for (&class, (class_data_off, static_values_off)) in classes.iter().zip(&class_offsets) {
        put_u32(&mut out, u32::from(class));
        put_u32(&mut out, 1); // access_flags: public
        put_u32(&mut out, u32::MAX); // superclass_idx: NO_INDEX (not read)
        put_u32(&mut out, 0); // interfaces_off
        put_u32(&mut out, u32::MAX); // source_file_idx: NO_INDEX
        put_u32(&mut out, 0); // annotations_off
        put_u32(&mut out, *class_data_off as u32);
        put_u32(&mut out, *static_values_off as u32);
    }
    out.extend_from_slice(&data);
    put_u32(&mut out, map.len() as u32);
    for (kind, size, offset) in map {
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        put_u32(&mut out, size);
        put_u32(&mut out, offset);
    }
    let checksum = adler32(&out[12..]);
    out[8..12].copy_from_slice(&checksum.to_le_bytes());
    out
}

/// Modified UTF-8 as DEX stores it: NUL as two bytes, every UTF-16 unit (each half of a
/// surrogate pair too) as one to three bytes.
pub fn encode_mutf8(units: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(units.len());
    for &unit in units {
        match unit {
            0x0001..=0x007f => out.push(unit as u8),
            0x0000 | 0x0080..=0x07ff => {
                out.push(0xc0 | (unit >> 6) as u8);
                out.push(0x80 | (unit & 0x3f) as u8);
            }
            _ => {
                out.push(0xe0 | (unit >> 12) as u8);
                out.push(0x80 | ((unit >> 6) & 0x3f) as u8);
                out.push(0x80 | (unit & 0x3f) as u8);
            }
        }
    }
    out
}

/// Appends `value` as ULEB128: the same base-128 encoding as a protobuf varint.
pub fn uleb128(out: &mut Vec<u8>, value: u32) {
    super::protobuf::varint(out, u64::from(value));
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn adler32(bytes: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in bytes {
        a = (a + u32::from(byte)) % MOD;
        b = (b + a) % MOD;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adler32_matches_the_reference_value() {
        // The example from RFC 1950's reference implementation.
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn header_fields_describe_the_file() {
        let dex = build(&["b", "a", "b"]);
        assert_eq!(u32::from_le_bytes(dex[32..36].try_into().unwrap()) as usize, dex.len());
        assert_eq!(u32::from_le_bytes(dex[56..60].try_into().unwrap()), 2);
        assert_eq!(dex.len() % 4, 0);
    }
}
