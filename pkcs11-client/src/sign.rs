//! Sign operations: mechanism checks, local hashing and signature sizes.
//!
//! Hash-and-sign mechanisms hash on the client, single-part or through C_SignUpdate, so only
//! the digest travels. The request still names the mechanism the caller chose, so the
//! keyserver's policy and audit log see it.

use cryptoki_sys::*;
use keyrelay_protocol::{AttributeValue, MechanismParameter, ObjectEntry, SignInput, SignRequest};
use ring::digest;

use crate::error::{Error, Result};

/// A mechanism the module can forward.
struct MechanismSpec {
    mechanism: CK_MECHANISM_TYPE,
    key_type: CK_KEY_TYPE,
    digest: Option<&'static digest::Algorithm>,
}

const MECHANISMS: [MechanismSpec; 4] = [
    MechanismSpec {
        mechanism: CKM_RSA_PKCS,
        key_type: CKK_RSA,
        digest: None,
    },
    MechanismSpec {
        mechanism: CKM_SHA256_RSA_PKCS,
        key_type: CKK_RSA,
        digest: Some(&digest::SHA256),
    },
    MechanismSpec {
        mechanism: CKM_ECDSA,
        key_type: CKK_EC,
        digest: None,
    },
    MechanismSpec {
        mechanism: CKM_ECDSA_SHA256,
        key_type: CKK_EC,
        digest: Some(&digest::SHA256),
    },
];

/// Bytes of PKCS#1 v1.5 padding that CKM_RSA_PKCS adds at the least (RFC 8017, 9.2).
const PKCS1_OVERHEAD: usize = 11;

/// DER encodings of the named curves the module can size signatures for, with the length of
/// a raw r||s signature on each.
const CURVES: [(&[u8], usize); 3] = [
    // prime256v1 (P-256), 1.2.840.10045.3.1.7
    (
        &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        64,
    ),
    // secp384r1 (P-384), 1.3.132.0.34
    (&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22], 96),
    // secp521r1 (P-521), 1.3.132.0.35
    (&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23], 132),
];

/// Tells whether the module can forward `mechanism`.
pub(crate) fn supports(mechanism: CK_MECHANISM_TYPE) -> bool {
    MECHANISMS.iter().any(|spec| spec.mechanism == mechanism)
}

/// An active sign operation of one session.
pub(crate) struct SignOperation {
    key_name: String,
    mechanism: CK_MECHANISM_TYPE,
    hasher: Option<digest::Context>,
    signature_len: usize,
    max_data_len: usize,
    multipart: bool,
    /// A signature already produced, kept when it did not fit the caller's buffer.
    pub(crate) result: Option<Vec<u8>>,
}

impl std::fmt::Debug for SignOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignOperation")
            .field("key_name", &self.key_name)
            .field("mechanism", &self.mechanism)
            .field("signature_len", &self.signature_len)
            .field("multipart", &self.multipart)
            .finish_non_exhaustive()
    }
}

impl SignOperation {
    /// Checks a C_SignInit request against the key and starts the operation.
    ///
    /// `parameter_len` is the length of the caller's mechanism parameter: the mechanisms
    /// supported here take none. `max_input_len` is the keyserver's limit on raw input.
    pub(crate) fn new(
        mechanism: CK_MECHANISM_TYPE,
        parameter_len: usize,
        key: &ObjectEntry,
        max_input_len: usize,
    ) -> Result<Self> {
        let spec = MECHANISMS
            .iter()
            .find(|spec| spec.mechanism == mechanism)
            .ok_or(Error::MechanismInvalid(mechanism))?;
        if parameter_len != 0 {
            return Err(Error::MechanismParamInvalid);
        }
        check_key(key, spec)?;
        let signature_len = signature_len(key, spec.key_type)?;
        let max_data_len = match spec.key_type {
            CKK_RSA => signature_len
                .saturating_sub(PKCS1_OVERHEAD)
                .min(max_input_len),
            _ => max_input_len,
        };
        Ok(Self {
            key_name: key.key_name.clone(),
            mechanism,
            hasher: spec.digest.map(digest::Context::new),
            signature_len,
            max_data_len,
            multipart: false,
            result: None,
        })
    }

    /// Length of the signature this operation produces.
    pub(crate) fn signature_len(&self) -> usize {
        self.result.as_ref().map_or(self.signature_len, Vec::len)
    }

    /// Adds input for a multi-part signature (C_SignUpdate).
    pub(crate) fn update(&mut self, data: &[u8]) -> Result<()> {
        let hasher = self.hasher.as_mut().ok_or(Error::FunctionNotSupported)?;
        hasher.update(data);
        self.multipart = true;
        Ok(())
    }

    /// Builds the request for a single-part signature (C_Sign).
    pub(crate) fn single_part_request(&self, data: &[u8]) -> Result<SignRequest> {
        if self.multipart {
            return Err(Error::OperationActive);
        }
        let input = match &self.hasher {
            Some(hasher) => {
                let mut hasher = hasher.clone();
                hasher.update(data);
                SignInput::Digest(hasher.finish().as_ref().to_vec())
            }
            None if data.len() > self.max_data_len => return Err(Error::DataLenRange),
            None => SignInput::Data(data.to_vec()),
        };
        Ok(self.request(input))
    }

    /// Builds the request that ends a multi-part signature (C_SignFinal).
    pub(crate) fn final_request(&self) -> Result<SignRequest> {
        let hasher = self.hasher.as_ref().ok_or(Error::FunctionNotSupported)?;
        let digest = hasher.clone().finish();
        Ok(self.request(SignInput::Digest(digest.as_ref().to_vec())))
    }

