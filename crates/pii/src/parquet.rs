//! Parquet at the edge: read record batches (row group by row group, bounded memory) into the
//! same [`Record`]s the other readers give, and write a protected copy with the input's schema.
//!
//! Scanned: string, integer, float, boolean and date columns. Other types (structs, lists,
//! binary) are not scanned and are reported once each. In a protected copy, string columns get
//! the policy's values; a finding in a numeric column nulls that value (a redaction that keeps
//! the schema); a column of another type is copied only if it is not dropped and the policy
//! cannot apply to it, which the manifest's problems say.

use std::{fs::File, path::Path, sync::Arc};

use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array,
    Int64Array, LargeStringArray, RecordBatch, StringArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
    new_null_array,
};
use arrow_schema::DataType;
use parquet::arrow::{ArrowWriter, arrow_reader::ParquetRecordBatchReaderBuilder};

use crate::read::{Problem, ReadError, Record};

/// Rows per batch read.
const BATCH_ROWS: usize = 8192;

/// Whether `path` starts with the Parquet magic.
pub fn is_parquet(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    File::open(path).and_then(|mut file| file.read_exact(&mut magic)).is_ok() && &magic == b"PAR1"
}

fn format_error(path: &Path, error: impl std::fmt::Display) -> ReadError {
    ReadError::Format { path: path.display().to_string(), message: format!("Parquet: {error}") }
}

/// The text of one cell, if its type is scanned and it is not null.
fn cell(array: &ArrayRef, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    macro_rules! as_text {
        ($($ty:ty),*) => {
            $(if let Some(values) = array.as_any().downcast_ref::<$ty>() {
                return Some(values.value(row).to_string());
            })*
        };
    }
    as_text!(
        StringArray,
        LargeStringArray,
        Int8Array,
        Int16Array,
        Int32Array,
        Int64Array,
        UInt8Array,
        UInt16Array,
        UInt32Array,
        UInt64Array,
        Float32Array,
        Float64Array,
        BooleanArray
    );
    if let Some(dates) = array.as_any().downcast_ref::<Date32Array>() {
        return dates.value_as_date(row).map(|date| date.to_string());
    }
    None
}

fn scanned(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Boolean
            | DataType::Date32
    )
}

/// Reads a Parquet file batch by batch, calling `each` per row. Returns the column names.
pub fn records(path: &Path, each: impl FnMut(&Record), problem: impl FnMut(Problem)) -> Result<Vec<String>, ReadError> {
    let file = File::open(path).map_err(|error| ReadError::Io { path: path.display().to_string(), error })?;
    records_from(file, path, each, problem)
}

/// [`records`] from any Parquet source (a file, or bytes in memory: the fuzz target's).
pub fn records_from<R: parquet::file::reader::ChunkReader + 'static>(
    source: R,
    path: &Path,
    mut each: impl FnMut(&Record),
    mut problem: impl FnMut(Problem),
) -> Result<Vec<String>, ReadError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(source).map_err(|e| format_error(path, e))?;
    let schema = Arc::clone(builder.schema());
    let names: Vec<String> = schema.fields().iter().map(|field| field.name().clone()).collect();
    for field in schema.fields() {
        if !scanned(field.data_type()) {
            problem(Problem {
                location: format!("column {}", field.name()),
                message: format!("type {} is not scanned", field.data_type()),
            });
        }
    }
    let reader = builder.with_batch_size(BATCH_ROWS).build().map_err(|e| format_error(path, e))?;
    let mut number = 0u64;
    let mut record = Record::default();
    for batch in reader {
        let batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                // A damaged row group: reported, and reading stops (later ones cannot be trusted).
                problem(Problem { location: format!("after row {number}"), message: format!("unreadable: {error}") });
                break;
            }
        };
        for row in 0..batch.num_rows() {
            number += 1;
            record.number = number;
            record.fields.clear();
            for (name, column) in names.iter().zip(batch.columns()) {
                if let Some(text) = cell(column, row) {
                    record.fields.push((name.clone(), text));
                }
            }
            each(&record);
        }
    }
    Ok(names)
}

