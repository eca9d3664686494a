//! Seeded test apps: APK-like (plain, React Native with Hermes, .NET MAUI, Flutter, Unity with
//! IL2CPP), AAB-like and IPA-like (plain, Flutter) archives and a source tree, each with a key
//! planted in every place an app keeps strings, and decoys that must not match. The same seed
//! always gives the same bytes, so tests and benchmarks score against a fixed truth
//! (`truth.json`).

use std::io::{Cursor, Write};
use std::path::Path;

use zip::write::SimpleFileOptions;

use super::axml::Element;

/// A key planted on purpose: it must be found, at this place.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Planted {
    /// The file in the corpus directory (`android/app-3.apk`).
    pub file: String,
    /// The members inside it, outermost first (`["classes.dex"]`); empty for a plain file.
    pub members: Vec<String>,
    /// Where inside the member, as a scan reports it (`string/openai_api_key`), when the
    /// format has such a place.
    pub within: Option<String>,
    /// The storage place, for scoring per place (`dex`, `arsc`, `axml`, `plist`, ...).
    pub place: String,
    /// The rule expected to find it.
    pub rule: String,
    pub secret: String,
    /// A public-by-design identifier (found, but as "check restrictions").
    pub public: bool,
}

/// A string that looks like a secret but is not one: nothing may be reported for it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Decoy {
    pub file: String,
    pub place: String,
    pub value: String,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Truth {
    pub planted: Vec<Planted>,
    pub decoys: Vec<Decoy>,
}

/// splitmix64: small, seeded, good enough to make strings that look random.
#[derive(Debug, Clone)]
pub struct Random(u64);

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const HEX: &[u8] = b"0123456789abcdef";
const UPPER32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const URLSAFE: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";

impl Random {
    pub fn new(seed: u64) -> Random {
        Random(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn string(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| char::from(alphabet[(self.next_u64() % alphabet.len() as u64) as usize])).collect()
    }

    pub fn digits(&mut self, len: usize) -> String {
        self.string(b"0123456789", len)
    }
}

/// The keys the corpus plants, one generator per vendor format. Each returns (rule, secret).
pub struct Keys<'r>(pub &'r mut Random);

impl std::fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys")
    }
}

impl Keys<'_> {
    pub fn portcullis(&mut self) -> (&'static str, String) {
        let body = format!("ptcl_sk_{}", self.0.string(ALNUM, 40));
        let crc = apikey::checksum(body.as_bytes());
        ("portcullis-secret-key", format!("{body}{}", String::from_utf8_lossy(&crc)))
    }
    pub fn stripe(&mut self) -> (&'static str, String) {
        ("stripe-secret-key", format!("sk_live_{}", self.0.string(ALNUM, 24)))
    }
    pub fn aws_key_id(&mut self) -> (&'static str, String) {
        ("aws-access-key-id", format!("AKIA{}", self.0.string(UPPER32, 16)))
    }
    pub fn github(&mut self) -> (&'static str, String) {
        ("github-pat", format!("ghp_{}", self.0.string(ALNUM, 36)))
    }
    pub fn openai(&mut self) -> (&'static str, String) {
        ("openai-project-key", format!("sk-proj-{}T3BlbkFJ{}", self.0.string(URLSAFE, 74), self.0.string(URLSAFE, 74)))
    }
    pub fn anthropic(&mut self) -> (&'static str, String) {
        ("anthropic-api-key", format!("sk-ant-api03-{}AA", self.0.string(URLSAFE, 93)))
    }
    pub fn huggingface(&mut self) -> (&'static str, String) {
        ("huggingface-access-token", format!("hf_{}", self.0.string(LETTERS, 34)))
    }
    pub fn slack(&mut self) -> (&'static str, String) {
        let (a, b) = (self.0.digits(11), self.0.digits(12));
        ("slack-bot-token", format!("xoxb-{a}-{b}-{}", self.0.string(ALNUM, 24)))
    }
    pub fn sendgrid(&mut self) -> (&'static str, String) {
        ("sendgrid-api-key", format!("SG.{}.{}", self.0.string(URLSAFE, 22), self.0.string(URLSAFE, 43)))
    }
    pub fn twilio(&mut self) -> (&'static str, String) {
        ("twilio-api-key", format!("SK{}", self.0.string(HEX, 32)))
    }
    pub fn google_api_key(&mut self) -> (&'static str, String) {
        ("google-api-key", format!("AIza{}", self.0.string(URLSAFE, 35)))
    }
    pub fn digitalocean(&mut self) -> (&'static str, String) {
        ("digitalocean-token", format!("dop_v1_{}", self.0.string(HEX, 64)))
    }
    pub fn gitlab(&mut self) -> (&'static str, String) {
        ("gitlab-pat", format!("glpat-{}", self.0.string(URLSAFE, 20)))
    }
    pub fn slack_webhook(&mut self) -> (&'static str, String) {
        let (team, bot) = (self.0.string(UPPER32, 10), self.0.string(UPPER32, 10));
        ("slack-webhook-url", format!("https://hooks.slack.com/services/T{team}/B{bot}/{}", self.0.string(ALNUM, 24)))
    }
    /// A high-entropy value with no vendor format: found only by its name.
    pub fn generic(&mut self) -> (&'static str, String) {
        ("generic-api-key", self.0.string(ALNUM, 32))
    }
}

