use super::*;

const GITHUB: &str = "ghp_Zk3Lm9Qw2Er5Ty8Ui1Op4As7Df0Gh3Jk6LzX";

fn rules() -> Rules {
    Rules::builtin().unwrap()
}

fn scan_one(name: &str, bytes: &[u8]) -> Outcome {
    scan_bytes(&rules(), name, bytes, &Limits::default())
}

#[test]
fn text_findings_have_line_column_and_a_redacted_context() {
    let text = format!("first line\n  token: \"{GITHUB}\" # ci\nlast\n");
    let outcome = scan_one("ci.yml", text.as_bytes());
    assert_eq!(outcome.findings.len(), 1);
    let finding = &outcome.findings[0];
    assert_eq!((finding.line, finding.column), (Some(2), Some(11)));
    assert_eq!(finding.location(), "ci.yml:2:11");
    assert_eq!(finding.secret.expose(), GITHUB);
    assert!(!finding.context.contains(&GITHUB[8..]), "{}", finding.context);
    assert!(finding.context.starts_with("token: \"ghp_…"), "{}", finding.context);
}

#[test]
fn decoded_strings_are_matched_with_their_name_as_context() {
    // A high-entropy value with no vendor format is a secret only because of its name.
    let value = "q8Zt1Lmw9Pxv0RsT7uYb2Nc4Kd6Hf3Jg";
    let arsc = crate::corpus::arsc::build(
        "com.example",
        &[("string", "api_secret", value), ("string", "build_id", value)],
        true,
    );
    let outcome = scan_one("resources.arsc", &arsc);
    assert_eq!(outcome.findings.len(), 1, "{:?}", outcome.findings);
    let finding = &outcome.findings[0];
    assert_eq!(finding.within.as_deref(), Some("string/api_secret"));
    assert_eq!(finding.secret.expose(), value);
    assert_eq!(finding.location(), "resources.arsc#string/api_secret");
}

#[test]
fn a_decoder_failure_falls_back_to_raw_bytes_without_duplicates() {
    let dex = crate::corpus::dex::build(&["Lcom/example/A;", GITHUB]);
    // The first string id points past the end: the decoder stops before the key.
    let mut broken = dex.clone();
    broken[0x70..0x74].copy_from_slice(&u32::MAX.to_le_bytes());
    let outcome = scan_one("classes.dex", &broken);
    assert_eq!(outcome.findings.len(), 1, "{:?}", outcome.findings);
    assert!(outcome.findings[0].within.as_deref().is_some_and(|within| within.starts_with("offset 0x")));
    assert!(outcome.warnings.iter().any(|warning| warning.message.contains("raw bytes")), "{:?}", outcome.warnings);
}

#[test]
fn binary_data_is_scanned_as_printable_runs() {
    let mut blob = vec![0u8, 1, 2, 3, 200, 201];
    blob.extend_from_slice(GITHUB.as_bytes());
    blob.extend_from_slice(&[0, 0, 255]);
    let outcome = scan_one("blob.bin", &blob);
    assert_eq!(outcome.findings.len(), 1);
    assert_eq!(outcome.findings[0].within.as_deref(), Some("offset 0x6"));
}

const GOOGLE: &str = "AIzaSyB3x9Qp2Lm7Rt5Vw8Zy1Ab4Cd6Ef0Gh2Ij";
const STRIPE: &str = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";

/// A string of 124 characters: in a Dart snapshot its record starts with the byte `x`.
fn neighbour() -> String {
    "The quick brown fox jumps over the lazy dog. ".chars().cycle().take(124).collect()
}

fn secrets(outcome: &Outcome) -> Vec<(&str, &str)> {
    outcome.findings.iter().map(|f| (f.secret.expose(), f.within.as_deref().unwrap_or_default())).collect()
}

