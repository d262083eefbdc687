//! `keyserver credential new|list|revoke --config FILE`: edits the `[[clients]]` entries of a
//! policy file in place, keeping its comments and formatting.
//!
//! Every edit is validated as a whole policy before the file is replaced, through a temporary
//! file and a rename, so a running keyserver never reads a half-written policy. A running
//! keyserver applies the edit at its next reload (within a second, or on SIGHUP).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use time::OffsetDateTime;
use toml_edit::{Array, DocumentMut, Item, Table, value};

use crate::audit::{AuditRecord, AuditResult, chain_files, format_rfc3339, read_lines};
use crate::credential::{Credential, CredentialError};
use crate::policy::{Policy, PolicyError};

/// One row of `credential list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    /// KeyId.
    pub key_id: String,
    /// Environment of the client.
    pub environment: String,
    /// Creation time, if recorded.
    pub created: Option<String>,
    /// Time of the last successful authentication or signature in the audit log.
    pub last_use: Option<String>,
    /// Allowed keys.
    pub keys: Vec<String>,
}

/// Adds a `[[clients]]` entry for `credential` to the policy at `config`, allowing `keys`,
/// bound to the environment of those keys and stamped with the creation time `now`.
///
/// # Errors
///
/// An invalid policy, keys of several environments, or a file that cannot be written.
pub fn add_client(
    config: &Path,
    credential: &Credential,
    keys: &[String],
    now: OffsetDateTime,
) -> Result<(), crate::Error> {
    let policy = Policy::load(config)?;
    crate::credential::check_keys(keys, Some(&policy))?;
    let environment = common_environment(&policy, keys)?;
    let mut document = read_document(config)?;
    let mut entry = Table::new();
    entry["key_id"] = value(credential.key_id.as_str());
    entry["secret_sha256"] = value(credential.verifier().to_hex());
    entry["keys"] = value(keys.iter().map(String::as_str).collect::<Array>());
    entry["environment"] = value(environment);
    let seconds =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let created: toml_edit::Datetime = now
        .format(&seconds)
        .expect("a UTC time formats")
        .parse()
        .expect("an RFC 3339 time is a TOML datetime");
    entry["created"] = value(created);
    let clients = document
        .entry("clients")
        .or_insert(Item::ArrayOfTables(Default::default()));
    let Some(clients) = clients.as_array_of_tables_mut() else {
        return Err(invalid(
            config,
            "clients is not an array of [[clients]] tables",
        ));
    };
    clients.push(entry);
    write_validated(config, &document.to_string())
}

/// Removes the `[[clients]]` entry whose KeyId is `key_id`, with its comments.
///
/// # Errors
///
/// An unknown KeyId, an invalid result or a file that cannot be written.
pub fn revoke_client(config: &Path, key_id: &str) -> Result<(), crate::Error> {
    let mut document = read_document(config)?;
    let clients = document
        .get_mut("clients")
        .and_then(Item::as_array_of_tables_mut);
    let index = clients.as_ref().and_then(|clients| {
        clients
            .iter()
            .position(|c| c.get("key_id").and_then(Item::as_str) == Some(key_id))
    });
    let (Some(clients), Some(index)) = (clients, index) else {
        return Err(invalid(
            config,
            &format!("no [[clients]] entry has key_id \"{key_id}\""),
        ));
    };
    clients.remove(index);
    write_validated(config, &document.to_string())
}

/// Lists the clients of the policy at `config`, with their last use in its audit log.
///
/// # Errors
///
/// An unreadable or invalid policy.
pub fn list_clients(config: &Path) -> Result<Vec<ClientRow>, crate::Error> {
    let policy = Policy::load(config)?;
    let last_use = last_uses(&policy.server.audit_log);
    Ok(policy
        .clients
        .iter()
        .map(|client| ClientRow {
            key_id: client.key_id.clone(),
            environment: client.environment.clone(),
            created: client.created.map(format_rfc3339),
            last_use: last_use.get(&client.key_id).cloned(),
            keys: client.keys.iter().cloned().collect(),
        })
        .collect())
}

/// Returns the time of the last successful record of each KeyId in the audit log chain.
fn last_uses(audit_log: &Path) -> std::collections::HashMap<String, String> {
    let mut last = std::collections::HashMap::new();
    for path in chain_files(audit_log).unwrap_or_default() {
        for (_, line) in read_lines(&path).unwrap_or_default() {
            let Ok(record) = serde_json::from_str::<AuditRecord>(&line) else {
                continue;
            };
            if let (Some(key_id), AuditResult::Ok) = (record.key_id, record.result) {
                last.insert(key_id, record.time);
            }
        }
    }
    last
}

