//! Dependencies flow one way: a module may use only the modules declared before it in `lib.rs`.
//!
//! The order of the `pub mod` lines in `lib.rs` is the one place the layering is written. This
//! test reads every module's sources (tests excluded: they may reach anything) and fails on a
//! `crate::<module>` path that names a module declared later, so a back edge, and with it a
//! cycle, cannot land unnoticed.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// The top-level modules in the order `lib.rs` declares them.
fn module_order(lib: &str) -> Vec<String> {
    let lib = strip_tests(&strip_comments(lib));
    lib.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line.strip_prefix("pub mod ").or_else(|| line.strip_prefix("mod "))?;
            rest.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

/// Every top-level module that `source` names through a `crate::` path, in `use` trees too.
fn crate_paths(source: &str) -> Vec<String> {
    let source = strip_tests(&strip_comments(source));
    let bytes = source.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(offset) = source[at..].find("crate::") {
        let start = at + offset;
        at = start + "crate::".len();
        // `portcullis_crate::x` is not a `crate::` path.
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        if bytes.get(at) == Some(&b'{') {
            found.extend(use_group(&source[at + 1..]));
        } else {
            found.push(ident(&source[at..]).to_owned());
        }
    }
    found.retain(|name| !name.is_empty() && name != "self");
    found
}

/// The first segment of each path in a `{ a::b, c, d::{e, f} }` group (the text after `{`).
fn use_group(group: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    let mut expecting = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expecting = true,
            c if expecting && depth == 0 && (c.is_alphabetic() || c == '_') => {
                names.push(ident(&group[i..]).to_owned());
                expecting = false;
            }
            _ => {}
        }
    }
    names
}

fn ident(text: &str) -> &str {
    let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(text.len());
    &text[..end]
}

/// `source` without `//` comments (doc comments included) and without string literals' text.
fn strip_comments(source: &str) -> String {
    source
        .lines()
        .map(|line| {
            let mut out = String::with_capacity(line.len());
            let mut in_string = false;
            let mut previous = ' ';
            for (i, c) in line.char_indices() {
                if !in_string && c == '/' && line[i..].starts_with("//") {
                    break;
                }
                if c == '"' && previous != '\\' {
                    in_string = !in_string;
                } else if !in_string {
                    out.push(c);
                }
                previous = if previous == '\\' && c == '\\' { ' ' } else { c };
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `source` without the items marked `#[cfg(test)]` (a `mod tests { … }`, a test-only `use`).
fn strip_tests(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let end = match (item.find(';'), item.find('{')) {
            (Some(semi), Some(brace)) if semi < brace => semi + 1,
            (Some(semi), None) => semi + 1,
            (_, Some(brace)) => matching_brace(item, brace).map_or(item.len(), |close| close + 1),
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The index of the `}` closing the `{` at `open`.
fn matching_brace(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The sources of module `name`: `name.rs` and everything under `name/`, test files excluded.
fn module_sources(src: &Path, name: &str) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let file = src.join(format!("{name}.rs"));
    if file.is_file() {
        files.push(file);
    }
    let mut dirs = vec![src.join(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.retain(|path| {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        !(stem == "tests" || stem.ends_with("_tests"))
    });
    files.sort();
    files.into_iter().map(|path| (path.clone(), std::fs::read_to_string(&path).unwrap_or_default())).collect()
}

/// Each import that points up the order: `(file, importing module, imported module)`.
fn upward_imports<'a>(
    order: &[String],
    modules: impl IntoIterator<Item = (&'a str, PathBuf, String)>,
) -> Vec<(PathBuf, String, String)> {
    let rank: BTreeMap<&str, usize> = order.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let mut wrong = Vec::new();
    for (module, path, source) in modules {
        let Some(&own) = rank.get(module) else { continue };
        for used in crate_paths(&source) {
            if let Some(&theirs) = rank.get(used.as_str())
                && theirs > own
            {
                wrong.push((path.clone(), module.to_owned(), used));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    wrong
}

#[test]
fn no_module_uses_a_module_declared_after_it_in_lib_rs() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let order = module_order(&lib);
    assert!(order.len() > 20, "lib.rs declares the modules: {order:?}");
    let sources: Vec<(String, PathBuf, String)> = order
        .iter()
        .flat_map(|module| {
            module_sources(&src, module).into_iter().map(move |(path, text)| (module.clone(), path, text))
        })
        .collect();
    assert!(sources.len() > order.len(), "every module's files were read");
    let wrong = upward_imports(&order, sources.iter().map(|(m, p, s)| (m.as_str(), p.clone(), s.clone())));
    let listed: Vec<String> = wrong
        .iter()
        .map(|(path, module, used)| {
            format!("{} ({module}) uses crate::{used}, declared after it", path.strip_prefix(&src).unwrap().display())
        })
        .collect();
    assert!(listed.is_empty(), "imports that point up the module order of lib.rs:\n{}", listed.join("\n"));
}

#[test]
fn an_import_of_a_later_module_is_caught_in_every_form_it_takes() {
    let order: Vec<String> = ["time", "store", "authn", "router"].iter().map(|m| (*m).to_owned()).collect();
    let check = |module: &str, source: &str| {
        upward_imports(&order, [(module, PathBuf::from("x.rs"), source.to_owned())])
            .into_iter()
            .map(|(_, _, used)| used)
            .collect::<Vec<_>>()
    };
    // Down the order: allowed.
    assert!(check("authn", "use crate::{store::Store, time};\nfn f() { crate::time::now(); }").is_empty());
    // A back edge in each spelling is found.
    assert_eq!(check("store", "use crate::authn::Principal;"), ["authn"]);
    assert_eq!(check("store", "fn f(p: &crate::authn::Principal) {}"), ["authn"]);
    assert_eq!(check("store", "use crate::{\n    time::now,\n    router::{self, X},\n};"), ["router"]);
    assert_eq!(check("time", "use crate::{store, authn::{A, B}};"), ["authn", "store"]);
    // Comments, strings and test-only code do not count.
    assert!(check("store", "// see crate::authn::Principal\n/// [`crate::router`]\nfn f() {}").is_empty());
    assert!(check("store", "const S: &str = \"crate::authn\";").is_empty());
    assert!(check("store", "#[cfg(test)]\nmod tests {\n    use crate::authn::P;\n    fn f() { {} }\n}").is_empty());
    assert!(check("store", "#[cfg(test)]\nuse crate::router::X;\nfn f() {}").is_empty());
    // ...but code after a test module does.
    assert_eq!(check("store", "#[cfg(test)]\nmod tests { fn f() {} }\nuse crate::router::X;"), ["router"]);
    // The order comes from lib.rs's declarations, in order, whatever their visibility.
    assert_eq!(
        module_order("//! doc\npub mod time;\nmod store;\n#[cfg(test)]\nmod tidy;\npub use x::Y;\n"),
        ["time", "store"]
    );
}