#[test]
fn flutter_strings_are_found_whole_with_their_place_and_a_glued_decoy_is_not() {
    let decoy = &GOOGLE[..GOOGLE.len() - 1];
    let after = neighbour();
    let strings = [GOOGLE, &after, decoy, &after, STRIPE, &after];
    let outcome = scan_one("libapp.so", &crate::corpus::dart::build(&strings));
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    let found = secrets(&outcome);
    assert_eq!(found.iter().map(|(secret, _)| *secret).collect::<Vec<_>>(), [GOOGLE, STRIPE], "{found:?}");
    assert!(found.iter().all(|(_, within)| within.starts_with("dart:isolate_snapshot_data+0x")), "{found:?}");
    assert!(outcome.findings[0].location().starts_with("libapp.so#dart:isolate_snapshot_data+0x"));

    // The same snapshot read as printable runs (here from an ELF without the Dart symbols):
    // the byte that starts each neighbour's record is glued on, which hides the key and
    // makes a key of the decoy.
    let snapshot = crate::corpus::dart::snapshot(&strings, crate::corpus::dart::Layout::Clustered, true);
    let raw = scan_one("libother.so", &crate::corpus::elf::build(&snapshot));
    let raw_found = secrets(&raw);
    assert!(raw_found.iter().any(|(secret, _)| *secret == format!("{decoy}x")), "{raw_found:?}");
    assert!(raw_found.iter().all(|(secret, _)| *secret != GOOGLE), "{raw_found:?}");
}

#[test]
fn the_flutter_framework_of_an_ipa_is_read_by_the_dart_reader() {
    let app = crate::corpus::dart::build_ios(&[GOOGLE, "short neighbour", "https://example.com"], false);
    let outcome = scan_one("Runner.app/Frameworks/App.framework/App", &app);
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    assert_eq!(secrets(&outcome).len(), 1);
    assert!(
        outcome.findings[0]
            .location()
            .starts_with("Runner.app/Frameworks/App.framework/App#dart:isolate_snapshot_data+0x")
    );
    // An App Store build is encrypted: the warning says so, and the raw pass still runs.
    let encrypted = scan_one("App", &crate::corpus::dart::build_ios(&[GOOGLE, "short neighbour", "third"], true));
    assert!(encrypted.warnings.iter().any(|warning| warning.message.contains("FairPlay")), "{:?}", encrypted.warnings);
}

#[test]
fn a_broken_flutter_snapshot_falls_back_to_raw_bytes() {
    let libapp = crate::corpus::dart::build(&[STRIPE, "short neighbour", "another neighbour"]);
    // Cut before the section headers: neither the Dart nor the ELF reader can place anything.
    let outcome = scan_one("libapp.so", &libapp[..libapp.len() - 200]);
    assert_eq!(secrets(&outcome).iter().map(|(secret, _)| *secret).collect::<Vec<_>>(), [STRIPE]);
    assert!(outcome.findings[0].within.as_deref().is_some_and(|within| within.starts_with("offset 0x")));
    assert!(outcome.warnings.iter().any(|warning| warning.message.contains("raw bytes")), "{:?}", outcome.warnings);
}

#[test]
fn unity_literals_and_named_constants_are_found_and_a_glued_decoy_is_not() {
    use crate::corpus::il2cpp::{Constant, build};
    let value = "q8Zt1Lmw9Pxv0RsT7uYb2Nc4Kd6Hf3Jg";
    let decoy = &GOOGLE[..GOOGLE.len() - 1];
    let metadata = build(
        29,
        &[GOOGLE, "abcdefghij-next-literal", decoy, "x-marks-the-spot", STRIPE, "trailing literal"],
        &[("API_SECRET", Some(Constant::Text(value))), ("BUILD_ID", Some(Constant::Text(value)))],
        &[],
    );
    let outcome = scan_one("global-metadata.dat", &metadata);
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    assert_eq!(
        secrets(&outcome),
        [(value, "il2cpp:field 0"), (GOOGLE, "il2cpp:literal 0"), (STRIPE, "il2cpp:literal 4")]
    );
    assert_eq!(outcome.findings[0].context, "API_SECRET");
    assert_eq!(outcome.findings[1].location(), "global-metadata.dat#il2cpp:literal 0");
}

