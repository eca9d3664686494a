//! `portcullis keys`: create, list, show, revoke and rotate API keys in the configured store.

use std::{path::Path, process::ExitCode};

use anyhow::Context;
use gateway::{
    keys::{Keyring, NewKey, describe_limits},
    limit_spec::{Budget, format_usd, parse_tpm},
    store::{KeyLimits, KeyRecord, ModelScope, Scopes},
    time::{format_timestamp, now, parse_duration},
};

/// Limits a key carries; unset ones fall back to the config's `[limits]`.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Sustained request rate, e.g. 50/s, 3000/min, 100/h.
    #[arg(long)]
    rate: Option<String>,
    /// Requests allowed at once above the rate (needs --rate; default: one second's worth).
    #[arg(long)]
    burst: Option<u32>,
    /// Requests per day or month, e.g. 100000/day (repeat for both windows).
    #[arg(long)]
    quota: Vec<String>,
    /// Inference rows per day or month, e.g. 5000000/month (repeat for both windows).
    #[arg(long)]
    row_quota: Vec<String>,
    /// Requests in flight at once.
    #[arg(long)]
    concurrency: Option<u32>,
    /// Delegate keys: each end user's rate (the limits above count all users together).
    #[arg(long)]
    user_rate: Option<String>,
    /// Delegate keys: each end user's burst (needs --user-rate).
    #[arg(long)]
    user_burst: Option<u32>,
    /// Delegate keys: each end user's requests in flight at once.
    #[arg(long)]
    user_concurrency: Option<u32>,
    /// Delegate keys: each end user's requests per day or month, e.g. 500/day.
    #[arg(long)]
    user_quota: Vec<String>,
    /// Delegate keys: distinct end users per window, e.g. 10000/h (default: [limits] max_users).
    #[arg(long)]
    max_users: Option<String>,
    /// Language models: the most tokens a request may ask for (the model's own cap also holds).
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Language models: tokens (read and written) per minute, e.g. 100000.
    #[arg(long)]
    tpm: Option<String>,
    /// Language models: tokens per day or month, e.g. 1000000/day (repeat for both windows).
    #[arg(long)]
    token_quota: Vec<String>,
    /// Language models: dollars per day or month at the models' prices, e.g. 20usd/day (repeat
    /// for both windows).
    #[arg(long)]
    spend: Vec<String>,
    /// Delegate keys: each end user's tokens per minute.
    #[arg(long)]
    user_tpm: Option<String>,
    /// Delegate keys: each end user's tokens per day or month, e.g. 50000/day.
    #[arg(long)]
    user_token_quota: Vec<String>,
    /// Delegate keys: each end user's dollars per day or month, e.g. 0.50usd/day.
    #[arg(long)]
    user_spend: Vec<String>,
}