/// Decoys: look-alikes that every rule must pass over.
fn decoy_values(random: &mut Random) -> Vec<String> {
    let bad_crc = {
        let body = format!("ptcl_sk_{}", random.string(ALNUM, 40));
        let mut crc = apikey::checksum(body.as_bytes());
        crc[5] = if crc[5] == b'0' { b'1' } else { b'0' };
        format!("{body}{}", String::from_utf8_lossy(&crc))
    };
    vec![
        bad_crc,
        "AKIAIOSFODNN7EXAMPLE".to_owned(),
        "sk_live_xxxxxxxxxxxxxxxxxxxxxxxx".to_owned(),
        format!(
            "{}-{}-4{}-a{}-{}",
            random.string(HEX, 8),
            random.string(HEX, 4),
            random.string(HEX, 3),
            random.string(HEX, 3),
            random.string(HEX, 12)
        ),
        format!("build {}", random.string(HEX, 40)),
        format!("sha256:{}", random.string(HEX, 64)),
        format!("ghp_{}", random.string(ALNUM, 12)),
        "com.example.app.MainActivity".to_owned(),
        "https://firebaseio.example.com/data".to_owned(),
    ]
}

/// A zip of `(name, bytes, stored)` members, as apps are packed.
pub fn zip_of(members: &[(String, Vec<u8>, bool)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes, stored) in members {
        let method = if *stored { zip::CompressionMethod::Stored } else { zip::CompressionMethod::Deflated };
        let options =
            SimpleFileOptions::default().compression_method(method).last_modified_time(zip::DateTime::default());
        // Writing to memory with names we chose cannot fail.
        if writer.start_file(name.as_str(), options).is_ok() {
            let _ = writer.write_all(bytes);
        }
    }
    writer.finish().map(Cursor::into_inner).unwrap_or_default()
}

struct App<'t> {
    file: String,
    truth: &'t mut Truth,
}

impl App<'_> {
    fn plant(
        &mut self,
        members: &[&str],
        within: Option<String>,
        place: &str,
        (rule, secret): (&str, String),
    ) -> String {
        self.truth.planted.push(Planted {
            file: self.file.clone(),
            members: members.iter().map(|member| (*member).to_owned()).collect(),
            within,
            place: place.to_owned(),
            rule: rule.to_owned(),
            public: rule == "google-api-key",
            secret: secret.clone(),
        });
        secret
    }

    fn decoy(&mut self, place: &str, value: &str) {
        self.truth.decoys.push(Decoy { file: self.file.clone(), place: place.to_owned(), value: value.to_owned() });
    }
}

fn element(name: &str, attributes: &[(&str, &str)], children: Vec<Element>) -> Element {
    Element {
        name: name.to_owned(),
        attributes: attributes.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect(),
        children,
    }
}

