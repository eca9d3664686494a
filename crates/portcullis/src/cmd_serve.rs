//! `portcullis serve`: validate the config, load and check the models, serve.

use std::{path::Path, process::ExitCode};

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Validate the configuration, print it as the server would run it, and exit.
    #[arg(long)]
    check_config: bool,
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = gateway::Config::load(config_path).context("invalid configuration")?;
    if args.check_config {
        // The config holds paths and limits; secrets live in their own files, and a password in
        // a service URL is shown as ***.
        println!("{config:#?}");
        return Ok(ExitCode::SUCCESS);
    }
    // Listen for signals before anything starts, so none is missed.
    let shutdown = gateway::serve::shutdown_signal();
    gateway::serve(config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
