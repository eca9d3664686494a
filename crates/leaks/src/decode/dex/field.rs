//! Names for DEX constants: the initial values of static fields (`static final String
//! API_SECRET = "…"`, Kotlin `const val`), which the compiler stores apart from the code, in each
//! class's `static_values` (an `encoded_array_item`) in the order of the static fields of its
//! `class_data_item`. Each string value is emitted with its field as the name
//! (`BuildConfig.API_SECRET`), so rules that need a name see `BuildConfig.API_SECRET = …`.
//!
//! Read as <https://source.android.com/docs/core/runtime/dex-format> lays out `class_def_item`,
//! `class_data_item`, `field_id_item`, `type_id_item` and `encoded_value`. Every count and offset
//! comes from the input and is trusted for nothing: each item is read from the buffer before it
//! is used, so a count larger than the file ends at the first read past its end; nested values
//! are skipped to a fixed depth.

use super::{FORMAT, MIN_CHARS, string_data, u32_at};
use crate::decode::{DecodeError, Emitter, cut_name};

const TYPE_IDS_SIZE_OFFSET: usize = 0x40;
const FIELD_IDS_SIZE_OFFSET: usize = 0x50;
const CLASS_DEFS_SIZE_OFFSET: usize = 0x60;
const CLASS_DEF_SIZE: usize = 32;
const CLASS_DATA_OFF_IN_DEF: usize = 24;
const STATIC_VALUES_OFF_IN_DEF: usize = 28;
const VALUE_STRING: u8 = 0x17;
const VALUE_ARRAY: u8 = 0x1c;
const VALUE_ANNOTATION: u8 = 0x1d;
const VALUE_NULL: u8 = 0x1e;
const VALUE_BOOLEAN: u8 = 0x1f;
/// Arrays and annotations nested deeper than this end the class with an error.
const MAX_DEPTH: usize = 8;
/// What reading one `encoded_value` costs the output budget, besides its bytes, so many class
/// definitions pointing at one long array cannot multiply the work.
const VALUE_COST: usize = 4;

/// The tables the fields need: where each starts and how many items it declares.
struct Tables {
    type_ids: (usize, usize),
    field_ids: (usize, usize),
    string_ids: (usize, usize),
}

/// Emits each static `String` field's value (of at least eight characters) with its field as
/// the name, at `Lcom/example/BuildConfig;->API_SECRET`. The header was checked by the caller.
pub(super) fn static_values(bytes: &[u8], out: &mut Emitter<'_>) -> Result<(), DecodeError> {
    let table = |size_at: usize| -> (usize, usize) {
        (u32_at(bytes, size_at).unwrap_or(0) as usize, u32_at(bytes, size_at + 4).unwrap_or(0) as usize)
    };
    let tables = Tables {
        type_ids: table(TYPE_IDS_SIZE_OFFSET),
        field_ids: table(FIELD_IDS_SIZE_OFFSET),
        string_ids: table(super::STRING_IDS_SIZE_OFFSET),
    };
    let (class_count, class_defs_off) = table(CLASS_DEFS_SIZE_OFFSET);
    for class in 0..class_count {
        let def_at =
            class.checked_mul(CLASS_DEF_SIZE).and_then(|n| n.checked_add(class_defs_off)).unwrap_or(usize::MAX);
        let (Some(class_data_off), Some(static_values_off)) = (
            def_at.checked_add(CLASS_DATA_OFF_IN_DEF).and_then(|at| u32_at(bytes, at)),
            def_at.checked_add(STATIC_VALUES_OFF_IN_DEF).and_then(|at| u32_at(bytes, at)),
        ) else {
            return Err(DecodeError::new(FORMAT, def_at, format!("class_defs[{class}] lies outside the file")));
        };
        if class_data_off == 0 || static_values_off == 0 {
            continue;
        }
        class_fields(bytes, &tables, class_data_off as usize, static_values_off as usize, out)
            .map_err(|(offset, message)| DecodeError::new(FORMAT, offset, format!("class_defs[{class}]: {message}")))?;
    }
    Ok(())
}