#[test]
fn a_broken_unity_metadata_file_falls_back_to_raw_bytes() {
    let mut metadata = crate::corpus::il2cpp::build(27, &["first literal", STRIPE, " and more"], &[], &[]);
    // The literal table claims to run past the end of the file.
    metadata[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    let outcome = scan_one("global-metadata.dat", &metadata);
    assert!(secrets(&outcome).iter().any(|(secret, _)| *secret == STRIPE), "{:?}", outcome.findings);
    assert!(outcome.warnings.iter().any(|warning| warning.message.contains("raw bytes")), "{:?}", outcome.warnings);
}

#[test]
fn flutter_and_unity_files_inside_an_apk_are_read_by_their_readers() {
    use std::io::Write as _;
    let members = [
        ("lib/arm64-v8a/libapp.so", crate::corpus::dart::build(&["dart:ui", GOOGLE, "https://example.com"])),
        (
            "assets/bin/Data/Managed/Metadata/global-metadata.dat",
            crate::corpus::il2cpp::build(27, &[STRIPE, "next literal"], &[], &[]),
        ),
    ];
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in &members {
        writer.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
        writer.write_all(bytes).unwrap();
    }
    let apk = writer.finish().unwrap().into_inner();
    let outcome = scan_one("app.apk", &apk);
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    let locations: Vec<String> = outcome.findings.iter().map(Finding::location).collect();
    assert_eq!(locations.len(), 2, "{locations:?}");
    assert!(locations[0].starts_with("app.apk!lib/arm64-v8a/libapp.so#dart:isolate_snapshot_data+0x"), "{locations:?}");
    assert_eq!(locations[1], "app.apk!assets/bin/Data/Managed/Metadata/global-metadata.dat#il2cpp:literal 0");
}

#[test]
fn a_stream_finds_a_key_across_a_piece_boundary_once_on_the_right_line() {
    let mut text = String::new();
    let mut line = 1u64;
    while text.len() + 100 < STREAM_CHUNK {
        text.push_str("let x = 1; // filler line of source\n");
        line += 1;
    }
    let padding = STREAM_CHUNK - 10 - text.len();
    text.push_str(&" ".repeat(padding));
    text.push_str(GITHUB);
    text.push_str("\nend\n");
    let rules = rules();
    let mut scanner = Scanner { rules: &rules, outcome: Outcome::default() };
    scanner.large_file(&["big.txt".to_owned()], &mut text.as_bytes());
    let findings = &scanner.outcome.findings;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].line, Some(line));
    assert_eq!(findings[0].secret.expose(), GITHUB);
}

#[test]
fn sniffing_goes_by_content_not_name() {
    assert_eq!(sniff(&["a.png".into()], b"dex\n035\0rest"), Format::Dex);
    assert_eq!(sniff(&["x".into()], &[0x02, 0x00, 0x0c, 0x00, 1]), Format::Arsc);
    assert_eq!(sniff(&["x".into()], &[0x03, 0x00, 0x08, 0x00, 1]), Format::Axml);
    assert_eq!(sniff(&["notes.pb".into()], b"plain text, not protobuf"), Format::Text);
    assert_eq!(sniff(&["app.aab".into(), "base/resources.pb".into()], &[0x0a, 0x02, 0x00, 0x01]), Format::Protobuf);
    assert_eq!(sniff(&["x".into()], &[0, 1, 2, 3, 0xff]), Format::Raw);
    assert_eq!(sniff(&["x".into()], b"bplist00rest"), Format::Plist);
    assert_eq!(
        sniff(&["app.aab".into(), "base/res/xml/config.xml".into()], &[0x0a, 0x02, 0x00, 0x01]),
        Format::Protobuf
    );
    assert_eq!(sniff(&["strings.xml".into()], b"<resources/>"), Format::Text);
    assert_eq!(sniff(&["libapp.so".into()], &crate::corpus::dart::build(&[])), Format::Dart);
    assert_eq!(sniff(&["App".into()], &crate::corpus::dart::build_ios(&[], false)), Format::Dart);
    assert_eq!(sniff(&["libfoo.so".into()], &crate::corpus::elf::build(b"")), Format::Binary);
    assert_eq!(sniff(&["x".into()], &crate::corpus::il2cpp::build(29, &[], &[], &[])), Format::Il2cpp);
}

#[test]
fn public_identifiers_are_findings_marked_public() {
    let outcome = scan_one("google-services.json", b"{\"current_key\": \"AIzaSyB3x9Qp2Lm7Rt5Vw8Zy1Ab4Cd6Ef0Gh2Ij\"}");
    assert_eq!(outcome.findings.len(), 1, "{:?}", outcome.findings);
    assert!(outcome.findings[0].public);
}

#[test]
fn context_redacts_every_secret_in_its_window_not_only_its_own() {
    let stripe = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    let text = format!("{{apiKey:\"AIzaSyB3x9Qp2Lm7Rt5Vw8Zy1Ab4Cd6Ef0Gh2Ij\",stripeKey:\"{stripe}\"}}\n");
    let outcome = scan_one("bundle.js", text.as_bytes());
    assert_eq!(outcome.findings.len(), 2, "{:?}", outcome.findings);
    for finding in &outcome.findings {
        assert!(!finding.context.contains("4eC39HqLyjWD"), "{}", finding.context);
        assert!(!finding.context.contains("B3x9Qp2Lm7"), "{}", finding.context);
    }
}

