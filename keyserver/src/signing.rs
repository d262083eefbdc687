//! Sign request rules: which mechanisms a key type accepts, how long the input may be, and
//! how each client mechanism becomes one operation on the backend.
//!
//! The client hashes for the hash-and-sign mechanisms, so the backend only ever runs the
//! four base mechanisms:
//!
//! | client mechanism          | input  | backend operation                            |
//! |---------------------------|--------|----------------------------------------------|
//! | CKM_RSA_PKCS              | data   | CKM_RSA_PKCS over the data                   |
//! | CKM_SHAx_RSA_PKCS         | digest | CKM_RSA_PKCS over the DigestInfo of the hash |
//! | CKM_RSA_PKCS_PSS          | data   | CKM_RSA_PKCS_PSS over the data (a hash)      |
//! | CKM_SHAx_RSA_PKCS_PSS     | digest | CKM_RSA_PKCS_PSS over the digest             |
//! | CKM_ECDSA                 | data   | CKM_ECDSA over the data                      |
//! | CKM_ECDSA_SHAx            | digest | CKM_ECDSA over the digest                    |
//! | CKM_EDDSA                 | data   | CKM_EDDSA over the message                   |
//!
//! Each pair produces what the backend's own hash-and-sign mechanism would produce over the
//! original data: PKCS#1 v1.5 signatures are byte-identical, and PSS, ECDSA and EdDSA ones
//! verify the same way.

use cryptoki_sys::*;
use keyrelay_protocol::{ErrorCode, MechanismParameter, SignInput};

use crate::audit::mechanism_name;
use crate::digest_info;
use crate::policy::{DigestAlgorithm, DigestSource};

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
    /// CKK_EC_EDWARDS.
    Edwards,
}

/// Key families a mechanism applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Edwards,
}

impl KeyKind {
    fn family(self) -> Family {
        match self {
            Self::Rsa { .. } => Family::Rsa,
            Self::Ec => Family::Ec,
            Self::Edwards => Family::Edwards,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Rsa { .. } => "an RSA",
            Self::Ec => "an EC",
            Self::Edwards => "an EdDSA",
        }
    }
}

/// A mechanism the server runs on the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BaseMechanism {
    /// CKM_RSA_PKCS.
    RsaPkcs,
    /// CKM_RSA_PKCS_PSS.
    RsaPkcsPss,
    /// CKM_ECDSA.
    Ecdsa,
    /// CKM_EDDSA.
    Eddsa,
}

impl BaseMechanism {
    /// Returns the CKM_* value.
    pub fn ckm(self) -> u64 {
        match self {
            Self::RsaPkcs => CKM_RSA_PKCS,
            Self::RsaPkcsPss => CKM_RSA_PKCS_PSS,
            Self::Ecdsa => CKM_ECDSA,
            Self::Eddsa => CKM_EDDSA,
        }
    }
}

/// How the server serves one client mechanism.
#[derive(Clone, Copy, Debug)]
pub struct ClientMechanism {
    /// The CKM_* value the client names.
    pub ckm: u64,
    /// The CKM_* name, for logs and audit records.
    pub name: &'static str,
    family: Family,
    /// The backend mechanism that produces the signature.
    pub base: BaseMechanism,
    /// The hash the client applies first, for hash-and-sign mechanisms.
    pub hash: Option<DigestAlgorithm>,
}

/// Builds a table entry named after its CKM_* constant.
macro_rules! client {
    ($ckm:ident, $family:ident, $base:ident, $hash:expr) => {
        ClientMechanism {
            ckm: $ckm,
            name: stringify!($ckm),
            family: Family::$family,
            base: BaseMechanism::$base,
            hash: $hash,
        }
    };
}