/// Rewrites a Parquet file into `output` (a temporary path the caller renames) with the same
/// schema: string cells through `field`, numeric cells nulled where `field` changes them,
/// columns `dropped` removed. Returns the rows written.
pub fn rewrite(
    input: &Path,
    output: &Path,
    dropped: &dyn Fn(&str) -> bool,
    field: &mut dyn FnMut(&str, &str, &Record) -> Option<String>,
    problem: &mut dyn FnMut(Problem),
    may_copy_unscanned: &dyn Fn(&str) -> bool,
) -> Result<u64, ReadError> {
    let file = File::open(input).map_err(|error| ReadError::Io { path: input.display().to_string(), error })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| format_error(input, e))?;
    let schema = Arc::clone(builder.schema());
    let kept: Vec<usize> = (0..schema.fields().len()).filter(|&index| !dropped(schema.field(index).name())).collect();
    let out_schema = Arc::new(schema.project(&kept).map_err(|e| format_error(input, e))?);
    let reader = builder.with_batch_size(BATCH_ROWS).build().map_err(|e| format_error(input, e))?;
    let out = crate::protect::create_private(output)
        .map_err(|error| ReadError::Io { path: output.display().to_string(), error })?;
    let mut writer = ArrowWriter::try_new(out, Arc::clone(&out_schema), None).map_err(|e| format_error(output, e))?;
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    for &index in &kept {
        if !scanned(schema.field(index).data_type()) {
            if !may_copy_unscanned(&names[index]) {
                return Err(format_error(
                    input,
                    format!(
                        "column {} has type {}, which is not scanned: drop it, or keep it explicitly in the policy",
                        names[index],
                        schema.field(index).data_type()
                    ),
                ));
            }
            problem(Problem {
                location: format!("column {}", names[index]),
                message: format!("type {} copied unchanged: not scanned", schema.field(index).data_type()),
            });
        }
    }
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| format_error(input, e))?;
        // Each row as a record (for date shifts keyed by another column).
        let records: Vec<Record> = (0..batch.num_rows())
            .map(|row| Record {
                number: rows + row as u64 + 1,
                fields: names
                    .iter()
                    .zip(batch.columns())
                    .filter_map(|(name, column)| cell(column, row).map(|text| (name.clone(), text)))
                    .collect(),
            })
            .collect();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(kept.len());
        for &index in &kept {
            let name = &names[index];
            let column = batch.column(index);
            let rewritten: ArrayRef = match column.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 => {
                    let values: Vec<Option<String>> = (0..batch.num_rows())
                        .map(|row| cell(column, row).map(|text| field(name, &text, &records[row]).unwrap_or(text)))
                        .collect();
                    if matches!(column.data_type(), DataType::Utf8) {
                        Arc::new(StringArray::from(values))
                    } else {
                        Arc::new(LargeStringArray::from(values))
                    }
                }
                data_type if scanned(data_type) => {
                    // A numeric or boolean value the policy would change cannot hold the new
                    // text: it becomes null (if the column allows it).
                    let changed: Vec<bool> = (0..batch.num_rows())
                        .map(|row| {
                            cell(column, row)
                                .is_some_and(|text| field(name, &text, &records[row]).is_some_and(|new| new != text))
                        })
                        .collect();
                    if changed.iter().any(|&c| c) {
                        if !schema.field(index).is_nullable() {
                            return Err(format_error(
                                input,
                                format!("column {name} holds personal data but is not nullable: drop it in the policy"),
                            ));
                        }
                        let keep = BooleanArray::from(changed.iter().map(|c| !c).collect::<Vec<bool>>());
                        let nulls = new_null_array(column.data_type(), column.len());
                        arrow_select::zip::zip(&keep, column, &nulls).map_err(|e| format_error(input, e))?
                    } else {
                        Arc::clone(column)
                    }
                }
                _ => Arc::clone(column),
            };
            columns.push(rewritten);
        }
        // The row count is explicit: a policy may drop every column.
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let out_batch = RecordBatch::try_new_with_options(Arc::clone(&out_schema), columns, &options)
            .map_err(|e| format_error(output, e))?;
        writer.write(&out_batch).map_err(|e| format_error(output, e))?;
        rows += batch.num_rows() as u64;
    }
    let file = writer.into_inner().map_err(|e| format_error(output, e))?;
    file.sync_all().map_err(|error| ReadError::Io { path: output.display().to_string(), error })?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::{Field, Schema};

    fn write_sample(path: &Path) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("email", DataType::Utf8, true),
            Field::new("notes", DataType::Utf8, true),
            Field::new("ssn", DataType::Utf8, true),
            Field::new("zip", DataType::Int32, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("jane@example.com"), None])),
                Arc::new(StringArray::from(vec![Some("call +44 20 7946 0958"), Some("nothing")])),
                Arc::new(StringArray::from(vec![Some("536-90-4399"), Some("536-90-4398")])),
                Arc::new(Int32Array::from(vec![Some(94105), Some(10001)])),
            ],
        )
        .unwrap();
        let mut writer = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    /// The first record batch of a Parquet file.
    fn first_batch(path: &Path) -> RecordBatch {
        ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
    }

    #[test]
    fn parquet_is_scanned_protected_with_its_schema_and_assessed() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("people.parquet");
        write_sample(&input);
        assert!(is_parquet(&input));

        let report = crate::scan::scan_file(&crate::Detector::new(), &input).unwrap();
        assert_eq!((report.format, report.records), ("parquet", 2));
        let kinds = |column: &str| -> Vec<crate::Kind> {
            report
                .columns
                .iter()
                .find(|c| c.column == column)
                .map(|c| c.findings.iter().map(|f| f.kind).collect())
                .unwrap_or_default()
        };
        assert_eq!(kinds("email"), [crate::Kind::Email]);
        assert_eq!(kinds("notes"), [crate::Kind::Phone]);
        assert_eq!(kinds("zip"), [crate::Kind::Postcode]);

        let text = "[kinds]\nemail = \"redact\"\n[columns]\nssn = \"drop\"\n";
        let policy = crate::protect::Policy::load(text, Path::new("."), &|_| None).unwrap();
        let output = dir.path().join("out.parquet");
        let manifest = crate::protect::protect_file(&crate::Detector::new(), &policy, &input, &output).unwrap();
        assert_eq!((manifest.format, manifest.records), ("parquet", 2));
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&output).unwrap()).unwrap();
        let schema = Arc::clone(reader.schema());
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "email", "notes", "zip"], "ssn dropped, the rest kept in order");
        assert_eq!(schema.field(3).data_type(), &DataType::Int32, "types kept");
        let batch = reader.build().unwrap().next().unwrap().unwrap();
        let email = batch.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(email.value(0), "[EMAIL]");
        assert!(email.is_null(1));
        let notes = batch.column(2).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(notes.value(0), "call [PHONE]");
        assert!(batch.column(3).is_null(0), "a postcode in an integer column is nulled");

        // Tokenise a string column, then reveal it: the Parquet file comes back the same.
        let text = "unmatched = \"keep\"\n[keys]\nk = { env = \"K\" }\n\
                    [columns]\nemail = { action = \"tokenise\", key = \"k\" }\n";
        let policy = crate::protect::Policy::load(text, Path::new("."), &|_| Some("ab".repeat(32))).unwrap();
        let tokens = dir.path().join("tokens.parquet");
        crate::protect::protect_file(&crate::Detector::new(), &policy, &input, &tokens).unwrap();
        let back = dir.path().join("back.parquet");
        assert_eq!(crate::protect::reveal_file(&policy, &tokens, &back).unwrap().failed, 0);
        let emails = |path: &Path| {
            let batch = first_batch(path);
            let column = batch.column(1).as_any().downcast_ref::<StringArray>().unwrap().clone();
            (0..column.len()).map(|i| column.is_valid(i).then(|| column.value(i).to_owned())).collect::<Vec<_>>()
        };
        assert_ne!(emails(&tokens), emails(&input));
        assert_eq!(emails(&back), emails(&input));

        let table = crate::risk::table_from_file(&input, &["zip".into()], None).unwrap();
        assert_eq!(table.assess(2, None).smallest_class, 1);
    }

    #[test]
    fn a_classified_parquet_column_is_protected_whole() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("people.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("surname", DataType::Utf8, true),
            Field::new("password", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec![Some("Brzęczyszczykiewicz"), Some("Ní Bhraonáin")])),
                Arc::new(StringArray::from(vec![Some("eiZookooB7"), None])),
            ],
        )
        .unwrap();
        let mut writer = ArrowWriter::try_new(File::create(&input).unwrap(), schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let policy = crate::protect::Policy::load("unmatched = \"redact\"\n", Path::new("."), &|_| None).unwrap();
        let output = dir.path().join("out.parquet");
        crate::protect::protect_file(&crate::Detector::new(), &policy, &input, &output).unwrap();
        let batch = first_batch(&output);
        let surname = batch.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((surname.value(0), surname.value(1)), ("[PERSON_NAME]", "[PERSON_NAME]"));
        let password = batch.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(password.value(0), "[CREDENTIAL]");
    }

    #[test]
    fn a_truncated_parquet_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("t.parquet");
        write_sample(&input);
        let bytes = std::fs::read(&input).unwrap();
        std::fs::write(&input, &bytes[..bytes.len() / 2]).unwrap();
        assert!(crate::scan::scan_file(&crate::Detector::new(), &input).is_err());
    }
}

#[cfg(test)]
mod unscanned {
    use super::*;
    use arrow_array::BinaryArray;
    use arrow_schema::{Field, Schema};

    #[test]
    fn a_column_that_cannot_be_scanned_is_never_copied_unless_kept_explicitly() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("b.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new("blob", DataType::Binary, true)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(BinaryArray::from(vec![Some(b"jane@example.com".as_ref())]))],
        )
        .unwrap();
        let mut writer = ArrowWriter::try_new(File::create(&input).unwrap(), schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let protect = |text: &str| {
            let policy = crate::protect::Policy::load(text, Path::new("."), &|_| None).unwrap();
            let output = dir.path().join("o.parquet");
            let _ = std::fs::remove_file(&output);
            crate::protect::protect_file(&crate::Detector::new(), &policy, &input, &output).map(|_| ())
        };
        let error = protect("").unwrap_err();
        assert!(error.to_string().contains("not scanned"), "{error}");
        assert!(protect("[columns]\nblob = \"keep\"\n").is_ok());
        assert!(protect("[columns]\nblob = \"drop\"\n").is_ok());
    }
}
