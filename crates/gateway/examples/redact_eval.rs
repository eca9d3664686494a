//! Prompt redaction measured on sentences labelled by others: Presidio's evaluation set
//! (`../shared/eval/pii/synth_dataset_v2.json`, 1,500 sentences with character spans).
//!
//!     cargo run --release -p gateway --example redact_eval -- ../shared/eval/pii/synth_dataset_v2.json
//!
//! Each sentence is sent through the redactor as one chat message, as `redact_prompts` does.
//! Recall, per kind the redactor covers: of the labelled values of that kind, how many no longer
//! appear in the redacted text. Precision: of the placeholders put in, how many stand for text
//! inside a labelled span (any label: a date of birth labelled DATE_TIME is still personal).
//! Prints a Markdown table.

use std::collections::BTreeMap;

use gateway::llm::{body::Route, redact::Redactor};
use serde_json::{Value, json};

/// Presidio's labels for the kinds the redactor covers.
const KINDS: &[(&str, &str)] = &[
    ("EMAIL_ADDRESS", "email"),
    ("PHONE_NUMBER", "phone"),
    ("CREDIT_CARD", "payment_card"),
    ("IBAN_CODE", "iban"),
    ("IP_ADDRESS", "ip_address"),
    ("US_SSN", "us_ssn"),
];

fn main() -> Result<(), String> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "../shared/eval/pii/synth_dataset_v2.json".into());
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let sentences: Vec<Value> = serde_json::from_str(&text).map_err(|e| format!("{path} is not JSON: {e}"))?;
    let redactor = Redactor::new();
    // kind → (labelled, removed)
    let mut recall: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    let (mut placed, mut placed_right) = (0u32, 0u32);
    let mut wrong: Vec<String> = Vec::new();
    for sentence in &sentences {
        let Some(full) = sentence["full_text"].as_str() else { continue };
        let spans: Vec<(&str, &str)> = sentence["spans"]
            .as_array()
            .map(|spans| {
                spans
                    .iter()
                    .filter_map(|span| Some((span["entity_type"].as_str()?, span["entity_value"].as_str()?)))
                    .collect()
            })
            .unwrap_or_default();
        let Value::Object(mut body) = json!({"model": "m", "messages": [{"role": "user", "content": full}]}) else {
            continue;
        };
        let redaction = redactor.redact(Route::ChatCompletions, &mut body);
        let redacted = body["messages"][0]["content"].as_str().unwrap_or_default().to_owned();
        for (label, value) in &spans {
            if let Some((_, kind)) = KINDS.iter().find(|(name, _)| name == label) {
                let entry = recall.entry(kind).or_default();
                entry.0 += 1;
                if !redacted.contains(value) {
                    entry.1 += 1;
                }
            }
        }
        // Each placeholder, and the text it stands for.
        let mut rest = redacted.as_str();
        while let Some(start) = rest.find('<') {
            let Some(end) = rest[start..].find('>') else { break };
            let placeholder = &rest[start..start + end + 1];
            rest = &rest[start + end + 1..];
            let original = redaction.restore(placeholder);
            if original == placeholder {
                continue;
            }
            placed += 1;
            if spans.iter().any(|(_, value)| value.contains(original.as_ref())) {
                placed_right += 1;
            } else if wrong.len() < 8 {
                wrong.push(format!("{placeholder} for {original:?}"));
            }
        }
    }
    println!("| kind | labelled | redacted | recall |");
    println!("|---|---:|---:|---:|");
    let (mut all, mut removed) = (0, 0);
    for (kind, (labelled, gone)) in &recall {
        all += labelled;
        removed += gone;
        println!("| {kind} | {labelled} | {gone} | {:.2} |", f64::from(*gone) / f64::from((*labelled).max(1)));
    }
    println!("| all six | {all} | {removed} | {:.2} |", f64::from(removed) / f64::from(all.max(1)));
    println!();
    println!(
        "{} sentences; {placed} placeholders put in, {placed_right} inside a labelled span: precision {:.2}.",
        sentences.len(),
        f64::from(placed_right) / f64::from(placed.max(1))
    );
    if !wrong.is_empty() {
        println!("Outside a labelled span, for example: {}.", wrong.join("; "));
    }
    Ok(())
}
