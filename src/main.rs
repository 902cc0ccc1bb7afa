//! The `pystash` binary: flags -> [`Config`] -> [`runtime::run`]; errors -> exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use pystash::config::{Args, Config};
use pystash::{host, runtime};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_env("PYSTASH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let config = match Config::from_args(args, host::hostname) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("pystash: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime::run(config) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    }
}
