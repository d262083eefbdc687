//! Sign operations: mechanism checks, local hashing and signature sizes.
//!
//! Hash-and-sign mechanisms hash on the client, single-part or through C_SignUpdate, so only
//! the digest travels. The request still names the mechanism the caller chose, so the
//! keyserver's policy and audit log see it.

use cryptoki_sys::*;
use keyrelay_protocol::{AttributeValue, MechanismParameter, ObjectEntry, SignInput, SignRequest};

use crate::attributes;
use crate::digest::{Hash, Hasher};
use crate::error::{Error, Result};
use crate::ffi::{Parameter, ParameterKind};

/// A mechanism the module can forward.
pub(crate) struct MechanismSpec {
    pub(crate) mechanism: CK_MECHANISM_TYPE,
    pub(crate) key_type: CK_KEY_TYPE,
    pub(crate) hash: Option<Hash>,
    pub(crate) parameter: ParameterKind,
}

const fn spec(
    mechanism: CK_MECHANISM_TYPE,
    key_type: CK_KEY_TYPE,
    hash: Option<Hash>,
    parameter: ParameterKind,
) -> MechanismSpec {
    MechanismSpec {
        mechanism,
        key_type,
        hash,
        parameter,
    }
}

const MECHANISMS: [MechanismSpec; 19] = {
    use Hash::*;
    use ParameterKind::{Eddsa, None as Plain, RsaPss};
    [
        spec(CKM_RSA_PKCS, CKK_RSA, None, Plain),
        spec(CKM_SHA1_RSA_PKCS, CKK_RSA, Some(Sha1), Plain),
        spec(CKM_SHA224_RSA_PKCS, CKK_RSA, Some(Sha224), Plain),
        spec(CKM_SHA256_RSA_PKCS, CKK_RSA, Some(Sha256), Plain),
        spec(CKM_SHA384_RSA_PKCS, CKK_RSA, Some(Sha384), Plain),
        spec(CKM_SHA512_RSA_PKCS, CKK_RSA, Some(Sha512), Plain),
        spec(CKM_RSA_PKCS_PSS, CKK_RSA, None, RsaPss),
        spec(CKM_SHA1_RSA_PKCS_PSS, CKK_RSA, Some(Sha1), RsaPss),
        spec(CKM_SHA224_RSA_PKCS_PSS, CKK_RSA, Some(Sha224), RsaPss),
        spec(CKM_SHA256_RSA_PKCS_PSS, CKK_RSA, Some(Sha256), RsaPss),
        spec(CKM_SHA384_RSA_PKCS_PSS, CKK_RSA, Some(Sha384), RsaPss),
        spec(CKM_SHA512_RSA_PKCS_PSS, CKK_RSA, Some(Sha512), RsaPss),
        spec(CKM_ECDSA, CKK_EC, None, Plain),
        spec(CKM_ECDSA_SHA1, CKK_EC, Some(Sha1), Plain),
        spec(CKM_ECDSA_SHA224, CKK_EC, Some(Sha224), Plain),
        spec(CKM_ECDSA_SHA256, CKK_EC, Some(Sha256), Plain),
        spec(CKM_ECDSA_SHA384, CKK_EC, Some(Sha384), Plain),
        spec(CKM_ECDSA_SHA512, CKK_EC, Some(Sha512), Plain),
        spec(CKM_EDDSA, CKK_EC_EDWARDS, None, Eddsa),
    ]
};

/// Bytes of PKCS#1 v1.5 padding that CKM_RSA_PKCS adds at the least (RFC 8017, 9.2).
const PKCS1_OVERHEAD: usize = 11;

/// Encodings of CKA_EC_PARAMS that the module can size signatures for, with the length of a
/// raw signature on each: r||s for ECDSA, R||S for EdDSA.
const CURVES: [(&[u8], usize); 7] = [
    // prime256v1 (P-256), 1.2.840.10045.3.1.7
    (
        &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        64,
    ),
    // secp384r1 (P-384), 1.3.132.0.34
    (&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22], 96),
    // secp521r1 (P-521), 1.3.132.0.35
    (&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23], 132),
    // id-Ed25519, 1.3.101.112
    (&[0x06, 0x03, 0x2b, 0x65, 0x70], 64),
    // id-Ed448, 1.3.101.113
    (&[0x06, 0x03, 0x2b, 0x65, 0x71], 114),
    // PrintableString "edwards25519", which PKCS#11 v3.0 also allows
    (b"\x13\x0cedwards25519", 64),
    // PrintableString "edwards448"
    (b"\x13\x0aedwards448", 114),
];