/// Every client mechanism the server can serve.
pub const CLIENT_MECHANISMS: [ClientMechanism; 19] = {
    use DigestAlgorithm::{Sha1, Sha224, Sha256, Sha384, Sha512};
    [
        client!(CKM_RSA_PKCS, Rsa, RsaPkcs, None),
        client!(CKM_SHA1_RSA_PKCS, Rsa, RsaPkcs, Some(Sha1)),
        client!(CKM_SHA224_RSA_PKCS, Rsa, RsaPkcs, Some(Sha224)),
        client!(CKM_SHA256_RSA_PKCS, Rsa, RsaPkcs, Some(Sha256)),
        client!(CKM_SHA384_RSA_PKCS, Rsa, RsaPkcs, Some(Sha384)),
        client!(CKM_SHA512_RSA_PKCS, Rsa, RsaPkcs, Some(Sha512)),
        client!(CKM_RSA_PKCS_PSS, Rsa, RsaPkcsPss, None),
        client!(CKM_SHA1_RSA_PKCS_PSS, Rsa, RsaPkcsPss, Some(Sha1)),
        client!(CKM_SHA224_RSA_PKCS_PSS, Rsa, RsaPkcsPss, Some(Sha224)),
        client!(CKM_SHA256_RSA_PKCS_PSS, Rsa, RsaPkcsPss, Some(Sha256)),
        client!(CKM_SHA384_RSA_PKCS_PSS, Rsa, RsaPkcsPss, Some(Sha384)),
        client!(CKM_SHA512_RSA_PKCS_PSS, Rsa, RsaPkcsPss, Some(Sha512)),
        client!(CKM_ECDSA, Ec, Ecdsa, None),
        client!(CKM_ECDSA_SHA1, Ec, Ecdsa, Some(Sha1)),
        client!(CKM_ECDSA_SHA224, Ec, Ecdsa, Some(Sha224)),
        client!(CKM_ECDSA_SHA256, Ec, Ecdsa, Some(Sha256)),
        client!(CKM_ECDSA_SHA384, Ec, Ecdsa, Some(Sha384)),
        client!(CKM_ECDSA_SHA512, Ec, Ecdsa, Some(Sha512)),
        client!(CKM_EDDSA, Edwards, Eddsa, None),
    ]
};

impl ClientMechanism {
    /// Returns the entry for `ckm`, if the server can serve it.
    pub fn find(ckm: u64) -> Option<&'static Self> {
        CLIENT_MECHANISMS.iter().find(|entry| entry.ckm == ckm)
    }

    /// Where the policy's digest rules find this mechanism's digest algorithm.
    pub fn digest_source(&self) -> DigestSource {
        match (self.hash, self.base) {
            (Some(hash), _) => DigestSource::Fixed(hash),
            (None, BaseMechanism::RsaPkcs) => DigestSource::DigestInfo,
            (None, BaseMechanism::RsaPkcsPss) => DigestSource::PssParameter,
            (None, BaseMechanism::Ecdsa) => DigestSource::DigestLength,
            (None, BaseMechanism::Eddsa) => DigestSource::Intrinsic,
        }
    }

    /// Tells whether keys of `kind` sign with this mechanism.
    pub fn applies_to(&self, kind: KeyKind) -> bool {
        self.family == kind.family()
    }
}

/// One signature to compute on the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendOperation {
    /// Mechanism passed to C_SignInit.
    pub mechanism: BaseMechanism,
    /// Its parameter.
    pub parameter: MechanismParameter,
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

/// Checks `mechanism`, `parameter` and `input` against a key of kind `kind` and returns the
/// backend operation that produces the signature the client expects.
///
/// # Errors
///
/// [`ErrorCode::MECHANISM_INVALID`] for a mechanism the key type does not support,
/// [`ErrorCode::MECHANISM_PARAM_INVALID`] for a parameter that does not suit the mechanism,
/// and [`ErrorCode::INPUT_INVALID`] for the wrong kind or length of input.
pub fn plan(
    kind: KeyKind,
    mechanism: u64,
    parameter: &MechanismParameter,
    input: &SignInput,
    max_input_len: u32,
) -> Result<BackendOperation, Rejection> {
    let entry = ClientMechanism::find(mechanism)
        .filter(|entry| entry.applies_to(kind))
        .ok_or_else(|| {
            let message = format!(
                "mechanism {} is not supported for {} key",
                mechanism_name(mechanism),
                kind.describe()
            );
            Rejection::new(ErrorCode::MECHANISM_INVALID, message)
        })?;
    let parameter = check_parameter(entry, parameter)?;
    let payload = payload(kind, entry, &parameter, input, max_input_len)?;
    Ok(BackendOperation {
        mechanism: entry.base,
        parameter,
        payload,
    })
}

