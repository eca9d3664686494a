//! Names for .NET constants: the `Constant` table (ECMA-335 II.22.9) gives each `const` its
//! type, its owner (a coded `HasConstant` index: a field, a parameter or a property) and its
//! value in `#Blob`; the `Field` table gives the field's name and the `TypeDef` table, through
//! each type's `FieldList`, the class it belongs to. A string constant of a field is emitted as
//! `Config.ApiSecret` at `Example.Config::ApiSecret`; one of a parameter or property, unnamed,
//! at `constant[{row}]`.
//!
//! The tables sit one after another in the `#~` stream (II.24.2.6), so finding `Constant` needs
//! the row size of every table before it (0x00 to 0x0A), which depends on the row counts and the
//! heap index widths. Every row is read from the stream before it is used; a table that would
//! end past the stream is an error before any of its rows is read.

use super::{FORMAT, Heap, MAX_STRING_BYTES, MIN_CHARS, compressed_length, u16_at, u32_at};
use crate::decode::{DecodeError, Emitter, MAX_NAME_CHARS, cut_name};

const MODULE: usize = 0x00;
const TYPE_REF: usize = 0x01;
const TYPE_DEF: usize = 0x02;
const FIELD_PTR: usize = 0x03;
const FIELD: usize = 0x04;
const METHOD_PTR: usize = 0x05;
const METHOD_DEF: usize = 0x06;
const PARAM_PTR: usize = 0x07;
const PARAM: usize = 0x08;
const INTERFACE_IMPL: usize = 0x09;
const MEMBER_REF: usize = 0x0a;
const CONSTANT: usize = 0x0b;
const PROPERTY: usize = 0x17;
const MODULE_REF: usize = 0x1a;
const TYPE_SPEC: usize = 0x1b;
const ASSEMBLY_REF: usize = 0x23;
const ELEMENT_TYPE_STRING: u8 = 0x0e;
/// `HeapSizes` bit for streams that carry four extra bytes after the row counts.
const EXTRA_DATA: u8 = 0x40;

/// Row counts and index widths of one `#~` stream.
struct Schema {
    rows: [usize; 64],
    string_index: usize,
    guid_index: usize,
    blob_index: usize,
}

impl Schema {
    /// The width of an index into `table`.
    fn index(&self, table: usize) -> usize {
        if self.rows[table] < 1 << 16 { 2 } else { 4 }
    }

    /// The width of a coded index into `tables` with `tag_bits` bits of tag.
    fn coded(&self, tables: &[usize], tag_bits: u32) -> usize {
        let most = tables.iter().map(|&table| self.rows[table]).max().unwrap_or(0);
        if most < 1 << (16 - tag_bits) { 2 } else { 4 }
    }

    fn type_def_or_ref(&self) -> usize {
        self.coded(&[TYPE_DEF, TYPE_REF, TYPE_SPEC], 2)
    }

    fn has_constant(&self) -> usize {
        self.coded(&[FIELD, PARAM, PROPERTY], 2)
    }

    /// Row sizes of the tables up to `Constant` (II.22).
    fn row_size(&self, table: usize) -> usize {
        let (s, g, b) = (self.string_index, self.guid_index, self.blob_index);
        match table {
            MODULE => 2 + s + 3 * g,
            TYPE_REF => self.coded(&[MODULE, MODULE_REF, ASSEMBLY_REF, TYPE_REF], 2) + 2 * s,
            TYPE_DEF => 4 + 2 * s + self.type_def_or_ref() + self.index(FIELD) + self.index(METHOD_DEF),
            FIELD_PTR => self.index(FIELD),
            FIELD => 2 + s + b,
            METHOD_PTR => self.index(METHOD_DEF),
            METHOD_DEF => 8 + s + b + self.index(PARAM),
            PARAM_PTR => self.index(PARAM),
            PARAM => 4 + s,
            INTERFACE_IMPL => self.index(TYPE_DEF) + self.type_def_or_ref(),
            MEMBER_REF => self.coded(&[TYPE_DEF, TYPE_REF, MODULE_REF, METHOD_DEF, TYPE_SPEC], 3) + s + b,
            CONSTANT => 2 + self.has_constant() + b,
            _ => 0,
        }
    }
}

/// A table in the stream: where its rows start, their size and how many.
#[derive(Clone, Copy)]
struct Table {
    start: usize,
    row_size: usize,
    rows: usize,
}

impl Table {
    fn row(&self, index: usize) -> usize {
        self.start + index * self.row_size
    }
}