/// An APK-like archive: two DEX files, `resources.arsc`, a binary manifest and `res/xml`,
/// assets (JSON config, a React Native bundle, a nested zip), a native library.
pub fn android(file: &str, random: &mut Random, truth: &mut Truth) -> Vec<u8> {
    let decoys = decoy_values(random);
    let mut app = App { file: file.to_owned(), truth };
    let mut keys = Keys(random);

    let stripe = app.plant(&["classes.dex"], None, "dex", keys.stripe());
    let mut dex_strings =
        vec!["Lcom/example/app/MainActivity;".to_owned(), stripe, "https://api.example.com/v1".to_owned()];
    for value in &decoys[..4] {
        app.decoy("dex", value);
        dex_strings.push(value.clone());
    }
    let ours = app.plant(&["classes2.dex"], None, "dex", keys.portcullis());
    let dex2_strings = ["Lcom/example/app/ModelClient;".to_owned(), "Authorization".to_owned(), ours];

    let openai = app.plant(&["resources.arsc"], Some("string/openai_api_key".into()), "arsc", keys.openai());
    let google = app.plant(&["resources.arsc"], Some("string/google_api_key".into()), "arsc", keys.google_api_key());
    let generic = app.plant(&["resources.arsc"], Some("string/backend_api_secret".into()), "arsc", keys.generic());
    let build_hash = decoys[4].clone();
    app.decoy("arsc", &build_hash);
    let arsc = super::arsc::build(
        "com.example.app",
        &[
            ("string", "app_name", "Example"),
            ("string", "openai_api_key", &openai),
            ("string", "google_api_key", &google),
            ("string", "backend_api_secret", &generic),
            ("string", "build_hash", &build_hash),
        ],
        true,
    );

    let hf = app.plant(&["AndroidManifest.xml"], None, "axml", keys.huggingface());
    let manifest = super::axml::build(&element(
        "manifest",
        &[("package", "com.example.app")],
        vec![element(
            "application",
            &[("android:label", "Example")],
            vec![
                element("meta-data", &[("android:name", "com.example.HF_TOKEN"), ("android:value", &hf)], vec![]),
                element("activity", &[("android:name", &decoys[7])], vec![]),
            ],
        )],
    ));
    let slack = app.plant(&["res/xml/backend.xml"], None, "axml", keys.slack());
    let res_xml = super::axml::build(&element("config", &[], vec![element("slack", &[("token", &slack)], vec![])]));

    let aws = app.plant(&["assets/config.json"], None, "asset", keys.aws_key_id());
    let config_json = format!(
        "{{\n  \"region\": \"eu-west-1\",\n  \"aws_access_key_id\": \"{aws}\",\n  \"docs_key\": \"{}\",\n  \"endpoint\": \"{}\"\n}}\n",
        decoys[1], decoys[8]
    );
    app.decoy("asset", &decoys[1]);
    let anthropic = app.plant(&["assets/index.android.bundle"], None, "js-bundle", keys.anthropic());
    let bundle = format!(
        "var __BUNDLE_START_TIME__=this.nativePerformanceNow?nativePerformanceNow():Date.now();\n__d(function(g,r,i,a,m,e,d){{var c={{baseUrl:\"https://api.example.com\",anthropicKey:\"{anthropic}\",placeholder:\"{}\"}};m.exports=c}},42,[]);\n",
        decoys[2]
    );
    app.decoy("js-bundle", &decoys[2]);
    let sendgrid = app.plant(&["assets/plugins.zip", ".env"], None, "nested-zip", keys.sendgrid());
    let nested = zip_of(&[(".env".into(), format!("MAIL_KEY={sendgrid}\nDEBUG=false\n").into_bytes(), false)]);
    let github = app.plant(&["lib/arm64-v8a/libnative.so"], None, "elf", keys.github());
    let mut rodata = b"JNI_OnLoad\0https://api.example.com\0".to_vec();
    rodata.extend_from_slice(github.as_bytes());
    rodata.push(0);
    rodata.extend_from_slice(decoys[6].as_bytes());
    rodata.push(0);
    app.decoy("elf", &decoys[6]);
    let elf = super::elf::build(&rodata);

    let dex_refs: Vec<&str> = dex_strings.iter().map(String::as_str).collect();
    let dex2_refs: Vec<&str> = dex2_strings.iter().map(String::as_str).collect();
    zip_of(&[
        ("AndroidManifest.xml".into(), manifest, false),
        ("classes.dex".into(), super::dex::build(&dex_refs), false),
        ("classes2.dex".into(), super::dex::build(&dex2_refs), false),
        // Stored, as Android requires for targetSdk >= 30.
        ("resources.arsc".into(), arsc, true),
        ("res/xml/backend.xml".into(), res_xml, false),
        ("assets/config.json".into(), config_json.into_bytes(), false),
        ("assets/index.android.bundle".into(), bundle.into_bytes(), false),
        ("assets/plugins.zip".into(), nested, true),
        ("lib/arm64-v8a/libnative.so".into(), elf, false),
        ("META-INF/MANIFEST.MF".into(), b"Manifest-Version: 1.0\r\nCreated-By: corpus\r\n".to_vec(), false),
    ])
}