    fn request(&self, input: SignInput) -> SignRequest {
        SignRequest {
            key_name: self.key_name.clone(),
            mechanism: self.mechanism.into(),
            parameter: MechanismParameter::None,
            input,
        }
    }
}

fn check_key(key: &ObjectEntry, spec: &MechanismSpec) -> Result<()> {
    let class = key.attribute(CKA_CLASS.into());
    if class != Some(&AttributeValue::Ulong(CKO_PRIVATE_KEY.into())) {
        return Err(Error::KeyTypeInconsistent);
    }
    if key.attribute(CKA_KEY_TYPE.into()) != Some(&AttributeValue::Ulong(spec.key_type.into())) {
        return Err(Error::KeyTypeInconsistent);
    }
    if key.attribute(CKA_SIGN.into()) != Some(&AttributeValue::Bool(true)) {
        return Err(Error::KeyFunctionNotPermitted);
    }
    Ok(())
}

fn signature_len(key: &ObjectEntry, key_type: CK_KEY_TYPE) -> Result<usize> {
    let bytes = |kind: CK_ATTRIBUTE_TYPE| match key.attribute(kind.into()) {
        Some(AttributeValue::Bytes(bytes)) => Ok(bytes.as_slice()),
        _ => Err(Error::KeyTypeInconsistent),
    };
    if key_type == CKK_RSA {
        let modulus = bytes(CKA_MODULUS)?;
        let leading_zeros = modulus.iter().take_while(|&&b| b == 0).count();
        return Ok(modulus.len() - leading_zeros);
    }
    let params = bytes(CKA_EC_PARAMS)?;
    CURVES
        .iter()
        .find(|(oid, _)| *oid == params)
        .map(|&(_, len)| len)
        .ok_or(Error::KeyTypeInconsistent)
}

#[cfg(test)]
mod tests {
    use keyrelay_protocol::Attribute;

    use super::*;

    fn key(key_type: CK_KEY_TYPE, extra: Attribute) -> ObjectEntry {
        let attribute = |kind: CK_ATTRIBUTE_TYPE, value| Attribute {
            kind: kind.into(),
            value,
        };
        ObjectEntry {
            handle: 1,
            key_name: "k".into(),
            attributes: vec![
                attribute(CKA_CLASS, AttributeValue::Ulong(CKO_PRIVATE_KEY.into())),
                attribute(CKA_KEY_TYPE, AttributeValue::Ulong(key_type.into())),
                attribute(CKA_SIGN, AttributeValue::Bool(true)),
                extra,
            ],
        }
    }

    fn rsa_key() -> ObjectEntry {
        let modulus = Attribute {
            kind: CKA_MODULUS.into(),
            value: AttributeValue::Bytes(vec![0xff; 256]),
        };
        key(CKK_RSA, modulus)
    }

    fn ec_key() -> ObjectEntry {
        let params = Attribute {
            kind: CKA_EC_PARAMS.into(),
            value: AttributeValue::Bytes(CURVES[0].0.to_vec()),
        };
        key(CKK_EC, params)
    }

    #[test]
    fn rsa_signature_length_is_modulus_length() {
        let operation = SignOperation::new(CKM_RSA_PKCS, 0, &rsa_key(), 4096).unwrap();
        assert_eq!(operation.signature_len(), 256);
    }

    #[test]
    fn p256_signature_length_is_64() {
        let operation = SignOperation::new(CKM_ECDSA, 0, &ec_key(), 4096).unwrap();
        assert_eq!(operation.signature_len(), 64);
    }

    #[test]
    fn mechanism_must_match_key_type() {
        let error = SignOperation::new(CKM_ECDSA, 0, &rsa_key(), 4096).unwrap_err();
        assert_eq!(error.rv(), CKR_KEY_TYPE_INCONSISTENT);
    }

    #[test]
    fn parameter_is_rejected() {
        let error = SignOperation::new(CKM_RSA_PKCS, 8, &rsa_key(), 4096).unwrap_err();
        assert_eq!(error.rv(), CKR_MECHANISM_PARAM_INVALID);
    }

    #[test]
    fn raw_rsa_input_is_bounded_by_modulus() {
        let operation = SignOperation::new(CKM_RSA_PKCS, 0, &rsa_key(), 4096).unwrap();
        assert!(operation.single_part_request(&[0; 245]).is_ok());
        let error = operation.single_part_request(&[0; 246]).unwrap_err();
        assert_eq!(error.rv(), CKR_DATA_LEN_RANGE);
    }

    #[test]
    fn multipart_hashes_like_single_part() {
        let mut operation = SignOperation::new(CKM_SHA256_RSA_PKCS, 0, &rsa_key(), 4096).unwrap();
        let single = operation.single_part_request(b"hello world").unwrap();
        operation.update(b"hello ").unwrap();
        operation.update(b"world").unwrap();
        let multi = operation.final_request().unwrap();
        assert_eq!(single, multi);
        let expected = digest::digest(&digest::SHA256, b"hello world");
        assert_eq!(multi.input, SignInput::Digest(expected.as_ref().to_vec()));
    }

    #[test]
    fn raw_mechanism_has_no_multipart() {
        let mut operation = SignOperation::new(CKM_ECDSA, 0, &ec_key(), 4096).unwrap();
        assert_eq!(
            operation.update(b"x").unwrap_err().rv(),
            CKR_FUNCTION_NOT_SUPPORTED
        );
    }

    #[test]
    fn single_part_after_update_is_rejected() {
        let mut operation = SignOperation::new(CKM_ECDSA_SHA256, 0, &ec_key(), 4096).unwrap();
        operation.update(b"x").unwrap();
        assert_eq!(
            operation.single_part_request(b"y").unwrap_err().rv(),
            CKR_OPERATION_ACTIVE
        );
    }
}
