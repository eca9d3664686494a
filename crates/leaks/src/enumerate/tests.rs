use std::io::Write;

use zip::write::SimpleFileOptions;

use super::*;

/// Records what enumeration hands over.
#[derive(Debug, Default)]
struct Recorder {
    files: Vec<(String, Vec<u8>)>,
    large: Vec<(String, u64)>,
    warnings: Vec<(String, String)>,
}

impl Visit for Recorder {
    fn file(&mut self, path: &[String], bytes: Cow<'_, [u8]>) {
        self.files.push((path.join("!"), bytes.into_owned()));
    }
    fn large_file(&mut self, path: &[String], reader: &mut dyn Read) {
        let mut sink = Vec::new();
        let read = reader.read_to_end(&mut sink).unwrap_or(0);
        self.large.push((path.join("!"), read as u64));
    }
    fn warning(&mut self, path: &[String], message: String) {
        self.warnings.push((path.join("!"), message));
    }
}

fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in members {
        writer
            .start_file(*name, SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated))
            .unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn run(bytes: &[u8], limits: Limits) -> Recorder {
    let mut recorder = Recorder::default();
    Enumerator::new(limits, &mut recorder).bytes(&["app.zip".to_owned()], Cow::Borrowed(bytes), 0);
    recorder
}

fn names(recorder: &Recorder) -> Vec<&str> {
    recorder.files.iter().map(|(name, _)| name.as_str()).collect()
}

#[test]
fn nested_archives_are_opened_by_magic_not_extension() {
    let inner = zip_of(&[("classes.dex", b"dex\n035\0 inner")]);
    let outer = zip_of(&[("base.bin", &inner), ("assets/config.json", b"{}")]);
    let recorder = run(&outer, Limits::default());
    assert_eq!(names(&recorder), ["app.zip!base.bin!classes.dex", "app.zip!assets/config.json"]);
    assert_eq!(recorder.files[0].1, b"dex\n035\0 inner");
    assert!(recorder.warnings.is_empty(), "{:?}", recorder.warnings);
}

#[test]
fn gzip_and_tar_are_opened() {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "src/.env", &b"A=1\nB"[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let mut recorder = Recorder::default();
    Enumerator::new(Limits::default(), &mut recorder).bytes(&["backup.tgz".to_owned()], Cow::Borrowed(&gz), 0);
    assert_eq!(names(&recorder), ["backup.tgz!backup.tar!src/.env"]);
}

#[test]
fn zip_slip_entry_is_scanned_in_memory_and_never_extracted() {
    let archive = zip_of(&[("../../etc/cron.d/evil", b"payload"), ("/abs/path", b"payload2")]);
    let directory = tempfile::tempdir().unwrap();
    let before = std::fs::read_dir(directory.path()).unwrap().count();
    let recorder = run(&archive, Limits::default());
    assert_eq!(names(&recorder), ["app.zip!../../etc/cron.d/evil", "app.zip!/abs/path"]);
    assert_eq!(recorder.warnings.len(), 2);
    assert!(recorder.warnings.iter().all(|(_, message)| message.contains("escapes the archive")));
    assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), before);
}

#[test]
fn symlink_entries_are_not_followed() {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    writer.add_symlink("link", "/etc/passwd", SimpleFileOptions::default()).unwrap();
    let archive = writer.finish().unwrap().into_inner();
    let recorder = run(&archive, Limits::default());
    assert!(recorder.files.is_empty());
    assert_eq!(recorder.warnings, [("app.zip!link".to_owned(), "a link: not followed".to_owned())]);
}

#[test]
fn zip_bomb_is_cut_off_at_the_ratio_cap() {
    let zeros = vec![0u8; 40 << 20];
    let archive = zip_of(&[("bomb.bin", &zeros)]);
    assert!(archive.len() < 100_000, "the bomb compresses well: {}", archive.len());
    let recorder = run(&archive, Limits::default());
    let (_, bytes) = &recorder.files[0];
    // Cut at 200x the compressed size plus the 1 MiB slack, far below 40 MiB.
    assert!(bytes.len() < 20 << 20, "{} bytes held", bytes.len());
    assert!(recorder.warnings[0].1.contains("zip bomb"), "{:?}", recorder.warnings);
}

#[test]
fn total_decompressed_bytes_are_capped() {
    let data = vec![7u8; 300_000];
    let archive = zip_of(&[("a", &data), ("b", &data), ("c", &data)]);
    let limits = Limits { max_total_bytes: 500_000, ..Limits::default() };
    let recorder = run(&archive, limits);
    let held: usize = recorder.files.iter().map(|(_, bytes)| bytes.len()).sum();
    assert!(held <= 500_000, "{held}");
    assert!(recorder.warnings.iter().any(|(_, message)| message.contains("in all")), "{:?}", recorder.warnings);
}