/// An AAB-like archive: DEX under `base/dex/`, resources as an aapt2 protobuf table.
pub fn bundle(file: &str, random: &mut Random, truth: &mut Truth) -> Vec<u8> {
    let mut app = App { file: file.to_owned(), truth };
    let mut keys = Keys(random);
    let gitlab = app.plant(&["base/dex/classes.dex"], None, "dex", keys.gitlab());
    let digitalocean =
        app.plant(&["base/resources.pb"], Some("string/do_api_token".into()), "aab-protobuf", keys.digitalocean());
    let table = super::protobuf::resource_table(
        "com.example.app",
        &[("string", "app_name", "Example"), ("string", "do_api_token", &digitalocean)],
    );
    zip_of(&[
        ("BundleConfig.pb".into(), vec![0x0a, 0x05, 0x0a, 0x03, b'1', b'.', b'0'], false),
        ("base/dex/classes.dex".into(), super::dex::build(&["Lcom/example/Api;", &gitlab]), false),
        ("base/resources.pb".into(), table, false),
    ])
}

/// A React Native APK built with Hermes: the JavaScript is bytecode, its strings in the
/// string table of `assets/index.android.bundle`.
pub fn react_native(file: &str, random: &mut Random, truth: &mut Truth) -> Vec<u8> {
    let decoys = decoy_values(random);
    let mut app = App { file: file.to_owned(), truth };
    let mut keys = Keys(random);
    let member = "assets/index.android.bundle";
    // The planted key is string 5: after four other strings.
    let anthropic = app.plant(&[member], Some("string_table[5]".into()), "hermes", keys.anthropic());
    let strings = [
        "__BUNDLE_START_TIME__",
        "https://api.example.com",
        decoys[2].as_str(),
        decoys[3].as_str(),
        "anthropicKey",
        anthropic.as_str(),
        decoys[5].as_str(),
    ];
    for value in [&decoys[2], &decoys[3], &decoys[5]] {
        app.decoy("hermes", value);
    }
    let bundle = super::hermes::build(super::hermes::VERSION, &strings);
    zip_of(&[
        ("classes.dex".into(), super::dex::build(&["Lcom/facebook/react/ReactActivity;"]), false),
        (member.into(), bundle, false),
    ])
}

/// A .NET MAUI (Xamarin) APK: an assembly store with the app's assembly LZ4-compressed (a named
/// `const string` and a string literal), a separately compressed assembly, and a store wrapped
/// in an ELF library as .NET for Android 9 and later ship it.
pub fn maui(file: &str, random: &mut Random, truth: &mut Truth) -> Vec<u8> {
    let decoys = decoy_values(random);
    let mut app = App { file: file.to_owned(), truth };
    let mut keys = Keys(random);
    let blob_member = "assemblies/assemblies.blob";
    let generic = app.plant(
        &[blob_member, "assembly-1.dll"],
        Some("Example.Config::ApiSecret".into()),
        "dotnet-const",
        keys.generic(),
    );
    let stripe = app.plant(&[blob_member, "assembly-1.dll"], None, "dotnet-us", keys.stripe());
    let build_hash = decoys[4].replace(' ', "");
    let example = super::dotnet::build(
        &["https://api.example.com/v1", &stripe, &decoys[1], &decoys[2]],
        &[("Example.Config", "ApiSecret", &generic), ("Example.Config", "BuildHash", &build_hash)],
    );
    for (place, value) in [("dotnet-us", &decoys[1]), ("dotnet-us", &decoys[2]), ("dotnet-const", &build_hash)] {
        app.decoy(place, value);
    }
    let blob = super::dotnet::store(
        1,
        &[
            ("Microsoft.Maui.dll", super::dotnet::build(&["Microsoft.Maui.Controls"], &[]), true),
            ("Example.dll", example, true),
        ],
    );
    let extra_member = "assemblies/Example.Services.dll";
    let sendgrid = app.plant(&[extra_member], None, "dotnet-xalz", keys.sendgrid());
    let extra = super::dotnet::xalz(0, &super::dotnet::build(&["SendGrid", &sendgrid, &decoys[3]], &[]));
    app.decoy("dotnet-xalz", &decoys[3]);
    let wrapped_member = "lib/arm64-v8a/libassembly-store.so";
    let slack = app.plant(&[wrapped_member, "Example.Chat.dll"], None, "dotnet-elf-store", keys.slack());
    let chat = super::dotnet::build(&["Authorization", &slack, &decoys[6]], &[]);
    app.decoy("dotnet-elf-store", &decoys[6]);
    let wrapped = super::dotnet::elf_wrapped(&super::dotnet::store(2, &[("Example.Chat.dll", chat, true)]));
    zip_of(&[
        ("classes.dex".into(), super::dex::build(&["Lcrc64example/MainActivity;"]), false),
        (blob_member.into(), blob, true),
        (extra_member.into(), extra, true),
        (wrapped_member.into(), wrapped, false),
    ])
}

