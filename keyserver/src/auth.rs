//! Client authentication: KeyId lookup and a constant-time check of the KeySecret.
//!
//! The server stores only a verifier, the SHA-256 of the KeySecret's bytes. A presented secret
//! is hashed and compared in constant time. An unknown KeyId is compared against a fixed dummy
//! verifier, so the reply time does not tell whether the KeyId or the secret was wrong.

use std::collections::HashMap;
use std::fmt;

use keyrelay_protocol::KeySecret;
use ring::digest;
use subtle::ConstantTimeEq;

use crate::policy::ClientPolicy;

/// Length in bytes of a [`Verifier`].
pub const VERIFIER_LEN: usize = 32;

/// SHA-256 of a KeySecret's bytes, the only form in which the server keeps a secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Verifier([u8; VERIFIER_LEN]);

impl Verifier {
    /// Computes the verifier of `secret`.
    pub fn from_secret(secret: &[u8]) -> Self {
        let hash = digest::digest(&digest::SHA256, secret);
        let mut bytes = [0; VERIFIER_LEN];
        bytes.copy_from_slice(hash.as_ref());
        Self(bytes)
    }

    /// Parses 64 hex digits. Returns `None` for any other text.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0; VERIFIER_LEN];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// Formats the verifier as 64 lowercase hex digits, as the policy file stores it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn ct_matches(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({})", self.to_hex())
    }
}

/// The clients of the policy, indexed by KeyId.
#[derive(Debug)]
pub struct Authenticator {
    clients: HashMap<String, ClientPolicy>,
    dummy: Verifier,
}

impl Authenticator {
    /// Indexes `clients` by KeyId. The policy has already rejected duplicate KeyIds.
    pub fn new(clients: impl IntoIterator<Item = ClientPolicy>) -> Self {
        let clients = clients
            .into_iter()
            .map(|client| (client.key_id.clone(), client))
            .collect();
        Self {
            clients,
            dummy: Verifier::from_secret(b"keyrelay: verifier for unknown KeyIds"),
        }
    }

    /// Returns the client whose KeyId is `key_id`, without checking a secret.
    pub fn client(&self, key_id: &str) -> Option<&ClientPolicy> {
        self.clients.get(key_id)
    }

    /// Returns the client whose KeyId is `key_id` if `secret` is its KeySecret.
    ///
    /// Both the unknown-KeyId case and the wrong-secret case hash the secret and run one
    /// constant-time comparison, so they take the same time.
    pub fn authenticate(&self, key_id: &str, secret: &KeySecret) -> Option<&ClientPolicy> {
        let presented = Verifier::from_secret(secret.expose());
        let client = self.clients.get(key_id);
        let expected = client.map_or(&self.dummy, |c| &c.verifier);
        let matches = presented.ct_matches(expected);
        client.filter(|_| matches)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const SECRET: &str = "3f1c5a0e9b7d2468ace013579bdf2468ace013579bdf2468ace013579bdf2468";

    fn authenticator() -> Authenticator {
        let client = ClientPolicy {
            key_id: "kr_0123456789abcdef".into(),
            verifier: Verifier::from_secret(SECRET.as_bytes()),
            keys: BTreeSet::from(["release-rsa".to_owned()]),
            environment: "release".into(),
            created: None,
            rules: crate::policy::Rules::default(),
        };
        Authenticator::new([client])
    }

    fn secret(text: &str) -> KeySecret {
        KeySecret::new(text.as_bytes().to_vec())
    }

    #[test]
    fn authenticate_right_secret() {
        let auth = authenticator();

        let client = auth.authenticate("kr_0123456789abcdef", &secret(SECRET));

        assert_eq!(
            client.map(|c| c.key_id.as_str()),
            Some("kr_0123456789abcdef")
        );
    }

    #[test]
    fn authenticate_wrong_secret() {
        let auth = authenticator();
        let wrong = SECRET.replace('3', "4");

        assert!(
            auth.authenticate("kr_0123456789abcdef", &secret(&wrong))
                .is_none()
        );
        assert!(
            auth.authenticate("kr_0123456789abcdef", &secret(""))
                .is_none()
        );
    }

    #[test]
    fn authenticate_unknown_key_id() {
        let auth = authenticator();

        assert!(
            auth.authenticate("kr_ffffffffffffffff", &secret(SECRET))
                .is_none()
        );
    }

    #[test]
    fn verifier_hex_round_trip() {
        let verifier = Verifier::from_secret(SECRET.as_bytes());

        let parsed = Verifier::from_hex(&verifier.to_hex());

        assert_eq!(parsed, Some(verifier));
    }

    #[test]
    fn verifier_matches_known_sha256() {
        let verifier = Verifier::from_secret(b"abc");

        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(verifier.to_hex(), expected);
    }

    #[test]
    fn verifier_rejects_bad_hex() {
        assert!(Verifier::from_hex("abc").is_none());
        assert!(Verifier::from_hex(&"zz".repeat(32)).is_none());
        assert!(Verifier::from_hex(&"ab".repeat(33)).is_none());
    }
}
