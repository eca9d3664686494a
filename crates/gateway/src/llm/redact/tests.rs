use serde_json::json;

use super::*;

fn redactor() -> &'static Redactor {
    static REDACTOR: std::sync::OnceLock<Redactor> = std::sync::OnceLock::new();
    REDACTOR.get_or_init(Redactor::new)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(object) => object,
        _ => unreachable!("a test body is an object"),
    }
}

fn chat(text: &str) -> Map<String, Value> {
    object(json!({"model": "m", "messages": [{"role": "user", "content": text}]}))
}

/// `check(prompt, expected)`: the user message's text after redaction, and it restores.
fn check(prompt: &str, expected: &str) {
    let mut body = chat(prompt);
    let redaction = redactor().redact(Route::ChatCompletions, &mut body);
    let redacted = body["messages"][0]["content"].as_str().unwrap();
    assert_eq!(redacted, expected, "{prompt:?}");
    assert_eq!(redaction.restore(redacted), prompt);
}

#[test]
fn personal_data_in_a_chat_prompt_becomes_typed_placeholders() {
    check("write to jane.doe@example.co.uk today", "write to <EMAIL_1> today");
    check("call +44 20 7946 0958 or +1 (202) 555-0143", "call <PHONE_1> or <PHONE_2>");
    check("card 4111 1111 1111 1111 please", "card <PAYMENT_CARD_1> please");
    check("IBAN GB82 WEST 1234 5698 7654 32", "IBAN <IBAN_1>");
    check("SSN 536-90-4399", "SSN <US_SSN_1>");
    check("NHS number 943 476 5919", "NHS number <UK_NHS_1>");
    check("login from 192.168.1.20", "login from <IP_ADDRESS_1>");
    check("mac 00:1A:2B:3C:4D:5E", "mac <MAC_ADDRESS_1>");
    check("key AKIAIOSFODNN7EXAMPLE here", "key <CREDENTIAL_1> here");
    check("no personal data here, just 42 and v1.2.3", "no personal data here, just 42 and v1.2.3");
}

