//! Writers for the seeded test corpus: small but well-formed DEX files, resource tables,
//! binary XML, AAB protobuf tables, ELF and Mach-O images, plists and zips, so tests, fuzz seeds
//! and the benchmark can plant keys in every place an app keeps strings. Never used by the
//! scanner itself.

pub mod app;
pub mod arsc;
pub mod axml;
pub mod dex;
pub mod elf;
pub mod macho;
pub mod protobuf;
