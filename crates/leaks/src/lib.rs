//! `portcullis leaks`: find credentials that apps and source trees give away.
//!
//! The flow: [`enumerate`] walks directories and opens archives found by their magic bytes
//! (zip, jar, APK, AAB, IPA, XAPK, gzip, tar, .NET for Android assembly stores and compressed
//! assemblies), nested, under hard caps; each file is sniffed and handed to a structured
//! [`decode`]r (DEX string pool, `resources.arsc`, binary XML, AAB protobuf tables, plists,
//! Mach-O/ELF string sections, Hermes bytecode string tables, .NET metadata) or read as text;
//! the strings, with their provenance, go through the [`rule`]s (data with examples, a keyword
//! prefilter, then validators); [`report`] writes findings for people, programs or
//! code-scanning UIs, with secrets redacted.

pub mod baseline;
pub mod decode;
pub mod enumerate;
pub mod report;
pub mod rule;
pub mod scan;
pub mod secret;
pub mod validate;

pub use rule::Rules;
pub use scan::{Finding, Options, Outcome, Warning, scan, scan_bytes};

#[cfg(any(test, feature = "corpus"))]
pub mod corpus;