#[test]
fn deep_nesting_stops_at_the_depth_cap() {
    let mut archive = zip_of(&[("secret.txt", b"deepest")]);
    for level in 0..8 {
        archive = zip_of(&[(&format!("level{level}.zip"), &archive)]);
    }
    let recorder = run(&archive, Limits { max_depth: 3, ..Limits::default() });
    assert_eq!(recorder.files.len(), 1);
    assert!(recorder.files[0].0.matches('!').count() == 3, "{}", recorder.files[0].0);
    assert!(recorder.warnings[0].1.contains("nested more than 3 deep"), "{:?}", recorder.warnings);
}

#[test]
fn entry_count_is_capped() {
    let members: Vec<(String, Vec<u8>)> = (0..50).map(|i| (format!("f{i}"), vec![b'x'; 3])).collect();
    let refs: Vec<(&str, &[u8])> = members.iter().map(|(name, bytes)| (name.as_str(), bytes.as_slice())).collect();
    let recorder = run(&zip_of(&refs), Limits { max_entries: 10, ..Limits::default() });
    assert_eq!(recorder.files.len(), 10);
    assert_eq!(recorder.warnings.len(), 1, "{:?}", recorder.warnings);
}

#[test]
fn long_member_names_are_skipped() {
    let long = "a".repeat(200);
    let recorder = run(&zip_of(&[(&long, b"x"), ("ok", b"y")]), Limits { max_path_len: 64, ..Limits::default() });
    assert_eq!(names(&recorder), ["app.zip!ok"]);
    assert!(recorder.warnings[0].1.contains("longer than 64"));
}

#[test]
fn corrupt_zip_is_reported_and_scanned_raw() {
    let mut archive = zip_of(&[("a.txt", b"hello")]);
    let cut = archive.len() - 30;
    archive.truncate(cut);
    let recorder = run(&archive, Limits::default());
    assert_eq!(names(&recorder), ["app.zip"]);
    assert!(recorder.warnings[0].1.starts_with("corrupt zip"), "{:?}", recorder.warnings);
}

#[test]
fn oversized_members_are_streamed_not_held() {
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let archive = zip_of(&[("big.so", &data)]);
    let recorder = run(&archive, Limits { max_member_bytes: 1 << 20, ..Limits::default() });
    assert!(recorder.files.is_empty());
    assert_eq!(recorder.large, [("app.zip!big.so".to_owned(), 3_000_000)]);
}

#[test]
fn directories_skip_git_and_honour_gitignore_on_request() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join(".git/config"), "x").unwrap();
    std::fs::write(root.join(".gitignore"), "build/\n").unwrap();
    std::fs::create_dir_all(root.join("build")).unwrap();
    std::fs::write(root.join("build/out.txt"), "x").unwrap();
    std::fs::write(root.join("main.rs"), "x").unwrap();
    let walk = |gitignore: bool| {
        let mut recorder = Recorder::default();
        Enumerator::new(Limits::default(), &mut recorder).input(root, gitignore);
        let mut found: Vec<String> = recorder
            .files
            .iter()
            .map(|(name, _)| name.strip_prefix(&root.display().to_string()).unwrap_or(name).to_owned())
            .collect();
        found.sort();
        found
    };
    assert_eq!(walk(false), ["/.gitignore", "/build/out.txt", "/main.rs"]);
    assert_eq!(walk(true), ["/.gitignore", "/main.rs"]);
}

#[test]
fn escaping_names_are_recognised() {
    for name in ["../x", "a/../../x", "/etc/passwd", "\\\\server\\share", "C:\\Windows", "a\\..\\b"] {
        assert!(escapes(name), "{name}");
    }
    for name in ["a/b", "..a/b", "a..b", "res/values/strings.xml"] {
        assert!(!escapes(name), "{name}");
    }
}

#[test]
fn missing_input_is_a_warning() {
    let mut recorder = Recorder::default();
    Enumerator::new(Limits::default(), &mut recorder).input(Path::new("/nonexistent/leaks-input"), false);
    assert_eq!(recorder.warnings.len(), 1);
    assert!(recorder.warnings[0].1.starts_with("cannot read"));
}

#[test]
fn a_zip_too_large_to_hold_is_opened_from_disk_member_by_member() {
    let members: Vec<(String, Vec<u8>)> = (0..8).map(|i| (format!("m{i}.txt"), vec![b'a' + i as u8; 4000])).collect();
    let refs: Vec<(&str, &[u8])> = members.iter().map(|(name, bytes)| (name.as_str(), bytes.as_slice())).collect();
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("big.ipa");
    std::fs::write(&path, zip_of(&refs)).unwrap();
    let mut recorder = Recorder::default();
    Enumerator::new(Limits { max_member_bytes: 1000, ..Limits::default() }, &mut recorder).input(&path, false);
    // Each member is itself over the in-memory cap, so each is streamed: but as a member.
    let streamed: Vec<&str> = recorder.large.iter().map(|(name, _)| name.rsplit('!').next().unwrap()).collect();
    assert_eq!(streamed, ["m0.txt", "m1.txt", "m2.txt", "m3.txt", "m4.txt", "m5.txt", "m6.txt", "m7.txt"]);
    assert!(recorder.warnings.is_empty(), "{:?}", recorder.warnings);
}

