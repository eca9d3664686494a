use super::*;

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn policy(text: &str) -> Policy {
    Policy::load(text, Path::new("."), &|name| (name == "DATA_KEY").then(|| KEY.to_owned())).unwrap()
}

const POLICY: &str = r#"
[keys]
main = { env = "DATA_KEY" }
[kinds]
email = { action = "pseudonymise", key = "main" }
phone = { action = "mask", keep = 4 }
[columns]
ssn = "drop"
dob = { action = "generalise", to = "year" }
visit = { action = "date_shift", key = "main", subject = "id", max_days = 30 }
"#;

fn run(name: &str, contents: &str, policy_text: &str) -> (String, Manifest) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(name);
    std::fs::write(&input, contents).unwrap();
    let output = dir.path().join(format!("out-{name}"));
    let manifest = protect_file(&Detector::new(), &policy(policy_text), &input, &output).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file stays behind");
    (std::fs::read_to_string(&output).unwrap(), manifest)
}

#[test]
fn csv_is_protected_column_by_column_and_span_by_span() {
    let input = "id,email,ssn,dob,visit,notes\n\
                 7,Jane@Example.com,536-90-4399,1984-07-23,2024-01-10,call +44 20 7946 0958 or mail jane@example.com\n";
    let (out, manifest) = run("people.csv", input, POLICY);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("id,email,dob,visit,notes"), "ssn dropped");
    let row = lines.next().unwrap();
    let key = DataKey::parse("main", KEY).unwrap();
    let pseudonym = act::pseudonym(&key, Kind::Email, "jane@example.com");
    assert!(row.starts_with(&format!("7,{pseudonym},1984,")), "{row}");
    assert!(!row.contains("2024-01-10"), "date shifted: {row}");
    assert!(row.contains("+## ## #### 0958"), "phone masked in free text: {row}");
    assert!(row.contains(&pseudonym) && !row.contains("jane@example.com"), "same pseudonym in free text: {row}");
    assert_eq!(manifest.records, 1);
    assert_eq!(manifest.counts["ssn"]["drop"], 1);
    assert_eq!(manifest.counts["notes"]["mask"], 1);
    assert_eq!(manifest.key_ids, ["main"]);
    let text = serde_json::to_string(&manifest).unwrap();
    assert!(!text.contains(KEY) && !text.contains("536-90-4399") && !text.contains("jane@"), "no values or keys");
    assert_eq!(manifest.input.sha256.len(), 64);
}

#[test]
fn unmatched_personal_data_is_redacted_by_default() {
    let (out, _) = run("x.csv", "card\n4111 1111 1111 1111\n", "");
    assert_eq!(out.lines().nth(1), Some("[PAYMENT_CARD]"));
    let (out, _) = run("y.csv", "card\n4111 1111 1111 1111\n", "unmatched = \"keep\"");
    assert_eq!(out.lines().nth(1), Some("4111 1111 1111 1111"));
}

#[test]
fn jsonl_is_protected_by_path_and_bad_lines_are_rejected() {
    let input = "{\"user\":{\"email\":\"a@example.com\",\"ssn\":\"536-90-4399\"},\"n\":1}\nnot json\n";
    let text = "[kinds]\nemail = \"redact\"\n[columns]\n\"user.ssn\" = \"drop\"\n";
    let (out, manifest) = run("e.jsonl", input, text);
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(line, serde_json::json!({"user": {"email": "[EMAIL]"}, "n": 1}));
    assert_eq!(out.lines().count(), 1, "the unparsable line is not written");
    assert_eq!((manifest.rejected, manifest.rejected_examples[0].location.as_str()), (1, "line 2"));
}

#[test]
fn a_missing_or_short_key_fails_before_any_output() {
    let env = |_: &str| None;
    let error = Policy::load("[keys]\nk = { env = \"NOPE\" }\n", Path::new("."), &env).unwrap_err();
    assert!(error.to_string().contains("NOPE is not set"), "{error}");
    let short = |_: &str| Some("abcd".to_owned());
    let error = Policy::load("[keys]\nk = { env = \"X\" }\n", Path::new("."), &short).unwrap_err();
    assert!(error.to_string().contains("at least 32 bytes"), "{error}");
    let error = Policy::load("[kinds]\nemail = { action = \"pseudonymise\" }\n", Path::new("."), &env).unwrap_err();
    assert!(error.to_string().contains("needs key"), "{error}");
    let error = Policy::load("[kinds]\nshoe = \"drop\"\n", Path::new("."), &env).unwrap_err();
    assert!(error.to_string().contains("unknown kind"), "{error}");
}

