//! Every command's `--help` and the human reports, as snapshots: a change to what users read
//! is a reviewed change. The commands are discovered from the help itself, so a new one cannot
//! be left out.

use crate::process::binary;

/// The subcommands a help text lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

fn help(path: &[String]) -> String {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    // The help shows environment values: none of ours may leak into the snapshot.
    let output = std::process::Command::new(binary())
        .args(&args)
        .env_remove("PORTCULLIS_CONFIG")
        .env_remove("PORTCULLIS_LOG")
        .env_remove("PORTCULLIS_PEPPER")
        .output()
        .unwrap();
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn every_commands_help_is_as_reviewed() {
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    let mut seen = 0;
    while let Some(path) = pending.pop() {
        let text = help(&path);
        for sub in subcommands(&text) {
            let mut next = path.clone();
            next.push(sub);
            pending.push(next);
        }
        let name = if path.is_empty() { "portcullis".to_owned() } else { format!("portcullis_{}", path.join("_")) };
        insta::assert_snapshot!(name, text);
        seen += 1;
    }
    assert!(seen >= 20, "only {seen} commands found");
}

/// The human reports of `data scan` and `leaks scan` on fixed inputs, as snapshots (the
/// temporary folder's path replaced): what people read is a reviewed change, and no secret or
/// personal value appears in them.
#[test]
fn human_reports_are_as_reviewed() {
    let dir = tempfile::tempdir().unwrap();
    let shown = dir.path().display().to_string();
    std::fs::write(
        dir.path().join("people.csv"),
        "id,name,email,notes,Password\n1,John Smith,jane@example.com,call +44 20 7946 0958,eiZookooB7\n\
         2,Mary Jones,bob@example.org,nothing,Wasco1982\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("src/config.js"),
        "const key = \"AKIAIOSFODNN7EXAMPLE\";\nurl = \"https://admin:s3cr3tPassw0rd@db.internal/app\"\n",
    )
    .unwrap();
    let report = |args: &[&str]| {
        let output = std::process::Command::new(binary()).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?} finds something");
        String::from_utf8(output.stdout).unwrap().replace(&shown, "<dir>")
    };
    let data = report(&["data", "scan", &format!("{shown}/people.csv")]);
    let leaks = report(&["leaks", "scan", &format!("{shown}/src")]);
    for secret in ["eiZookooB7", "Wasco1982", "jane@example.com", "John Smith", "s3cr3tPassw0rd", "7946 0958"] {
        assert!(!data.contains(secret) && !leaks.contains(secret), "{secret} shown in a report");
    }
    insta::assert_snapshot!("data_scan_human", data);
    insta::assert_snapshot!("leaks_scan_human", leaks);
}
