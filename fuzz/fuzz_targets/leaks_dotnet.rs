//! The .NET readers on arbitrary bytes and on valid files with the input's bytes written over
//! them: an assembly with `const string` fields and user strings (metadata root, stream headers,
//! the tables up to `Constant`, the heaps), an assembly store holding an LZ4-compressed assembly,
//! and that store wrapped in an ELF `payload` section. Strings with their place, named only when
//! they are a constant's value, or a located error, never a panic or an allocation beyond the
//! cap given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// The largest assembly decompressed here.
const MAX_IMAGE: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    static SEEDS: OnceLock<[Vec<u8>; 3]> = OnceLock::new();
    let seeds = SEEDS.get_or_init(|| {
        use leaks::corpus::dotnet::{build, elf_wrapped, store};
        let assembly = build(
            &["https://api.example.com/v1", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "clé-€-\u{1F511}-unicode"],
            &[("Example.Config", "ApiSecret", "q8Zt1Lmw9Pxv0RsT7uYb2Nc4Kd6Hf3Jg"), ("Other.Keys", "Short", "abc")],
        );
        let blob = store(2, &[("Example.dll", assembly.clone(), true), ("Raw.dll", b"MZ raw".to_vec(), false)]);
        let wrapped = elf_wrapped(&blob);
        [assembly, blob, wrapped]
    });
    check(data);
    let seed = &seeds[usize::from(data.first().copied().unwrap_or(0)) % seeds.len()];
    check(&leaks::corpus::overwrite(seed, data.get(1..).unwrap_or_default()));
});

fn check(bytes: &[u8]) {
    use leaks::decode::dotnet::{decode, store};
    let _ = decode(bytes, &mut |location: &str, name: Option<&str>, _value: &str| {
        assert_eq!(name.is_some(), location.contains("::"));
    });
    let payload = store::elf_payload(bytes).unwrap_or(bytes);
    if let Ok(image) = store::xalz(payload, MAX_IMAGE) {
        assert!(image.len() <= MAX_IMAGE);
        let _ = decode(&image, &mut |_: &str, _: Option<&str>, _: &str| {});
    }
    let _ = store::entries(payload, |_, entry| {
        if let Ok(image) = store::xalz(entry, MAX_IMAGE) {
            assert!(image.len() <= MAX_IMAGE);
            let _ = decode(&image, &mut |_: &str, _: Option<&str>, _: &str| {});
        }
    });
}
