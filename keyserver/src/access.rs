//! Policy checks on each request: the credential still exists, the client and the key are
//! inside their validity windows and source networks, and the mechanism and digest algorithm
//! are allowed.
//!
//! The digest algorithm of a request comes from its mechanism (see
//! [`crate::policy::DigestSource`]):
//! - hash-and-sign mechanisms such as CKM_SHA384_RSA_PKCS or CKM_ECDSA_SHA512 name it;
//! - CKM_RSA_PKCS_PSS takes it from the `hashAlg` of its parameter;
//! - raw CKM_RSA_PKCS takes it from the algorithm identifier of the DigestInfo it signs;
//! - raw CKM_ECDSA infers it from the length of the hash it signs: 20 bytes is SHA-1,
//!   28 SHA-224, 32 SHA-256, 48 SHA-384 and 64 SHA-512. The inference cannot tell SHA-256 from
//!   SHA3-256 or SHA-512/256, which have the same length.
//!
//! A digest rule refuses a request whose digest algorithm cannot be found this way. EdDSA
//! hashes inside the algorithm, so digest rules do not restrict CKM_EDDSA.

use std::net::IpAddr;

use keyrelay_protocol::{ErrorCode, MechanismParameter, SignInput, SignRequest};
use time::OffsetDateTime;

use crate::audit::mechanism_name;
use crate::digest_info;
use crate::policy::digest_source;
use crate::policy::{ClientPolicy, DigestAlgorithm, DigestSource, KeyPolicy, Rules};
use crate::state::PolicyState;

/// Wire code of a request that the policy refuses for a reason other than the key or the
/// mechanism: an expired or revoked credential, a source network or a quota. The module
/// reports it as CKR_FUNCTION_REJECTED.
pub const POLICY_REFUSED: ErrorCode = ErrorCode::POLICY_REFUSED;

/// A request the policy refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Wire error code.
    pub code: ErrorCode,
    /// Message for the client, the log and the audit record.
    pub message: String,
}

impl Refusal {
    fn policy(message: String) -> Self {
        Self {
            code: POLICY_REFUSED,
            message,
        }
    }
}

/// Checks the rules of `client` that do not depend on a request: the validity window and the
/// source network.
///
/// # Errors
///
/// A [`Refusal`] with [`POLICY_REFUSED`].
pub fn check_client(
    client: &ClientPolicy,
    address: IpAddr,
    now: OffsetDateTime,
) -> Result<(), Refusal> {
    let who = format!("credential {}", client.key_id);
    check_window(&client.rules, &who, now)?;
    check_network(&client.rules, &who, address)
}

/// Checks a sign request of an authenticated connection against the policy in force, and
/// returns the client and key entries of that policy.
///
/// `authenticated` is the client as it was when the connection authenticated. A credential
/// removed or given another secret since then is refused.
///
/// # Errors
///
/// A [`Refusal`].
pub fn check_sign<'a>(
    state: &'a PolicyState,
    authenticated: &ClientPolicy,
    address: IpAddr,
    request: &SignRequest,
    now: OffsetDateTime,
) -> Result<(&'a ClientPolicy, &'a KeyPolicy), Refusal> {
    let client = state
        .authenticator
        .client(&authenticated.key_id)
        .filter(|current| current.verifier == authenticated.verifier)
        .ok_or_else(|| {
            Refusal::policy(format!(
                "credential {} was revoked or removed from the policy",
                authenticated.key_id
            ))
        })?;
    check_client(client, address, now)?;
    let key = client
        .keys
        .contains(&request.key_name)
        .then(|| state.policy.keys.get(&request.key_name))
        .flatten()
        .ok_or_else(|| Refusal {
            code: ErrorCode::KEY_NOT_ALLOWED,
            message: format!("key \"{}\" is not allowed for this KeyId", request.key_name),
        })?;
    let who = format!("key {}", request.key_name);
    check_window(&key.rules, &who, now)?;
    check_network(&key.rules, &who, address)?;
    check_mechanism(
        &client.rules,
        &format!("credential {}", client.key_id),
        request,
    )?;
    check_mechanism(&key.rules, &who, request)?;
    Ok((client, key))
}

fn check_window(rules: &Rules, who: &str, now: OffsetDateTime) -> Result<(), Refusal> {
    if rules.is_valid_at(now) {
        return Ok(());
    }
    let bound = |time: Option<OffsetDateTime>| {
        time.map_or_else(|| "-".to_owned(), crate::audit::format_rfc3339)
    };
    Err(Refusal::policy(format!(
        "{who} is outside its validity window (not_before {}, not_after {})",
        bound(rules.not_before),
        bound(rules.not_after)
    )))
}

fn check_network(rules: &Rules, who: &str, address: IpAddr) -> Result<(), Refusal> {
    if rules.allows_address(address) {
        return Ok(());
    }
    Err(Refusal::policy(format!(
        "{who} may not be used from {address}: it is outside the allowed networks"
    )))
}

fn check_mechanism(rules: &Rules, who: &str, request: &SignRequest) -> Result<(), Refusal> {
    let mechanism_refusal = |message: String| Refusal {
        code: ErrorCode::MECHANISM_INVALID,
        message,
    };
    let name = mechanism_name(request.mechanism);
    if !rules.allows_mechanism(request.mechanism) {
        return Err(mechanism_refusal(format!(
            "the policy does not allow {name} for {who}"
        )));
    }
    if !rules.restricts_digests() {
        return Ok(());
    }
    match request_digest(request) {
        Ok(Some(digest)) if rules.allows_digest(digest) => Ok(()),
        Ok(Some(digest)) => Err(mechanism_refusal(format!(
            "the policy does not allow digest algorithm {digest} for {who}"
        ))),
        Ok(None) => Ok(()),
        Err(reason) => Err(mechanism_refusal(format!(
            "{who} allows only some digest algorithms, and {reason}"
        ))),
    }
}