/// Where `needle` starts in the isolate snapshot data holding `strings`: the offset the Dart
/// reader names (`dart:isolate_snapshot_data+0x…`), as the truth records it.
fn dart_offset(strings: &[&str], layout: super::dart::Layout, wide: bool, needle: &str) -> Option<String> {
    let data = super::dart::snapshot(strings, layout, wide);
    let at = data.windows(needle.len()).position(|window| window == needle.as_bytes())?;
    Some(format!("dart:isolate_snapshot_data+0x{at:x}"))
}

/// A Flutter APK: the app's Dart code compiled ahead of time into `lib/<abi>/libapp.so`, its
/// string literals in the isolate snapshot: in the `String` cluster on arm64 (compressed
/// pointers), as read-only objects in the data image on 32-bit ARM. Decoys sit right after the
/// keys, so a key glued to its neighbour would be reported wrong.
pub fn flutter(file: &str, random: &mut Random, truth: &mut Truth) -> Vec<u8> {
    use super::dart::Layout;
    let decoys = decoy_values(random);
    let mut app = App { file: file.to_owned(), truth };
    let mut keys = Keys(random);
    let arm64_member = "lib/arm64-v8a/libapp.so";
    let (rule, openai) = keys.openai();
    let (google_rule, google) = keys.google_api_key();
    let arm64_strings = [
        "package:example/main.dart",
        "https://api.example.com/v1",
        openai.as_str(),
        decoys[6].as_str(),
        decoys[2].as_str(),
        google.as_str(),
        decoys[3].as_str(),
        decoys[5].as_str(),
    ];
    for (rule, key) in [(rule, &openai), (google_rule, &google)] {
        let within = dart_offset(&arm64_strings, Layout::Clustered, true, key);
        app.plant(&[arm64_member], within, "dart", (rule, key.clone()));
    }
    for value in [&decoys[6], &decoys[2], &decoys[3], &decoys[5]] {
        app.decoy("dart", value);
    }
    let arm_member = "lib/armeabi-v7a/libapp.so";
    let (rule, stripe) = keys.stripe();
    let arm_strings =
        ["package:example/payments.dart", stripe.as_str(), decoys[0].as_str(), decoys[1].as_str(), "Authorization"];
    let within = dart_offset(&arm_strings, Layout::ReadOnly, false, &stripe);
    app.plant(&[arm_member], within, "dart-arm32", (rule, stripe.clone()));
    for value in [&decoys[0], &decoys[1]] {
        app.decoy("dart-arm32", value);
    }
    zip_of(&[
        ("classes.dex".into(), super::dex::build(&["Lio/flutter/embedding/android/FlutterActivity;"]), false),
        (arm64_member.into(), super::dart::build(&arm64_strings), false),
        (arm_member.into(), super::dart::build_arm(&arm_strings), false),
        ("assets/flutter_assets/AssetManifest.json".into(), b"{}".to_vec(), false),
    ])
}