#[test]
fn a_file_full_of_secrets_is_capped_and_repeats_are_reported_once() {
    let mut random = crate::corpus::app::Random::new(3);
    let mut text = String::new();
    for _ in 0..3000 {
        text.push_str(&format!("AKIA{} ", random.string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)));
    }
    let outcome = scan_one("hostile.txt", text.as_bytes());
    assert_eq!(outcome.findings.len(), MAX_FINDINGS_PER_FILE);
    assert!(outcome.warnings[0].message.contains("the rest are not reported"));
    let repeated = format!("{GITHUB}\n").repeat(50);
    assert_eq!(scan_one("repeated.txt", repeated.as_bytes()).findings.len(), 1);
}

#[test]
fn utf16_text_with_a_byte_order_mark_is_read_as_text() {
    let text = format!("\"api_url\" = \"https://example.com\";\n\"token\" = \"{GITHUB}\";\n");
    let mut bytes = vec![0xff, 0xfe];
    bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    let outcome = scan_one("Localizable.strings", &bytes);
    assert_eq!(outcome.findings.len(), 1, "{:?}", outcome.findings);
    assert_eq!(outcome.findings[0].line, Some(2));
}

#[test]
fn a_pem_private_key_in_a_native_library_is_found_whole() {
    let body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvuNMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ";
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
    let mut rodata = b"JNI_OnLoad\0".to_vec();
    rodata.extend_from_slice(pem.as_bytes());
    rodata.push(0);
    let outcome = scan_one("libnative.so", &crate::corpus::elf::build(&rodata));
    assert_eq!(outcome.findings.len(), 1, "{:?} {:?}", outcome.findings, outcome.warnings);
    assert_eq!(outcome.findings[0].rule, "private-key-pem");
    assert_eq!(outcome.findings[0].secret.expose(), pem.trim_end());
}

/// The secrets `rule` found in `outcome`, in order.
fn found_by<'o>(outcome: &'o Outcome, rule: &str) -> Vec<&'o str> {
    outcome.findings.iter().filter(|finding| finding.rule == rule).map(|finding| finding.secret.expose()).collect()
}

#[test]
fn credentials_written_as_labels_and_sentences_in_dex_strings_are_found() {
    let dex = crate::corpus::dex::build(&[
        "Username is admin, Password is Kq7Crazy9Pass and Key is 42abKey17",
        "API Key: 7d1secretvalue42x\nAPI User name: svc\nAPI Password: p@ssw0rd",
        "Lcom/example/Main;",
    ]);
    let outcome = scan_one("classes.dex", &dex);
    let secrets: Vec<&str> = outcome.findings.iter().map(|finding| finding.secret.expose()).collect();
    for expected in ["Kq7Crazy9Pass", "42abKey17", "7d1secretvalue42x", "p@ssw0rd"] {
        assert!(secrets.contains(&expected), "{expected} not in {secrets:?}");
    }
    assert_eq!(secrets.len(), 4, "{:?}", outcome.findings);
}

#[test]
fn ui_text_resources_named_like_passwords_are_not_secrets() {
    // A clean app failed on `title_activity_change_password = ChangePassword`: resource names
    // that mark UI text, and values that repeat their name, are not credentials.
    let arsc = crate::corpus::arsc::build(
        "com.example",
        &[
            ("string", "title_activity_change_password", "ChangePassword"),
            ("string", "hint_password", "Min8chars!"),
            ("string", "error_invalid_token", "Token7expired9or4revoked"),
            ("string", "db_password", "Tr0ub4dor#3x"),
        ],
        true,
    );
    let outcome = scan_one("resources.arsc", &arsc);
    assert_eq!(found_by(&outcome, "generic-password"), ["Tr0ub4dor#3x"], "{:?}", outcome.findings);
    assert_eq!(outcome.findings.len(), 1, "{:?}", outcome.findings);
}

#[test]
fn passwords_in_urls_of_any_scheme_are_found() {
    let text = "remote = \"ftp://backup:s3cur3Pass!@ftp.acme.io/nightly\"\n\
                weather = \"https://api.acme.io/v2?q=x&appid=3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e\"\n\
                auth = \"Authorization: Bearer 7f3kQ9zLm2Xv8RtY4pWs6NbD\"\n\
                docs = \"https://user:password@example.com/\"\n";
    let outcome = scan_one("config.toml", text.as_bytes());
    assert_eq!(found_by(&outcome, "url-credentials"), ["s3cur3Pass!"]);
    assert_eq!(found_by(&outcome, "url-query-key"), ["3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e"]);
    assert_eq!(found_by(&outcome, "authorization-header"), ["7f3kQ9zLm2Xv8RtY4pWs6NbD"]);
    assert_eq!(outcome.findings.len(), 3, "{:?}", outcome.findings);
}

