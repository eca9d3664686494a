//! The Parquet reader on arbitrary bytes (after the magic): a located error or records, never
//! a panic, and bounded work.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut file = b"PAR1".to_vec();
    file.extend_from_slice(data);
    if data.len() >= 4 && !data.ends_with(b"PAR1") {
        file.extend_from_slice(b"PAR1");
    }
    let _ = pii::parquet::records_from(bytes::Bytes::from(file), std::path::Path::new("fuzz.parquet"), |_| {}, |_| {});
});