type Failure = (usize, &'static str);

/// One class: its static fields' indexes from `class_data`, paired in order with the values of
/// `static_values`.
fn class_fields(
    bytes: &[u8],
    tables: &Tables,
    class_data_off: usize,
    static_values_off: usize,
    out: &mut Emitter<'_>,
) -> Result<(), Failure> {
    let mut data = Reader { bytes, at: class_data_off };
    let static_count = data.uleb128()?;
    for _ in 0..3 {
        data.uleb128()?; // Instance fields, direct and virtual methods: not needed.
    }
    let mut values = Reader { bytes, at: static_values_off };
    let value_count = values.uleb128()?;
    let mut field_index = 0usize;
    // Fewer values than fields is allowed: the rest keep their default value.
    for position in 0..static_count.min(value_count) {
        let diff = data.uleb128()?;
        data.uleb128()?; // access_flags
        field_index = if position == 0 {
            diff
        } else {
            field_index.checked_add(diff).ok_or((data.at, "field index overflows"))?
        };
        let value_at = values.at;
        let string_index = values.value(0)?;
        out.charge(value_at, VALUE_COST + (values.at - value_at))
            .map_err(|_| (value_at, "output budget spent; the rest is left to the raw pass"))?;
        let Some(string_index) = string_index else { continue };
        let Some(name) = field_name(bytes, tables, field_index) else { continue };
        let Some(string_at) = table_entry(bytes, tables.string_ids, string_index, 4) else {
            return Err((value_at, "string index out of range"));
        };
        let data_off = u32_at(bytes, string_at).ok_or((string_at, "string id lies outside the file"))? as usize;
        let value = string_data(bytes, data_off).map_err(|message| (data_off, message))?;
        if value.chars().nth(MIN_CHARS - 1).is_some() {
            let (location, shown) = name;
            out.emit(value_at, &location, Some(&shown), &value).map_err(|_| (value_at, "output limit reached"))?;
        }
    }
    Ok(())
}

/// The offset of item `index` of a table of `(count, offset)` whose items are `size` bytes.
fn table_entry(bytes: &[u8], (count, offset): (usize, usize), index: usize, size: usize) -> Option<usize> {
    if index >= count {
        return None;
    }
    let at = index.checked_mul(size)?.checked_add(offset)?;
    bytes.get(at..at.checked_add(size)?).map(|_| at)
}

/// `(Lcom/example/BuildConfig;->API_SECRET, BuildConfig.API_SECRET)` for field `index`, or
/// `None` when a table entry it needs is missing.
fn field_name(bytes: &[u8], tables: &Tables, index: usize) -> Option<(String, String)> {
    let field_at = table_entry(bytes, tables.field_ids, index, 8)?;
    let class_type = usize::from(u16::from_le_bytes([*bytes.get(field_at)?, *bytes.get(field_at + 1)?]));
    let name_index = u32_at(bytes, field_at + 4)? as usize;
    let type_at = table_entry(bytes, tables.type_ids, class_type, 4)?;
    let descriptor = pool_string(bytes, tables, u32_at(bytes, type_at)? as usize)?;
    let field = pool_string(bytes, tables, name_index)?;
    let descriptor = cut_name(&descriptor);
    let field = cut_name(&field);
    // `Lcom/example/BuildConfig;` is shown as `BuildConfig`, `Lcom/example/A$Keys;` as `A$Keys`.
    let simple = descriptor.trim_start_matches('L').trim_end_matches(';');
    let simple = simple.rsplit('/').next().unwrap_or(simple);
    Some((format!("{descriptor}->{field}"), format!("{simple}.{field}")))
}

fn pool_string(bytes: &[u8], tables: &Tables, index: usize) -> Option<String> {
    let at = table_entry(bytes, tables.string_ids, index, 4)?;
    string_data(bytes, u32_at(bytes, at)? as usize).ok()
}

/// A cursor over the buffer: every read is bounded by it.
struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, Failure> {
        let byte = *self.bytes.get(self.at).ok_or((self.at, "runs past the end of the file"))?;
        self.at += 1;
        Ok(byte)
    }

    /// A ULEB128 of at most five bytes (a `u32`).
    fn uleb128(&mut self) -> Result<usize, Failure> {
        let mut value = 0usize;
        for shift in [0, 7, 14, 21, 28] {
            let byte = self.byte()?;
            value |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err((self.at, "ULEB128 longer than five bytes"))
    }

    fn skip(&mut self, count: usize) -> Result<(), Failure> {
        let end = self.at.checked_add(count).filter(|&end| end <= self.bytes.len());
        self.at = end.ok_or((self.at, "value runs past the end of the file"))?;
        Ok(())
    }

    /// Reads one `encoded_value`: the string index when it is a `VALUE_STRING`, else `None`
    /// (other values, arrays and annotations are skipped).
    fn value(&mut self, depth: usize) -> Result<Option<usize>, Failure> {
        if depth > MAX_DEPTH {
            return Err((self.at, "values nested too deeply"));
        }
        let head = self.byte()?;
        let (kind, argument) = (head & 0x1f, usize::from(head >> 5));
        match kind {
            VALUE_STRING => {
                if argument > 3 {
                    return Err((self.at - 1, "string index wider than four bytes"));
                }
                let mut index = 0usize;
                for shift in 0..=argument {
                    index |= usize::from(self.byte()?) << (8 * shift);
                }
                Ok(Some(index))
            }
            VALUE_ARRAY => {
                for _ in 0..self.uleb128()? {
                    self.value(depth + 1)?;
                }
                Ok(None)
            }
            VALUE_ANNOTATION => {
                self.uleb128()?; // type_idx
                for _ in 0..self.uleb128()? {
                    self.uleb128()?; // name_idx
                    self.value(depth + 1)?;
                }
                Ok(None)
            }
            VALUE_NULL | VALUE_BOOLEAN => Ok(None),
            // Numbers, types, fields, methods, enums, method types and handles.
            0x00 | 0x02 | 0x03 | 0x04 | 0x06 | 0x10 | 0x11 | 0x15 | 0x16 | 0x18 | 0x19 | 0x1a | 0x1b => {
                self.skip(argument + 1)?;
                Ok(None)
            }
            _ => Err((self.at - 1, "unknown encoded_value type")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{HEADER_SIZE, decode};
    use super::*;
    use crate::corpus::dex::{build, build_with_fields};
    use crate::decode::testing::{Found, collect, found as item};
    use proptest::prelude::*;

    const SECRET: &str = "q8Zt1Lmw9Pxv0RsT7uYb2Nc4Kd6Hf3Jg";

    fn run(bytes: &[u8]) -> (Found, Result<(), DecodeError>) {
        collect(|sink| decode(bytes, sink))
    }

    fn named(found: &Found) -> Vec<(String, Option<String>, String)> {
        found.iter().filter(|(_, name, _)| name.is_some()).cloned().collect()
    }

    fn sample() -> Vec<u8> {
        build_with_fields(
            &["Lcom/example/Main;"],
            &[
                ("Lcom/example/BuildConfig;", "API_SECRET", SECRET),
                ("Lcom/example/BuildConfig;", "BUILD_TYPE", "release-candidate"),
                ("Lcom/example/Net$Keys;", "SHORT", "abc"),
            ],
        )
    }

    #[test]
    fn static_string_fields_come_first_named_by_class_and_field() {
        let (found, result) = run(&sample());
        assert_eq!(result, Ok(()));
        assert_eq!(
            named(&found),
            [
                item("Lcom/example/BuildConfig;->API_SECRET", Some("BuildConfig.API_SECRET"), SECRET),
                item("Lcom/example/BuildConfig;->BUILD_TYPE", Some("BuildConfig.BUILD_TYPE"), "release-candidate"),
            ]
        );
        // The named values first, then the whole pool (the values again, without a name).
        assert!(found[0].1.is_some() && found[1].1.is_some());
        assert!(found[2..].iter().all(|(location, name, _)| name.is_none() && location.starts_with("string_ids[")));
        assert!(found[2..].iter().any(|(_, _, value)| value == SECRET));
    }

    #[test]
    fn a_dex_without_classes_has_no_named_values() {
        let (found, result) = run(&build(&[SECRET]));
        assert_eq!(result, Ok(()));
        assert!(named(&found).is_empty());
    }

    #[test]
    fn truncation_at_every_length_never_panics_and_keeps_the_pool_or_errs() {
        let dex = sample();
        for len in 0..dex.len() {
            let (found, result) = run(&dex[..len]);
            if result.is_ok() {
                assert!(found.iter().filter(|(_, name, _)| name.is_none()).count() >= 1, "length {len}");
            }
        }
    }

    #[test]
    fn huge_declared_class_count_stops_at_the_end_of_the_file() {
        let mut dex = sample();
        dex[CLASS_DEFS_SIZE_OFFSET..CLASS_DEFS_SIZE_OFFSET + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let (found, result) = run(&dex);
        // The two real classes are read; what follows them is not a class and ends the loop.
        let error = result.unwrap_err();
        assert!(error.message.starts_with("class_defs[2]"), "{error}");
        assert_eq!(named(&found).len(), 2);
        // The pool is still read after the error in the classes.
        assert!(found.iter().any(|(location, _, value)| location.starts_with("string_ids[") && value == SECRET));
    }

    #[test]
    fn deeply_nested_static_values_end_with_an_error_not_a_stack_overflow() {
        let mut dex = sample();
        // Point the first class's static values at a run of nested one-element arrays.
        let class_defs_off = u32_at(&dex, CLASS_DEFS_SIZE_OFFSET + 4).unwrap() as usize;
        let nested_at = dex.len();
        dex.extend_from_slice(&[1]);
        for _ in 0..1000 {
            dex.extend_from_slice(&[VALUE_ARRAY, 1]);
        }
        dex.push(VALUE_NULL);
        let at = class_defs_off + STATIC_VALUES_OFF_IN_DEF;
        dex[at..at + 4].copy_from_slice(&(nested_at as u32).to_le_bytes());
        let error = run(&dex).1.unwrap_err();
        assert!(error.message.contains("nested too deeply"), "{error}");
    }

    #[test]
    fn a_string_index_past_the_pool_is_an_error() {
        let mut dex = sample();
        let class_defs_off = u32_at(&dex, CLASS_DEFS_SIZE_OFFSET + 4).unwrap() as usize;
        let values_off = u32_at(&dex, class_defs_off + STATIC_VALUES_OFF_IN_DEF).unwrap() as usize;
        // The first value: a four-byte string index of u32::MAX.
        let mut patched = dex[..values_off + 1].to_vec();
        patched.push(VALUE_STRING | (3 << 5));
        patched.extend_from_slice(&u32::MAX.to_le_bytes());
        patched.extend_from_slice(&dex[values_off + 1..]);
        dex = patched;
        let error = run(&dex).1.unwrap_err();
        assert!(error.message.contains("string index out of range"), "{error}");
        assert!(HEADER_SIZE < values_off);
    }

    proptest! {
        #[test]
        fn overwritten_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let dex = crate::corpus::overwrite(&sample(), &data);
            let _ = run(&dex);
        }
    }
}