/// Finds the digest algorithm a request signs with. `Ok(None)` means digest rules do not
/// apply to the mechanism; the error says why the algorithm cannot be found.
pub fn request_digest(request: &SignRequest) -> Result<Option<DigestAlgorithm>, String> {
    let name = mechanism_name(request.mechanism);
    let unknown = || format!("the digest algorithm of this {name} request cannot be found");
    match digest_source(request.mechanism).ok_or_else(unknown)? {
        DigestSource::Fixed(digest) => Ok(Some(digest)),
        DigestSource::Intrinsic => Ok(None),
        DigestSource::PssParameter => match request.parameter {
            MechanismParameter::RsaPss { hash, .. } => DigestAlgorithm::from_hash_mechanism(hash)
                .map(Some)
                .ok_or_else(unknown),
            _ => Err(unknown()),
        },
        DigestSource::DigestInfo => digest_info::parse(request.input.bytes())
            .map(Some)
            .ok_or_else(|| format!("the {name} input is not a DigestInfo of a known hash")),
        DigestSource::DigestLength => match &request.input {
            SignInput::Data(hash) | SignInput::Digest(hash) => {
                DigestAlgorithm::from_output_len(hash.len())
                    .map(Some)
                    .ok_or_else(unknown)
            }
        },
    }
}

/// Returns the hex SHA-256 of the DER certificate among `objects`, if there is one.
pub fn certificate_sha256(objects: &[keyrelay_protocol::ObjectEntry]) -> Option<String> {
    use keyrelay_protocol::AttributeValue;
    objects.iter().find_map(|object| {
        let class = object.attribute(cryptoki_sys::CKA_CLASS);
        if class != Some(&AttributeValue::Ulong(cryptoki_sys::CKO_CERTIFICATE)) {
            return None;
        }
        match object.attribute(cryptoki_sys::CKA_VALUE) {
            Some(AttributeValue::Bytes(der)) => Some(crate::audit::sha256_hex(der)),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki_sys as ck;

    fn request(mechanism: u64, parameter: MechanismParameter, input: SignInput) -> SignRequest {
        SignRequest {
            key_name: "k".into(),
            mechanism,
            parameter,
            input,
        }
    }

    fn digest_of(mechanism: u64, input: SignInput) -> Result<Option<DigestAlgorithm>, String> {
        request_digest(&request(mechanism, MechanismParameter::None, input))
    }

    #[test]
    fn digest_from_hash_and_sign_mechanism() {
        let input = SignInput::Digest(vec![0; 48]);

        assert_eq!(
            digest_of(ck::CKM_SHA384_RSA_PKCS, input.clone()),
            Ok(Some(DigestAlgorithm::Sha384))
        );
        assert_eq!(
            digest_of(ck::CKM_ECDSA_SHA512, input),
            Ok(Some(DigestAlgorithm::Sha512))
        );
    }

    #[test]
    fn digest_from_pss_parameter() {
        let parameter = MechanismParameter::RsaPss {
            hash: ck::CKM_SHA256,
            mgf: ck::CKG_MGF1_SHA256,
            salt_len: 32,
        };
        let pss = request(
            ck::CKM_RSA_PKCS_PSS,
            parameter,
            SignInput::Data(vec![0; 32]),
        );

        assert_eq!(request_digest(&pss), Ok(Some(DigestAlgorithm::Sha256)));
    }

    #[test]
    fn digest_from_digest_info() {
        let info = digest_info::encode(DigestAlgorithm::Sha1, &[0; 20]);

        assert_eq!(
            digest_of(ck::CKM_RSA_PKCS, SignInput::Data(info)),
            Ok(Some(DigestAlgorithm::Sha1))
        );
        assert!(digest_of(ck::CKM_RSA_PKCS, SignInput::Data(vec![1; 32])).is_err());
    }

    #[test]
    fn digest_from_ecdsa_length() {
        for (len, digest) in [(20, DigestAlgorithm::Sha1), (32, DigestAlgorithm::Sha256)] {
            assert_eq!(
                digest_of(ck::CKM_ECDSA, SignInput::Data(vec![0; len])),
                Ok(Some(digest))
            );
        }
        assert!(digest_of(ck::CKM_ECDSA, SignInput::Data(vec![0; 33])).is_err());
    }

    #[test]
    fn eddsa_ignores_digest_rules() {
        let rules = Rules {
            digests: Some([DigestAlgorithm::Sha512].into()),
            ..Rules::default()
        };
        let eddsa = request(
            ck::CKM_EDDSA,
            MechanismParameter::None,
            SignInput::Data(vec![1]),
        );

        assert!(check_mechanism(&rules, "key k", &eddsa).is_ok());
    }

    #[test]
    fn disallowed_digest_refused() {
        let rules = Rules {
            digests: Some([DigestAlgorithm::Sha384].into()),
            ..Rules::default()
        };
        let sha256 = request(
            ck::CKM_ECDSA_SHA256,
            MechanismParameter::None,
            SignInput::Digest(vec![0; 32]),
        );

        let refusal = check_mechanism(&rules, "key k", &sha256).unwrap_err();

        assert_eq!(refusal.code, ErrorCode::MECHANISM_INVALID);
        assert!(refusal.message.contains("sha256"), "{}", refusal.message);
    }
}
