//! Sign request rules: which mechanisms a key type accepts, how long the input may be, and
//! how each client mechanism becomes one operation on the backend.
//!
//! The client hashes for the hash-and-sign mechanisms, so the backend only ever runs
//! CKM_RSA_PKCS or CKM_ECDSA:
//!
//! | client mechanism      | input  | backend operation                          |
//! |-----------------------|--------|--------------------------------------------|
//! | CKM_RSA_PKCS          | data   | CKM_RSA_PKCS over the data                 |
//! | CKM_SHA256_RSA_PKCS   | digest | CKM_RSA_PKCS over the SHA-256 DigestInfo   |
//! | CKM_ECDSA             | data   | CKM_ECDSA over the data                    |
//! | CKM_ECDSA_SHA256      | digest | CKM_ECDSA over the digest                  |

use cryptoki_sys::{CKM_ECDSA, CKM_ECDSA_SHA256, CKM_RSA_PKCS, CKM_SHA256_RSA_PKCS};
use keyrelay_protocol::{ErrorCode, MechanismParameter, SignInput};

use crate::audit::mechanism_name;

/// DER prefix of a DigestInfo for SHA-256 (RFC 8017, section 9.2, note 1). The 32-byte digest
/// follows it.
pub const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Length of a SHA-256 digest in bytes.
pub const SHA256_LEN: usize = 32;

/// Minimum PKCS#1 v1.5 padding in bytes: CKM_RSA_PKCS signs at most the modulus length
/// minus this.
pub const RSA_PKCS1_OVERHEAD: usize = 11;

/// The type of a signing key, as far as the sign rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// CKK_RSA, with the modulus length in bytes.
    Rsa {
        /// Modulus length in bytes.
        modulus_len: usize,
    },
    /// CKK_EC.
    Ec,
}

impl KeyKind {
    /// Returns the backend mechanism that keys of this kind sign with.
    pub fn base_mechanism(self) -> BaseMechanism {
        match self {
            Self::Rsa { .. } => BaseMechanism::RsaPkcs,
            Self::Ec => BaseMechanism::Ecdsa,
        }
    }
}

/// A mechanism the server runs on the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BaseMechanism {
    /// CKM_RSA_PKCS.
    RsaPkcs,
    /// CKM_ECDSA.
    Ecdsa,
}

impl BaseMechanism {
    /// Returns the CKM_* value.
    pub fn ckm(self) -> u64 {
        match self {
            Self::RsaPkcs => CKM_RSA_PKCS,
            Self::Ecdsa => CKM_ECDSA,
        }
    }

    /// Returns the client mechanisms served through this backend mechanism: the raw one and
    /// its SHA-256 hash-and-sign variant.
    pub fn client_mechanisms(self) -> [u64; 2] {
        match self {
            Self::RsaPkcs => [CKM_RSA_PKCS, CKM_SHA256_RSA_PKCS],
            Self::Ecdsa => [CKM_ECDSA, CKM_ECDSA_SHA256],
        }
    }
}

/// One signature to compute on the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendOperation {
    /// Mechanism passed to C_SignInit.
    pub mechanism: BaseMechanism,
    /// Bytes passed to C_Sign.
    pub payload: Vec<u8>,
}

/// Reason a sign request was rejected before reaching the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Wire error code.
    pub code: ErrorCode,
    /// Message for the client and the audit log.
    pub message: String,
}

impl Rejection {
    fn new(code: ErrorCode, message: String) -> Self {
        Self { code, message }
    }
}

