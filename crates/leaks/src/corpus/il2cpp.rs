//! Writes Unity IL2CPP `global-metadata.dat` files: the header (magic, version, an (offset,
//! size) pair per section) and the sections that hold strings, laid out as libil2cpp reads them:
//! the string literal table (`{length, offset}` pairs; [`offsets_only`] rewrites it to the
//! offsets alone, as some version 31 files have it) over literals stored back to back, the identifiers, a field table (12-byte entries), the
//! field and parameter default values and their blobs (a 32-bit length before version 29, a
//! compressed one from 29 on). Sections the scanner does not read stay empty.

pub const MAGIC: u32 = 0xfab1_1baf;
/// The header is this large in versions 24 to 31 (the last sections vary; they stay zero here).
const HEADER_SIZE: usize = 0x110;
/// `IL2CPP_TYPE_STRING`, `IL2CPP_TYPE_I4`: the type indexes written for constants.
const TYPE_STRING: u32 = 14;
const TYPE_I4: u32 = 8;

/// A constant's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Constant<'a> {
    Text(&'a str),
    Int(i32),
}

/// A `global-metadata.dat` of `version` holding `literals`, and `fields` (name and constant
/// value; a field whose value is `None` has no default), and a string parameter default for
/// each of `parameters`.
pub fn build(version: u32, literals: &[&str], fields: &[(&str, Option<Constant<'_>>)], parameters: &[&str]) -> Vec<u8> {
    // String literals: the table and the data.
    let mut literal_table = Vec::new();
    let mut literal_data = Vec::new();
    for literal in literals {
        let offset = literal_data.len() as u32;
        literal_table.extend_from_slice(&(literal.len() as u32).to_le_bytes());
        literal_table.extend_from_slice(&offset.to_le_bytes());
        literal_data.extend_from_slice(literal.as_bytes());
    }
    // Identifiers: the assembly and type names, then each field's name.
    let mut identifiers = b"Assembly-CSharp\0Game.Config\0".to_vec();
    let mut field_table = Vec::new();
    let mut field_values = Vec::new();
    let mut blobs = Vec::new();
    for (index, (name, value)) in fields.iter().enumerate() {
        let name_index = identifiers.len() as u32;
        identifiers.extend_from_slice(name.as_bytes());
        identifiers.push(0);
        let type_index = match value {
            Some(Constant::Int(_)) => TYPE_I4,
            _ => TYPE_STRING,
        };
        field_table.extend_from_slice(&name_index.to_le_bytes());
        field_table.extend_from_slice(&type_index.to_le_bytes());
        field_table.extend_from_slice(&(0x0400_0001 + index as u32).to_le_bytes()); // The token.
        let Some(value) = value else { continue };
        field_values.extend_from_slice(&(index as u32).to_le_bytes());
        field_values.extend_from_slice(&type_index.to_le_bytes());
        field_values.extend_from_slice(&(blobs.len() as u32).to_le_bytes());
        match value {
            Constant::Text(text) => string_blob(&mut blobs, version, text),
            Constant::Int(number) if version >= 29 => compressed_i32(&mut blobs, *number),
            Constant::Int(number) => blobs.extend_from_slice(&number.to_le_bytes()),
        }
    }
    let mut parameter_values = Vec::new();
    for (index, text) in parameters.iter().enumerate() {
        parameter_values.extend_from_slice(&(index as u32).to_le_bytes());
        parameter_values.extend_from_slice(&TYPE_STRING.to_le_bytes());
        parameter_values.extend_from_slice(&(blobs.len() as u32).to_le_bytes());
        string_blob(&mut blobs, version, text);
    }

    let mut out = vec![0u8; HEADER_SIZE];
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&version.to_le_bytes());
    // Header entry, section: in the order libil2cpp's header lists them.
    let sections: [(usize, &[u8]); 7] = [
        (8, &literal_table),
        (16, &literal_data),
        (24, &identifiers),
        (56, &parameter_values),
        (64, &field_values),
        (72, &blobs),
        (96, &field_table),
    ];
    for (entry, bytes) in sections {
        let offset = out.len().next_multiple_of(4);
        out.resize(offset, 0);
        out.extend_from_slice(bytes);
        out[entry..entry + 4].copy_from_slice(&(offset as u32).to_le_bytes());
        out[entry + 4..entry + 8].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    }
    out
}

/// `metadata` (as [`build`] writes it) with its literal table rewritten in place to the offsets
/// alone, the rest of the table's room zeroed and its size halved.
pub fn offsets_only(metadata: &mut [u8]) {
    let at = u32::from_le_bytes(metadata[8..12].try_into().unwrap_or_default()) as usize;
    let size = u32::from_le_bytes(metadata[12..16].try_into().unwrap_or_default()) as usize;
    let offsets: Vec<u8> = metadata[at..at + size].chunks_exact(8).flat_map(|pair| pair[4..8].to_vec()).collect();
    metadata[at..at + size].fill(0);
    metadata[at..at + offsets.len()].copy_from_slice(&offsets);
    metadata[12..16].copy_from_slice(&(offsets.len() as u32).to_le_bytes());
}

/// A string constant's blob: its length (32-bit before version 29, compressed from 29), then
/// its UTF-8 bytes.
fn string_blob(out: &mut Vec<u8>, version: u32, text: &str) {
    if version >= 29 {
        compressed_i32(out, text.len() as i32);
    } else {
        out.extend_from_slice(&(text.len() as i32).to_le_bytes());
    }
    out.extend_from_slice(text.as_bytes());
}

/// Unity's compressed signed integer: the sign in the low bit, then 1, 2 or 4 bytes, big-endian,
/// marked by the top bits of the first (`0xf0` and four little-endian bytes beyond that).
pub fn compressed_i32(out: &mut Vec<u8>, value: i32) {
    let unsigned = if value < 0 { ((-(i64::from(value) + 1)) as u32) << 1 | 1 } else { (value as u32) << 1 };
    match unsigned {
        0..=0x7f => out.push(unsigned as u8),
        0x80..=0x3fff => out.extend_from_slice(&((unsigned as u16) | 0x8000).to_be_bytes()),
        0x4000..=0x1fff_ffff => out.extend_from_slice(&(unsigned | 0xc000_0000).to_be_bytes()),
        _ => {
            out.push(0xf0);
            out.extend_from_slice(&unsigned.to_le_bytes());
        }
    }
}