#[test]
fn a_dex_constant_is_matched_by_its_field_name_once() {
    let value = "q8Zt1Lmw9Pxv0RsT7uYb2Nc4Kd6Hf3Jg";
    let other = "Zr4kPq9Lm2Xw7Tn5Bv8Cy3Hd6Jf1Gs0A";
    let dex = crate::corpus::dex::build_with_fields(
        &["Lcom/example/Main;"],
        &[("Lcom/example/BuildConfig;", "API_SECRET", value), ("Lcom/example/BuildConfig;", "BUILD_ID", other)],
    );
    let outcome = scan_one("classes.dex", &dex);
    assert_eq!(outcome.findings.len(), 1, "{:?}", outcome.findings);
    let finding = &outcome.findings[0];
    assert_eq!(finding.rule, "generic-api-key");
    assert_eq!(finding.secret.expose(), value);
    assert_eq!(finding.location(), "classes.dex#Lcom/example/BuildConfig;->API_SECRET");
    assert_eq!(finding.context, "BuildConfig.API_SECRET");
}

#[test]
fn an_aws_key_pair_is_one_finding_not_a_key_id_and_a_generic_key() {
    let text =
        "val creds = BasicAWSCredentials(\"AKIAU25JHNPETRANT5PY\", \"5UjoZSo0gbKocfnsUjsIVHpXiOFVKe28B9MEOh1u\")\n";
    let outcome = scan_one("Upload.kt", text.as_bytes());
    assert_eq!(outcome.findings.len(), 1, "{:?}", outcome.findings);
    assert_eq!(outcome.findings[0].rule, "aws-access-key-pair");
    assert_eq!(outcome.findings[0].secret.expose(), "5UjoZSo0gbKocfnsUjsIVHpXiOFVKe28B9MEOh1u");
    // The key ID alone is still reported, by its own rule.
    let alone = scan_one("ids.txt", b"AKIAU25JHNPETRANT5PY\n");
    assert_eq!(found_by(&alone, "aws-access-key-id"), ["AKIAU25JHNPETRANT5PY"]);
}

/// An APK-like zip holding `members`, deflated.
fn apk(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let members: Vec<(String, Vec<u8>, bool)> =
        members.iter().map(|(name, bytes)| ((*name).to_owned(), bytes.clone(), false)).collect();
    crate::corpus::app::zip_of(&members)
}

const AWS_KEY_ID: &str = "AKIAZ7Q3L5N2P4R6T2VW";
/// Look-alikes that must not be reported: the AWS documentation key, a placeholder Stripe
/// key, a UUID, a build hash.
const DECOYS: [&str; 4] = [
    "AKIAIOSFODNN7EXAMPLE",
    "sk_live_xxxxxxxxxxxxxxxxxxxxxxxx",
    "3f2b8c1e-9d4a-4b7e-a1c3-5e6f7a8b9c0d",
    "build 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
];

#[test]
fn a_key_in_hermes_bytecode_is_found_at_its_string_id_and_no_decoy_is() {
    let mut strings = vec!["__BUNDLE_START_TIME__", "https://api.example.com"];
    strings.extend(DECOYS);
    strings.extend([STRIPE, "apiKey"]);
    let bundle = crate::corpus::hermes::build(crate::corpus::hermes::VERSION, &strings);
    let outcome = scan_one("app.apk", &apk(&[("assets/index.android.bundle", bundle)]));
    assert_eq!(outcome.findings.len(), 1, "{:?}", outcome.findings);
    assert_eq!(outcome.findings[0].secret.expose(), STRIPE);
    assert_eq!(outcome.findings[0].location(), "app.apk!assets/index.android.bundle#string_table[6]");
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
}

#[test]
fn a_broken_hermes_bundle_falls_back_to_raw_bytes() {
    // The storage packs strings without separators: a key after a word character would run
    // into it, which is why the string table matters.
    let mut bundle = crate::corpus::hermes::build(crate::corpus::hermes::VERSION, &["apiKey:", STRIPE, ";"]);
    // Four billion strings declared.
    bundle[52..56].copy_from_slice(&u32::MAX.to_le_bytes());
    let outcome = scan_one("main.jsbundle", &bundle);
    assert_eq!(found_by(&outcome, "stripe-secret-key"), [STRIPE], "{:?}", outcome.findings);
    assert!(outcome.findings[0].within.as_deref().is_some_and(|within| within.starts_with("offset 0x")));
    assert!(outcome.warnings[0].message.contains("raw bytes"), "{:?}", outcome.warnings);
}

