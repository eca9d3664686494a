//! `portcullis data scan` on real files: reports, formats and exit codes for CI gates.

use crate::process::run;

fn write(dir: &std::path::Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn scan_exit_codes_gate_ci() {
    let dir = tempfile::tempdir().unwrap();
    let people = write(dir.path(), "people.csv", "id,email,card\n1,jane@example.com,4111 1111 1111 1111\n");
    let clean = write(dir.path(), "clean.csv", "product,qty\nwidget,3\n");

    let found = run(&["data", "scan", &people]);
    assert_eq!(found.status.code(), Some(1), "{}", String::from_utf8_lossy(&found.stderr));
    let text = String::from_utf8_lossy(&found.stdout);
    assert!(text.contains("email") && text.contains("j***@e***.com"), "{text}");
    assert!(!text.contains("jane@example.com"), "values are masked");
    assert!(!text.contains("4111 1111 1111 1111"));

    assert_eq!(run(&["data", "scan", &clean]).status.code(), Some(0));
    // --fail-on narrows the gate.
    assert_eq!(run(&["data", "scan", &people, "--fail-on", "iban"]).status.code(), Some(0));
    assert_eq!(run(&["data", "scan", &people, "--fail-on", "iban,email"]).status.code(), Some(1));
    // Errors are 2, with a message; the other files are still scanned and reported.
    let missing = run(&["data", "scan", "/nonexistent/file.csv", &people]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
    assert!(String::from_utf8_lossy(&missing.stdout).contains("j***@e***.com"), "the readable file is reported");
    assert_eq!(run(&["data", "scan", &people, "--fail-on", "shoe_size"]).status.code(), Some(2));
}

#[test]
fn scan_writes_json_and_sarif() {
    let dir = tempfile::tempdir().unwrap();
    let events = write(dir.path(), "events.jsonl", "{\"user\":{\"phone\":\"+44 20 7946 0958\"}}\nnot json\n");
    let json = run(&["data", "scan", &events, "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let file = &report["files"][0];
    assert_eq!(file["format"], "jsonl");
    assert_eq!(file["problems"], 1);
    assert_eq!(file["problem_examples"][0]["location"], "line 2");
    assert_eq!(file["columns"][0]["column"], "user.phone");
    assert_eq!(file["columns"][0]["findings"][0]["kind"], "phone");

    let sarif = run(&["data", "scan", &events, "--format", "sarif"]);
    let sarif: serde_json::Value = serde_json::from_slice(&sarif.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert_eq!(sarif["runs"][0]["results"][0]["ruleId"], "phone");
    assert_eq!(sarif["runs"][0]["tool"]["driver"]["rules"][0]["id"], "phone");
}

#[test]
fn protect_writes_a_protected_copy_and_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "people.csv",
        "id,email,ssn,notes\n1,jane@example.com,536-90-4399,call +44 20 7946 0958\n2,bob@example.org,078-05-1121,none\n",
    );
    let policy = write(
        dir.path(),
        "policy.toml",
        "[keys]\nmain = { env = \"IT_DATA_KEY\" }\n[kinds]\nemail = { action = \"pseudonymise\", key = \"main\" }\n[columns]\nssn = \"drop\"\n",
    );
    let out = dir.path().join("out.csv");
    let out = out.to_str().unwrap();
    let key = "ab".repeat(32);
    let run_with_key = |key: Option<&str>| {
        let mut command = std::process::Command::new(crate::process::binary());
        command.args(["data", "protect", &input, "--policy", &policy, "--out", out]);
        match key {
            Some(key) => command.env("IT_DATA_KEY", key),
            None => command.env_remove("IT_DATA_KEY"),
        };
        command.output().unwrap()
    };
    // A missing or short key: an error, and no output at all.
    let missing = run_with_key(None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("IT_DATA_KEY is not set"));
    assert!(!std::path::Path::new(out).exists());
    assert_eq!(run_with_key(Some("abcd")).status.code(), Some(2));
    assert!(!std::path::Path::new(out).exists());

    let done = run_with_key(Some(&key));
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let protected = std::fs::read_to_string(out).unwrap();
    assert!(protected.starts_with("id,email,notes\n"), "{protected}");
    assert!(!protected.contains("jane@example.com") && !protected.contains("536-90-4399"), "{protected}");
    assert!(protected.contains("email_") && protected.contains("[PHONE]"), "{protected}");
    // Pseudonyms are stable across runs: the same key gives the same output.
    let again = run_with_key(Some(&key));
    assert!(again.status.success());
    assert_eq!(std::fs::read_to_string(out).unwrap(), protected);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{out}.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["records"], 2);
    assert_eq!(manifest["key_ids"], serde_json::json!(["main"]));
    assert_eq!(manifest["counts"]["ssn"]["drop"], 2);
    assert!(!manifest.to_string().contains(&key));
}

#[test]
fn risk_reports_k_anonymity_and_a_generalisation() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "r.csv", "age,zip,disease\n34,94105,flu\n36,94107,cold\n31,94103,flu\n38,94109,x\n");
    let output = run(&["data", "risk", &file, "--quasi", "age,zip", "--k", "2", "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["assessment"]["smallest_class"], 1);
    assert_eq!(report["suggestion"][0]["generalise"], "age bands of 5");
    let unknown = run(&["data", "risk", &file, "--quasi", "age,height", "--k", "2"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no column 'height'"));
}

#[test]
fn risk_on_json_lines_refuses_a_column_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "r.jsonl", "{\"age\":34,\"zip\":\"94105\"}\n{\"age\":36,\"zip\":\"94107\"}\n");
    let typo = run(&["data", "risk", &file, "--quasi", "agee", "--k", "2"]);
    assert_eq!(typo.status.code(), Some(2), "{}", String::from_utf8_lossy(&typo.stdout));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("no column 'agee'"));
    assert_eq!(
        run(&["data", "risk", &file, "--quasi", "age,zip", "--k", "2"]).status.code(),
        Some(1),
        "columns that exist"
    );
}

#[test]
fn tokenise_then_reveal_round_trips_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let contents = "id,card_number\n1,4111 1111 1111 1111\n2,378282246310005\n";
    let input = write(dir.path(), "cards.csv", contents);
    let policy = write(
        dir.path(),
        "policy.toml",
        "[keys]\nmain = { file = \"k.key\" }\n[columns]\ncard_number = { action = \"tokenise\", key = \"main\" }\n",
    );
    write(dir.path(), "k.key", &"cd".repeat(32));
    let tokens = dir.path().join("tokens.csv");
    let back = dir.path().join("back.csv");
    let protect = run(&["data", "protect", &input, "--policy", &policy, "--out", tokens.to_str().unwrap()]);
    assert!(protect.status.success(), "{}", String::from_utf8_lossy(&protect.stderr));
    let tokenised = std::fs::read_to_string(&tokens).unwrap();
    assert!(!tokenised.contains("4111 1111 1111 1111"), "{tokenised}");
    let reveal =
        run(&["data", "reveal", tokens.to_str().unwrap(), "--policy", &policy, "--out", back.to_str().unwrap()]);
    assert!(reveal.status.success(), "{}", String::from_utf8_lossy(&reveal.stderr));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), contents);
}