#[test]
fn a_failed_run_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.csv");
    let error = protect_file(&Detector::new(), &policy(POLICY), &dir.path().join("missing.csv"), &output).unwrap_err();
    assert!(error.to_string().contains("cannot read"));
    assert!(!output.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn tokenised_columns_reveal_to_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[keys]\nmain = { env = \"DATA_KEY\" }\n[columns]\ncard = { action = \"tokenise\", key = \"main\" }\nemail = { action = \"tokenise\", key = \"main\" }\n";
    let policy = policy(text);
    for (name, contents) in [
        ("t.csv", "id,card,email\n1,4111 1111 1111 1111,jane@example.com\n2,5500-0000-0000-0004,bob@example.org\n"),
        ("t.jsonl", "{\"card\":\"4111 1111 1111 1111\",\"email\":\"jane@example.com\",\"id\":1}\n"),
    ] {
        let input = dir.path().join(name);
        std::fs::write(&input, contents).unwrap();
        let tokens = dir.path().join(format!("tokens-{name}"));
        let manifest = protect_file(&Detector::new(), &policy, &input, &tokens).unwrap();
        let tokenised = std::fs::read_to_string(&tokens).unwrap();
        assert!(!tokenised.contains("4111 1111 1111 1111") && !tokenised.contains("jane@example.com"), "{tokenised}");
        assert_eq!(manifest.counts["card"]["tokenise"], if name.ends_with("csv") { 2 } else { 1 });
        let back = dir.path().join(format!("back-{name}"));
        let revealed = reveal_file(&policy, &tokens, &back).unwrap();
        assert_eq!(revealed.failed, 0);
        let restored = std::fs::read_to_string(&back).unwrap();
        if name.ends_with("csv") {
            assert_eq!(restored, contents);
        } else {
            let original: serde_json::Value = serde_json::from_str(contents.trim()).unwrap();
            let restored: serde_json::Value = serde_json::from_str(restored.trim()).unwrap();
            assert_eq!(restored, original);
        }
    }
    // Tokenise is for whole columns only.
    let error = Policy::load(
        "[keys]\nk = { env = \"DATA_KEY\" }\n[kinds]\nemail = { action = \"tokenise\", key = \"k\" }\n",
        Path::new("."),
        &|_| Some(KEY.to_owned()),
    )
    .unwrap_err();
    assert!(error.to_string().contains("whole columns"), "{error}");
}

#[test]
fn the_output_can_be_encrypted_to_age_recipients() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("p.csv");
    std::fs::write(&input, "email\njane@example.com\n").unwrap();
    let identity = age::x25519::Identity::generate();
    let recipients = parse_recipients(&[identity.to_public().to_string()]).unwrap();
    let output = dir.path().join("p.csv.age");
    let manifest = protect_file_to(&Detector::new(), &policy(""), &input, &output, &recipients).unwrap();
    assert_eq!(manifest.encrypted_to, [identity.to_public().to_string()]);
    let sealed = std::fs::read(&output).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1"));
    let decryptor = age::Decryptor::new(&sealed[..]).unwrap();
    let mut plain = String::new();
    decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)).unwrap().read_to_string(&mut plain).unwrap();
    assert_eq!(plain, "email\n[EMAIL]\n");
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "no plaintext left behind: {names:?}");
    assert!(parse_recipients(&["age1nope".into()]).is_err());
}

