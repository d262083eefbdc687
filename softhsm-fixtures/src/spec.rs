//! Key specifications: which key pairs a fixture token gets, and the standard set used by the
//! end-to-end tests and the demo.

use std::collections::HashSet;
use std::fmt;

use anyhow::{Result, bail, ensure};

/// Label of the standard RSA-2048 signing key (CKA_ID `01`).
pub const RSA_SIGNING_LABEL: &str = "rsa-signing";

/// Label of the standard EC P-256 signing key (CKA_ID `02`).
pub const EC_SIGNING_LABEL: &str = "ec-signing";

/// Label of the standard RSA-2048 key that allowlists leave out (CKA_ID `03`).
pub const RSA_OTHER_LABEL: &str = "rsa-other";

/// Maximum token label length: CK_TOKEN_INFO stores the label in 32 bytes.
const MAX_TOKEN_LABEL_LEN: usize = 32;

/// Maximum key label length accepted here, to keep certificate file names short.
const MAX_KEY_LABEL_LEN: usize = 64;

/// A named elliptic curve for ECDSA keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (`prime256v1`, `secp256r1`).
    P256,
    /// NIST P-384 (`secp384r1`).
    P384,
}

impl Curve {
    /// Returns the curve name that `pkcs11-tool --key-type EC:<name>` accepts.
    pub(crate) fn pkcs11_tool_name(self) -> &'static str {
        match self {
            Curve::P256 => "prime256v1",
            Curve::P384 => "secp384r1",
        }
    }

    /// Returns the DER encoding of the curve's OID, which SoftHSM stores as CKA_EC_PARAMS.
    pub(crate) fn ec_params_der(self) -> &'static [u8] {
        match self {
            // 1.2.840.10045.3.1.7
            Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            // 1.3.132.0.34
            Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        }
    }
}

/// The type and size of a key pair generated on the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// An RSA key pair with a modulus of `bits` bits. SoftHSM 2.6.1 accepts 512 to 16384.
    Rsa {
        /// Modulus size in bits.
        bits: u32,
    },
    /// An ECDSA key pair on a named curve.
    Ec {
        /// The named curve.
        curve: Curve,
    },
    /// An Ed25519 key pair (CKK_EC_EDWARDS).
    ///
    /// libp11 0.4.12 fails to enumerate any private key on a token that contains an Ed25519 key,
    /// so tests that drive OpenSSL's pkcs11 engine keep Ed25519 keys on a separate token.
    Ed25519,
}

impl KeyKind {
    /// Returns the `--key-type` argument of `pkcs11-tool --keypairgen` for this kind.
    pub(crate) fn pkcs11_tool_key_type(self) -> String {
        match self {
            KeyKind::Rsa { bits } => format!("rsa:{bits}"),
            KeyKind::Ec { curve } => format!("EC:{}", curve.pkcs11_tool_name()),
            // OpenSC 0.23 accepts `edwards25519` here but not `ed25519`.
            KeyKind::Ed25519 => "EC:edwards25519".to_owned(),
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(formatter, "RSA-{bits}"),
            KeyKind::Ec { curve: Curve::P256 } => formatter.write_str("EC P-256"),
            KeyKind::Ec { curve: Curve::P384 } => formatter.write_str("EC P-384"),
            KeyKind::Ed25519 => formatter.write_str("Ed25519"),
        }
    }
}

/// A key pair to generate on a fixture token.
///
/// The private key, the public key and the certificate all get this CKA_LABEL and CKA_ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// CKA_LABEL, also the certificate's common name and file name. It must be 1 to 64 ASCII
    /// letters, digits, `-`, `_` or `.`, starting with a letter or digit.
    pub label: String,
    /// CKA_ID, 1 to 255 bytes.
    pub id: Vec<u8>,
    /// Key type and size.
    pub kind: KeyKind,
}

impl KeySpec {
    /// Creates a key specification.
    pub fn new(label: impl Into<String>, id: impl Into<Vec<u8>>, kind: KeyKind) -> Self {
        Self {
            label: label.into(),
            id: id.into(),
            kind,
        }
    }

    /// Returns the CKA_ID as lowercase hex, the form `pkcs11-tool --id` takes.
    pub fn id_hex(&self) -> String {
        hex::encode(&self.id)
    }
}

/// Returns the keys of the standard fixture token.
///
/// - [`RSA_SIGNING_LABEL`]: RSA-2048, CKA_ID `01`.
/// - [`EC_SIGNING_LABEL`]: EC P-256, CKA_ID `02`.
/// - [`RSA_OTHER_LABEL`]: RSA-2048, CKA_ID `03`, a key that allowlists leave out so that tests
///   can show it is refused.
pub fn standard_keys() -> Vec<KeySpec> {
    vec![
        KeySpec::new(RSA_SIGNING_LABEL, [0x01], KeyKind::Rsa { bits: 2048 }),
        KeySpec::new(EC_SIGNING_LABEL, [0x02], KeyKind::Ec { curve: Curve::P256 }),
        KeySpec::new(RSA_OTHER_LABEL, [0x03], KeyKind::Rsa { bits: 2048 }),
    ]
}

