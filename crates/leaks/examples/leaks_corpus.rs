//! Writes the seeded leaks corpus: APK-, AAB- and IPA-like archives and source trees with keys
//! planted in every storage place, and decoys; the truth (every planted key, where, and every
//! decoy) goes to `DIR/truth.json`, which a scorer must move out before scanning `DIR`.
//!
//! `cargo run --release -p leaks --features corpus --example leaks_corpus -- DIR [SEED] [COPIES]`

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(directory) = args.next() else {
        eprintln!("usage: leaks_corpus DIR [SEED] [COPIES]");
        return ExitCode::from(2);
    };
    let seed = args.next().and_then(|text| text.parse().ok()).unwrap_or(7);
    let copies = args.next().and_then(|text| text.parse().ok()).unwrap_or(1);
    match leaks::corpus::app::write(std::path::Path::new(&directory), seed, copies) {
        Ok(truth) => {
            let path = std::path::Path::new(&directory).join("truth.json");
            let text = serde_json::to_string_pretty(&truth).unwrap_or_default();
            if let Err(error) = std::fs::write(&path, text) {
                eprintln!("error: {}: {error}", path.display());
                return ExitCode::from(2);
            }
            println!("{} planted keys, {} decoys in {directory}", truth.planted.len(), truth.decoys.len());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}