/// A Flutter IPA: the Dart snapshot in `Frameworks/App.framework/App`, a Mach-O dylib (not
/// encrypted: a development or CI build).
pub fn flutter_ios(file: &str, random: &mut Random, truth: &mut Truth) -> Vec<u8> {
    use super::dart::Layout;
    let decoys = decoy_values(random);
    let mut app = App { file: file.to_owned(), truth };
    let mut keys = Keys(random);
    let root = "Payload/Runner.app";
    let framework_member = format!("{root}/Frameworks/App.framework/App");
    let (rule, sendgrid) = keys.sendgrid();
    let strings = ["package:example/mail.dart", sendgrid.as_str(), decoys[6].as_str(), decoys[8].as_str()];
    let within = dart_offset(&strings, Layout::Clustered, true, &sendgrid);
    app.plant(&[&framework_member], within, "dart-ios", (rule, sendgrid.clone()));
    app.decoy("dart-ios", &decoys[6]);
    let info_member = format!("{root}/Info.plist");
    let info = binary_plist(&[("CFBundleIdentifier", "com.example.flutter"), ("BuildHash", &decoys[4])]);
    app.decoy("binary-plist", &decoys[4]);
    zip_of(&[
        (info_member, info, false),
        (framework_member, super::dart::build_ios(&strings, false), false),
        (format!("{root}/Runner"), super::macho::build(&["FlutterAppDelegate"], b"", false), false),
    ])
}

/// A Unity APK built with IL2CPP: the C# string literals and constants in
/// `assets/bin/Data/Managed/Metadata/global-metadata.dat` (version 29, compressed blob lengths),
/// a named `const string` among them; the code itself in `libil2cpp.so`.
pub fn unity(file: &str, random: &mut Random, truth: &mut Truth) -> Vec<u8> {
    use super::il2cpp::Constant;
    let decoys = decoy_values(random);
    let mut app = App { file: file.to_owned(), truth };
    let mut keys = Keys(random);
    let member = "assets/bin/Data/Managed/Metadata/global-metadata.dat";
    // Literals 2 and 5 are keys; the decoys lie back to back with them.
    let github = app.plant(&[member], Some("il2cpp:literal 2".into()), "il2cpp", keys.github());
    let twilio = app.plant(&[member], Some("il2cpp:literal 5".into()), "il2cpp", keys.twilio());
    let literals = [
        "https://api.example.com/v1",
        decoys[2].as_str(),
        github.as_str(),
        decoys[6].as_str(),
        decoys[3].as_str(),
        twilio.as_str(),
        decoys[5].as_str(),
    ];
    for value in [&decoys[2], &decoys[6], &decoys[3], &decoys[5]] {
        app.decoy("il2cpp", value);
    }
    // Field 0 is the secret, named only by the field; field 1 a build hash, which is not.
    let generic = app.plant(&[member], Some("il2cpp:field 0".into()), "il2cpp-field", keys.generic());
    let build_hash = decoys[4].replace(' ', "");
    app.decoy("il2cpp-field", &build_hash);
    let metadata = super::il2cpp::build(
        29,
        &literals,
        &[
            ("API_SECRET", Some(Constant::Text(&generic))),
            ("BUILD_HASH", Some(Constant::Text(&build_hash))),
            ("MAX_RETRIES", Some(Constant::Int(3))),
        ],
        &["https://api.example.com"],
    );
    zip_of(&[
        ("classes.dex".into(), super::dex::build(&["Lcom/unity3d/player/UnityPlayerActivity;"]), false),
        (member.into(), metadata, false),
        ("lib/arm64-v8a/libil2cpp.so".into(), super::elf::build(b"il2cpp_init\0il2cpp_domain_get\0"), false),
    ])
}

fn xml_plist(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut text = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n<dict>\n",
    );
    for (key, value) in entries {
        text.push_str(&format!("\t<key>{key}</key>\n\t<string>{value}</string>\n"));
    }
    text.push_str("</dict>\n</plist>\n");
    text.into_bytes()
}

fn binary_plist(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut dictionary = plist::Dictionary::new();
    for (key, value) in entries {
        dictionary.insert((*key).to_owned(), plist::Value::String((*value).to_owned()));
    }
    let mut out = Vec::new();
    let _ = plist::Value::Dictionary(dictionary).to_writer_binary(&mut out);
    out
}

