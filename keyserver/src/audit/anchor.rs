//! The audit key: an Ed25519 key, stored as a PKCS#8 PEM file, that signs anchor records.
//!
//! An anchor signs its own sequence number, time, cause, policy hash and the hash of the
//! previous line. Since every line carries the hash of the one before it, a valid anchor
//! vouches for every record before it. Records after the last anchor are covered only by the
//! hash chain until the next anchor.
//!
//! The public key file is a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), which
//! `openssl pkey -pubin` reads too.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use super::AuditError;
use super::record::AuditRecord;

/// DER header of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Length of an Ed25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Returns the bytes an anchor's signature covers.
pub fn signed_message(record: &AuditRecord, cause: &str, policy_sha256: &str) -> Vec<u8> {
    format!(
        "keyrelay audit anchor v1\nseq {}\ntime {}\nprev {}\ncause {cause}\npolicy {policy_sha256}\n",
        record.seq, record.time, record.prev_sha256
    )
    .into_bytes()
}

/// Reads the audit key from a PKCS#8 PEM file, as `audit keygen` or
/// `openssl genpkey -algorithm ed25519` writes it.
///
/// # Errors
///
/// [`AuditError::Key`] naming the file; the message never contains key material.
pub fn load_signing_key(path: &Path) -> Result<Ed25519KeyPair, AuditError> {
    let key_error = |message: String| AuditError::Key {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read(path).map_err(|e| key_error(format!("cannot read it: {e}")))?;
    let block = pem::parse(&text).map_err(|_| key_error("it is not a PEM file".into()))?;
    if block.tag() != "PRIVATE KEY" {
        return Err(key_error(format!(
            "it holds a PEM {} block, not a PKCS#8 PRIVATE KEY",
            block.tag()
        )));
    }
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(block.contents())
        .map_err(|_| key_error("it is not a PKCS#8 Ed25519 private key".into()))
}

/// Reads an Ed25519 public key from a PEM `PUBLIC KEY` file, or derives it from a PKCS#8
/// private key file.
///
/// # Errors
///
/// [`AuditError::Key`] naming the file.
pub fn load_public_key(path: &Path) -> Result<Vec<u8>, AuditError> {
    let key_error = |message: String| AuditError::Key {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read(path).map_err(|e| key_error(format!("cannot read it: {e}")))?;
    let block = pem::parse(&text).map_err(|_| key_error("it is not a PEM file".into()))?;
    match block.tag() {
        "PRIVATE KEY" => Ok(load_signing_key(path)?.public_key().as_ref().to_vec()),
        "PUBLIC KEY" => block
            .contents()
            .strip_prefix(&ED25519_SPKI_PREFIX)
            .filter(|key| key.len() == PUBLIC_KEY_LEN)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| key_error("it is not an Ed25519 public key".into())),
        tag => Err(key_error(format!("unexpected PEM block {tag}"))),
    }
}

/// Tells whether `signature` is a valid signature by `public_key` over `message`.
pub fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

/// Generates an audit key. Writes the private key to `private_path` with mode 0600, failing
/// if it exists, and the public key to `public_path`.
///
/// # Errors
///
/// [`AuditError::Key`] if a file cannot be written or the random generator fails.
pub fn generate(private_path: &Path, public_path: &Path) -> Result<(), AuditError> {
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| AuditError::Key {
            path: private_path.to_owned(),
            message: "the system random number generator failed".into(),
        })?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ring parses its own PKCS#8");
    let private_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(pair.public_key().as_ref());
    let public_pem = pem::encode(&pem::Pem::new("PUBLIC KEY", spki));
    write_new(private_path, private_pem.as_bytes(), 0o600)?;
    write_new(public_path, public_pem.as_bytes(), 0o644)
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), AuditError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(contents).and_then(|()| file.sync_all()))
        .map_err(|e| AuditError::Key {
            path: path.to_owned(),
            message: format!("cannot create it: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_signs_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("audit-key.pem");
        let public = dir.path().join("audit-key.pub");
        generate(&private, &public).unwrap();

        let pair = load_signing_key(&private).unwrap();
        let public_key = load_public_key(&public).unwrap();
        let signature = pair.sign(b"message");

        assert_eq!(public_key, load_public_key(&private).unwrap());
        assert!(verify(&public_key, b"message", signature.as_ref()));
        assert!(!verify(&public_key, b"other", signature.as_ref()));
    }

    #[test]
    fn generate_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("audit-key.pem");
        std::fs::write(&private, "keep").unwrap();

        let error = generate(&private, &dir.path().join("audit-key.pub")).unwrap_err();

        assert!(error.to_string().contains("audit-key.pem"), "{error}");
        assert_eq!(std::fs::read_to_string(&private).unwrap(), "keep");
    }
}