/// Checks the parameter against the mechanism and returns the one the backend receives.
fn check_parameter(
    entry: &ClientMechanism,
    parameter: &MechanismParameter,
) -> Result<MechanismParameter, Rejection> {
    let invalid = |reason: &str| {
        let message = format!("mechanism {}: {reason}", mechanism_name(entry.ckm));
        Err(Rejection::new(ErrorCode::MECHANISM_PARAM_INVALID, message))
    };
    match (entry.base, parameter) {
        (BaseMechanism::RsaPkcsPss, MechanismParameter::RsaPss { hash, mgf, .. }) => {
            if DigestAlgorithm::ALL.iter().all(|h| h.ckm() != *hash) {
                return invalid("the PSS hash is not SHA-1 or SHA-2");
            }
            if entry.hash.is_some_and(|h| h.ckm() != *hash) {
                return invalid("the PSS hash differs from the mechanism's hash");
            }
            if !(CKG_MGF1_SHA1..=CKG_MGF1_SHA224).contains(mgf) {
                return invalid("the mask generation function is not MGF1 with SHA-1 or SHA-2");
            }
            Ok(parameter.clone())
        }
        (BaseMechanism::RsaPkcsPss, _) => invalid("a CK_RSA_PKCS_PSS_PARAMS parameter is required"),
        (BaseMechanism::Eddsa, MechanismParameter::None | MechanismParameter::Eddsa { .. }) => {
            Ok(parameter.clone())
        }
        (_, MechanismParameter::None) => Ok(MechanismParameter::None),
        (_, _) => invalid("the mechanism takes no parameter"),
    }
}

fn payload(
    kind: KeyKind,
    entry: &ClientMechanism,
    parameter: &MechanismParameter,
    input: &SignInput,
    max_input_len: u32,
) -> Result<Vec<u8>, Rejection> {
    match (entry.hash, input) {
        (Some(hash), SignInput::Digest(digest)) => {
            check_digest_len(hash, digest)?;
            Ok(match entry.base {
                BaseMechanism::RsaPkcs => digest_info(hash, digest),
                _ => digest.clone(),
            })
        }
        (None, SignInput::Data(data)) => {
            check_data_len(kind, data, max_input_len)?;
            if let MechanismParameter::RsaPss { hash, .. } = parameter {
                let hash = DigestAlgorithm::ALL
                    .iter()
                    .find(|h| h.ckm() == *hash)
                    .copied();
                check_digest_len(hash.unwrap_or(DigestAlgorithm::Sha256), data)?;
            }
            Ok(data.clone())
        }
        (_, input) => Err(wrong_input_kind(entry.ckm, input)),
    }
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

fn check_digest_len(hash: DigestAlgorithm, digest: &[u8]) -> Result<(), Rejection> {
    if digest.len() == hash.output_len() {
        return Ok(());
    }
    let message = format!(
        "a {hash:?} digest is {} bytes, not {}",
        hash.output_len(),
        digest.len()
    );
    Err(Rejection::new(ErrorCode::INPUT_INVALID, message))
}

/// Builds the DER DigestInfo that CKM_SHAx_RSA_PKCS signs: the hash's algorithm identifier
/// followed by `digest`.
pub fn digest_info(hash: DigestAlgorithm, digest: &[u8]) -> Vec<u8> {
    digest_info::encode(hash, digest)
}

#[cfg(test)]
mod tests;
