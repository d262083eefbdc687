//! Command-line front end for the demo script: creates a SoftHSM2 token fixture or TLS test
//! certificates and prints where the files are.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use softhsm_fixtures::{TokenFixture, issue_tls_server_cert, standard_keys};

/// Creates throwaway SoftHSM2 tokens and test certificates for keyrelay.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a SoftHSM2 token with the standard keys (rsa-signing, ec-signing, rsa-other)
    /// and their certificates.
    Token {
        /// Fixture folder, created if missing. It must be empty.
        #[arg(long)]
        dir: PathBuf,
        /// Token label, 1 to 32 ASCII letters, digits, '-', '_' or '.'.
        #[arg(long)]
        label: String,
    },
    /// Write a TLS test CA (tls-ca.pem), a server certificate chain (server-chain.pem) and
    /// its private key (server-key.pem).
    Tls {
        /// Output folder, created if missing. Existing TLS files in it are replaced.
        #[arg(long)]
        dir: PathBuf,
        /// Server name for the certificate: a DNS name or an IP address. Repeat for more.
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` joins the error chain with ": ", and tool output is already on one line.
            let message = format!("{error:#}").replace(['\n', '\r'], " ");
            eprintln!("softhsm-fixtures: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Token { dir, label } => create_token(&dir, &label),
        Command::Tls { dir, names } => create_tls(&dir, &names),
    }
}

fn create_token(dir: &Path, label: &str) -> Result<()> {
    let fixture = TokenFixture::create(dir, label, &standard_keys())?;

    println!(
        "SoftHSM2 token {:?} created in {}",
        fixture.token_label(),
        fixture.dir().display()
    );
    println!("  SOFTHSM2_CONF={}", fixture.softhsm2_conf().display());
    println!("  module:   {}", fixture.module().display());
    println!("  PIN file: {}", fixture.user_pin_file().display());
    println!("  CA:       {}", fixture.ca_certificate_pem().display());
    println!("  keys:");
    for key in fixture.keys() {
        println!(
            "    {:<12} id {:<4} {:<9} {}",
            key.label(),
            key.id_hex(),
            key.kind().to_string(),
            key.certificate_pem_path().display()
        );
    }
    Ok(())
}

fn create_tls(dir: &Path, names: &[String]) -> Result<()> {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let files = issue_tls_server_cert(dir, &names)?;

    println!("TLS test certificates for {} written", names.join(", "));
    println!("  CA:           {}", files.ca_certificate.display());
    println!("  server chain: {}", files.server_chain.display());
    println!("  server key:   {}", files.server_key.display());
    Ok(())
}