/// An assembly with a named `const string` secret, a vendor key among its string literals and
/// the decoys, in both places.
fn assembly(secret: &str, key: &str) -> Vec<u8> {
    let mut literals = vec!["https://api.example.com/v1", key];
    literals.extend(DECOYS);
    crate::corpus::dotnet::build(
        &literals,
        &[
            ("Example.Config", "ApiSecret", secret),
            ("Example.Config", "BuildHash", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"),
            ("Example.Config", "DocsKeyId", DECOYS[0]),
        ],
    )
}

#[test]
fn keys_in_dotnet_assemblies_and_assembly_stores_are_found_by_name_and_place() {
    let secret = "q8Zt1Lmw9Pxv0RsT7uYb2Nc4Kd6Hf3Jg";
    let store = crate::corpus::dotnet::store(
        2,
        &[
            ("Mono.Android.dll", crate::corpus::dotnet::build(&["Android.App.Activity"], &[]), false),
            ("Example.dll", assembly(secret, STRIPE), true),
        ],
    );
    let other = crate::corpus::dotnet::xalz(0, &assembly("Zr4kPq9Lm2Xw7Tn5Bv8Cy3Hd6Jf1Gs0A", AWS_KEY_ID));
    // .NET for Android 9 and later: a store (version 3 here is laid out as 2) wrapped in an ELF
    // library's `payload` section.
    let wrapped = crate::corpus::dotnet::elf_wrapped(&crate::corpus::dotnet::store(
        2,
        &[("Example.Maui.dll", crate::corpus::dotnet::build(&["Authorization", GITHUB], &[]), true)],
    ));
    let app = apk(&[
        ("assemblies/assemblies.blob", store),
        ("assemblies/Example.Other.dll", other),
        ("lib/arm64-v8a/libassembly-store.so", wrapped),
    ]);
    let outcome = scan_one("app.apk", &app);
    let mut found: Vec<(String, &str, &str)> = outcome
        .findings
        .iter()
        .map(|finding| (finding.location(), finding.rule.as_str(), finding.secret.expose()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            (
                "app.apk!assemblies/Example.Other.dll#Example.Config::ApiSecret".to_owned(),
                "generic-api-key",
                "Zr4kPq9Lm2Xw7Tn5Bv8Cy3Hd6Jf1Gs0A"
            ),
            ("app.apk!assemblies/Example.Other.dll#user_strings[0x37]".to_owned(), "aws-access-key-id", AWS_KEY_ID),
            (
                "app.apk!assemblies/assemblies.blob!Example.dll#Example.Config::ApiSecret".to_owned(),
                "generic-api-key",
                secret
            ),
            (
                "app.apk!assemblies/assemblies.blob!Example.dll#user_strings[0x37]".to_owned(),
                "stripe-secret-key",
                STRIPE
            ),
            (
                "app.apk!lib/arm64-v8a/libassembly-store.so!Example.Maui.dll#user_strings[0x1d]".to_owned(),
                "github-pat",
                GITHUB
            ),
        ],
        "{:?}",
        outcome.findings
    );
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
}

#[test]
fn a_lying_assembly_store_falls_back_to_raw_bytes() {
    let mut store = crate::corpus::dotnet::store(1, &[("Example.dll", assembly("unused-secret-value", STRIPE), false)]);
    // The descriptor's data offset points past the end.
    store[20..24].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    let outcome = scan_one("assemblies.blob", &store);
    assert_eq!(found_by(&outcome, "stripe-secret-key"), [STRIPE], "{:?}", outcome.findings);
    assert!(outcome.warnings.iter().any(|warning| warning.message.contains("raw bytes")), "{:?}", outcome.warnings);
    // A compressed assembly whose declared size is a lie: the LZ4 literals are scanned raw.
    let mut packed = crate::corpus::dotnet::xalz(0, &assembly("unused-secret-value", STRIPE));
    packed[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let outcome = scan_one("Example.dll", &packed);
    assert!(outcome.warnings.iter().any(|warning| warning.message.contains("LZ4")), "{:?}", outcome.warnings);
}