fn common_environment(policy: &Policy, keys: &[String]) -> Result<String, crate::Error> {
    let environments: std::collections::BTreeSet<&str> = keys
        .iter()
        .filter_map(|name| policy.keys.get(name))
        .map(|key| key.environment.as_str())
        .collect();
    let mut iter = environments.iter();
    match (iter.next(), iter.next()) {
        (Some(only), None) => Ok((*only).to_owned()),
        _ => Err(CredentialError::MixedEnvironments {
            environments: environments.iter().map(|e| (*e).to_owned()).collect(),
        }
        .into()),
    }
}

fn read_document(config: &Path) -> Result<DocumentMut, crate::Error> {
    let text = std::fs::read_to_string(config).map_err(|source| PolicyError::Read {
        path: config.to_owned(),
        source,
    })?;
    text.parse::<DocumentMut>()
        .map_err(|error| invalid(config, &error.to_string()))
}

fn invalid(config: &Path, message: &str) -> crate::Error {
    crate::Error::PolicyEdit {
        path: config.to_owned(),
        message: message.to_owned(),
    }
}

/// Validates `text` as a policy, then replaces `config` with it, keeping its permissions.
fn write_validated(config: &Path, text: &str) -> Result<(), crate::Error> {
    Policy::parse(text, config)?;
    let io_error = |error: std::io::Error| invalid(config, &format!("cannot write it: {error}"));
    let mut temporary = config.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = std::path::PathBuf::from(temporary);
    let permissions = std::fs::metadata(config)
        .map(|m| m.permissions())
        .unwrap_or_else(|_| std::fs::Permissions::from_mode(0o644));
    let mut file = std::fs::File::create(&temporary).map_err(io_error)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.set_permissions(permissions))
        .and_then(|()| file.sync_all())
        .map_err(io_error)?;
    std::fs::rename(&temporary, config).map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"# Signing policy, reviewed by the security team.
[server]
listen = "127.0.0.1:4433"
certificate_chain = "chain.pem"
private_key = "key.pem"
audit_log = "audit.jsonl"

[tokens.demo]
module = "/usr/lib/softhsm/libsofthsm2.so"
label = "demo"
pin_file = "token.pin"

[keys.release-rsa]  # the Authenticode key
token = "demo"
label = "rsa-signing"
environment = "release"

# CI of the app repository.
[[clients]]
key_id = "kr_0000000000000001"
secret_sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
keys = ["release-rsa"]
environment = "release"

[audit]
signing_key = "audit-key.pem"
"#;

    fn policy_file() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, POLICY).unwrap();
        (dir, path)
    }

    #[test]
    fn add_keeps_comments_and_validates() {
        let (_dir, path) = policy_file();
        let credential = Credential::generate().unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_796_000_000).unwrap();

        add_client(&path, &credential, &["release-rsa".into()], now).unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        for line in POLICY.lines() {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.contains("created = 2026-11-30T00:53:20Z"), "{text}");
        assert!(text.contains(&credential.key_id));
        assert!(!text.contains(credential.key_secret()));
        let rows = list_clients(&path).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].environment, "release");
        assert_eq!(
            rows[1].created.as_deref(),
            Some("2026-11-30T00:53:20.000000Z")
        );
    }

    #[test]
    fn revoke_removes_only_that_entry() {
        let (_dir, path) = policy_file();
        let credential = Credential::generate().unwrap();
        add_client(
            &path,
            &credential,
            &["release-rsa".into()],
            OffsetDateTime::now_utc(),
        )
        .unwrap();

        revoke_client(&path, "kr_0000000000000001").unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("kr_0000000000000001"), "{text}");
        assert!(text.contains("# Signing policy, reviewed by the security team."));
        assert!(text.contains("[keys.release-rsa]  # the Authenticode key"));
        assert_eq!(list_clients(&path).unwrap()[0].key_id, credential.key_id);
    }

    #[test]
    fn revoke_unknown_key_id_named() {
        let (_dir, path) = policy_file();

        let error = revoke_client(&path, "kr_ffffffffffffffff").unwrap_err();

        assert!(error.to_string().contains("kr_ffffffffffffffff"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), POLICY);
    }
}
