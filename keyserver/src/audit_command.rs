//! The `keyserver audit` subcommands of the binary: keygen, verify and find.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use keyserver::audit::{self, AuditError, FindQuery};

use super::AuditCommand;

/// Runs one `audit` subcommand and returns the exit code: 0 on success, 1 on failure, a
/// broken chain, or no record found.
pub(super) fn run(command: AuditCommand) -> ExitCode {
    let result = match command {
        AuditCommand::Keygen { out, public_out } => keygen(&out, public_out),
        AuditCommand::Verify { public_key, logs } => verify(&public_key, &logs),
        AuditCommand::Find {
            signature,
            digest,
            logs,
        } => find(signature.as_deref(), digest.as_deref(), &logs),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(out: &Path, public_out: Option<PathBuf>) -> Result<bool, AuditError> {
    let public_out = public_out.unwrap_or_else(|| out.with_extension("pub"));
    audit::generate_key(out, &public_out)?;
    println!(
        "audit private key: {} (name it in [audit] signing_key)\naudit public key:  {} \
         (give it to whoever runs `keyserver audit verify`)",
        out.display(),
        public_out.display()
    );
    Ok(true)
}

/// Returns the files of `logs`: a single file stands for its whole rotated chain.
fn expand(logs: &[PathBuf]) -> Result<Vec<PathBuf>, AuditError> {
    if let [single] = logs {
        return audit::chain_files(single).map_err(|source| AuditError::Open {
            path: single.clone(),
            source,
        });
    }
    Ok(logs.to_vec())
}

fn verify(public_key: &Path, logs: &[PathBuf]) -> Result<bool, AuditError> {
    let public_key = audit::load_public_key(public_key)?;
    let files = expand(logs)?;
    let report = audit::verify(&files, &public_key)?;
    println!(
        "audit chain valid: {} records (seq {} to {}) in {} files, {} anchors; {} records after \
         the last anchor are covered by the hash chain only",
        report.records,
        report.first_seq,
        report.last_seq,
        report.files,
        report.anchors,
        report.unanchored
    );
    Ok(true)
}

fn find(
    signature: Option<&Path>,
    digest: Option<&str>,
    logs: &[PathBuf],
) -> Result<bool, AuditError> {
    let query = match (signature, digest) {
        (Some(path), _) => FindQuery::signature_file(path)?,
        (None, Some(text)) => match hex::decode(text.trim()) {
            Ok(bytes) => FindQuery::Digest(bytes),
            Err(_) => {
                tracing::error!("--digest {text} is not hex; give the digest as hex digits");
                return Ok(false);
            }
        },
        (None, None) => unreachable!("clap requires --signature or --digest"),
    };
    let found = audit::find(&expand(logs)?, &query)?;
    for record in &found {
        println!("{}:{}: {}", record.path.display(), record.line, record.text);
    }
    if found.is_empty() {
        tracing::error!("no sign record matches");
    }
    Ok(!found.is_empty())
}
