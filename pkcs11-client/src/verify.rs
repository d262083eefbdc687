//! Verify operations, done locally with the public key from the catalogue.
//!
//! Verification needs no secret, so it never reaches the keyserver. Each mechanism the
//! module forwards for signing verifies here with the same semantics: raw PKCS#1 v1.5 over
//! the caller's input, PSS with the caller's parameters, ECDSA over a hash with raw r||s
//! signatures, and pure Ed25519.

use cryptoki_sys::*;
use keyrelay_protocol::{AttributeValue, MechanismParameter, ObjectEntry};
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPublicKey};

use crate::attributes;
use crate::digest::{Hash, Hasher};
use crate::error::{Error, Result};
use crate::ffi::Parameter;
use crate::sign;

/// A public key in the form the verifiers take.
#[derive(Debug)]
enum PublicKey {
    Rsa(RsaPublicKey),
    /// An EC point in uncompressed or compressed SEC 1 form, with the signature length.
    Ec {
        point: Vec<u8>,
        signature_len: usize,
    },
    Ed25519(Vec<u8>),
}

/// An active verify operation of one session.
#[derive(Debug)]
pub(crate) struct VerifyOperation {
    key: PublicKey,
    parameter: MechanismParameter,
    hash: Option<Hash>,
    hasher: Option<Hasher>,
    exact_data_len: Option<usize>,
    multipart: bool,
}

impl VerifyOperation {
    /// Checks a C_VerifyInit request against the public key and starts the operation.
    pub(crate) fn new(
        mechanism: CK_MECHANISM_TYPE,
        parameter: Parameter,
        key: &ObjectEntry,
    ) -> Result<Self> {
        let spec = sign::find(mechanism).ok_or(Error::MechanismInvalid(mechanism))?;
        let parameter = sign::valid_parameter(spec, parameter)?;
        let exact_data_len = sign::check_parameter(spec, &parameter)?;
        if let MechanismParameter::Eddsa { .. } = parameter {
            // NOTE: Ed25519ctx and Ed25519ph are not verified locally; only pure Ed25519 is.
            return Err(Error::MechanismParamInvalid);
        }
        check_key(key, spec.key_type)?;
        Ok(Self {
            key: public_key(key, spec.key_type)?,
            parameter,
            hash: spec.hash,
            hasher: spec.hash.map(Hash::start),
            exact_data_len,
            multipart: false,
        })
    }

    /// Adds input for a multi-part verification (C_VerifyUpdate).
    pub(crate) fn update(&mut self, data: &[u8]) -> Result<()> {
        let hasher = self.hasher.as_mut().ok_or(Error::FunctionNotSupported)?;
        hasher.update(data);
        self.multipart = true;
        Ok(())
    }

    /// Verifies a single-part signature (C_Verify).
    pub(crate) fn verify(&self, data: &[u8], signature: &[u8]) -> Result<()> {
        if self.multipart {
            return Err(Error::OperationActive);
        }
        let input = match &self.hasher {
            Some(hasher) => {
                let mut hasher = hasher.clone();
                hasher.update(data);
                hasher.digest()
            }
            None if self.exact_data_len.is_some_and(|len| len != data.len()) => {
                return Err(Error::DataLenRange);
            }
            None => data.to_vec(),
        };
        self.check(&input, signature)
    }

    /// Verifies a multi-part signature (C_VerifyFinal).
    pub(crate) fn verify_final(&self, signature: &[u8]) -> Result<()> {
        let hasher = self.hasher.as_ref().ok_or(Error::FunctionNotSupported)?;
        self.check(&hasher.digest(), signature)
    }

    /// Checks `signature` over `input`: the digest for hash-and-sign mechanisms, the
    /// caller's data otherwise.
    fn check(&self, input: &[u8], signature: &[u8]) -> Result<()> {
        match &self.key {
            PublicKey::Rsa(key) => self.check_rsa(key, input, signature),
            PublicKey::Ec {
                point,
                signature_len,
            } => {
                if signature.len() != *signature_len {
                    return Err(Error::SignatureLenRange);
                }
                check_ecdsa(point, input, signature)
            }
            PublicKey::Ed25519(point) => {
                if signature.len() != 64 {
                    return Err(Error::SignatureLenRange);
                }
                let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, point);
                key.verify(input, signature)
                    .map_err(|_| Error::SignatureInvalid)
            }
        }
    }

    fn check_rsa(&self, key: &RsaPublicKey, input: &[u8], signature: &[u8]) -> Result<()> {
        use rsa::traits::PublicKeyParts;
        if signature.len() != key.size() {
            return Err(Error::SignatureLenRange);
        }
        let outcome = match &self.parameter {
            MechanismParameter::RsaPss { hash, salt_len, .. } => {
                let hash = u64_hash(*hash)?;
                let salt_len =
                    usize::try_from(*salt_len).map_err(|_| Error::MechanismParamInvalid)?;
                key.verify(pss(hash, salt_len), input, signature)
            }
            _ => match self.hash {
                Some(hash) => key.verify(
                    Pkcs1v15Sign::new_unprefixed(),
                    &digest_info(hash, input),
                    signature,
                ),
                None => key.verify(Pkcs1v15Sign::new_unprefixed(), input, signature),
            },
        };
        outcome.map_err(|_| Error::SignatureInvalid)
    }
}

fn u64_hash(ckm: u64) -> Result<Hash> {
    CK_MECHANISM_TYPE::try_from(ckm)
        .ok()
        .and_then(Hash::from_ckm)
        .ok_or(Error::MechanismParamInvalid)
}

