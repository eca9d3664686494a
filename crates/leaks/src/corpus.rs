//! Writers for the seeded test corpus: small but well-formed DEX files, resource tables,
//! binary XML, AAB protobuf tables, ELF and Mach-O images, Hermes bytecode, .NET assemblies,
//! Xamarin assembly stores, plists and zips, so tests, fuzz seeds and the benchmark can plant
//! keys in every place an app keeps strings. Never used by the scanner itself.

pub mod app;
pub mod arsc;
pub mod axml;
pub mod dart;
pub mod dex;
pub mod dotnet;
pub mod elf;
pub mod hermes;
pub mod il2cpp;
pub mod macho;
pub mod protobuf;

/// `seed` with `data` read as `(position, byte)` triples written over it: how the fuzz targets
/// reach deep into a valid file in seconds instead of guessing its headers.
pub fn overwrite(seed: &[u8], data: &[u8]) -> Vec<u8> {
    let mut file = seed.to_vec();
    if file.is_empty() {
        return file;
    }
    for triple in data.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([triple[0], triple[1]])) % file.len();
        file[at] = triple[2];
    }
    file
}
