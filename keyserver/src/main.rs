//! Command-line entry point of the keyserver.

mod audit_command;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
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
    /// Serve signing requests until SIGTERM or SIGINT; reload the policy on SIGHUP or when
    /// the file changes.
    Serve {
        /// Policy file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// File that receives the bound address (such as 127.0.0.1:4433) once the server
        /// accepts connections.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Validate a policy without serving. Exits with 0 if it is valid, 1 on errors and 2 on
    /// warnings only.
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
    /// Manage and examine the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CredentialCommand {
    /// Generate a KeyId and KeySecret. With --config, add the client to that policy file;
    /// without it, print the entry to paste.
    New {
        /// Comma-separated names of the keys the credential may use.
        #[arg(
            long,
            value_name = "NAME[,NAME...]",
            value_delimiter = ',',
            required = true
        )]
        keys: Vec<String>,
        /// Policy file to add the client to, in place.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Environment of the printed entry, when --config is not given.
        #[arg(long, value_name = "NAME")]
        environment: Option<String>,
    },
    /// List the clients of a policy: KeyId, environment, creation time, last use and keys.
    List {
        /// Policy file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Remove a client from a policy file; a running keyserver applies it at its next reload.
    Revoke {
        /// Policy file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// KeyId to revoke.
        key_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Generate an Ed25519 audit key: a PKCS#8 PEM private key and a PEM public key.
    Keygen {
        /// Private key file to create, with mode 0600.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Public key file to create; defaults to the private key's path with `.pub`.
        #[arg(long, value_name = "FILE")]
        public_out: Option<PathBuf>,
    },
    /// Check the hash chain and anchor signatures, and report the first broken record.
    Verify {
        /// Audit public key (PEM PUBLIC KEY), or the private key file.
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// Log files, oldest first. A single current log includes its rotated files.
        #[arg(required = true, value_name = "LOG")]
        logs: Vec<PathBuf>,
    },
    /// Find the sign records that produced a signature or signed a digest.
    Find {
        /// Raw signature, or a DER/PEM structure holding it (PKCS#7, CMS).
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "digest",
            required_unless_present = "digest"
        )]
        signature: Option<PathBuf>,
        /// Digest that was signed, in hex.
        #[arg(long, value_name = "HEX")]
        digest: Option<String>,
        /// Log files. A single current log includes its rotated files.
        #[arg(required = true, value_name = "LOG")]
        logs: Vec<PathBuf>,
    },
}

/// Exit code of `check` when the policy is valid but has warnings.
const EXIT_WARNINGS: u8 = 2;

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
        Command::Check { config } => return check(&config),
        Command::Credential { command } => credential(command),
        Command::Audit { command } => return audit_command::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log_error(&error);
            ExitCode::FAILURE
        }
    }
}

fn credential(command: CredentialCommand) -> Result<(), Error> {
    match command {
        CredentialCommand::New {
            keys,
            config,
            environment,
        } => keyserver::new_credential(&keys, config.as_deref(), environment.as_deref())
            .map(|text| print!("{text}")),
        CredentialCommand::List { config } => {
            for row in keyserver::policy_edit::list_clients(&config)? {
                println!(
                    "{}  environment={}  created={}  last_use={}  keys={}",
                    row.key_id,
                    row.environment,
                    row.created.as_deref().unwrap_or("-"),
                    row.last_use.as_deref().unwrap_or("never"),
                    row.keys.join(",")
                );
            }
            Ok(())
        }
        CredentialCommand::Revoke { config, key_id } => {
            keyserver::policy_edit::revoke_client(&config, &key_id)?;
            println!(
                "revoked {key_id} in {}; a running keyserver applies it at its next reload",
                config.display()
            );
            Ok(())
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

fn check(config: &Path) -> ExitCode {
    let report = keyserver::check(config);
    for error in &report.errors {
        tracing::error!("{error}");
    }
    for warning in &report.warnings {
        tracing::warn!("{warning}");
    }
    if !report.errors.is_empty() {
        return ExitCode::FAILURE;
    }
    println!(
        "policy {} is valid: {} tokens opened, {} keys found, {} clients, {} warnings",
        config.display(),
        report.tokens,
        report.keys,
        report.clients,
        report.warnings.len()
    );
    if report.warnings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_WARNINGS)
    }
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
