//! The `ringway` command line: `run` and `check`. (The demo, the load generator and the echo
//! backends are `ringway-bench`, in `bench/`, so this binary links no tokio.)

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ringway", version, about = "Thread-per-core RPC proxy for Thrift and gRPC")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy until SIGTERM/SIGINT (drains first); SIGHUP reloads the config file.
    Run {
        #[arg(long, short, default_value = "conf/ringway.toml")]
        config: PathBuf,
    },
    /// Validate a config file and print every problem with its key path (exit 2 if invalid).
    Check {
        #[arg(long, short, default_value = "conf/ringway.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    ringway::logging::init();
    match Cli::parse().command {
        Command::Check { config } => match ringway::config::Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} listeners, {} clusters, {} workers)",
                    config.display(),
                    c.listeners.len(),
                    c.clusters.len(),
                    c.runtime.workers
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: invalid\n{e}", config.display());
                ExitCode::from(2)
            }
        },
        Command::Run { config: path } => {
            let config = match ringway::config::Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: invalid\n{e}", path.display());
                    return ExitCode::from(2);
                }
            };
            match ringway::control::run_until_signal(&path, config) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ringway: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