#[test]
fn nothing_the_policy_covers_is_copied_unprotected() {
    // Dropped array elements and values nested past the depth followed become null.
    let (out, _) = run("a.jsonl", "{\"tags\":[\"jane@example.com\"],\"n\":1}\n", "[columns]\n\"tags[]\" = \"drop\"\n");
    assert_eq!(out.trim(), "{\"n\":1,\"tags\":[null]}");
    let mut deep = String::new();
    for _ in 0..70 {
        deep.push_str("{\"a\":");
    }
    deep.push_str("\"jane@example.com\"");
    deep.push_str(&"}".repeat(70));
    let (out, _) = run("d.jsonl", &format!("{deep}\n"), "unmatched = \"keep\"");
    assert!(!out.contains("jane@example.com"), "nested past the limit: nulled");
    // A header row that is data (a file without headers) is refused, not copied.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("h.csv");
    std::fs::write(&input, "jane@example.com,+44 20 7946 0958\nbob@example.org,+44 20 7946 0000\n").unwrap();
    let output = dir.path().join("o.csv");
    let error = protect_file(&Detector::new(), &policy(""), &input, &output).unwrap_err();
    assert!(error.to_string().contains("not a header"), "{error}");
    assert!(!output.exists());
    // A column named for a kind is redacted whole, even where the validators see nothing.
    let (out, _) = run("n.csv", "first_name\nXochitl\n", "[columns]\nfirst_name = \"redact\"\n");
    assert_eq!(out.lines().nth(1), Some("[PERSON_NAME]"));
}

/// The policy docs/data.md shows first: names pseudonymised. A `last_name` column holds names
/// the dictionary does not know; every one of them must be protected all the same.
#[test]
fn a_classified_column_is_protected_whole_not_only_where_a_detector_agrees() {
    let input =
        "first_name,last_name,city\nZbigniew,Brzęczyszczykiewicz,Łódź\nAoife,Ní Bhraonáin,Galway\nJohn,Smith,Leeds\n";
    let text =
        "[keys]\nmain = { env = \"DATA_KEY\" }\n[kinds]\nperson_name = { action = \"pseudonymise\", key = \"main\" }\n";
    let (out, manifest) = run("people.csv", input, text);
    for original in ["Zbigniew", "Brzęczyszczykiewicz", "Aoife", "Ní Bhraonáin", "John", "Smith"] {
        assert!(!out.contains(original), "{original} left in: {out}");
    }
    assert!(out.contains("Łódź") && out.contains("Galway"), "other columns untouched: {out}");
    assert_eq!(manifest.counts["last_name"]["pseudonymise"], 3);
    assert_eq!(manifest.classified["last_name"].kind, Kind::PersonName);
    assert!(manifest.classified["last_name"].reason.contains("last_name"), "{:?}", manifest.classified);
    // Stable: the same name gives the same pseudonym in another run.
    let (again, _) = run("people.csv", input, text);
    assert_eq!(out, again);
}

#[test]
fn a_classified_json_path_is_protected_whole() {
    let input = "{\"user\":{\"surname\":\"Brzęczyszczykiewicz\",\"password\":\"hunter2\"},\"n\":1}\n";
    let text =
        "[keys]\nmain = { env = \"DATA_KEY\" }\n[kinds]\nperson_name = { action = \"pseudonymise\", key = \"main\" }\n";
    let (out, _) = run("u.jsonl", input, text);
    assert!(!out.contains("Brzęczyszczykiewicz") && !out.contains("hunter2"), "{out}");
}

/// A password column is a credential: reported, and redacted even when the policy names no
/// credential and keeps what it does not name.
#[test]
fn passwords_are_never_copied_even_when_unmatched_data_is_kept() {
    let input = "user,Password,pwd_hint\nalice,eiZookooB7,first pet\nbob,Wasco1982,n/a\n";
    let (out, manifest) = run("creds.csv", input, "unmatched = \"keep\"\n");
    assert!(!out.contains("eiZookooB7") && !out.contains("Wasco1982"), "{out}");
    assert!(out.contains("[CREDENTIAL]"), "{out}");
    assert!(out.contains("first pet"), "a hint about a password is not a password: {out}");
    assert_eq!(manifest.classified["Password"].action, "redact");
    let (dropped, _) = run("creds.csv", input, "[kinds]\ncredential = \"drop\"\n");
    assert_eq!(dropped.lines().next(), Some("user,pwd_hint"), "{dropped}");
}

/// Prices and order numbers that happen to pass Luhn or look like phones stay as they are.
#[test]
fn vetoed_kinds_are_not_protected() {
    let mut input = String::from("order_number,fare\n");
    for i in 0..200u64 {
        input.push_str(&format!("{},{}.{:02}\n", 4_000_000_000_000_000 + i * 7_919, 20 + i % 50, i * 37 % 100));
    }
    let (out, _) = run("orders.csv", &input, "");
    assert_eq!(out, input, "nothing in a column of order numbers and fares is personal data");
}