/// Tells whether the module can forward `mechanism`.
pub(crate) fn supports(mechanism: CK_MECHANISM_TYPE) -> bool {
    find(mechanism).is_some()
}

/// Returns the parameter structure `mechanism` takes. Mechanisms the module cannot forward get
/// [`ParameterKind::None`], and C_SignInit then rejects the mechanism itself.
pub(crate) fn parameter_kind(mechanism: CK_MECHANISM_TYPE) -> ParameterKind {
    find(mechanism).map_or(ParameterKind::None, |spec| spec.parameter)
}

/// Returns how the module handles `mechanism`, if it can.
pub(crate) fn find(mechanism: CK_MECHANISM_TYPE) -> Option<&'static MechanismSpec> {
    MECHANISMS.iter().find(|spec| spec.mechanism == mechanism)
}

/// An active sign operation of one session.
#[derive(Debug)]
pub(crate) struct SignOperation {
    key_name: String,
    mechanism: CK_MECHANISM_TYPE,
    parameter: MechanismParameter,
    hasher: Option<Hasher>,
    /// Required length of raw input, for CKM_RSA_PKCS_PSS: the hash length.
    exact_data_len: Option<usize>,
    signature_len: usize,
    max_data_len: usize,
    multipart: bool,
    /// False until a CKU_CONTEXT_SPECIFIC login, for keys with CKA_ALWAYS_AUTHENTICATE.
    pub(crate) authorized: bool,
    /// A signature already produced, kept when it did not fit the caller's buffer.
    pub(crate) result: Option<Vec<u8>>,
}

impl SignOperation {
    /// Checks a C_SignInit request against the key and starts the operation.
    ///
    /// `max_input_len` is the keyserver's limit on input that is not hashed locally.
    pub(crate) fn new(
        mechanism: CK_MECHANISM_TYPE,
        parameter: Parameter,
        key: &ObjectEntry,
        max_input_len: usize,
    ) -> Result<Self> {
        let spec = find(mechanism).ok_or(Error::MechanismInvalid(mechanism))?;
        let parameter = valid_parameter(spec, parameter)?;
        let exact_data_len = check_parameter(spec, &parameter)?;
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
            parameter,
            hasher: spec.hash.map(Hash::start),
            exact_data_len,
            signature_len,
            max_data_len,
            multipart: false,
            authorized: !always_authenticate(key),
            result: None,
        })
    }

    /// Length of the signature this operation produces.
    pub(crate) fn signature_len(&self) -> usize {
        self.result.as_ref().map_or(self.signature_len, Vec::len)
    }

    /// Adds input for a multi-part signature (C_SignUpdate).
    ///
    /// A mechanism without a hash is single-part only: the call fails with
    /// CKR_OPERATION_NOT_INITIALIZED and ends the operation, as SoftHSM2 does, because the
    /// specification names no code for it.
    pub(crate) fn update(&mut self, data: &[u8]) -> Result<()> {
        let hasher = self.hasher.as_mut().ok_or(Error::OperationNotInitialized)?;
        hasher.update(data);
        self.multipart = true;
        Ok(())
    }

    /// Builds the request for a single-part signature (C_Sign).
    pub(crate) fn single_part_request(&self, data: &[u8]) -> Result<SignRequest> {
        self.check_authorized()?;
        if self.multipart {
            return Err(Error::OperationActive);
        }
        let input = match &self.hasher {
            Some(hasher) => {
                let mut hasher = hasher.clone();
                hasher.update(data);
                SignInput::Digest(hasher.digest())
            }
            None if data.len() > self.max_data_len => return Err(Error::DataLenRange),
            None if self.exact_data_len.is_some_and(|len| len != data.len()) => {
                return Err(Error::DataLenRange);
            }
            None => SignInput::Data(data.to_vec()),
        };
        Ok(self.request(input))
    }

    /// Builds the request that ends a multi-part signature (C_SignFinal).
    pub(crate) fn final_request(&self) -> Result<SignRequest> {
        self.check_authorized()?;
        let hasher = self.hasher.as_ref().ok_or(Error::FunctionNotSupported)?;
        Ok(self.request(SignInput::Digest(hasher.digest())))
    }

    fn check_authorized(&self) -> Result<()> {
        if self.authorized {
            Ok(())
        } else {
            Err(Error::UserNotLoggedIn)
        }
    }

    fn request(&self, input: SignInput) -> SignRequest {
        SignRequest {
            key_name: self.key_name.clone(),
            mechanism: self.mechanism.into(),
            parameter: self.parameter.clone(),
            input,
        }
    }
}