#[test]
fn after_a_corrupt_tar_header_the_rest_is_scanned_raw() {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, body) in [("a.txt", &b"first member"[..]), ("b.txt", &b"second member holds the key"[..])] {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, body).unwrap();
    }
    let mut bytes = tar.into_inner().unwrap();
    // Break the second header's checksum.
    bytes[1024 + 148] ^= 0x55;
    let recorder = run(&bytes, Limits::default());
    assert_eq!(recorder.files[0].0, "app.zip!a.txt");
    assert!(recorder.warnings[0].1.contains("corrupt tar member"), "{:?}", recorder.warnings);
    let rest = &recorder.files[1].1;
    assert!(rest.windows(8).any(|window| window == b"the key\0" || window == b"olds the"), "raw rest scanned");
}

#[test]
fn once_the_byte_cap_is_spent_the_rest_of_the_archive_is_skipped() {
    let data = vec![9u8; 200_000];
    let members: Vec<(String, Vec<u8>)> = (0..20).map(|i| (format!("f{i}"), data.clone())).collect();
    let refs: Vec<(&str, &[u8])> = members.iter().map(|(name, bytes)| (name.as_str(), bytes.as_slice())).collect();
    let recorder = run(&zip_of(&refs), Limits { max_total_bytes: 500_000, ..Limits::default() });
    assert!(recorder.files.len() <= 3, "{}", recorder.files.len());
    assert_eq!(recorder.warnings.len(), 1, "{:?}", recorder.warnings);
}

#[test]
fn assembly_stores_and_compressed_assemblies_are_opened_under_the_caps() {
    use crate::corpus::dotnet::{elf_wrapped, store, xalz};
    let image = b"MZ an assembly, compressed well: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec();
    let blob = store(2, &[("A.dll", image.clone(), true), ("B.dll", b"MZ b".to_vec(), false)]);
    let recorder = run(&blob, Limits::default());
    assert_eq!(names(&recorder), ["app.zip!A.dll", "app.zip!B.dll"]);
    assert_eq!(recorder.files[0].1, image);
    // Wrapped in an ELF library: the payload is opened in place.
    let recorder = run(&elf_wrapped(&blob), Limits::default());
    assert_eq!(names(&recorder), ["app.zip!A.dll", "app.zip!B.dll"]);
    // Each assembly is a member.
    let recorder = run(&blob, Limits { max_entries: 1, ..Limits::default() });
    assert_eq!(names(&recorder), ["app.zip!A.dll"]);
    assert!(recorder.warnings[0].1.contains("more than 1 archive members"), "{:?}", recorder.warnings);
    // A compressed assembly larger than a member may be is scanned as it is, compressed.
    let packed = xalz(0, &image);
    let recorder = run(&packed, Limits { max_member_bytes: 16, ..Limits::default() });
    assert_eq!(recorder.files, [("app.zip".to_owned(), packed)]);
    assert!(recorder.warnings[0].1.contains("more than the 16 allowed"), "{:?}", recorder.warnings);
}

#[test]
fn a_run_budget_stops_inside_an_archive_and_says_where() {
    let archive = zip_of(&[("a.txt", b"first"), ("b.txt", b"second"), ("c.txt", b"third")]);
    let mut recorder = Recorder::default();
    let budget = Budget { files: Some(1), ..Budget::default() };
    let mut enumerator = Enumerator::new(Limits::default(), &mut recorder).with_budget(budget);
    enumerator.bytes(&["app.zip".to_owned()], Cow::Borrowed(&archive), 0);
    assert_eq!(enumerator.stopped(), Some(Stop::Files(1)));
    assert_eq!(names(&recorder), ["app.zip!a.txt"]);
    assert_eq!(recorder.warnings.len(), 1, "{:?}", recorder.warnings);
    assert_eq!(recorder.warnings[0].0, "app.zip!b.txt");
    assert!(recorder.warnings[0].1.contains("budget of 1 files"), "{:?}", recorder.warnings);

    // Bytes: a member that would overrun the budget is not handed over, and the run stops there.
    let mut recorder = Recorder::default();
    let budget = Budget { bytes: Some(8), ..Budget::default() };
    let mut enumerator = Enumerator::new(Limits::default(), &mut recorder).with_budget(budget);
    enumerator.bytes(&["app.zip".to_owned()], Cow::Borrowed(&archive), 0);
    assert_eq!(enumerator.stopped(), Some(Stop::Bytes(8)));
    assert_eq!(names(&recorder), ["app.zip!a.txt"]);
}
