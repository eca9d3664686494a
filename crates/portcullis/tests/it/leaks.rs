//! `portcullis leaks scan` on the seeded corpus (APK-, AAB-, IPA-like archives and source
//! trees), on hostile archives, and `--revoke` against a real store and server.

use std::io::Write;
use std::path::Path;

use leaks::corpus::app::Truth;
use zip::write::SimpleFileOptions;

use crate::process::{Running, client, run, write_config};

fn scan_json(args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut all = vec!["leaks", "scan", "--format", "json"];
    all.extend_from_slice(args);
    let output = run(&all);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}: {stderr}"));
    (output.status.code(), report, stderr)
}

fn findings(report: &serde_json::Value) -> &Vec<serde_json::Value> {
    report["findings"].as_array().unwrap()
}

fn corpus(dir: &Path) -> Truth {
    leaks::corpus::app::write(dir, 7, 1).unwrap()
}

#[test]
fn every_planted_key_is_found_in_its_place_and_no_decoy_is() {
    let dir = tempfile::tempdir().unwrap();
    let truth = corpus(dir.path());
    let root = dir.path().to_str().unwrap();
    let (code, report, stderr) = scan_json(&[root, "--show-secrets"]);
    assert_eq!(code, Some(1), "{stderr}");
    let found = findings(&report);
    let places: std::collections::BTreeSet<&str> = truth.planted.iter().map(|planted| planted.place.as_str()).collect();
    assert!(places.len() >= 14, "storage places covered: {places:?}");
    // The places of cross-platform apps: React Native (Hermes), .NET MAUI, Flutter, Unity.
    for place in [
        "hermes",
        "dotnet-const",
        "dotnet-us",
        "dotnet-xalz",
        "dotnet-elf-store",
        "dart",
        "dart-arm32",
        "dart-ios",
        "il2cpp",
        "il2cpp-field",
    ] {
        assert!(places.contains(place), "no key planted in {place}: {places:?}");
        assert!(truth.decoys.iter().any(|decoy| decoy.place == place), "no decoy in {place}");
    }
    for planted in &truth.planted {
        let matching: Vec<&serde_json::Value> = found
            .iter()
            .filter(|finding| finding["secret"] == planted.secret.as_str())
            .filter(|finding| finding["file"].as_str().unwrap().ends_with(&planted.file))
            .collect();
        assert!(
            !matching.is_empty(),
            "not found: {} {} in {} {:?}",
            planted.place,
            planted.rule,
            planted.file,
            planted.members
        );
        let finding = matching[0];
        let members: Vec<&str> = finding["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
        assert_eq!(members, planted.members, "{}: wrong member", planted.place);
        if let Some(within) = &planted.within {
            assert_eq!(finding["within"], within.as_str(), "{}: wrong place inside the member", planted.place);
        }
        assert_eq!(finding["rule"], planted.rule.as_str(), "{}: found by another rule", planted.place);
        assert_eq!(finding["public"], planted.public, "{}", planted.place);
    }
    // Nothing but the planted keys: no decoy, and no second rule on a planted key.
    for finding in found {
        let secret = finding["secret"].as_str().unwrap();
        for decoy in &truth.decoys {
            assert!(!decoy.value.contains(secret) && !secret.contains(&decoy.value), "decoy {decoy:?} reported");
        }
        assert!(
            truth.planted.iter().any(|planted| planted.secret == secret),
            "not planted: {} {}",
            finding["rule"],
            finding["location"]
        );
    }
    assert_eq!(found.len(), truth.planted.len(), "each key once");
    // The FairPlay-encrypted extension is reported as such; its __DATA is still scanned.
    let warnings = report["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|warning| warning["message"].as_str().unwrap().contains("FairPlay")), "{warnings:?}");
}

#[test]
fn secrets_are_redacted_unless_asked_for_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let truth = corpus(dir.path());
    let root = dir.path().to_str().unwrap();
    for format in ["human", "json", "sarif"] {
        let output = run(&["leaks", "scan", root, "--format", format]);
        assert_eq!(output.status.code(), Some(1));
        let text = String::from_utf8_lossy(&output.stdout);
        for planted in &truth.planted {
            let middle = &planted.secret[planted.secret.len() / 2..];
            assert!(!text.contains(middle), "{format} shows a secret of {}", planted.place);
        }
    }
    let output = run(&["leaks", "scan", root, "--format", "human"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("app-0.apk!classes2.dex#string_ids["), "{text}");
    assert!(text.contains("ptcl_sk_"), "{text}");
    assert!(text.contains("public by design: check its restrictions"), "{text}");
}

#[test]
fn sarif_is_2_1_0_with_a_result_per_finding() {
    let dir = tempfile::tempdir().unwrap();
    let truth = corpus(dir.path());
    let output = run(&["leaks", "scan", dir.path().to_str().unwrap(), "--format", "sarif"]);
    let sarif: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    assert!(run["tool"]["driver"]["rules"].as_array().unwrap().len() >= 60);
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), truth.planted.len());
    let nested = results
        .iter()
        .find(|result| result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "assets/plugins.zip!.env")
        .expect("the key in the nested zip names its member path");
    assert!(nested["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].as_str().unwrap().ends_with(".apk"));
    let text_result = results
        .iter()
        .find(|result| {
            result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
                .ends_with("settings.py")
        })
        .unwrap();
    assert_eq!(text_result["locations"][0]["physicalLocation"]["region"]["startLine"], 3);

    // --output writes the same report to a file, and nothing to standard output.
    let report = dir.path().join("out/leaks.sarif");
    std::fs::create_dir_all(report.parent().unwrap()).unwrap();
    let written = crate::process::run(&[
        "leaks",
        "scan",
        dir.path().join("android").to_str().unwrap(),
        "--format",
        "sarif",
        "--output",
        report.to_str().unwrap(),
    ]);
    assert_eq!(written.status.code(), Some(1));
    assert!(written.stdout.is_empty());
    let from_file: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(from_file["version"], "2.1.0");
    assert!(!from_file["runs"][0]["results"].as_array().unwrap().is_empty());
}

#[test]
fn a_baseline_accepts_known_findings_and_still_fails_on_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("a.env"), "GITHUB_TOKEN=ghp_R4nd0mT0k3nV4lu3F0rT3st1ngXyZ1234567\n").unwrap();
    let baseline = dir.path().join("baseline.json");
    let tree_arg = tree.to_str().unwrap();
    let output = run(&["leaks", "scan", tree_arg, "--write-baseline", baseline.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let written = std::fs::read_to_string(&baseline).unwrap();
    assert!(!written.contains("R4nd0mT0k3n"), "the baseline holds no secret: {written}");
    let (code, report, _) = scan_json(&[tree_arg, "--baseline", baseline.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert!(findings(&report).is_empty());
    // The key moving to another line is still the known finding.
    std::fs::write(tree.join("a.env"), "# moved\n\nGITHUB_TOKEN=ghp_R4nd0mT0k3nV4lu3F0rT3st1ngXyZ1234567\n").unwrap();
    let (code, _, _) = scan_json(&[tree_arg, "--baseline", baseline.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    // A new key is not.
    std::fs::write(tree.join("b.env"), "HF_TOKEN=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\n").unwrap();
    let (code, report, _) = scan_json(&[tree_arg, "--baseline", baseline.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert_eq!(findings(&report).len(), 1);
    // A baseline that is not one is an error, not an empty baseline.
    std::fs::write(&baseline, "{\"fingerprints\": 3}").unwrap();
    let output = run(&["leaks", "scan", tree_arg, "--baseline", baseline.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a baseline file"));
}

fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in members {
        writer.start_file(*name, SimpleFileOptions::default()).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

#[tokio::test]
async fn revoke_revokes_found_keys_and_the_gateway_refuses_them_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let config = config.to_str().unwrap();
    let output = run(&["keys", "create", "--config", config, "--name", "mobile", "--models", "mlp", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let kid = created["id"].as_str().unwrap().to_owned();

    let server = Running::start(&["serve", "--config", config], &[]);
    let http = client();
    let metadata = server.url("/v2/models/mlp");
    assert_eq!(http.get(&metadata).bearer_auth(&key).send().await.unwrap().status(), 200);

    // The key, compiled into an app; and a forgery: the same key id, a valid checksum, another
    // secret. The forgery must not revoke anything.
    let forged = {
        let body = format!("ptcl_sk_{kid}{}", "Q".repeat(32));
        format!("{body}{}", String::from_utf8_lossy(&apikey::checksum(body.as_bytes())))
    };
    let dex = leaks::corpus::dex::build(&["Lcom/example/Client;", &key]);
    let apk = zip_of(&[("classes.dex", &dex), ("assets/other.txt", forged.as_bytes())]);
    let apk_path = dir.path().join("app.apk");
    std::fs::write(&apk_path, apk).unwrap();

    let output = run(&["leaks", "scan", apk_path.to_str().unwrap(), "--revoke", "--config", config]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("revoked: key {kid} (was live; found at")), "{stderr}");
    assert!(stderr.contains("app.apk!classes.dex#string_ids["), "{stderr}");
    assert!(stderr.contains(&format!("not in this store: key {kid}")), "{stderr}");
    assert!(!stderr.contains(&key[16..48]), "the secret was printed");

    // The gateway refuses the key now (the test config caches keys for 0 s). A new client: the
    // server has closed the idle connection while the scan ran.
    assert_eq!(client().get(&metadata).bearer_auth(&key).send().await.unwrap().status(), 401);

    // Running again finds it revoked already.
    let output = run(&["leaks", "scan", apk_path.to_str().unwrap(), "--revoke", "--config", config]);
    assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("already revoked: key {kid}")));

    // The revocation is in the audit log, with where the key was found, and no secret.
    let (status, _) = server.terminate();
    assert!(status.success());
    let log = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let record = log.lines().find(|line| line.contains("leaked_key_revoked")).expect("audited");
    assert!(record.contains(&kid) && record.contains("app.apk!classes.dex"), "{record}");
    assert!(!log.contains(&key[16..48]));
}

#[test]
fn hostile_inputs_are_located_warnings_and_the_scan_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let put = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
    };
    let live = "ghp_Zk3Lm9Qw2Er5Ty8Ui1Op4As7Df0Gh3Jk6LzX";
    // Corrupt zip: the end of the archive is cut off.
    let mut corrupt = zip_of(&[("a.txt", b"hello")]);
    corrupt.truncate(corrupt.len() - 20);
    put("corrupt.apk", &corrupt);
    // Truncated DEX and malformed ARSC, beside a good member holding a key.
    let dex = leaks::corpus::dex::build(&["Lcom/example/A;", "a string long enough to be kept"]);
    let arsc = leaks::corpus::arsc::build("com.example", &[("string", "k", "value-long-enough")], true);
    let arsc = &arsc[..arsc.len() * 2 / 3];
    put(
        "broken.apk",
        &zip_of(&[
            ("classes.dex", &dex[..dex.len() / 2]),
            ("resources.arsc", arsc),
            ("assets/key.txt", live.as_bytes()),
        ]),
    );
    // Zip bomb: 64 MiB of zeros in a few kilobytes.
    put("bomb.zip", &zip_of(&[("zeros.bin", &vec![0u8; 64 << 20])]));
    // Nested eight deep.
    let mut nested = zip_of(&[("deep.txt", b"nothing to see")]);
    for level in 0..8 {
        nested = zip_of(&[(&format!("l{level}.zip"), &nested)]);
    }
    put("nested.zip", &nested);
    // A 3 MB single line with a key at its end; random binary.
    let mut line = "x".repeat(3 << 20);
    line.push_str(&format!(" token={live}"));
    put("minified.js", line.as_bytes());
    let binary: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    put("blob.bin", &binary);

    let (code, report, stderr) = scan_json(&[dir.path().to_str().unwrap(), "--show-secrets"]);
    assert_eq!(code, Some(1), "{stderr}");
    let warnings: Vec<String> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|warning| format!("{}: {}", warning["path"].as_str().unwrap(), warning["message"].as_str().unwrap()))
        .collect();
    let has = |path_end: &str, text: &str| warnings.iter().any(|w| w.contains(path_end) && w.contains(text));
    assert!(has("corrupt.apk", "corrupt zip"), "{warnings:#?}");
    assert!(has("broken.apk!classes.dex", "dex: string_ids[0] lies outside the file"), "{warnings:#?}");
    assert!(has("broken.apk!resources.arsc", "arsc: chunk header truncated"), "{warnings:#?}");
    assert!(has("bomb.zip!zeros.bin", "zip bomb"), "{warnings:#?}");
    assert!(has("nested.zip", "nested more than 5 deep"), "{warnings:#?}");
    let found: Vec<String> = findings(&report).iter().map(|f| f["path"].as_str().unwrap().to_owned()).collect();
    assert!(found.iter().any(|path| path.ends_with("broken.apk!assets/key.txt")), "{found:?}");
    assert!(found.iter().any(|path| path.ends_with("minified.js")), "{found:?}");
    assert_eq!(findings(&report).len(), 2, "{found:?}");
}

#[test]
fn one_thread_and_four_threads_give_the_same_report_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    leaks::corpus::app::write(dir.path(), 7, 2).unwrap();
    let root = dir.path().to_str().unwrap();
    for format in ["json", "sarif", "human"] {
        let one = run(&["leaks", "scan", root, "--format", format, "--show-secrets", "--threads", "1"]);
        let four = run(&["leaks", "scan", root, "--format", format, "--show-secrets", "--threads", "4"]);
        assert_eq!(one.status.code(), Some(1));
        assert_eq!(four.status.code(), Some(1));
        assert!(one.stdout == four.stdout, "{format}: the reports differ");
    }
}

#[test]
fn a_run_budget_stops_the_scan_with_a_partial_report() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let root = dir.path().to_str().unwrap();
    let (_, full, _) = scan_json(&[root]);
    for (flag, value, budget) in
        [("--max-run-files", "10", "budget of 10 files"), ("--max-run-bytes", "20K", "budget of 20480 bytes")]
    {
        let (code, report, stderr) = scan_json(&[root, flag, value, "--threads", "2"]);
        assert_eq!(report["scanned"]["complete"], false, "{flag}");
        let warnings = report["warnings"].as_array().unwrap();
        let last = warnings.last().unwrap()["message"].as_str().unwrap();
        assert!(last.contains(budget) && last.contains("the report is partial"), "{flag}: {last}");
        assert!(findings(&report).len() < findings(&full).len(), "{flag}");
        // Findings in the part scanned still fail the run; none found there is not a pass.
        let leaked = findings(&report).iter().any(|finding| finding["public"] == false);
        assert_eq!(code, Some(if leaked { 1 } else { 2 }), "{flag}: {stderr}");
    }
    let (code, report, stderr) = scan_json(&[root, "--timeout", "0s"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(report["scanned"]["stopped_by"], "time");
    assert!(findings(&report).is_empty());
    assert!(stderr.contains("stopped before the end"), "{stderr}");
    let output = run(&["leaks", "scan", root, "--max-run-files", "1", "--format", "human"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("partial report: the run's budget of 1 files scanned is spent"), "{text}");
    let (code, report, _) = scan_json(&[root, "--max-run-files", "100000", "--timeout", "1h", "--max-run-bytes", "1G"]);
    assert_eq!(code, Some(1));
    assert_eq!(report["scanned"]["complete"], true);
    assert!(report == full, "a budget not reached changes nothing");
}

#[test]
fn bad_arguments_exit_2_with_a_clear_message() {
    let output = run(&["leaks", "scan", "/nonexistent/app.apk"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read /nonexistent/app.apk"));
    let dir = tempfile::tempdir().unwrap();
    let output = run(&["leaks", "scan", dir.path().to_str().unwrap(), "--max-bytes", "lots"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--max-bytes lots"));
    let output = run(&["leaks", "scan", dir.path().to_str().unwrap(), "--max-run-bytes", "lots"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--max-run-bytes lots"));
    let output = run(&["leaks", "scan", dir.path().to_str().unwrap(), "--timeout", "soon"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a duration"));
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[[rule]]\nid = \"mine\"\ntitle = \"Mine\"\nseverity = \"high\"\nkeywords = [\"x\"]\npattern = '''(x'''\nexamples = []\ncounterexamples = []\n").unwrap();
    let output = run(&["leaks", "scan", dir.path().to_str().unwrap(), "--rules", rules.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("rule mine: pattern"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // An empty directory: nothing found, exit 0.
    let output = run(&["leaks", "scan", dir.path().join("empty").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let output = run(&["leaks", "scan", dir.path().join("empty").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
}

/// The real apps others collected (`../shared/eval/apps` from the project root), with their
/// `truth.json`; `None` when they are not on this machine.
fn shared_real_apps() -> Option<(std::path::PathBuf, serde_json::Value)> {
    let apps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/eval/apps");
    let truth = std::fs::read(apps.join("truth.json")).ok()?;
    Some((apps, serde_json::from_slice(&truth).unwrap()))
}

/// Whether a reported secret stands for a truth value (as bench/leaks_real.py scores it).
fn stands_for(found: &str, value: &str) -> bool {
    let (shorter, longer) = if found.len() <= value.len() { (found, value) } else { (value, found) };
    found == value || (shorter.len() >= 8 && 2 * shorter.len() >= longer.len() && longer.contains(shorter))
}

#[test]
fn known_secrets_of_the_shared_real_apps_are_found_and_negative_controls_stay_clean() {
    let Some((apps, truth)) = shared_real_apps() else {
        eprintln!("skipped: ../shared/eval/apps/truth.json is not here (the shared real-app set)");
        return;
    };
    let (mut named, mut named_found) = (0usize, 0usize);
    let mut missed = Vec::new();
    let mut false_positives = Vec::new();
    for (app, entry) in truth["apps"].as_object().unwrap() {
        let file = apps.join(entry["file"].as_str().unwrap());
        let (code, report, stderr) = scan_json(&[file.to_str().unwrap(), "--show-secrets"]);
        assert!(matches!(code, Some(0 | 1)), "{app}: {stderr}");
        let values: Vec<&str> = findings(&report).iter().map(|finding| finding["secret"].as_str().unwrap()).collect();
        let secrets = entry["secrets"].as_array().unwrap();
        let ambiguous: Vec<&str> =
            entry["ambiguous"].as_array().unwrap().iter().map(|item| item["value"].as_str().unwrap()).collect();
        for secret in secrets {
            if secret["named_in_binary"].as_bool() != Some(true) {
                continue;
            }
            named += 1;
            if values.iter().any(|found| stands_for(found, secret["value"].as_str().unwrap())) {
                named_found += 1;
            } else {
                missed.push(secret["id"].as_str().unwrap().to_owned());
            }
        }
        for (finding, value) in findings(&report).iter().zip(&values) {
            let true_secret = secrets.iter().any(|secret| stands_for(value, secret["value"].as_str().unwrap()));
            if !true_secret && !ambiguous.iter().any(|other| stands_for(value, other)) {
                // Shown by rule and place only: never the value.
                false_positives.push(format!("{app}: {} at {}", finding["rule"], finding["within"]));
            }
        }
    }
    assert!(named > 0, "truth.json names no secret");
    assert!(named_found * 10 >= named * 8, "named recall {named_found}/{named}; missed {missed:?}");
    assert!(false_positives.is_empty(), "false positives: {false_positives:?}");
}