/// The shared evaluation set written by others, when this checkout sits beside it.
fn shared_eval(name: &str) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/eval/pii").join(name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipping: {} is absent", path.display());
        None
    }
}

fn read_csv(path: &std::path::Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = reader.records().map(|row| row.unwrap().iter().map(str::to_owned).collect()).collect();
    (headers, rows)
}

/// FakeNameGenerator's 3,000 identities under the policy docs/data.md shows first: no original
/// value of a column the scan classifies is left anywhere in the output, rows are kept, and
/// pseudonyms are the same from run to run. Read back here with the csv crate, apart from the
/// tool's own report.
#[test]
fn protect_leaves_no_original_value_of_a_protected_column_in_data_written_by_others() {
    let Some(source) = shared_eval("FakeNameGenerator.com_3000.csv") else { return };
    let dir = tempfile::tempdir().unwrap();
    let policy = write(
        dir.path(),
        "policy.toml",
        "[keys]\nmain = { env = \"PORTCULLIS_DATA_KEY\" }\n\n[kinds]\nemail = { action = \"pseudonymise\", key = \"main\" }\n\
         phone = { action = \"mask\", keep = 4 }\nperson_name = { action = \"pseudonymise\", key = \"main\" }\n",
    );
    let protect = |out: &str| {
        let output = std::process::Command::new(crate::process::binary())
            .args(["data", "protect", source.to_str().unwrap(), "--policy", &policy, "--out", out])
            .env("PORTCULLIS_DATA_KEY", "ab".repeat(32))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    let (first, second) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
    protect(first.to_str().unwrap());
    protect(second.to_str().unwrap());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("a.csv.manifest.json")).unwrap()).unwrap();
    let protected: Vec<String> = manifest["classified"].as_object().unwrap().keys().cloned().collect();
    for column in ["GivenName", "Surname", "MothersMaiden", "EmailAddress", "TelephoneNumber", "Password", "Birthday"] {
        assert!(protected.iter().any(|c| c == column), "{column} is not protected whole: {protected:?}");
    }
    let (headers, original) = read_csv(&source);
    let (out_headers, output) = read_csv(&first);
    assert_eq!(output.len(), original.len(), "rows kept");
    assert_eq!(read_csv(&second).1, output, "pseudonyms are stable across runs");
    // Every original value (of four characters or more, so that a digit or an initial does not
    // count) of a protected column, looked for in every cell of the output.
    let mut originals = std::collections::HashSet::new();
    for column in &protected {
        let index = headers.iter().position(|h| h == column).unwrap();
        originals.extend(original.iter().map(|row| row[index].trim().to_owned()).filter(|v| v.chars().count() >= 4));
    }
    let left: Vec<(String, String)> = output
        .iter()
        .flat_map(|row| out_headers.iter().zip(row))
        .filter(|(_, cell)| originals.contains(cell.trim()))
        .map(|(column, cell)| (column.clone(), cell.clone()))
        .collect();
    // Other, unprotected columns may hold the same word by chance (a surname that is also a city).
    let in_protected: Vec<&(String, String)> = left.iter().filter(|(column, _)| protected.contains(column)).collect();
    assert!(
        in_protected.is_empty(),
        "{} originals left in protected columns: {:?}",
        in_protected.len(),
        &in_protected[..in_protected.len().min(10)]
    );
}

/// Sets with no direct identifiers give no finding of a kind they do not hold.
#[test]
fn scan_finds_nothing_in_data_without_personal_data() {
    for name in ["adult.raw.csv", "Occupancy_Estimation.csv", "CityTable.csv"] {
        let Some(path) = shared_eval(name) else { return };
        let output = run(&["data", "scan", path.to_str().unwrap(), "--format", "findings"]);
        assert_eq!(output.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&output.stdout));
    }
}