/// Unwraps a parameter read from C, or rejects it.
///
/// A missing or malformed CK_RSA_PKCS_PSS_PARAMS gets CKR_ARGUMENTS_BAD, the code SoftHSM2
/// returns; other mechanisms get CKR_MECHANISM_PARAM_INVALID.
pub(crate) fn valid_parameter(
    spec: &MechanismSpec,
    parameter: Parameter,
) -> Result<MechanismParameter> {
    match (parameter, spec.parameter) {
        (Parameter::Valid(parameter), _) => Ok(parameter),
        (Parameter::Invalid, ParameterKind::RsaPss) => {
            Err(Error::ArgumentsBad("invalid CK_RSA_PKCS_PSS_PARAMS"))
        }
        (Parameter::Invalid, _) => Err(Error::MechanismParamInvalid),
    }
}

/// Checks the parameter against the mechanism (PKCS#11 v3.0 section 2.1.14 for PSS) and
/// returns the exact input length it implies for raw RSA-PSS.
///
/// Like SoftHSM2, the module requires MGF1 over the same hash as the message and rejects
/// any mismatch with CKR_ARGUMENTS_BAD, so a caller learns at C_SignInit what the backend
/// would otherwise report only at C_Sign.
pub(crate) fn check_parameter(
    spec: &MechanismSpec,
    parameter: &MechanismParameter,
) -> Result<Option<usize>> {
    let MechanismParameter::RsaPss { hash, mgf, .. } = parameter else {
        return Ok(None);
    };
    let bad = Error::ArgumentsBad("inconsistent CK_RSA_PKCS_PSS_PARAMS");
    let Some(hash) = CK_MECHANISM_TYPE::try_from(*hash)
        .ok()
        .and_then(Hash::from_ckm)
    else {
        return Err(bad);
    };
    if spec.hash.is_some_and(|expected| expected != hash) || u64::from(hash.mgf1()) != *mgf {
        return Err(bad);
    }
    Ok(spec.hash.is_none().then(|| hash.output_len()))
}

fn always_authenticate(key: &ObjectEntry) -> bool {
    key.attribute(CKA_ALWAYS_AUTHENTICATE.into()) == Some(&AttributeValue::Bool(true))
}

fn check_key(key: &ObjectEntry, spec: &MechanismSpec) -> Result<()> {
    attributes::check_key_type(key, CKO_PRIVATE_KEY, spec.key_type)?;
    if key.attribute(CKA_SIGN.into()) != Some(&AttributeValue::Bool(true)) {
        return Err(Error::KeyFunctionNotPermitted);
    }
    Ok(())
}

fn signature_len(key: &ObjectEntry, key_type: CK_KEY_TYPE) -> Result<usize> {
    let bytes = |kind| attributes::key_bytes(key, kind);
    if key_type == CKK_RSA {
        let modulus = bytes(CKA_MODULUS)?;
        let leading_zeros = modulus.iter().take_while(|&&b| b == 0).count();
        return Ok(modulus.len() - leading_zeros);
    }
    let params = bytes(CKA_EC_PARAMS)?;
    CURVES
        .iter()
        .find(|(encoding, _)| *encoding == params)
        .map(|&(_, len)| len)
        .ok_or(Error::KeyTypeInconsistent)
}

#[cfg(test)]
mod tests;