/// Checks `mechanism` and `input` against a key of kind `kind` and returns the backend
/// operation that produces the signature the client expects.
///
/// # Errors
///
/// [`ErrorCode::MECHANISM_INVALID`] for a mechanism the key type does not support,
/// [`ErrorCode::MECHANISM_PARAM_INVALID`] for a parameter the mechanism does not take, and
/// [`ErrorCode::INPUT_INVALID`] for the wrong kind or length of input.
pub fn plan(
    kind: KeyKind,
    mechanism: u64,
    parameter: &MechanismParameter,
    input: &SignInput,
    max_input_len: u32,
) -> Result<BackendOperation, Rejection> {
    let base = base_for(kind, mechanism)?;
    if *parameter != MechanismParameter::None {
        let message = format!("mechanism {} takes no parameter", mechanism_name(mechanism));
        return Err(Rejection::new(ErrorCode::MECHANISM_PARAM_INVALID, message));
    }
    let payload = match (mechanism, input) {
        (CKM_RSA_PKCS | CKM_ECDSA, SignInput::Data(data)) => {
            check_data_len(kind, data, max_input_len)?;
            data.clone()
        }
        (CKM_SHA256_RSA_PKCS, SignInput::Digest(digest)) => {
            check_digest_len(digest)?;
            sha256_digest_info(digest)
        }
        (CKM_ECDSA_SHA256, SignInput::Digest(digest)) => {
            check_digest_len(digest)?;
            digest.clone()
        }
        (_, input) => return Err(wrong_input_kind(mechanism, input)),
    };
    Ok(BackendOperation {
        mechanism: base,
        payload,
    })
}

fn base_for(kind: KeyKind, mechanism: u64) -> Result<BaseMechanism, Rejection> {
    let base = kind.base_mechanism();
    if base.client_mechanisms().contains(&mechanism) {
        return Ok(base);
    }
    let key_type = match kind {
        KeyKind::Rsa { .. } => "an RSA",
        KeyKind::Ec => "an EC",
    };
    let message = format!(
        "mechanism {} is not supported for {key_type} key",
        mechanism_name(mechanism)
    );
    Err(Rejection::new(ErrorCode::MECHANISM_INVALID, message))
}

fn wrong_input_kind(mechanism: u64, input: &SignInput) -> Rejection {
    let (expected, got) = match input {
        SignInput::Data(_) => ("a digest", "data"),
        SignInput::Digest(_) => ("data", "a digest"),
    };
    let message = format!(
        "mechanism {} takes {expected}, but the request carries {got}",
        mechanism_name(mechanism)
    );
    Rejection::new(ErrorCode::INPUT_INVALID, message)
}

fn check_data_len(kind: KeyKind, data: &[u8], max_input_len: u32) -> Result<(), Rejection> {
    let mut limit = max_input_len as usize;
    if let KeyKind::Rsa { modulus_len } = kind {
        limit = limit.min(modulus_len.saturating_sub(RSA_PKCS1_OVERHEAD));
    }
    if data.len() <= limit {
        return Ok(());
    }
    let message = format!(
        "input of {} bytes exceeds the maximum of {limit} bytes for this key",
        data.len()
    );
    Err(Rejection::new(ErrorCode::INPUT_INVALID, message))
}

fn check_digest_len(digest: &[u8]) -> Result<(), Rejection> {
    if digest.len() == SHA256_LEN {
        return Ok(());
    }
    let message = format!(
        "a SHA-256 digest is {SHA256_LEN} bytes, not {}",
        digest.len()
    );
    Err(Rejection::new(ErrorCode::INPUT_INVALID, message))
}

