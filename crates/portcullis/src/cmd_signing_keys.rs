//! `portcullis signing-keys`: the token broker's signing keys.

use std::{path::Path, process::ExitCode};

use anyhow::{Context, bail};
use clap::Subcommand;
use gateway::broker::signing::{self, SigningSecret};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a new key sign; the previous key's public part stays in /.well-known/jwks.json
    /// until every token it signed has expired. Running nodes pick the new key up within 30 s.
    Rotate {
        #[arg(long)]
        json: bool,
    },
    /// List the keys: which one signs, which are retired and until when they verify.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config_path: &Path, command: Command) -> anyhow::Result<ExitCode> {
    let config = gateway::Config::load(config_path).context("invalid configuration")?;
    let Some(broker) = config.broker.clone() else {
        bail!("the configuration has no [broker] section: there are no signing keys to manage");
    };
    let (store, _) = gateway::serve::open_keyring(&config).await?;
    let overlap = i64::try_from((broker.token_lifetime + broker.max_skew).as_secs()).unwrap_or(i64::MAX);
    let now = gateway::time::now();
    match command {
        Command::Rotate { json } => {
            let env = std::env::var(signing::SECRET_ENV).ok();
            // Never create the secret here: a key sealed under a secret the nodes do not have
            // would stop them from signing.
            let secret = SigningSecret::load(&broker.signing_secret_file, env.as_deref(), false).context(
                "the signing secret (start `portcullis serve` once to create it, or set PORTCULLIS_SIGNING_SECRET)",
            )?;
            let record = signing::rotate(store.as_ref(), &secret, broker.algorithm, now).await?;
            // Keys retired long ago verify nothing any more: drop them (a day's margin).
            let pruned = store.prune_signing_keys(now - overlap - 86_400).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "kid": record.kid, "alg": record.alg, "created_at": record.created_at, "pruned": pruned })
                );
            } else {
                println!("signing with {} ({}) from now on", record.kid, record.alg);
                println!(
                    "the previous key verifies its tokens until {}",
                    gateway::time::format_timestamp(now + overlap)
                );
            }
        }
        Command::List { json } => {
            let keys = store.signing_keys().await?;
            let rows: Vec<serde_json::Value> = keys
                .iter()
                .map(|key| {
                    let status = match key.retired_at {
                        None => "signing",
                        Some(retired) if retired + overlap >= now => "verifying",
                        Some(_) => "expired",
                    };
                    serde_json::json!({
                        "kid": key.kid,
                        "alg": key.alg,
                        "status": status,
                        "created_at": gateway::time::format_timestamp(key.created_at),
                        "verifies_until": key.retired_at.map(|retired| gateway::time::format_timestamp(retired + overlap)),
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{:<18} {:<6} {:<10} {:<21} VERIFIES UNTIL", "KID", "ALG", "STATUS", "CREATED");
                for row in rows {
                    println!(
                        "{:<18} {:<6} {:<10} {:<21} {}",
                        row["kid"].as_str().unwrap_or(""),
                        row["alg"].as_str().unwrap_or(""),
                        row["status"].as_str().unwrap_or(""),
                        row["created_at"].as_str().unwrap_or(""),
                        row["verifies_until"].as_str().unwrap_or("-"),
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
