//! The `data` readers and the detector on arbitrary bytes: CSV with any delimiter, JSON Lines,
//! and free text. Any input gives records, located problems or findings; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static DETECTOR: OnceLock<pii::Detector> = OnceLock::new();
    let detector = DETECTOR.get_or_init(pii::Detector::new);
    let delimiter = pii::read::sniff_delimiter(data);
    let _ = pii::read::csv_records(
        Box::new(std::io::Cursor::new(data.to_vec())),
        delimiter,
        |record| {
            for (column, value) in &record.fields {
                let _ = detector.find(value, pii::column::kind_from_header(column));
            }
        },
        |_| {},
    );
    let _ = pii::read::jsonl_records(Box::new(std::io::Cursor::new(data.to_vec())), |_| {}, |_| {});
    if let Ok(text) = std::str::from_utf8(data) {
        for finding in detector.find(text, None) {
            assert!(text.is_char_boundary(finding.start) && text.is_char_boundary(finding.end));
        }
    }
});