/// Emits every string constant, named by its field where it has one.
pub(super) fn constants(
    tables: Heap<'_>,
    strings: Heap<'_>,
    blob: Heap<'_>,
    out: &mut Emitter<'_>,
) -> Result<(), DecodeError> {
    let stream = tables.bytes;
    let error = |at: usize, message: &str| DecodeError::new(FORMAT, tables.at + at, message.to_owned());
    let (Some(&heap_sizes), Some(valid)) =
        (stream.get(6), stream.get(8..16).and_then(|valid| Some(u64::from_le_bytes(valid.try_into().ok()?))))
    else {
        return Err(error(0, "#~ header truncated"));
    };
    let mut schema = Schema {
        rows: [0; 64],
        string_index: if heap_sizes & 0x01 != 0 { 4 } else { 2 },
        guid_index: if heap_sizes & 0x02 != 0 { 4 } else { 2 },
        blob_index: if heap_sizes & 0x04 != 0 { 4 } else { 2 },
    };
    let mut at = 24;
    for table in 0..64 {
        if valid & (1 << table) != 0 {
            schema.rows[table] = u32_at(stream, at).ok_or_else(|| error(at, "#~ row counts truncated"))? as usize;
            at += 4;
        }
    }
    if heap_sizes & EXTRA_DATA != 0 {
        at += 4;
    }
    // Where each table up to `Constant` starts; each must fit in the stream.
    let mut found = [Table { start: 0, row_size: 0, rows: 0 }; CONSTANT + 1];
    for (table, slot) in found.iter_mut().enumerate() {
        let row_size = schema.row_size(table);
        let rows = schema.rows[table];
        let end = rows.checked_mul(row_size).and_then(|size| size.checked_add(at)).filter(|&end| end <= stream.len());
        let end =
            end.ok_or_else(|| error(at, &format!("table 0x{table:02x} ({rows} rows) runs past the end of #~")))?;
        *slot = Table { start: at, row_size, rows };
        at = end;
    }
    let (type_defs, fields, constant_table) = (found[TYPE_DEF], found[FIELD], found[CONSTANT]);
    let has_constant = schema.has_constant();
    for row in 0..constant_table.rows {
        let row_at = constant_table.row(row);
        if stream.get(row_at) != Some(&ELEMENT_TYPE_STRING) {
            continue;
        }
        let parent = index_at(stream, row_at + 2, has_constant).unwrap_or(0);
        let value_index = index_at(stream, row_at + 2 + has_constant, schema.blob_index).unwrap_or(0);
        let Some(value) = blob_string(blob.bytes, value_index) else {
            out.charge(tables.at + row_at, 1)?;
            continue;
        };
        if value.chars().nth(MIN_CHARS - 1).is_none() {
            continue;
        }
        out.charge(tables.at + row_at, value.len())?;
        let (tag, index) = (parent & 0x3, parent >> 2);
        let named = (tag == 0).then(|| field_name(stream, strings.bytes, &schema, fields, type_defs, index)).flatten();
        match named {
            Some((location, name)) => out.emit(tables.at + row_at, &location, Some(&name), &value)?,
            None => out.emit(tables.at + row_at, &format!("constant[{row}]"), None, &value)?,
        }
    }
    Ok(())
}

/// `Example.Config::ApiSecret` and `Config.ApiSecret` for the field at 1-based `index`.
fn field_name(
    stream: &[u8],
    strings: &[u8],
    schema: &Schema,
    fields: Table,
    type_defs: Table,
    index: usize,
) -> Option<(String, String)> {
    // With a `FieldPtr` table (unoptimized `#-` metadata, never in a release build) a field's
    // index goes through it; such files keep their values, not their names.
    if schema.rows[FIELD_PTR] != 0 {
        return None;
    }
    let field_row = index.checked_sub(1).filter(|&row| row < fields.rows)?;
    let field = heap_string(strings, index_at(stream, fields.row(field_row) + 2, schema.string_index)?)?;
    // Types list their fields in order: the owner is the last type whose list starts at or
    // before this field. A binary search; on a hostile table it only picks a wrong name.
    let field_list_at = 4 + 2 * schema.string_index + schema.type_def_or_ref();
    let field_list =
        |row: usize| index_at(stream, type_defs.row(row) + field_list_at, schema.index(FIELD)).unwrap_or(0);
    let (mut low, mut high) = (0usize, type_defs.rows);
    while low < high {
        let middle = low + (high - low) / 2;
        if field_list(middle) <= index { low = middle + 1 } else { high = middle }
    }
    let owner = low.checked_sub(1)?;
    let type_at = type_defs.row(owner);
    let type_name = heap_string(strings, index_at(stream, type_at + 4, schema.string_index)?)?;
    let namespace = heap_string(strings, index_at(stream, type_at + 4 + schema.string_index, schema.string_index)?)?;
    let qualified = if namespace.is_empty() { type_name.clone() } else { format!("{namespace}.{type_name}") };
    Some((cut_name(&format!("{qualified}::{field}")), cut_name(&format!("{type_name}.{field}"))))
}

/// A 2- or 4-byte index at `at`.
fn index_at(bytes: &[u8], at: usize, width: usize) -> Option<usize> {
    if width == 2 { u16_at(bytes, at).map(usize::from) } else { u32_at(bytes, at).map(|value| value as usize) }
}

/// The NUL-terminated UTF-8 string at `index` of `#Strings`.
fn heap_string(strings: &[u8], index: usize) -> Option<String> {
    let rest = strings.get(index..)?;
    let rest = rest.get(..MAX_NAME_CHARS * 4).unwrap_or(rest);
    let end = rest.iter().position(|&byte| byte == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// The UTF-16LE string in the blob at `index`.
fn blob_string(blob: &[u8], index: usize) -> Option<String> {
    let (length, prefix) = compressed_length(blob.get(index..)?)?;
    let start = index.checked_add(prefix)?;
    let data = blob.get(start..start.checked_add(length.min(MAX_STRING_BYTES))?)?;
    let units = data.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    Some(char::decode_utf16(units).map(|unit| unit.unwrap_or(char::REPLACEMENT_CHARACTER)).collect())
}
