//! Module loading, slot lookup and the token facts shown to clients.

use std::collections::BTreeMap;
use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::{MechanismInfo, MechanismType};
use cryptoki::slot::Slot;
use cryptoki_sys::{
    CKF_DIGEST, CKF_EC_COMPRESS, CKF_EC_ECPARAMETERS, CKF_EC_F_2M, CKF_EC_F_P, CKF_EC_OID,
    CKF_EC_UNCOMPRESS, CKF_HW, CKF_SIGN, CKF_VERIFY,
};
use keyrelay_protocol::MechanismEntry;

use super::BackendError;
use crate::policy::DigestAlgorithm;
use crate::signing::CLIENT_MECHANISMS;

/// Loads a PKCS#11 module and initializes it for use from several threads.
pub(super) fn load_module(path: &Path) -> Result<Pkcs11, BackendError> {
    let module_error = |source| BackendError::Module {
        path: path.to_owned(),
        source,
    };
    let context = Pkcs11::new(path).map_err(module_error)?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(context),
        Err(source) => Err(module_error(source)),
    }
}

/// Finds the one slot whose token has the CKA_LABEL `label`.
pub(super) fn find_slot(context: &Pkcs11, token: &str, label: &str) -> Result<Slot, BackendError> {
    let pkcs11_error = |source| BackendError::Pkcs11 {
        token: token.to_owned(),
        operation: "listing slots",
        source,
    };
    let mut matches = Vec::new();
    for slot in context.get_slots_with_token().map_err(pkcs11_error)? {
        let info = context.get_token_info(slot).map_err(pkcs11_error)?;
        if info.label().trim_end() == label {
            matches.push(slot);
        }
    }
    match matches.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(BackendError::TokenNotFound {
            token: token.to_owned(),
            label: label.to_owned(),
        }),
        several => Err(BackendError::TokenAmbiguous {
            token: token.to_owned(),
            label: label.to_owned(),
            count: several.len(),
        }),
    }
}

/// Manufacturer id, model and serial number of a token, with their padding trimmed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct TokenDescription {
    pub manufacturer: String,
    pub model: String,
    pub serial_number: String,
}

pub(super) fn describe(context: &Pkcs11, slot: Slot) -> Result<TokenDescription, Error> {
    let info = context.get_token_info(slot)?;
    Ok(TokenDescription {
        manufacturer: info.manufacturer_id().trim().to_owned(),
        model: info.model().trim().to_owned(),
        serial_number: info.serial_number().trim().to_owned(),
    })
}

/// Returns the backend's info for each client mechanism it can serve, keyed by CKM_* value,
/// and for the digest mechanisms the module computes locally.
///
/// A sign mechanism is listed when the backend supports both it and the base mechanism the
/// server signs with, so clients see the intersection of what the backend has and what
/// keyrelay can forward. Flags keep only what a client can do through keyrelay.
pub(super) fn signing_mechanisms(
    context: &Pkcs11,
    slot: Slot,
) -> Result<BTreeMap<u64, MechanismEntry>, Error> {
    let mut mechanisms = BTreeMap::new();
    for entry in &CLIENT_MECHANISMS {
        let (Some(own), Some(base)) = (
            probe(context, slot, entry.ckm)?,
            probe(context, slot, entry.base.ckm())?,
        ) else {
            continue;
        };
        if own.sign() && base.sign() {
            // The module verifies locally with the public key, so it offers verification
            // wherever the backend does.
            let operations = if own.verify() {
                CKF_SIGN | CKF_VERIFY
            } else {
                CKF_SIGN
            };
            mechanisms.insert(entry.ckm, mechanism_entry(entry.ckm, &own, operations));
        }
    }
    for hash in DigestAlgorithm::ALL {
        let info = probe(context, slot, hash.ckm())?;
        if let Some(info) = info.filter(MechanismInfo::digest) {
            mechanisms.insert(hash.ckm(), mechanism_entry(hash.ckm(), &info, CKF_DIGEST));
        }
    }
    Ok(mechanisms)
}

/// Returns the backend's info for `ckm`, or `None` if it lacks the mechanism.
///
/// C_GetMechanismInfo is asked directly: cryptoki's get_mechanism_list logs an error for
/// every vendor mechanism it does not know.
fn probe(context: &Pkcs11, slot: Slot, ckm: u64) -> Result<Option<MechanismInfo>, Error> {
    let Some(mechanism_type) = mechanism_type(ckm) else {
        return Ok(None);
    };
    match context.get_mechanism_info(slot, mechanism_type) {
        Ok(info) => Ok(Some(info)),
        Err(Error::Pkcs11(RvError::MechanismInvalid, _)) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Returns cryptoki's MechanismType for one of the mechanisms the server probes.
///
/// cryptoki 0.12's `MechanismType::try_from` does not know the SHA-224 mechanisms and logs an
/// error for each unknown value, so the constants are matched here instead.
///
/// NOTE: cryptoki 0.12 has no constant for CKM_SHA224_RSA_PKCS_PSS, so the backend is never
/// asked about it and keyrelay never offers it.
fn mechanism_type(ckm: u64) -> Option<MechanismType> {
    const KNOWN: [MechanismType; 23] = [
        MechanismType::RSA_PKCS,
        MechanismType::SHA1_RSA_PKCS,
        MechanismType::SHA224_RSA_PKCS,
        MechanismType::SHA256_RSA_PKCS,
        MechanismType::SHA384_RSA_PKCS,
        MechanismType::SHA512_RSA_PKCS,
        MechanismType::RSA_PKCS_PSS,
        MechanismType::SHA1_RSA_PKCS_PSS,
        MechanismType::SHA256_RSA_PKCS_PSS,
        MechanismType::SHA384_RSA_PKCS_PSS,
        MechanismType::SHA512_RSA_PKCS_PSS,
        MechanismType::ECDSA,
        MechanismType::ECDSA_SHA1,
        MechanismType::ECDSA_SHA224,
        MechanismType::ECDSA_SHA256,
        MechanismType::ECDSA_SHA384,
        MechanismType::ECDSA_SHA512,
        MechanismType::EDDSA,
        MechanismType::SHA1,
        MechanismType::SHA224,
        MechanismType::SHA256,
        MechanismType::SHA384,
        MechanismType::SHA512,
    ];
    KNOWN.into_iter().find(|known| **known == ckm)
}

// NOTE: CKF_EC_CURVENAME is dropped because cryptoki 0.12's MechanismInfo has no accessor
// for it.
fn mechanism_entry(ckm: u64, info: &MechanismInfo, operation: u64) -> MechanismEntry {
    let flag_bits = [
        (true, operation),
        (info.hardware(), CKF_HW),
        (info.ec_f_p(), CKF_EC_F_P),
        (info.ec_f_2m(), CKF_EC_F_2M),
        (info.ec_from_parameters(), CKF_EC_ECPARAMETERS),
        (info.ec_from_oid(), CKF_EC_OID),
        (info.ec_uncompressed(), CKF_EC_UNCOMPRESS),
        (info.ec_compressed(), CKF_EC_COMPRESS),
    ];
    let flags = flag_bits
        .iter()
        .filter(|(set, _)| *set)
        .fold(0, |flags, (_, bit)| flags | bit);
    MechanismEntry {
        mechanism: ckm,
        min_key_size: info.min_key_size() as u64,
        max_key_size: info.max_key_size() as u64,
        flags,
    }
}
