//! CK_INFO, CK_SLOT_INFO, CK_TOKEN_INFO and CK_MECHANISM_INFO as the module reports them.

use cryptoki_sys::*;
use keyrelay_protocol::{MechanismEntry, TokenEntry};

use crate::ffi::{pad, to_ulong};

const MANUFACTURER: &str = "keyrelay";

/// The module's own version, reported as library, slot and token firmware version.
fn version() -> CK_VERSION {
    CK_VERSION {
        major: env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0),
        minor: env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0),
    }
}

/// Fills the CK_INFO of C_GetInfo: PKCS#11 v2.40, this module's name and version.
pub(crate) fn fill_info(info: &mut CK_INFO) {
    info.cryptokiVersion = CK_VERSION {
        major: 2,
        minor: 40,
    };
    pad(&mut info.manufacturerID, MANUFACTURER);
    info.flags = 0;
    pad(&mut info.libraryDescription, "keyrelay remote signing");
    info.libraryVersion = version();
}

pub(crate) fn fill_slot_info(token: &TokenEntry, info: &mut CK_SLOT_INFO) {
    pad(
        &mut info.slotDescription,
        &format!("keyrelay slot for token {}", token.name),
    );
    pad(&mut info.manufacturerID, MANUFACTURER);
    info.flags = CKF_TOKEN_PRESENT;
    info.hardwareVersion = CK_VERSION { major: 0, minor: 0 };
    info.firmwareVersion = version();
}

/// Fills the CK_TOKEN_INFO of C_GetTokenInfo. `sessions` counts the slot's sessions: all, read-write.
///
/// The token never reports CKF_WRITE_PROTECTED, because Java's SunPKCS11 opens read-write
/// sessions, which a write-protected token must refuse. Object creation is refused instead.
pub(crate) fn fill_token_info(
    token: &TokenEntry,
    sessions: (usize, usize),
    info: &mut CK_TOKEN_INFO,
) {
    pad(&mut info.label, &token.name);
    pad(
        &mut info.manufacturerID,
        or(&token.manufacturer, MANUFACTURER),
    );
    pad(&mut info.model, or(&token.model, "remote token"));
    pad(&mut info.serialNumber, &token.serial_number);
    info.flags = CKF_RNG | CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED | CKF_LOGIN_REQUIRED;
    info.ulMaxSessionCount = CK_EFFECTIVELY_INFINITE;
    info.ulSessionCount = to_ulong(sessions.0);
    info.ulMaxRwSessionCount = CK_EFFECTIVELY_INFINITE;
    info.ulRwSessionCount = to_ulong(sessions.1);
    info.ulMaxPinLen = 256;
    info.ulMinPinLen = 1;
    info.ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
    info.ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
    info.ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
    info.ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
    info.hardwareVersion = CK_VERSION { major: 0, minor: 0 };
    info.firmwareVersion = version();
    pad(&mut info.utcTime, "");
}

fn or<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}

pub(crate) fn fill_mechanism_info(entry: &MechanismEntry, info: &mut CK_MECHANISM_INFO) {
    info.ulMinKeySize = CK_ULONG::try_from(entry.min_key_size).unwrap_or(CK_ULONG::MAX);
    info.ulMaxKeySize = CK_ULONG::try_from(entry.max_key_size).unwrap_or(CK_ULONG::MAX);
    info.flags = CK_FLAGS::try_from(entry.flags).unwrap_or(0);
}

/// Mechanisms reported before the catalogue arrives, which happens when the PIN given to
/// C_Login is the KeySecret. Java's SunPKCS11 reads the mechanism list before it logs in, so
/// an empty list would leave it without algorithms. The list contains what common tokens offer
/// (SoftHSM2 among them): hash-and-sign ECDSA is left out because SunPKCS11 falls back to
/// CKM_ECDSA without it. Key sizes are in PKCS#11's units: bits of modulus for RSA, bits of
/// field for ECDSA.
pub(crate) fn default_mechanisms() -> Vec<MechanismEntry> {
    const RSA: (u64, u64) = (1024, 16384);
    const EC: (u64, u64) = (256, 521);
    const SIGN: CK_FLAGS = CKF_SIGN | CKF_VERIFY;
    const EC_SIGN: CK_FLAGS = SIGN | CKF_EC_F_P | CKF_EC_OID | CKF_EC_UNCOMPRESS;
    let entry =
        |mechanism: CK_MECHANISM_TYPE, (min, max): (u64, u64), flags: CK_FLAGS| MechanismEntry {
            mechanism: mechanism.into(),
            min_key_size: min,
            max_key_size: max,
            flags: flags.into(),
        };
    let mut entries = vec![entry(CKM_ECDSA, EC, EC_SIGN)];
    for mechanism in [
        CKM_RSA_PKCS,
        CKM_SHA1_RSA_PKCS,
        CKM_SHA256_RSA_PKCS,
        CKM_SHA384_RSA_PKCS,
        CKM_SHA512_RSA_PKCS,
        CKM_RSA_PKCS_PSS,
        CKM_SHA1_RSA_PKCS_PSS,
        CKM_SHA256_RSA_PKCS_PSS,
        CKM_SHA384_RSA_PKCS_PSS,
        CKM_SHA512_RSA_PKCS_PSS,
    ] {
        entries.push(entry(mechanism, RSA, SIGN));
    }
    for mechanism in [CKM_SHA_1, CKM_SHA224, CKM_SHA256, CKM_SHA384, CKM_SHA512] {
        entries.push(entry(mechanism, (0, 0), CKF_DIGEST));
    }
    entries
}