/// An IPA-like archive: a binary `Info.plist`, an XML `GoogleService-Info.plist`, the main
/// Mach-O, a fat framework, an app extension whose code is FairPlay-encrypted, a React Native
/// bundle, a config file.
pub fn ios(file: &str, random: &mut Random, truth: &mut Truth) -> Vec<u8> {
    let decoys = decoy_values(random);
    let mut app = App { file: file.to_owned(), truth };
    let mut keys = Keys(random);
    let root = "Payload/Example.app";
    let member = |name: &str| format!("{root}/{name}");

    let info_key = member("Info.plist");
    let ours = app.plant(&[&info_key], Some("ModelAPIKey".into()), "binary-plist", keys.portcullis());
    let info =
        binary_plist(&[("CFBundleIdentifier", "com.example.app"), ("ModelAPIKey", &ours), ("BuildHash", &decoys[4])]);
    app.decoy("binary-plist", &decoys[4]);
    let google_member = member("GoogleService-Info.plist");
    let google = app.plant(&[&google_member], Some("API_KEY".into()), "xml-plist", keys.google_api_key());
    let google_plist = xml_plist(&[
        ("API_KEY", &google),
        ("GCM_SENDER_ID", "123456789012"),
        ("BUNDLE_ID", "com.example.app"),
        ("DATABASE_URL", &decoys[8]),
    ]);
    let main_member = member("Example");
    let openai = app.plant(&[&main_member], None, "macho-cstring", keys.openai());
    let twilio = app.plant(&[&main_member], None, "macho-data", keys.twilio());
    let mut data = b"\0\0\0\0".to_vec();
    data.extend_from_slice(twilio.as_bytes());
    data.push(0);
    let main = super::macho::build(&["https://api.example.com", &openai, &decoys[0]], &data, false);
    app.decoy("macho-cstring", &decoys[0]);
    let framework_member = member("Frameworks/Analytics.framework/Analytics");
    let webhook = app.plant(&[&framework_member], None, "macho-fat", keys.slack_webhook());
    let thin = super::macho::build(&["Analytics", &webhook], b"", false);
    let framework = super::macho::fat(&[thin.clone(), thin]);
    let extension_member = member("PlugIns/Widget.appex/Widget");
    let stripe = app.plant(&[&extension_member], None, "macho-encrypted-data", keys.stripe());
    let extension = super::macho::build(&["(encrypted)"], stripe.as_bytes(), true);
    let bundle_member = member("main.jsbundle");
    let hf = app.plant(&[&bundle_member], None, "js-bundle", keys.huggingface());
    let js = format!("__d(function(g,r,i,a,m,e,d){{m.exports={{hfToken:\"{hf}\",uuid:\"{}\"}}}},7,[]);\n", decoys[3]);
    app.decoy("js-bundle", &decoys[3]);
    let config_member = member("config/.env");
    let digitalocean = app.plant(&[&config_member], None, "env", keys.digitalocean());
    let env = format!("API_BASE=https://api.example.com\nDO_TOKEN={digitalocean}\nSTRIPE={}\n", decoys[2]);
    app.decoy("env", &decoys[2]);
    zip_of(&[
        (info_key, info, false),
        (google_member, google_plist, false),
        (main_member, main, false),
        (framework_member, framework, false),
        (extension_member, extension, false),
        (bundle_member, js.into_bytes(), false),
        (config_member, env.into_bytes(), false),
    ])
}