#[test]
fn a_misplaced_or_misspelt_policy_setting_is_an_error_not_ignored() {
    let load = |text: &str| Policy::load(text, Path::new("."), &|_| Some(KEY.to_owned())).map(|_| ());
    let cases = [
        // `unmatched` after `[columns]` is read by TOML as a column: it must not be ignored.
        ("[columns]\nssn = \"drop\"\nunmatched = \"keep\"\n", "top-level setting"),
        ("[kinds]\nemail = \"redact\"\nunmatched = \"keep\"\n", "top-level setting"),
        ("[columns]\nphone = { action = \"mask\", kepp = 2 }\n", "kepp"),
        ("[kinds]\nphone = { action = \"mask\", keep = 2, extra = true }\n", "extra"),
        ("[columns]\nphone = 4\n", "an action is a name"),
        ("[columns.phone]\naction = \"mask\"\nkeep = 2\nto = \"year\"\nnested = { a = 1 }\n", "nested"),
        ("unmatched = \"keep\"\ncolour = \"blue\"\n", "colour"),
    ];
    for (text, expected) in cases {
        let error = load(text).unwrap_err();
        assert!(error.to_string().contains(expected), "{text}: {error}");
    }
    assert!(load("unmatched = \"keep\"\n[columns]\nphone = { action = \"mask\", keep = 2 }\n").is_ok());
}

/// The ```toml blocks of a Markdown document.
fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if line.trim_start().starts_with("```toml") => current = Some(String::new()),
            Some(_) if line.trim_start().starts_with("```") => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn every_policy_example_in_the_docs_loads() {
    let blocks = toml_blocks(include_str!("../../../../docs/data.md"));
    assert!(!blocks.is_empty(), "docs/data.md shows a policy");
    for block in blocks {
        let loaded = Policy::load(&block, Path::new("."), &|_| Some(KEY.to_owned()));
        assert!(loaded.is_ok(), "{block}\n{:?}", loaded.err());
        let loaded = loaded.unwrap();
        if block.contains("unmatched") {
            let documented = if block.contains("unmatched = \"keep\"") { Action::Keep } else { Action::Redact };
            assert_eq!(loaded.unmatched, documented, "the documented `unmatched` takes effect");
            assert!(!loaded.columns.contains_key("unmatched"));
        }
    }
}

#[test]
fn month_first_birthdays_are_generalised_to_the_right_month() {
    // FakeNameGenerator writes `Birthday` month first: 3/4/1982 is March, as 3/29/1982 shows.
    let input = "id,Birthday,visit\n1,3/29/1982,3/4/2020\n2,3/4/1982,4/3/2020\n3,Mar 5 1982,2020-01-02\n";
    let text = "[keys]\nmain = { env = \"DATA_KEY\" }\n[columns]\n\
                Birthday = { action = \"generalise\", to = \"month\" }\n\
                visit = { action = \"date_shift\", key = \"main\", subject = \"id\" }\n";
    let (out, manifest) = run("fng.csv", input, text);
    let birthdays: Vec<&str> = out.lines().skip(1).map(|line| line.split(',').nth(1).unwrap()).collect();
    assert_eq!(birthdays, ["1982-03", "1982-03", "1982-03"], "{out}");
    assert_eq!(manifest.date_order["Birthday"], Verdict::MonthFirst);
    // `visit` could be either (every value has day and month of 12 or less): its ambiguous dates
    // are redacted and counted, never shifted from a guessed day.
    assert_eq!(manifest.date_order["visit"], Verdict::Ambiguous);
    assert_eq!(manifest.ambiguous_dates["visit"], 2);
    let visits: Vec<&str> = out.lines().skip(1).map(|line| line.split(',').nth(2).unwrap()).collect();
    assert!(visits[..2].iter().all(|visit| visit.starts_with('[') && visit.ends_with(']')), "redacted: {out}");
    assert!(visits[2].starts_with("2019-12") || visits[2].starts_with("2020-0"), "{out}");
}
