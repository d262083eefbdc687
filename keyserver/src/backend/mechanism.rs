//! Conversion of a planned backend operation into cryptoki's mechanism type.

use cryptoki::error::Error;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki_sys::CK_ULONG;
use keyrelay_protocol::MechanismParameter;

use crate::signing::{BackendOperation, BaseMechanism};

/// Builds the mechanism, with its parameter, that C_SignInit receives on the backend.
///
/// # Errors
///
/// A parameter value cryptoki cannot represent, such as an unknown hash mechanism. The
/// sign rules reject those earlier, so this is a second line of defence.
pub(super) fn cryptoki_mechanism(operation: &BackendOperation) -> Result<Mechanism<'_>, Error> {
    Ok(match (operation.mechanism, &operation.parameter) {
        (BaseMechanism::RsaPkcs, _) => Mechanism::RsaPkcs,
        (BaseMechanism::Ecdsa, _) => Mechanism::Ecdsa,
        (
            BaseMechanism::RsaPkcsPss,
            MechanismParameter::RsaPss {
                hash,
                mgf,
                salt_len,
            },
        ) => Mechanism::RsaPkcsPss(PkcsPssParams {
            hash_alg: MechanismType::try_from(to_ulong(*hash)?)?,
            mgf: mgf_type(to_ulong(*mgf)?)?,
            s_len: to_ulong(*salt_len)?.into(),
        }),
        (BaseMechanism::Eddsa, MechanismParameter::Eddsa { prehash, context }) => {
            let scheme = match prehash {
                true => EddsaSignatureScheme::Ed25519ph(context),
                false => EddsaSignatureScheme::Ed25519ctx(context),
            };
            Mechanism::Eddsa(EddsaParams::new(scheme))
        }
        (BaseMechanism::Eddsa, _) => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
        (BaseMechanism::RsaPkcsPss, _) => return Err(Error::InvalidValue),
    })
}

fn to_ulong(value: u64) -> Result<CK_ULONG, Error> {
    CK_ULONG::try_from(value).map_err(|_| Error::InvalidValue)
}

fn mgf_type(value: CK_ULONG) -> Result<PkcsMgfType, Error> {
    [
        PkcsMgfType::MGF1_SHA1,
        PkcsMgfType::MGF1_SHA224,
        PkcsMgfType::MGF1_SHA256,
        PkcsMgfType::MGF1_SHA384,
        PkcsMgfType::MGF1_SHA512,
    ]
    .into_iter()
    .find(|mgf| **mgf == value)
    .ok_or(Error::InvalidValue)
}