/// A source tree as a mobile team keeps one: keys in `.env`, code, Android and iOS resources,
/// `google-services.json`, CI config; decoys that look like keys.
pub fn source_tree(prefix: &str, random: &mut Random, truth: &mut Truth) -> Vec<(String, Vec<u8>)> {
    let decoys = decoy_values(random);
    let mut files = Vec::new();
    let mut add = |name: &str, text: String| files.push((format!("{prefix}/{name}"), text.into_bytes()));
    let mut plant = |name: &str, place: &str, key: (&str, String)| {
        let mut app = App { file: format!("{prefix}/{name}"), truth: &mut *truth };
        app.plant(&[], None, place, key)
    };
    let mut keys = Keys(random);
    let ours = plant(".env", "env", keys.portcullis());
    let aws = plant(".env", "env", keys.aws_key_id());
    add(
        ".env",
        format!(
            "PORTCULLIS_KEY={ours}\nAWS_ACCESS_KEY_ID={aws}\nAWS_REGION=eu-west-1\nDATABASE_URL=${{DATABASE_URL}}\n"
        ),
    );
    let stripe = plant("app/src/main/java/com/example/Payments.kt", "kotlin", keys.stripe());
    add(
        "app/src/main/java/com/example/Payments.kt",
        format!(
            "package com.example\n\nobject Payments {{\n    // TODO: move to the backend\n    const val STRIPE_KEY = \"{stripe}\"\n    const val DOCS_KEY = \"{}\"\n}}\n",
            decoys[2]
        ),
    );
    let generic = plant("app/src/main/res/values/strings.xml", "xml", keys.generic());
    add(
        "app/src/main/res/values/strings.xml",
        format!(
            "<resources>\n    <string name=\"app_name\">Example</string>\n    <string name=\"api_secret\">{generic}</string>\n    <string name=\"build_hash\">{}</string>\n</resources>\n",
            decoys[4].replace(' ', "_")
        ),
    );
    let google = plant("app/google-services.json", "json", keys.google_api_key());
    add(
        "app/google-services.json",
        format!(
            "{{\n  \"project_info\": {{ \"project_id\": \"example-app\", \"firebase_url\": \"{}\" }},\n  \"client\": [{{ \"api_key\": [{{ \"current_key\": \"{google}\" }}] }}]\n}}\n",
            decoys[8]
        ),
    );
    let openai = plant("server/settings.py", "python", keys.openai());
    add(
        "server/settings.py",
        format!(
            "import os\n\nOPENAI_API_KEY = \"{openai}\"\nSECRET_KEY = os.environ[\"SECRET_KEY\"]\npassword = get_password()\nREQUEST_ID = \"{}\"\n",
            decoys[3]
        ),
    );
    let github = plant(".github/workflows/release.yml", "yaml", keys.github());
    add(
        ".github/workflows/release.yml",
        format!(
            "name: release\non: push\nenv:\n  GH_TOKEN: {github}\n  API_KEY: ${{{{ secrets.API_KEY }}}}\n  IMAGE: \"{}\"\n",
            decoys[5]
        ),
    );
    let slack = plant("ios/Example/Info.plist", "xml-plist", keys.slack());
    add(
        "ios/Example/Info.plist",
        String::from_utf8_lossy(&xml_plist(&[("CFBundleIdentifier", "com.example.app"), ("SlackToken", &slack)]))
            .into_owned(),
    );
    add(
        "README.md",
        format!(
            "# Example\n\nSet `AWS_ACCESS_KEY_ID` (for example `{}`) and `STRIPE_KEY` (`{}`).\n",
            decoys[1], decoys[2]
        ),
    );
    for (index, value) in decoys.iter().enumerate() {
        if matches!(index, 1 | 2 | 3 | 4 | 5 | 8) {
            truth.decoys.push(Decoy { file: prefix.to_owned(), place: "source".into(), value: value.clone() });
        }
    }
    files
}

/// Writes `copies` of each app and source tree under `directory` (seeded from `seed`), and
/// returns the truth (kept out of the directory: it lists every planted secret).
pub fn write(directory: &Path, seed: u64, copies: usize) -> std::io::Result<Truth> {
    let mut truth = Truth::default();
    let mut random = Random::new(seed);
    let mut later = Random::new(seed ^ 0x5eed_f1a7_7e12_0000);
    for copy in 0..copies {
        for (name, build) in [
            (format!("android/app-{copy}.apk"), android as fn(&str, &mut Random, &mut Truth) -> Vec<u8>),
            (format!("android/app-{copy}.aab"), bundle),
            (format!("ios/app-{copy}.ipa"), ios),
            (format!("android/react-native-{copy}.apk"), react_native),
            (format!("android/maui-{copy}.apk"), maui),
        ] {
            let bytes = build(&name, &mut random, &mut truth);
            let path = directory.join(&name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, bytes)?;
        }
        // Apps added later draw from their own stream, so the apps above keep their bytes.
        for (name, build) in [
            (format!("android/flutter-{copy}.apk"), flutter as fn(&str, &mut Random, &mut Truth) -> Vec<u8>),
            (format!("ios/flutter-{copy}.ipa"), flutter_ios),
            (format!("android/unity-{copy}.apk"), unity),
        ] {
            let bytes = build(&name, &mut later, &mut truth);
            let path = directory.join(&name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, bytes)?;
        }
        for (name, bytes) in source_tree(&format!("source/project-{copy}"), &mut random, &mut truth) {
            let path = directory.join(&name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, bytes)?;
        }
    }
    Ok(truth)
}