/// Checks a token label: 1 to 32 of the characters that [`check_name_characters`] accepts.
pub(crate) fn validate_token_label(label: &str) -> Result<()> {
    ensure!(
        label.len() <= MAX_TOKEN_LABEL_LEN,
        "token label {label:?} is {} bytes long: use at most {MAX_TOKEN_LABEL_LEN}",
        label.len()
    );
    check_name_characters("token label", label)
}

/// Checks every key specification and rejects duplicate labels or CKA_IDs.
pub(crate) fn validate_key_specs(specs: &[KeySpec]) -> Result<()> {
    ensure!(
        !specs.is_empty(),
        "no key specifications given: pass at least one KeySpec"
    );

    let mut labels = HashSet::new();
    let mut ids = HashSet::new();
    for spec in specs {
        validate_key_spec(spec)?;
        ensure!(
            labels.insert(&spec.label),
            "duplicate key label {:?}",
            spec.label
        );
        ensure!(
            ids.insert(&spec.id),
            "duplicate CKA_ID {} (key {:?})",
            spec.id_hex(),
            spec.label
        );
    }
    Ok(())
}

fn validate_key_spec(spec: &KeySpec) -> Result<()> {
    ensure!(
        spec.label.len() <= MAX_KEY_LABEL_LEN,
        "key label {:?} is {} bytes long: use at most {MAX_KEY_LABEL_LEN}",
        spec.label,
        spec.label.len()
    );
    check_name_characters("key label", &spec.label)?;
    ensure!(
        (1..=255).contains(&spec.id.len()),
        "CKA_ID of key {:?} is {} bytes long: use 1 to 255 bytes",
        spec.label,
        spec.id.len()
    );
    Ok(())
}

/// Accepts ASCII letters, digits, `-`, `_` and `.`, starting with a letter or digit, because
/// labels become file names and command-line arguments.
fn check_name_characters(field: &str, name: &str) -> Result<()> {
    let Some(first) = name.chars().next() else {
        bail!("{field} is empty: use 1 or more ASCII letters, digits, '-', '_' or '.'");
    };
    ensure!(
        first.is_ascii_alphanumeric(),
        "{field} {name:?} is invalid: it must start with an ASCII letter or digit"
    );

    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if let Some(bad) = name.chars().find(|&c| !allowed(c)) {
        bail!("{field} {name:?} contains {bad:?}: use only ASCII letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_keys_have_expected_ids() {
        let keys = standard_keys();
        let summary: Vec<(&str, String, KeyKind)> = keys
            .iter()
            .map(|k| (k.label.as_str(), k.id_hex(), k.kind))
            .collect();

        assert_eq!(
            summary,
            vec![
                ("rsa-signing", "01".to_owned(), KeyKind::Rsa { bits: 2048 }),
                (
                    "ec-signing",
                    "02".to_owned(),
                    KeyKind::Ec { curve: Curve::P256 }
                ),
                ("rsa-other", "03".to_owned(), KeyKind::Rsa { bits: 2048 }),
            ]
        );
        validate_key_specs(&keys).unwrap();
    }

    #[test]
    fn key_type_arguments() {
        assert_eq!(
            KeyKind::Rsa { bits: 3072 }.pkcs11_tool_key_type(),
            "rsa:3072"
        );
        assert_eq!(
            KeyKind::Ec { curve: Curve::P256 }.pkcs11_tool_key_type(),
            "EC:prime256v1"
        );
        assert_eq!(
            KeyKind::Ec { curve: Curve::P384 }.pkcs11_tool_key_type(),
            "EC:secp384r1"
        );
        assert_eq!(KeyKind::Ed25519.pkcs11_tool_key_type(), "EC:edwards25519");
    }

    #[test]
    fn duplicate_id_rejected() {
        let specs = vec![
            KeySpec::new("a", [1], KeyKind::Ed25519),
            KeySpec::new("b", [1], KeyKind::Ed25519),
        ];
        let message = validate_key_specs(&specs).unwrap_err().to_string();
        assert!(message.contains("duplicate CKA_ID 01"), "{message}");
    }

    #[test]
    fn duplicate_label_rejected() {
        let specs = vec![
            KeySpec::new("a", [1], KeyKind::Ed25519),
            KeySpec::new("a", [2], KeyKind::Ed25519),
        ];
        let message = validate_key_specs(&specs).unwrap_err().to_string();
        assert!(message.contains("duplicate key label \"a\""), "{message}");
    }

    #[test]
    fn bad_labels_rejected() {
        for label in ["", "../x", "-x", ".hidden", "a b", "é"] {
            let spec = KeySpec::new(label, [1], KeyKind::Ed25519);
            assert!(
                validate_key_specs(&[spec]).is_err(),
                "label {label:?} was accepted"
            );
        }
    }

    #[test]
    fn empty_id_rejected() {
        let spec = KeySpec::new("k", Vec::new(), KeyKind::Ed25519);
        let message = validate_key_specs(&[spec]).unwrap_err().to_string();
        assert!(message.contains("0 bytes long"), "{message}");
    }

    #[test]
    fn token_label_limits() {
        validate_token_label("keyrelay-demo").unwrap();
        assert!(validate_token_label(&"x".repeat(33)).is_err());
        assert!(validate_token_label("").is_err());
        assert!(validate_token_label("a/b").is_err());
    }
}
