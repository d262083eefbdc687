//! Command-line entry point of the keyserver.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use keyserver::Error;
use keyserver::policy::PolicyError;
use tracing_subscriber::EnvFilter;

/// keyrelay signing server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve signing requests until SIGTERM or SIGINT.
    Serve {
        /// Policy file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// File that receives the bound address (such as 127.0.0.1:4433) once the server
        /// accepts connections.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Validate a policy: its syntax, its PINs, and its keys on their tokens.
    Check {
        /// Policy file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Manage client credentials.
    Credential {
        #[command(subcommand)]
        command: CredentialCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CredentialCommand {
    /// Generate a KeyId and KeySecret, and print the policy entry for them.
    New {
        /// Comma-separated names of the keys the credential may use.
        #[arg(
            long,
            value_name = "NAME[,NAME...]",
            value_delimiter = ',',
            required = true
        )]
        keys: Vec<String>,
        /// Policy file in which the keys must exist.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    let result = match cli.command {
        Command::Serve { config, ready_file } => serve(config, ready_file),
        Command::Check { config } => check(config),
        Command::Credential {
            command: CredentialCommand::New { keys, config },
        } => keyserver::new_credential(&keys, config.as_deref()).map(|text| print!("{text}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log_error(&error);
            ExitCode::FAILURE
        }
    }
}

fn serve(config: PathBuf, ready_file: Option<PathBuf>) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let result = runtime.block_on(keyserver::serve(&config, ready_file.as_deref()));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

fn check(config: PathBuf) -> Result<(), Error> {
    let summary = keyserver::check(&config)?;
    println!(
        "policy {} is valid: {} tokens opened, {} keys found, {} clients",
        config.display(),
        summary.tokens,
        summary.keys,
        summary.clients
    );
    Ok(())
}

/// Logs `error`, one line per policy problem so each names its own line number.
fn log_error(error: &Error) {
    if let Error::Policy(PolicyError::Invalid { path, problems }) = error {
        for problem in problems {
            tracing::error!("invalid policy file {}: {problem}", path.display());
        }
        return;
    }
    tracing::error!("{error}");
}