/// PSS verification with MGF1 over the same hash, the only combination
/// [`sign::check_parameter`] accepts.
fn pss(hash: Hash, salt_len: usize) -> Pss {
    match hash {
        Hash::Sha1 => Pss::new_with_salt::<sha1::Sha1>(salt_len),
        Hash::Sha224 => Pss::new_with_salt::<sha2::Sha224>(salt_len),
        Hash::Sha256 => Pss::new_with_salt::<sha2::Sha256>(salt_len),
        Hash::Sha384 => Pss::new_with_salt::<sha2::Sha384>(salt_len),
        Hash::Sha512 => Pss::new_with_salt::<sha2::Sha512>(salt_len),
    }
}

/// Builds the DER DigestInfo that PKCS#1 v1.5 signs for a hash-and-sign mechanism.
fn digest_info(hash: Hash, digest: &[u8]) -> Vec<u8> {
    // The DER prefixes of RFC 8017, section 9.2, note 1.
    let prefix: &[u8] = match hash {
        Hash::Sha1 => &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ],
        Hash::Sha224 => &[
            0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x04, 0x05, 0x00, 0x04, 0x1c,
        ],
        Hash::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        Hash::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        Hash::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    };
    [prefix, digest].concat()
}

/// Verifies a raw r||s ECDSA signature over a hash, on the curve the point's length implies.
fn check_ecdsa(point: &[u8], hash: &[u8], signature: &[u8]) -> Result<()> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let invalid = |_| Error::SignatureInvalid;
    match signature.len() {
        64 => {
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|_| Error::KeyTypeInconsistent)?;
            let signature = p256::ecdsa::Signature::from_slice(signature).map_err(invalid)?;
            key.verify_prehash(hash, &signature).map_err(invalid)
        }
        96 => {
            let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|_| Error::KeyTypeInconsistent)?;
            let signature = p384::ecdsa::Signature::from_slice(signature).map_err(invalid)?;
            key.verify_prehash(hash, &signature).map_err(invalid)
        }
        132 => {
            let key = p521::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|_| Error::KeyTypeInconsistent)?;
            let signature = p521::ecdsa::Signature::from_slice(signature).map_err(invalid)?;
            key.verify_prehash(hash, &signature).map_err(invalid)
        }
        _ => Err(Error::SignatureLenRange),
    }
}

fn check_key(key: &ObjectEntry, key_type: CK_KEY_TYPE) -> Result<()> {
    attributes::check_key_type(key, CKO_PUBLIC_KEY, key_type)?;
    if key.attribute(CKA_VERIFY.into()) == Some(&AttributeValue::Bool(false)) {
        return Err(Error::KeyFunctionNotPermitted);
    }
    Ok(())
}

fn public_key(key: &ObjectEntry, key_type: CK_KEY_TYPE) -> Result<PublicKey> {
    let bytes = |kind| attributes::key_bytes(key, kind);
    match key_type {
        CKK_RSA => {
            let modulus = BigUint::from_bytes_be(bytes(CKA_MODULUS)?);
            let exponent = BigUint::from_bytes_be(bytes(CKA_PUBLIC_EXPONENT)?);
            let key =
                RsaPublicKey::new(modulus, exponent).map_err(|_| Error::KeyTypeInconsistent)?;
            Ok(PublicKey::Rsa(key))
        }
        CKK_EC => {
            let point = unwrap_octet_string(bytes(CKA_EC_POINT)?).to_vec();
            let field_len = (point.len().saturating_sub(1)) / 2;
            Ok(PublicKey::Ec {
                signature_len: 2 * field_len,
                point,
            })
        }
        CKK_EC_EDWARDS => Ok(PublicKey::Ed25519(
            unwrap_octet_string(bytes(CKA_EC_POINT)?).to_vec(),
        )),
        _ => Err(Error::KeyTypeInconsistent),
    }
}

/// Returns the content of a DER OCTET STRING, or `bytes` unchanged if they are not one.
/// CKA_EC_POINT contains the point wrapped in an OCTET STRING, but some tokens store it bare.
fn unwrap_octet_string(bytes: &[u8]) -> &[u8] {
    let (header, len) = match bytes {
        [0x04, len, ..] if *len < 0x80 => (2, usize::from(*len)),
        [0x04, 0x81, len, ..] => (3, usize::from(*len)),
        _ => return bytes,
    };
    let inner = &bytes[header..];
    // A SEC 1 point starts with 0x02, 0x03 or 0x04; anything else means a bare point whose
    // first bytes only happened to look like an OCTET STRING header.
    let is_point = matches!(inner.first(), Some(0x02..=0x04));
    if inner.len() == len && is_point {
        inner
    } else {
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octet_string_is_unwrapped() {
        let mut point = vec![0x04; 65];
        point[1] = 0x11;
        let mut wrapped = vec![0x04, 65];
        wrapped.extend_from_slice(&point);
        assert_eq!(unwrap_octet_string(&wrapped), point.as_slice());
        assert_eq!(unwrap_octet_string(&point), point.as_slice());
    }

    #[test]
    fn digest_info_matches_keyserver_layout() {
        for hash in [
            Hash::Sha1,
            Hash::Sha224,
            Hash::Sha256,
            Hash::Sha384,
            Hash::Sha512,
        ] {
            let info = digest_info(hash, &vec![0; hash.output_len()]);
            assert_eq!(usize::from(info[1]), info.len() - 2, "{hash:?}");
        }
    }
}
