//! Writes minimal DEX files (version 035) that hold a given set of strings: a header, the
//! `string_ids` table, the `string_data_item`s in MUTF-8 and a map list, laid out as
//! <https://source.android.com/docs/core/runtime/dex-format> requires. The Adler-32 checksum is
//! computed; the SHA-1 signature is left zeroed (nothing here checks it).

const HEADER_SIZE: usize = 0x70;
const ENDIAN_CONSTANT: u32 = 0x1234_5678;
const TYPE_HEADER_ITEM: u16 = 0x0000;
const TYPE_STRING_ID_ITEM: u16 = 0x0001;
const TYPE_MAP_LIST: u16 = 0x1000;
const TYPE_STRING_DATA_ITEM: u16 = 0x2002;

/// A DEX file whose string pool holds `strings`, sorted by UTF-16 code units and deduplicated as
/// real DEX files require.
pub fn build(strings: &[&str]) -> Vec<u8> {
    let mut sorted: Vec<Vec<u16>> = strings.iter().map(|s| s.encode_utf16().collect()).collect();
    sorted.sort();
    sorted.dedup();
    let count = sorted.len();

    let ids_off = HEADER_SIZE;
    let data_off = ids_off + 4 * count;
    let mut data = Vec::new();
    let mut offsets = Vec::with_capacity(count);
    for units in &sorted {
        offsets.push(data_off + data.len());
        uleb128(&mut data, units.len() as u32);
        data.extend_from_slice(&encode_mutf8(units));
        data.push(0);
    }
    while !(data_off + data.len()).is_multiple_of(4) {
        data.push(0);
    }
    let map_off = data_off + data.len();

    let mut map: Vec<(u16, u32, u32)> = vec![(TYPE_HEADER_ITEM, 1, 0)];
    if count > 0 {
        map.push((TYPE_STRING_ID_ITEM, count as u32, ids_off as u32));
        map.push((TYPE_STRING_DATA_ITEM, count as u32, data_off as u32));
    }
    map.push((TYPE_MAP_LIST, 1, map_off as u32));
    let file_size = map_off + 4 + 12 * map.len();

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
    put_u32(&mut out, count as u32);
    put_u32(&mut out, if count > 0 { ids_off as u32 } else { 0 });
    for _ in 0..10 {
        // type_ids, proto_ids, field_ids, method_ids and class_defs: all empty.
        put_u32(&mut out, 0);
    }
    put_u32(&mut out, (file_size - data_off) as u32); // data_size
    put_u32(&mut out, data_off as u32); // data_off
    debug_assert_eq!(out.len(), HEADER_SIZE);
    for offset in offsets {
        put_u32(&mut out, offset as u32);
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
