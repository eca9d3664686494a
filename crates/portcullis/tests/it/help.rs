//! Every command's `--help`, as snapshots: a change to what users read is a reviewed change.
//! The commands are discovered from the help itself, so a new one cannot be left out.

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