/// Builds the DER DigestInfo that CKM_SHA256_RSA_PKCS signs: the SHA-256 algorithm
/// identifier followed by `digest`.
pub fn sha256_digest_info(digest: &[u8]) -> Vec<u8> {
    let mut info = Vec::with_capacity(SHA256_DIGEST_INFO_PREFIX.len() + digest.len());
    info.extend_from_slice(&SHA256_DIGEST_INFO_PREFIX);
    info.extend_from_slice(digest);
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_2048: KeyKind = KeyKind::Rsa { modulus_len: 256 };

    fn digest() -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, b"hello")
            .as_ref()
            .to_vec()
    }

    fn code(result: Result<BackendOperation, Rejection>) -> ErrorCode {
        result.unwrap_err().code
    }

    #[test]
    fn digest_info_is_51_bytes_and_parses() {
        let info = sha256_digest_info(&digest());

        assert_eq!(info.len(), 51);
        assert_eq!(&info[19..], digest().as_slice());
        // The prefix must be a DER SEQUENCE whose length covers the whole DigestInfo.
        assert_eq!(info[0], 0x30);
        assert_eq!(usize::from(info[1]), info.len() - 2);
    }

    #[test]
    fn digest_info_prefix_holds_sha256_oid() {
        // 2.16.840.1.101.3.4.2.1, the OID of SHA-256, DER-encoded.
        let oid_sha256 = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
        assert_eq!(&SHA256_DIGEST_INFO_PREFIX[6..15], &oid_sha256);
    }

    #[test]
    fn plan_rsa_pkcs_data() {
        let input = SignInput::Data(vec![7; 245]);

        let op = plan(
            RSA_2048,
            CKM_RSA_PKCS,
            &MechanismParameter::None,
            &input,
            4096,
        )
        .unwrap();

        assert_eq!(op.mechanism, BaseMechanism::RsaPkcs);
        assert_eq!(op.payload, vec![7; 245]);
    }

    #[test]
    fn plan_rsa_pkcs_data_too_long() {
        let input = SignInput::Data(vec![7; 246]);

        let result = plan(
            RSA_2048,
            CKM_RSA_PKCS,
            &MechanismParameter::None,
            &input,
            4096,
        );

        assert_eq!(code(result), ErrorCode::INPUT_INVALID);
    }

    #[test]
    fn plan_sha256_rsa_wraps_digest() {
        let input = SignInput::Digest(digest());

        let op = plan(
            RSA_2048,
            CKM_SHA256_RSA_PKCS,
            &MechanismParameter::None,
            &input,
            4096,
        )
        .unwrap();

        assert_eq!(op.mechanism, BaseMechanism::RsaPkcs);
        assert_eq!(op.payload, sha256_digest_info(&digest()));
    }

    #[test]
    fn plan_ecdsa_sha256_passes_digest() {
        let input = SignInput::Digest(digest());

        let op = plan(
            KeyKind::Ec,
            CKM_ECDSA_SHA256,
            &MechanismParameter::None,
            &input,
            4096,
        )
        .unwrap();

        assert_eq!(op.mechanism, BaseMechanism::Ecdsa);
        assert_eq!(op.payload, digest());
    }

    #[test]
    fn plan_ecdsa_data_limited_by_policy() {
        let input = SignInput::Data(vec![1; 65]);

        assert!(
            plan(
                KeyKind::Ec,
                CKM_ECDSA,
                &MechanismParameter::None,
                &input,
                65
            )
            .is_ok()
        );
        assert_eq!(
            code(plan(
                KeyKind::Ec,
                CKM_ECDSA,
                &MechanismParameter::None,
                &input,
                64
            )),
            ErrorCode::INPUT_INVALID
        );
    }

    #[test]
    fn plan_key_type_mismatch() {
        let input = SignInput::Digest(digest());

        let result = plan(
            KeyKind::Ec,
            CKM_SHA256_RSA_PKCS,
            &MechanismParameter::None,
            &input,
            4096,
        );

        assert_eq!(code(result), ErrorCode::MECHANISM_INVALID);
    }

    #[test]
    fn plan_unknown_mechanism() {
        let input = SignInput::Data(vec![1]);

        let result = plan(
            RSA_2048,
            cryptoki_sys::CKM_RSA_PKCS_PSS,
            &MechanismParameter::None,
            &input,
            4096,
        );

        assert_eq!(code(result), ErrorCode::MECHANISM_INVALID);
    }

    #[test]
    fn plan_input_kind_mismatch() {
        let data = SignInput::Data(digest());
        let digest = SignInput::Digest(digest());

        let sha_with_data = plan(
            RSA_2048,
            CKM_SHA256_RSA_PKCS,
            &MechanismParameter::None,
            &data,
            4096,
        );
        let raw_with_digest = plan(
            KeyKind::Ec,
            CKM_ECDSA,
            &MechanismParameter::None,
            &digest,
            4096,
        );

        assert_eq!(code(sha_with_data), ErrorCode::INPUT_INVALID);
        assert_eq!(code(raw_with_digest), ErrorCode::INPUT_INVALID);
    }

    #[test]
    fn plan_digest_wrong_length() {
        let input = SignInput::Digest(vec![0; 20]);

        let result = plan(
            KeyKind::Ec,
            CKM_ECDSA_SHA256,
            &MechanismParameter::None,
            &input,
            4096,
        );

        assert_eq!(code(result), ErrorCode::INPUT_INVALID);
    }
}
