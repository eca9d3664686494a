//! `portcullis`: one binary for the secure model gateway and its tools.
//!
//! Each subcommand lives in its own `cmd_<name>.rs`. Exit codes: 0 success, 1 findings (for the
//! scanning commands), 2 error.

mod cmd_audit;
mod cmd_data;
mod cmd_demo;
mod cmd_keys;
mod cmd_leaks;
mod cmd_serve;
mod cmd_signing_keys;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// A request allocates many small, short-lived buffers; mimalloc serves them faster than the
/// system allocator (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about = "Secure ML model serving: deny by default, keys, audit.")]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "PORTCULLIS_CONFIG", default_value = "portcullis.toml")]
    config: PathBuf,

    /// Log filter, e.g. `info` or `warn,portcullis::access=info`.
    #[arg(long, global = true, env = "PORTCULLIS_LOG")]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the models in the configuration (Open Inference Protocol V2 over HTTP).
    Serve(cmd_serve::Args),
    /// Run a ready-made server on 127.0.0.1 with a bundled model, a fresh key and curl lines.
    Demo(cmd_demo::Args),
    /// Manage API keys: create, list, show, revoke, rotate.
    // Boxed: its limit flags make it several times larger than the other commands.
    #[command(subcommand)]
    Keys(Box<cmd_keys::Command>),
    /// Check the audit log's tamper evidence, or repair a torn tail.
    #[command(subcommand)]
    Audit(cmd_audit::Command),
    /// The token broker's signing keys: rotate, list.
    #[command(subcommand)]
    SigningKeys(cmd_signing_keys::Command),
    /// Personal data in datasets: scan, protect, reveal, risk.
    #[command(subcommand)]
    Data(cmd_data::Command),
    /// Credentials embedded in app bundles (APK, AAB, IPA) and source trees: scan, rules.
    #[command(subcommand)]
    Leaks(cmd_leaks::Command),
}

/// How log lines are written: JSON for servers (machines read them), compact text for people.
#[derive(Debug, Clone, Copy)]
enum LogFormat {
    Json,
    Text,
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => builder.compact().with_target(false).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                init_logging(cli.log.as_deref().unwrap_or("info"), LogFormat::Json);
                cmd_serve::run(&cli.config, args).await
            }
            Command::Demo(args) => {
                init_logging(cli.log.as_deref().unwrap_or("info"), LogFormat::Text);
                cmd_demo::run(args).await
            }
            Command::Audit(command) => {
                init_logging(cli.log.as_deref().unwrap_or("warn"), LogFormat::Text);
                cmd_audit::run(&cli.config, command)
            }
            Command::Keys(command) => {
                init_logging(cli.log.as_deref().unwrap_or("warn"), LogFormat::Text);
                cmd_keys::run(&cli.config, *command).await
            }
            Command::Data(command) => {
                init_logging(cli.log.as_deref().unwrap_or("warn"), LogFormat::Text);
                cmd_data::run(command)
            }
            Command::Leaks(command) => {
                init_logging(cli.log.as_deref().unwrap_or("warn"), LogFormat::Text);
                cmd_leaks::run(&cli.config, command).await
            }
            Command::SigningKeys(command) => {
                init_logging(cli.log.as_deref().unwrap_or("warn"), LogFormat::Text);
                cmd_signing_keys::run(&cli.config, command).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