impl LimitArgs {
    fn parse(&self) -> anyhow::Result<KeyLimits> {
        let quotas = |texts: &[String]| -> anyhow::Result<Vec<_>> {
            texts.iter().map(|text| text.parse().map_err(anyhow::Error::msg)).collect()
        };
        let budget = |tpm: Option<&str>, tokens: &[String], spend: &[String]| -> anyhow::Result<Budget> {
            Ok(Budget {
                tpm: tpm.map(parse_tpm).transpose().map_err(anyhow::Error::msg)?,
                tokens: quotas(tokens)?,
                spend: spend
                    .iter()
                    .map(|text| text.parse().map_err(anyhow::Error::msg))
                    .collect::<anyhow::Result<_>>()?,
            })
        };
        Ok(KeyLimits {
            rate: self.rate.as_deref().map(str::parse).transpose().map_err(anyhow::Error::msg)?,
            burst: self.burst,
            concurrency: self.concurrency,
            quotas: quotas(&self.quota)?,
            row_quotas: quotas(&self.row_quota)?,
            user_rate: self.user_rate.as_deref().map(str::parse).transpose().map_err(anyhow::Error::msg)?,
            user_burst: self.user_burst,
            user_concurrency: self.user_concurrency,
            user_quotas: quotas(&self.user_quota)?,
            max_users: self.max_users.as_deref().map(str::parse).transpose().map_err(anyhow::Error::msg)?,
            max_tokens: self.max_tokens,
            budget: budget(self.tpm.as_deref(), &self.token_quota, &self.spend)?,
            user_budget: budget(self.user_tpm.as_deref(), &self.user_token_quota, &self.user_spend)?,
        })
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a key; its secret is printed once and never stored.
    Create {
        /// A name that says who uses the key, e.g. checkout-backend.
        #[arg(long)]
        name: String,
        /// The team or person responsible.
        #[arg(long)]
        owner: Option<String>,
        /// Models the key may call: a comma-separated list, or * for all.
        #[arg(long, required_unless_present = "admin")]
        models: Option<String>,
        /// An admin key (ptcl_ak_): opens the admin listener's /usage and calls no model.
        #[arg(long, conflicts_with_all = ["models", "output", "widen_output", "delegate"])]
        admin: bool,
        /// What the key may do: infer, metadata; and on language models tools, logprobs, images
        /// (comma-separated; each of the last three also needs the model to allow it).
        #[arg(long, default_value = "infer,metadata")]
        scopes: String,
        /// Lifetime, e.g. 90d or 12h, or "never".
        #[arg(long, default_value = "90d")]
        expires: String,
        /// Output policy: label, top_k=N[:round=D], scores[:round=D] or raw. Without it, each
        /// model's default applies; with it, the narrower of the two.
        #[arg(long)]
        output: Option<String>,
        /// Let --output be wider than a model's default (an explicit admin decision).
        #[arg(long, requires = "output")]
        widen_output: bool,
        /// Let the key name the end user it acts for (header Portcullis-On-Behalf-Of): for app
        /// backends. Its limits count all its users together; --user-* limits each one.
        #[arg(long)]
        delegate: bool,
        #[command(flatten)]
        limits: LimitArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace a key's limits (those not given return to the config's defaults).
    Update {
        id: String,
        #[command(flatten)]
        limits: LimitArgs,
        #[arg(long)]
        json: bool,
    },
    /// Requests, inference rows, tokens and spend per key, model and UTC day.
    Usage {
        /// One key (default: all).
        id: Option<String>,
        /// First day, YYYY-MM-DD (default: the first of this month).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one key.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke { id: String },
    /// Issue a successor; the old key keeps working for the overlap, then stops.
    Rotate {
        id: String,
        /// How long the old key stays valid, e.g. 24h; 0s stops it at once.
        #[arg(long, default_value = "24h")]
        overlap: String,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn keyring(config_path: &Path) -> anyhow::Result<Keyring> {
    let config = gateway::Config::load(config_path).context("invalid configuration")?;
    let (store, pepper) = gateway::serve::open_keyring(&config).await?;
    // With shared limits, key changes are announced to every running node at once.
    let notifier = match &config.limits.backend {
        gateway::config::LimitsBackend::Redis { url, prefix, ca_file } => Some(std::sync::Arc::new(
            gateway::limits::redis::Shared::new(url.expose(), prefix, ca_file.as_deref())
                .map_err(anyhow::Error::msg)?,
        )),
        gateway::config::LimitsBackend::Memory => None,
    };
    Ok(Keyring::new(store, pepper, config.audit).with_notifier(notifier))
}

pub async fn run(config_path: &Path, command: Command) -> anyhow::Result<ExitCode> {
    let keyring = keyring(config_path).await?;
    match command {
        Command::Create {
            name,
            owner,
            models,
            admin,
            scopes,
            expires,
            output,
            widen_output,
            delegate,
            limits,
            json,
        } => {
            let expires_in = match expires.as_str() {
                "never" => None,
                text => Some(parse_duration(text).map_err(anyhow::Error::msg)?.as_secs()),
            };
            if admin {
                if limits.parse()? != KeyLimits::default() {
                    anyhow::bail!("an admin key has no limits: it calls no model");
                }
                let (secret, record) = keyring.create_admin(&name, owner, expires_in).await?;
                print_new_key(secret.expose(), &record, json, "created");
                return Ok(ExitCode::SUCCESS);
            }
            let limits = limits.parse()?;
            let output = output.map(|text| text.parse()).transpose().map_err(anyhow::Error::msg)?;
            let models = parse_models(models.as_deref().unwrap_or_default());
            let scopes = Scopes::parse(&scopes).map_err(anyhow::Error::msg)?;
            let new = NewKey { name, owner, models, scopes, output, widen_output, delegate, expires_in, limits };
            let (secret, record) = keyring.create(&new).await?;
            print_new_key(secret.expose(), &record, json, "created");
        }
        Command::Update { id, limits, json } => {
            let record = keyring.update_limits(&id, &limits.parse()?).await?;
            if json {
                println!("{}", describe(&record));
            } else {
                println!(
                    "Key {id} limits: {}. Servers apply them within their key cache interval.",
                    describe_limits(&record.limits)
                );
            }
        }
        Command::Usage { id, since, json } => {
            let since = match since {
                Some(day) => gateway::time::parse_day(&day).map_err(anyhow::Error::msg)?,
                None => gateway::time::month_start(now()),
            };
            let rows = keyring.usage(id.as_deref(), &since).await?;
            if json {
                println!("{}", serde_json::Value::Array(rows.iter().map(gateway::store::Usage::to_json).collect()));
            } else if rows.is_empty() {
                println!("No usage since {since}.");
            } else {
                println!(
                    "{:<10}  {:<8}  {:<24}  {:>10}  {:>12}  {:>12}  {:>12}  {:>12}  {:>9}",
                    "DAY", "ID", "MODEL", "REQUESTS", "ROWS", "TOKENS IN", "TOKENS OUT", "SPEND USD", "ESTIMATED"
                );
                for row in &rows {
                    println!(
                        "{:<10}  {:<8}  {:<24}  {:>10}  {:>12}  {:>12}  {:>12}  {:>12}  {:>9}",
                        row.day,
                        row.kid,
                        truncate(&row.model, 24),
                        row.requests,
                        row.rows,
                        row.tokens_in,
                        row.tokens_out,
                        format_usd(row.spend_micros),
                        row.estimated
                    );
                }
            }
        }
        Command::List { json } => {
            let keys = keyring.list().await?;
            if json {
                println!("{}", serde_json::Value::Array(keys.iter().map(describe).collect()));
            } else {
                print_table(&keys);
            }
        }
        Command::Show { id, json } => {
            let key = keyring.show(&id).await?;
            if json {
                println!("{}", describe(&key));
            } else {
                print_record(&key);
            }
        }
        Command::Revoke { id } => {
            if keyring.revoke(&id).await? {
                println!("Key {id} revoked. Every running server was told and refuses it now.");
            } else {
                println!("Key {id} revoked. Servers refuse it within their key cache interval (5 s by default).");
            }
        }
        Command::Rotate { id, overlap, json } => {
            let overlap = parse_duration(&overlap).map_err(anyhow::Error::msg)?;
            let (secret, record) = keyring.rotate(&id, overlap.as_secs()).await?;
            print_new_key(secret.expose(), &record, json, "rotated");
            if !json {
                println!(
                    "The old key {id} stays valid until {}.",
                    format_timestamp(now().saturating_add(i64::try_from(overlap.as_secs()).unwrap_or(i64::MAX)))
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_models(text: &str) -> ModelScope {
    if text.trim() == "*" {
        ModelScope::All
    } else {
        ModelScope::Only(text.split(',').map(str::trim).filter(|model| !model.is_empty()).map(str::to_owned).collect())
    }
}

fn print_new_key(secret: &str, record: &KeyRecord, json: bool, verb: &str) {
    if json {
        let mut description = describe(record);
        description["key"] = serde_json::Value::String(secret.to_owned());
        println!("{description}");
        return;
    }
    println!("Key {verb}. Copy it now: it is shown only this once and stored only as a hash.\n");
    println!("    {secret}\n");
    print_record(record);
}

fn describe(record: &KeyRecord) -> serde_json::Value {
    serde_json::json!({
        "id": record.kid,
        "kind": if record.kind == apikey::KeyKind::Admin { "admin" } else { "secret" },
        "name": record.name,
        "owner": record.owner,
        "models": record.models.to_string(),
        "scopes": record.scopes.names(),
        "output": record.output.map(|policy| policy.to_string()),
        "widen_output": record.widen_output,
        "delegate": record.delegate,
        "status": record.status_at(now()),
        "created_at": format_timestamp(record.created_at),
        "expires_at": record.expires_at.map(format_timestamp),
        "revoked_at": record.revoked_at.map(format_timestamp),
        "replaced_by": record.replaced_by,
        "limits": describe_limits(&record.limits),
    })
}

fn print_record(record: &KeyRecord) {
    println!("id:          {}", record.kid);
    println!("name:        {}", record.name);
    println!("owner:       {}", record.owner.as_deref().unwrap_or("-"));
    println!("models:      {}", record.models);
    println!("scopes:      {}", record.scopes.names().join(","));
    let output = record.output.map_or_else(|| "model default".to_owned(), |policy| policy.to_string());
    println!("output:      {output}{}", if record.widen_output { " (may widen)" } else { "" });
    if record.delegate {
        println!("delegate:    yes (may name end users with Portcullis-On-Behalf-Of)");
    }
    println!("limits:      {}", describe_limits(&record.limits));
    println!("status:      {}", record.status_at(now()));
    println!("created:     {}", format_timestamp(record.created_at));
    println!("expires:     {}", record.expires_at.map_or_else(|| "never".to_owned(), format_timestamp));
    if let Some(revoked_at) = record.revoked_at {
        println!("revoked:     {}", format_timestamp(revoked_at));
    }
    if let Some(successor) = &record.replaced_by {
        println!("replaced by: {successor}");
    }
}

fn print_table(keys: &[KeyRecord]) {
    if keys.is_empty() {
        println!("No keys. Create one with: portcullis keys create --name NAME --models MODEL");
        return;
    }
    println!("{:<8}  {:<24}  {:<9}  {:<24}  {:<20}  {:<20}", "ID", "NAME", "STATUS", "MODELS", "CREATED", "EXPIRES");
    let now = now();
    for key in keys {
        println!(
            "{:<8}  {:<24}  {:<9}  {:<24}  {:<20}  {:<20}",
            key.kid,
            truncate(&key.name, 24),
            key.status_at(now),
            truncate(&key.models.to_string(), 24),
            format_timestamp(key.created_at),
            key.expires_at.map_or_else(|| "never".to_owned(), format_timestamp)
        );
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(width - 1).collect();
        short.push('…');
        short
    }
}
