//! New client credentials: a public KeyId and a 256-bit KeySecret.
//!
//! The server keeps only the SHA-256 of the KeySecret, so the secret is shown once, when it is
//! generated, and can never be recovered from the policy.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::auth::Verifier;
use crate::policy::Policy;

/// Prefix of every generated KeyId.
pub const KEY_ID_PREFIX: &str = "kr_";

/// Random bytes in a KeyId, shown as twice as many hex digits.
pub const KEY_ID_RANDOM_LEN: usize = 8;

/// Random bytes in a KeySecret, shown as twice as many hex digits.
pub const KEY_SECRET_RANDOM_LEN: usize = 32;

/// Errors from creating a credential.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// No key names were given.
    #[error("no key names given; pass --keys NAME[,NAME...]")]
    NoKeys,
    /// The keys of one credential belong to several environments.
    #[error(
        "the keys belong to several environments ({}); a credential is bound to one, so \
         create one credential per environment",
        environments.join(", ")
    )]
    MixedEnvironments {
        /// The environments found.
        environments: Vec<String>,
    },
    /// `credential new` without `--config` needs `--environment`.
    #[error("pass --environment NAME, or --config FILE to take it from the keys")]
    NoEnvironment,
    /// Some key names are not in the policy.
    #[error(
        "keys not defined in policy {policy}: {}; check the names or add [keys.NAME] tables",
        names.join(", ")
    )]
    UnknownKeys {
        /// Path of the policy file.
        policy: String,
        /// The missing names.
        names: Vec<String>,
    },
}

/// A client credential. The KeySecret is wiped from memory on drop and never formatted by
/// `Debug`.
pub struct Credential {
    /// Public identifier, `kr_` followed by 16 lowercase hex digits.
    pub key_id: String,
    key_secret: Zeroizing<String>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Generates a credential from the system random number generator.
    ///
    /// # Errors
    ///
    /// [`CredentialError::Random`] if the generator fails.
    pub fn generate() -> Result<Self, CredentialError> {
        let rng = SystemRandom::new();
        let mut id = [0u8; KEY_ID_RANDOM_LEN];
        let mut secret = Zeroizing::new([0u8; KEY_SECRET_RANDOM_LEN]);
        rng.fill(&mut id).map_err(|_| CredentialError::Random)?;
        rng.fill(secret.as_mut())
            .map_err(|_| CredentialError::Random)?;
        Ok(Self {
            key_id: format!("{KEY_ID_PREFIX}{}", hex::encode(id)),
            key_secret: Zeroizing::new(hex::encode(secret.as_ref())),
        })
    }

    /// Returns the KeySecret, 64 lowercase hex digits. Show it to the operator once and never
    /// log it.
    pub fn key_secret(&self) -> &str {
        &self.key_secret
    }

    /// Returns the verifier that the policy stores for this credential.
    pub fn verifier(&self) -> Verifier {
        Verifier::from_secret(self.key_secret.as_bytes())
    }

    /// Returns the `[[clients]]` TOML entry allowing this credential to use `keys` of
    /// `environment`. The entry contains the verifier only, never the secret.
    pub fn policy_entry(&self, keys: &[String], environment: &str) -> String {
        let table = ClientsTable {
            clients: [ClientEntry {
                key_id: &self.key_id,
                secret_sha256: self.verifier().to_hex(),
                keys,
                environment,
            }],
        };
        toml::to_string(&table).expect("strings and string lists always serialize to TOML")
    }
}

#[derive(Serialize)]
struct ClientsTable<'a> {
    clients: [ClientEntry<'a>; 1],
}

#[derive(Serialize)]
struct ClientEntry<'a> {
    key_id: &'a str,
    secret_sha256: String,
    keys: &'a [String],
    environment: &'a str,
}

/// Checks that `keys` is not empty and that `policy`, if given, defines every name in it.
///
/// # Errors
///
/// [`CredentialError::NoKeys`] or [`CredentialError::UnknownKeys`].
pub fn check_keys(keys: &[String], policy: Option<&Policy>) -> Result<(), CredentialError> {
    if keys.is_empty() {
        return Err(CredentialError::NoKeys);
    }
    let Some(policy) = policy else {
        return Ok(());
    };
    let missing: Vec<String> = keys
        .iter()
        .filter(|name| !policy.keys.contains_key(*name))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(CredentialError::UnknownKeys {
        policy: policy.path.display().to_string(),
        names: missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_lower_hex(text: &str) -> bool {
        text.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    #[test]
    fn generated_key_id_format() {
        let credential = Credential::generate().unwrap();

        let random = credential.key_id.strip_prefix("kr_").unwrap();
        assert_eq!(random.len(), 16);
        assert!(is_lower_hex(random), "{}", credential.key_id);
    }

    #[test]
    fn generated_secret_format() {
        let credential = Credential::generate().unwrap();

        assert_eq!(credential.key_secret().len(), 64);
        assert!(is_lower_hex(credential.key_secret()));
    }

    #[test]
    fn generated_credentials_differ() {
        let first = Credential::generate().unwrap();
        let second = Credential::generate().unwrap();

        assert_ne!(first.key_id, second.key_id);
        assert_ne!(first.key_secret(), second.key_secret());
    }

    #[test]
    fn debug_hides_secret() {
        let credential = Credential::generate().unwrap();

        let text = format!("{credential:?}");

        assert!(!text.contains(credential.key_secret()));
        assert!(text.contains(&credential.key_id));
    }

    #[test]
    fn policy_entry_holds_verifier_only() {
        let credential = Credential::generate().unwrap();
        let keys = vec!["release-rsa".to_owned(), "release-ec".to_owned()];

        let entry = credential.policy_entry(&keys, "release");

        assert!(entry.starts_with("[[clients]]\n"), "{entry}");
        assert!(!entry.contains(credential.key_secret()));
        let parsed: toml::Table = toml::from_str(&entry).unwrap();
        let client = &parsed["clients"][0];
        assert_eq!(client["key_id"].as_str(), Some(credential.key_id.as_str()));
        let verifier = client["secret_sha256"].as_str().unwrap();
        assert_eq!(Verifier::from_hex(verifier), Some(credential.verifier()));
        assert_eq!(client["keys"][1].as_str(), Some("release-ec"));
    }

    #[test]
    fn check_keys_requires_one() {
        assert!(matches!(
            check_keys(&[], None),
            Err(CredentialError::NoKeys)
        ));
        assert!(check_keys(&["any".to_owned()], None).is_ok());
    }
}