#[test]
fn every_example_of_a_redacted_kind_leaves_no_trace_in_the_body() {
    let detector = pii::Detector::new();
    let mut failures = Vec::new();
    for rule in pii::rules::RULES.iter().filter(|rule| REDACTED.contains(&rule.kind)) {
        for example in rule.examples {
            let values: Vec<&str> = detector
                .find(example, None)
                .into_iter()
                .filter(|finding| finding.kind == rule.kind && finding.confidence >= MIN_CONFIDENCE)
                .map(|finding| &example[finding.start..finding.end])
                .collect();
            if values.is_empty() {
                failures.push(format!("{}: {example:?} is not found at the threshold", rule.id));
                continue;
            }
            let mut body = chat(example);
            let redaction = redactor().redact(Route::ChatCompletions, &mut body);
            let bytes = serde_json::to_string(&body).unwrap();
            for value in values {
                // As written and as JSON escapes it.
                let escaped = serde_json::to_string(value).unwrap();
                if bytes.contains(value) || bytes.contains(escaped.trim_matches('"')) {
                    failures.push(format!("{}: {value:?} is still in {bytes}", rule.id));
                }
            }
            if redaction.counts().get(rule.kind.name()).copied().unwrap_or(0) == 0 {
                failures.push(format!("{}: no count for {example:?}", rule.id));
            }
            let tag = format!("<{}_1>", rule.kind.name().to_ascii_uppercase());
            if !bytes.contains(&tag) {
                failures.push(format!("{}: no {tag} in {bytes}", rule.id));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_same_value_is_the_same_placeholder_throughout_the_request() {
    let mut body = object(json!({"model": "m", "messages": [
        {"role": "system", "content": "The customer is ann@example.com."},
        {"role": "user", "content": [
            {"type": "text", "text": "Mail ann@example.com and bob@example.org, then ann@example.com again."},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        ]},
    ]}));
    let redaction = redactor().redact(Route::ChatCompletions, &mut body);
    assert_eq!(body["messages"][0]["content"], "The customer is <EMAIL_1>.");
    assert_eq!(body["messages"][1]["content"][0]["text"], "Mail <EMAIL_1> and <EMAIL_2>, then <EMAIL_1> again.");
    assert_eq!(redaction.counts(), &BTreeMap::from([("email", 4)]));
    assert_eq!(redaction.restore("<EMAIL_2> wrote to <EMAIL_1>"), "bob@example.org wrote to ann@example.com");
    // A placeholder of another request, or of a kind not used, is left as it is.
    assert_eq!(redaction.restore("<EMAIL_3> <PHONE_1> <EMAIL_1"), "<EMAIL_3> <PHONE_1> <EMAIL_1");
}

#[test]
fn a_placeholder_the_caller_wrote_is_not_handed_out() {
    let mut body = chat("Template: <EMAIL_1> is replaced by the address. Mine is ann@example.com.");
    let redaction = redactor().redact(Route::ChatCompletions, &mut body);
    assert_eq!(body["messages"][0]["content"], "Template: <EMAIL_1> is replaced by the address. Mine is <EMAIL_2>.");
    assert_eq!(redaction.restore("<EMAIL_1> <EMAIL_2>"), "<EMAIL_1> ann@example.com");
}

#[test]
fn text_without_personal_data_is_left_byte_identical() {
    for body in [
        json!({"model": "m", "messages": [{"role": "user", "content": "Explain how Kubernetes schedules pods onto nodes."}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": "fn main() { let v = vec![1, 2, 3]; println!(\"{}\", v[2]); }"}]}),
        json!({"model": "m", "prompt": ["release v2.14.3 ships 2025-01-15", "sum 1234 5678"], "suffix": "<EMAIL_1>"}),
        json!({"model": "m", "input": "The meeting with the Board of Directors is moved to Monday Morning."}),
    ] {
        for route in [Route::ChatCompletions, Route::Completions, Route::Responses] {
            let mut redacted = object(body.clone());
            let redaction = redactor().redact(route, &mut redacted);
            assert!(redaction.is_empty(), "{route:?} {body}: {redaction:?}");
            assert_eq!(serde_json::to_vec(&redacted).unwrap(), serde_json::to_vec(&body).unwrap());
        }
    }
}

#[test]
fn only_prompt_text_is_redacted_never_roles_models_tools_or_images() {
    let body = json!({
        "model": "ann@example.com",
        "messages": [{"role": "user", "name": "ann@example.com", "content": "hi", "images": ["ann@example.com"]}],
        "tools": [{"type": "function", "function": {"name": "mail", "description": "mails ann@example.com"}}],
        "user": "ann@example.com",
    });
    for route in [Route::ChatCompletions, Route::OllamaChat] {
        let mut redacted = object(body.clone());
        assert!(redactor().redact(route, &mut redacted).is_empty());
        assert_eq!(Value::Object(redacted), body);
    }
}

#[test]
fn every_route_redacts_its_prompt_fields() {
    let email = "ann@example.com";
    for (route, body) in [
        (Route::ChatCompletions, json!({"messages": [{"role": "tool", "content": email}]})),
        (Route::Completions, json!({"prompt": email, "suffix": email})),
        (Route::Completions, json!({"prompt": [email, [1, 2], email]})),
        (Route::Embeddings, json!({"input": email})),
        (Route::Embeddings, json!({"input": ["x", email]})),
        (Route::Responses, json!({"input": email, "instructions": email})),
        (
            Route::Responses,
            json!({"input": [
                {"role": "user", "content": [{"type": "input_text", "text": email}]},
                {"type": "function_call_output", "call_id": "c", "output": email},
                {"role": "assistant", "content": email},
            ]}),
        ),
        (Route::OllamaChat, json!({"messages": [{"role": "user", "content": email}]})),
        (Route::OllamaGenerate, json!({"prompt": email, "system": email, "suffix": email})),
        (Route::OllamaEmbed, json!({"input": [email]})),
    ] {
        let mut redacted = object(body.clone());
        let redaction = redactor().redact(route, &mut redacted);
        let bytes = serde_json::to_string(&redacted).unwrap();
        assert!(!bytes.contains(email) && bytes.contains("<EMAIL_1>"), "{route:?}: {bytes}");
        assert!(!redaction.is_empty());
    }
    let mut show = object(json!({"model": email}));
    assert!(redactor().redact(Route::OllamaShow, &mut show).is_empty());
}

#[test]
fn answers_of_every_route_get_the_values_back() {
    let mut body = chat("mail ann@example.com");
    let redaction = redactor().redact(Route::ChatCompletions, &mut body);
    let placeholder = "to <EMAIL_1>.";
    let restored = "to ann@example.com.";
    for (answer, path) in [
        (json!({"choices": [{"message": {"content": placeholder}}]}), "/choices/0/message/content"),
        (
            json!({"choices": [{"message": {"content": null, "tool_calls": [{"function": {"name": "f", "arguments": placeholder}}]}}]}),
            "/choices/0/message/tool_calls/0/function/arguments",
        ),
        (json!({"choices": [{"text": placeholder}]}), "/choices/0/text"),
        (json!({"choices": [{"delta": {"content": placeholder}}]}), "/choices/0/delta/content"),
        (json!({"message": {"role": "assistant", "content": placeholder}}), "/message/content"),
        (json!({"response": placeholder, "done": false}), "/response"),
        (json!({"output": [{"content": [{"type": "output_text", "text": placeholder}]}]}), "/output/0/content/0/text"),
        (json!({"output_text": placeholder}), "/output_text"),
        (json!({"type": "response.output_text.delta", "delta": placeholder}), "/delta"),
        (
            json!({"type": "response.completed", "response": {"output": [{"content": [{"text": placeholder}]}]}}),
            "/response/output/0/content/0/text",
        ),
    ] {
        let mut answer = object(answer);
        redaction.restore_answer(&mut answer);
        assert_eq!(Value::Object(answer).pointer(path).and_then(Value::as_str), Some(restored), "{path}");
    }
    // Nothing redacted: answers are left alone.
    let none = redactor().redact(Route::ChatCompletions, &mut chat("hello"));
    let mut answer = object(json!({"choices": [{"text": "<EMAIL_1>"}]}));
    none.restore_answer(&mut answer);
    assert_eq!(answer["choices"][0]["text"], "<EMAIL_1>");
}

#[test]
fn debug_shows_counts_never_values() {
    let mut body = chat("ann@example.com, +44 20 7946 0958");
    let redaction = redactor().redact(Route::ChatCompletions, &mut body);
    let shown = format!("{redaction:?} {:?}", redaction.stream());
    assert!(shown.contains("\"email\": 1") && shown.contains("\"phone\": 1"), "{shown}");
    assert!(!shown.contains("ann") && !shown.contains("7946") && !shown.contains("EMAIL"), "{shown}");
}

#[test]
fn a_stream_holds_back_only_what_may_be_a_placeholder() {
    let mut body = chat("ann@example.com and bob@example.org");
    let redaction = redactor().redact(Route::ChatCompletions, &mut body);
    let mut stream = redaction.stream();
    assert_eq!(stream.push(0, "Dear <EM"), "Dear ");
    assert_eq!(stream.push(1, "x < y"), "x < y", "a `<` that starts no placeholder is sent");
    assert_eq!(stream.push(0, "AIL_2"), "");
    assert_eq!(stream.push(0, ">, hi <b>"), "bob@example.org, hi <b>");
    assert_eq!(stream.push(0, " <EMAIL_1> <EMAIL_"), " ann@example.com ");
    assert_eq!(stream.finish(0), "<EMAIL_");
    assert_eq!(stream.finish(0), "");
    assert_eq!(stream.finish(7), "");
}

#[test]
fn hostile_bodies_neither_panic_nor_explode() {
    // A large prompt with personal data throughout.
    let line = "Contact ann@example.com or call +44 20 7946 0958 about card 4111 1111 1111 1111.\n";
    let large = line.repeat(20_000);
    let mut body = chat(&large);
    let started = std::time::Instant::now();
    let redaction = redactor().redact(Route::ChatCompletions, &mut body);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(redaction.counts()["email"], 20_000);
    assert_eq!(redaction.restore(body["messages"][0]["content"].as_str().unwrap()), large);
    // Odd shapes: non-string content, deep nesting, wrong types at every field.
    let mut deep = json!("ann@example.com");
    for _ in 0..100 {
        deep = json!([{"content": deep}]);
    }
    for body in [
        json!({"messages": [1, null, true, "ann@example.com", {"content": 7}, {"content": [1, "x", {"text": 2}]}]}),
        json!({"messages": deep.clone(), "prompt": deep.clone(), "input": deep}),
        json!({"messages": {"content": "ann@example.com"}, "prompt": {"a": 1}, "input": 5, "instructions": []}),
    ] {
        for route in Route::ALL {
            let mut body = object(body.clone());
            let _ = redactor().redact(route, &mut body);
        }
    }
    // Answers of odd shapes, and a stream fed junk.
    let mut body = chat("ann@example.com");
    let redaction = redactor().redact(Route::ChatCompletions, &mut body);
    let mut answer =
        object(json!({"choices": "x", "message": 1, "output": [1, {"content": "x"}], "response": {"response": 2}}));
    redaction.restore_answer(&mut answer);
    let mut stream = redaction.stream();
    // Only the last `<` may open a placeholder: it alone is held back.
    assert_eq!(stream.push(usize::MAX, &"<".repeat(100_000)).len(), 99_999);
    assert_eq!(stream.finish(usize::MAX), "<");
}

proptest::proptest! {
    /// However a stream cuts the text, the restored deltas put together are the whole text
    /// restored, and what is sent never holds a piece of a placeholder.
    #[test]
    fn a_placeholder_split_anywhere_in_a_stream_is_restored(
        before in "[a-z <>_A-Z]{0,12}",
        after in "[a-z <>_A-Z]{0,12}",
        which in 0usize..3,
    ) {
        let mut body = chat("ann@example.com, bob@example.org, +44 20 7946 0958");
        let redaction = redactor().redact(Route::ChatCompletions, &mut body);
        let placeholder = ["<EMAIL_1>", "<EMAIL_2>", "<PHONE_1>"][which];
        let text = format!("{before}{placeholder}{after}");
        let whole = redaction.restore(&text).into_owned();
        // Every cut into two deltas, and every cut into three.
        for first in 0..=text.len() {
            let mut stream = redaction.stream();
            let mut sent = stream.push(0, &text[..first]);
            sent.push_str(&stream.push(0, &text[first..]));
            sent.push_str(&stream.finish(0));
            proptest::prop_assert_eq!(&sent, &whole);
            for second in first..=text.len() {
                let mut stream = redaction.stream();
                let mut pieces = vec![stream.push(0, &text[..first]), stream.push(0, &text[first..second])];
                pieces.push(stream.push(0, &text[second..]));
                pieces.push(stream.finish(0));
                for piece in &pieces {
                    proptest::prop_assert!(!piece.contains("<EMAIL_1") || piece.contains("<EMAIL_1>"));
                }
                proptest::prop_assert_eq!(pieces.concat(), whole.clone());
            }
        }
    }
}
