//! `keyserver check`: validates a policy without serving, and warns about risky choices.
//!
//! Errors are what would stop `serve` or break requests: syntax, dangling names, environment
//! mixing, unreadable PIN files, TLS files, the audit key, and keys missing on their token.
//! Warnings are valid but risky choices: a client with access to every key, a release key
//! without a quota, and SHA-1 allowed.

use std::path::Path;

use crate::audit::load_signing_key;
use crate::backend::Backend;
use crate::policy::{DigestAlgorithm, Policy, PolicyError, Rules};
use crate::state::PolicyState;

/// Name of the environment whose keys get the stricter warnings.
pub const RELEASE_ENVIRONMENT: &str = "release";

/// Outcome of [`check`].
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Problems that make the policy unusable.
    pub errors: Vec<String>,
    /// Risky choices in a usable policy.
    pub warnings: Vec<String>,
    /// Number of tokens opened.
    pub tokens: usize,
    /// Number of keys found on their tokens.
    pub keys: usize,
    /// Number of clients.
    pub clients: usize,
}

/// Validates the policy at `config` as `serve` would, without binding: it reads the PINs,
/// opens the tokens, resolves the keys, and loads the TLS files and the audit key. Blocks.
pub fn check(config: &Path) -> CheckReport {
    let mut report = CheckReport::default();
    let state = match PolicyState::load(config) {
        Ok(state) => state,
        Err(PolicyError::Invalid { path, problems }) => {
            report.errors = problems
                .iter()
                .map(|p| format!("invalid policy file {}: {p}", path.display()))
                .collect();
            return report;
        }
        Err(error) => {
            report.errors.push(error.to_string());
            return report;
        }
    };
    let policy = &state.policy;
    report.clients = policy.clients.len();
    report.warnings = warnings(policy);
    check_files(policy, &mut report);
    if report.errors.is_empty() {
        match Backend::open(policy) {
            Ok(backend) => {
                report.tokens = policy.tokens.len();
                report.keys = policy.keys.len();
                backend.close();
            }
            Err(error) => report.errors.push(error.to_string()),
        }
    }
    report
}

/// Checks every file the policy names, collecting one error per unusable file.
fn check_files(policy: &Policy, report: &mut CheckReport) {
    for (name, token) in &policy.tokens {
        if let Err(error) = token.pin.read(name) {
            report.errors.push(error.to_string());
        }
    }
    if let Err(error) = crate::server::check_tls(&policy.server) {
        report.errors.push(error.to_string());
    }
    if let Err(error) = load_signing_key(&policy.audit.signing_key) {
        report.errors.push(error.to_string());
    }
    // A bare file name has an empty parent: the current folder.
    let folder = match policy.server.audit_log.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        report.errors.push(format!(
            "the folder {} of the audit log does not exist; create it",
            folder.display()
        ));
    }
}

/// Lists the risky choices of a valid policy.
pub fn warnings(policy: &Policy) -> Vec<String> {
    let mut warnings = Vec::new();
    for client in &policy.clients {
        if policy.keys.len() > 1 && client.keys.len() == policy.keys.len() {
            warnings.push(format!(
                "client {} may use every key of the policy; grant only the keys it needs",
                client.key_id
            ));
        }
        if let Some(warning) = sha1_warning(&client.rules, &format!("client {}", client.key_id)) {
            warnings.push(warning);
        }
    }
    for (name, key) in &policy.keys {
        let release = key.environment == RELEASE_ENVIRONMENT;
        if release && key.rules.quota.is_unlimited() {
            warnings.push(format!(
                "release key {name} has no quota; set signatures_per_minute or \
                 signatures_per_day to limit the damage of a stolen credential"
            ));
        }
        if release && key.rules.digests.is_none() {
            warnings.push(format!(
                "release key {name} allows SHA-1 because it has no digests rule; set \
                 digests = [\"sha256\", \"sha384\", \"sha512\"]"
            ));
        } else if let Some(warning) = sha1_warning(&key.rules, &format!("key {name}")) {
            warnings.push(warning);
        }
    }
    warnings
}

fn sha1_warning(rules: &Rules, who: &str) -> Option<String> {
    let allowed = rules
        .digests
        .as_ref()
        .is_some_and(|digests| digests.contains(&DigestAlgorithm::Sha1));
    let sha1_mechanisms = [
        cryptoki_sys::CKM_SHA1_RSA_PKCS,
        cryptoki_sys::CKM_SHA1_RSA_PKCS_PSS,
        cryptoki_sys::CKM_ECDSA_SHA1,
    ];
    let named = rules
        .mechanisms
        .as_ref()
        .is_some_and(|mechanisms| sha1_mechanisms.iter().any(|m| mechanisms.contains(m)));
    (allowed || named).then(|| {
        format!("{who} allows SHA-1, whose collisions are practical; allow sha256 or stronger")
    })
}
