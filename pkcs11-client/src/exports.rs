//! The C functions of the function list.
//!
//! Each has the same shape: convert the raw arguments through [`crate::ffi`], call the safe
//! function in [`crate::ops`] inside [`guard`], which catches panics and maps the error to
//! its CK_RV once. Section numbers refer to the PKCS#11 v2.40 base specification.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use cryptoki_sys::*;

use crate::error::{Error, Result};
use crate::ops::{self, Signed};
use crate::{ffi, module, sign, token};

/// Runs the body of a C function: no panic crosses the boundary, and every failure is
/// logged once with the function's name.
pub(crate) fn guard(function: &'static str, body: impl FnOnce() -> Result<()>) -> CK_RV {
    let rv = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(error)) => {
            if error.is_operator_fault() {
                tracing::error!(function, %error);
            } else {
                tracing::debug!(function, %error);
            }
            error.rv()
        }
        Err(_) => {
            tracing::error!(
                function,
                "internal error: a panic was caught at the C boundary"
            );
            CKR_GENERAL_ERROR
        }
    };
    tracing::trace!(function, rv = format_args!("{rv:#x}"));
    rv
}

/// C_Initialize (5.4). Accepts NULL and every valid form of CK_C_INITIALIZE_ARGS; reads the
/// configuration and prepares the connection without opening it.
pub(crate) unsafe extern "C" fn C_Initialize(args: *mut c_void) -> CK_RV {
    guard("C_Initialize", || {
        crate::log::init();
        // SAFETY: a non-NULL argument points to CK_C_INITIALIZE_ARGS by the C_Initialize
        // contract.
        let args = unsafe { args.cast::<CK_C_INITIALIZE_ARGS>().as_ref() };
        let own_thread = module::check_initialize_args(args)?;
        module::initialize(own_thread)
    })
}

/// C_Finalize (5.4). Closes the connection; a later C_Initialize starts afresh.
pub(crate) unsafe extern "C" fn C_Finalize(reserved: *mut c_void) -> CK_RV {
    guard("C_Finalize", || {
        if !reserved.is_null() {
            return Err(Error::ArgumentsBad("pReserved must be NULL"));
        }
        module::finalize()
    })
}

/// C_GetInfo (5.4).
pub(crate) unsafe extern "C" fn C_GetInfo(info: *mut CK_INFO) -> CK_RV {
    guard("C_GetInfo", || {
        module::get()?;
        // SAFETY: the caller passes NULL or a writable CK_INFO.
        token::fill_info(unsafe { ffi::out(info) }?);
        Ok(())
    })
}

/// C_GetSlotList (5.5). Every slot has a token, so `token_present` changes nothing.
pub(crate) unsafe extern "C" fn C_GetSlotList(
    _token_present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard("C_GetSlotList", || {
        let slots = ops::slot_list()?;
        // SAFETY: the caller passes `count` and a `list` of `*count` entries, or NULL.
        unsafe { ffi::write_list(&slots, list, count) }
    })
}

/// C_GetSlotInfo (5.5).
pub(crate) unsafe extern "C" fn C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    guard("C_GetSlotInfo", || {
        // SAFETY: the caller passes NULL or a writable CK_SLOT_INFO.
        ops::slot_info(slot, unsafe { ffi::out(info) }?)
    })
}

/// C_GetTokenInfo (5.5).
pub(crate) unsafe extern "C" fn C_GetTokenInfo(
    slot: CK_SLOT_ID,
    info: *mut CK_TOKEN_INFO,
) -> CK_RV {
    guard("C_GetTokenInfo", || {
        // SAFETY: the caller passes NULL or a writable CK_TOKEN_INFO.
        ops::token_info(slot, unsafe { ffi::out(info) }?)
    })
}

/// C_GetMechanismList (5.5): the mechanisms the keyserver allows on this token.
pub(crate) unsafe extern "C" fn C_GetMechanismList(
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard("C_GetMechanismList", || {
        let mechanisms = ops::mechanism_list(slot)?;
        // SAFETY: the caller passes `count` and a `list` of `*count` entries, or NULL.
        unsafe { ffi::write_list(&mechanisms, list, count) }
    })
}

/// C_GetMechanismInfo (5.5).
pub(crate) unsafe extern "C" fn C_GetMechanismInfo(
    slot: CK_SLOT_ID,
    mechanism: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    guard("C_GetMechanismInfo", || {
        // SAFETY: the caller passes NULL or a writable CK_MECHANISM_INFO.
        ops::mechanism_info(slot, mechanism, unsafe { ffi::out(info) }?)
    })
}

/// C_OpenSession (5.6). Requires CKF_SERIAL_SESSION; notification callbacks are never
/// called.
pub(crate) unsafe extern "C" fn C_OpenSession(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _application: *mut c_void,
    _notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    guard("C_OpenSession", || {
        // SAFETY: the caller passes NULL or a writable handle.
        let session = unsafe { ffi::out(session) }?;
        *session = ops::open_session(slot, flags)?;
        Ok(())
    })
}

/// C_CloseSession (5.6).
pub(crate) unsafe extern "C" fn C_CloseSession(session: CK_SESSION_HANDLE) -> CK_RV {
    guard("C_CloseSession", || ops::close_session(session))
}

/// C_CloseAllSessions (5.6).
pub(crate) unsafe extern "C" fn C_CloseAllSessions(slot: CK_SLOT_ID) -> CK_RV {
    guard("C_CloseAllSessions", || ops::close_all_sessions(slot))
}

/// C_GetSessionInfo (5.6).
pub(crate) unsafe extern "C" fn C_GetSessionInfo(
    session: CK_SESSION_HANDLE,
    info: *mut CK_SESSION_INFO,
) -> CK_RV {
    guard("C_GetSessionInfo", || {
        // SAFETY: the caller passes NULL or a writable CK_SESSION_INFO.
        ops::session_info(session, unsafe { ffi::out(info) }?)
    })
}

/// C_Login (5.6). Only CKU_USER: the keyserver has no security officer.
pub(crate) unsafe extern "C" fn C_Login(
    session: CK_SESSION_HANDLE,
    user_type: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    guard("C_Login", || {
        // SAFETY: the caller passes a PIN of `pin_len` bytes, or NULL.
        let pin = unsafe { ffi::input(pin, pin_len) }?;
        ops::login(session, user_type, pin)
    })
}

/// C_Logout (5.6).
pub(crate) unsafe extern "C" fn C_Logout(session: CK_SESSION_HANDLE) -> CK_RV {
    guard("C_Logout", || ops::logout(session))
}

/// C_GetAttributeValue (5.7), read from the catalogue.
pub(crate) unsafe extern "C" fn C_GetAttributeValue(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard("C_GetAttributeValue", || {
        // SAFETY: the caller passes a template of `count` entries, or NULL.
        let template = unsafe { ffi::template(template, count) }?;
        ops::get_attribute_value(session, object, template)
    })
}

/// C_FindObjectsInit (5.7), matched against the catalogue.
pub(crate) unsafe extern "C" fn C_FindObjectsInit(
    session: CK_SESSION_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard("C_FindObjectsInit", || {
        // SAFETY: the caller passes a template of `count` entries, or NULL.
        let template = unsafe { ffi::template(template, count) }?;
        ops::find_objects_init(session, template)
    })
}

/// C_FindObjects (5.7).
pub(crate) unsafe extern "C" fn C_FindObjects(
    session: CK_SESSION_HANDLE,
    objects: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard("C_FindObjects", || {
        // SAFETY: the caller passes NULL or a writable count.
        let count = unsafe { ffi::out(count) }?;
        if objects.is_null() && max > 0 {
            return Err(Error::ArgumentsBad("NULL object array"));
        }
        let found = ops::find_objects(session, ffi::to_usize(max)?)?;
        let mut written = found.len() as CK_ULONG;
        // SAFETY: `objects` has room for `max >= found.len()` handles.
        unsafe { ffi::write_list(&found, objects, &mut written) }?;
        *count = written;
        Ok(())
    })
}

/// C_FindObjectsFinal (5.7).
pub(crate) unsafe extern "C" fn C_FindObjectsFinal(session: CK_SESSION_HANDLE) -> CK_RV {
    guard("C_FindObjectsFinal", || ops::find_objects_final(session))
}

/// C_SignInit (5.11). Checked locally: no request reaches the keyserver until C_Sign.
pub(crate) unsafe extern "C" fn C_SignInit(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard("C_SignInit", || {
        // SAFETY: the caller passes NULL or a valid CK_MECHANISM.
        let mechanism = unsafe { ffi::out(mechanism) }?;
        let kind = sign::parameter_kind(mechanism.mechanism);
        // SAFETY: the caller passes a parameter valid for its length, as C_SignInit requires.
        let parameter = unsafe { ffi::mechanism_parameter(mechanism, kind) }?;
        ops::sign_init(session, mechanism.mechanism, parameter, key)
    })
}

/// C_Sign (5.11). One keyserver request; a length query or short buffer sends none.
pub(crate) unsafe extern "C" fn C_Sign(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    signature: *mut CK_BYTE,
    signature_len: *mut CK_ULONG,
) -> CK_RV {
    guard("C_Sign", || {
        // SAFETY: the caller passes `data_len` bytes of data, or NULL.
        let data = unsafe { ffi::input(data, data_len) }?;
        // SAFETY: the caller passes `signature_len` and a buffer of that many bytes, or NULL.
        unsafe { write_signature(signature, signature_len, |c| ops::sign(session, data, c)) }
    })
}

/// C_SignUpdate (5.11). Hash-and-sign mechanisms only: the data is hashed locally.
pub(crate) unsafe extern "C" fn C_SignUpdate(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    part_len: CK_ULONG,
) -> CK_RV {
    guard("C_SignUpdate", || {
        // SAFETY: the caller passes `part_len` bytes, or NULL.
        let part = unsafe { ffi::input(part, part_len) }?;
        ops::sign_update(session, part)
    })
}

/// C_SignFinal (5.11). One keyserver request with the digest.
pub(crate) unsafe extern "C" fn C_SignFinal(
    session: CK_SESSION_HANDLE,
    signature: *mut CK_BYTE,
    signature_len: *mut CK_ULONG,
) -> CK_RV {
    guard("C_SignFinal", || {
        // SAFETY: the caller passes `signature_len` and a buffer of that many bytes, or NULL.
        unsafe { write_signature(signature, signature_len, |c| ops::sign_final(session, c)) }
    })
}

/// Writes the outcome of C_Sign or C_SignFinal by the two-call convention.
///
/// # Safety
/// `len` must be NULL or valid; a non-NULL `buffer` must be writable for `*len` bytes.
unsafe fn write_signature(
    buffer: *mut CK_BYTE,
    len: *mut CK_ULONG,
    sign: impl FnOnce(Option<usize>) -> Result<Signed>,
) -> Result<()> {
    // SAFETY: guaranteed by the caller.
    let capacity = unsafe { ffi::out(len) }?;
    let available = if buffer.is_null() {
        None
    } else {
        Some(ffi::to_usize(*capacity)?)
    };
    match sign(available)? {
        Signed::Length(needed) => {
            *capacity = ffi::to_ulong(needed);
            Ok(())
        }
        Signed::TooSmall(needed) => {
            *capacity = ffi::to_ulong(needed);
            Err(Error::BufferTooSmall)
        }
        // SAFETY: guaranteed by the caller; the signature fits, as `sign` checked.
        Signed::Signature(signature) => unsafe { ffi::write_sized(&signature, buffer, len) },
    }
}

/// C_DigestInit (5.10), computed locally for the SHA-1 and SHA-2 mechanisms of the token.
pub(crate) unsafe extern "C" fn C_DigestInit(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
) -> CK_RV {
    guard("C_DigestInit", || {
        // SAFETY: the caller passes NULL or a valid CK_MECHANISM.
        let mechanism = unsafe { ffi::out(mechanism) }?;
        if !mechanism.pParameter.is_null() && mechanism.ulParameterLen != 0 {
            return Err(Error::MechanismParamInvalid);
        }
        ops::digest_init(session, mechanism.mechanism)
    })
}

/// C_Digest (5.10).
pub(crate) unsafe extern "C" fn C_Digest(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    digest: *mut CK_BYTE,
    digest_len: *mut CK_ULONG,
) -> CK_RV {
    guard("C_Digest", || {
        // SAFETY: the caller passes `data_len` bytes of data, or NULL.
        let data = unsafe { ffi::input(data, data_len) }?;
        // SAFETY: the caller passes `digest_len` and a buffer of that many bytes, or NULL.
        ops::digest_finish(session, Some(data), |value| unsafe {
            write_digest(value, digest, digest_len)
        })
    })
}

/// C_DigestUpdate (5.10).
pub(crate) unsafe extern "C" fn C_DigestUpdate(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    part_len: CK_ULONG,
) -> CK_RV {
    guard("C_DigestUpdate", || {
        // SAFETY: the caller passes `part_len` bytes, or NULL.
        let part = unsafe { ffi::input(part, part_len) }?;
        ops::digest_update(session, part)
    })
}

/// C_DigestFinal (5.10).
pub(crate) unsafe extern "C" fn C_DigestFinal(
    session: CK_SESSION_HANDLE,
    digest: *mut CK_BYTE,
    digest_len: *mut CK_ULONG,
) -> CK_RV {
    guard("C_DigestFinal", || {
        // SAFETY: the caller passes `digest_len` and a buffer of that many bytes, or NULL.
        ops::digest_finish(session, None, |value| unsafe {
            write_digest(value, digest, digest_len)
        })
    })
}

/// Writes a digest by the two-call convention and returns whether it was written, which ends
/// the operation, rather than only sized.
///
/// # Safety
/// As [`ffi::write_sized`].
unsafe fn write_digest(value: &[u8], buffer: *mut CK_BYTE, len: *mut CK_ULONG) -> Result<bool> {
    // SAFETY: guaranteed by the caller.
    unsafe { ffi::write_sized(value, buffer, len) }?;
    Ok(!buffer.is_null())
}

/// C_SeedRandom (5.15). The module's random source is the operating system's, which takes
/// no seed.
pub(crate) unsafe extern "C" fn C_SeedRandom(
    session: CK_SESSION_HANDLE,
    _seed: *mut CK_BYTE,
    _seed_len: CK_ULONG,
) -> CK_RV {
    guard("C_SeedRandom", || {
        module::get()?.state().session(session)?;
        Err(Error::RandomSeedNotSupported)
    })
}

/// C_GenerateRandom (5.15), from the operating system's random source on the client.
pub(crate) unsafe extern "C" fn C_GenerateRandom(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard("C_GenerateRandom", || {
        // SAFETY: the caller passes a writable buffer of `len` bytes, or NULL.
        let buffer = unsafe { ffi::output(data, len) }?;
        ops::generate_random(session, buffer)
    })
}

/// C_SessionCancel (PKCS#11 v3.0 section 5.6): ends the session's operations named by the
/// CKF_SIGN, CKF_DIGEST and CKF_FIND_OBJECTS flags. Other flags name operations the module
/// never starts, so they have nothing to cancel.
pub(crate) unsafe extern "C" fn C_SessionCancel(
    session: CK_SESSION_HANDLE,
    flags: CK_FLAGS,
) -> CK_RV {
    guard("C_SessionCancel", || ops::session_cancel(session, flags))
}

/// C_VerifyInit (5.12), done locally with a public key object.
pub(crate) unsafe extern "C" fn C_VerifyInit(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard("C_VerifyInit", || {
        // SAFETY: the caller passes NULL or a valid CK_MECHANISM.
        let mechanism = unsafe { ffi::out(mechanism) }?;
        let kind = sign::parameter_kind(mechanism.mechanism);
        // SAFETY: the caller passes a parameter valid for its length.
        let parameter = unsafe { ffi::mechanism_parameter(mechanism, kind) }?;
        ops::verify_init(session, mechanism.mechanism, parameter, key)
    })
}

/// C_Verify (5.12).
pub(crate) unsafe extern "C" fn C_Verify(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    signature: *mut CK_BYTE,
    signature_len: CK_ULONG,
) -> CK_RV {
    guard("C_Verify", || {
        // SAFETY: the caller passes `data_len` bytes of data, or NULL.
        let data = unsafe { ffi::input(data, data_len) }?;
        // SAFETY: the caller passes `signature_len` bytes of signature, or NULL.
        let signature = unsafe { ffi::input(signature, signature_len) }?;
        ops::verify(session, data, signature)
    })
}

/// C_VerifyUpdate (5.12). Hash-and-sign mechanisms only.
pub(crate) unsafe extern "C" fn C_VerifyUpdate(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    part_len: CK_ULONG,
) -> CK_RV {
    guard("C_VerifyUpdate", || {
        // SAFETY: the caller passes `part_len` bytes, or NULL.
        let part = unsafe { ffi::input(part, part_len) }?;
        ops::verify_update(session, part)
    })
}

/// C_VerifyFinal (5.12).
pub(crate) unsafe extern "C" fn C_VerifyFinal(
    session: CK_SESSION_HANDLE,
    signature: *mut CK_BYTE,
    signature_len: CK_ULONG,
) -> CK_RV {
    guard("C_VerifyFinal", || {
        // SAFETY: the caller passes `signature_len` bytes of signature, or NULL.
        let signature = unsafe { ffi::input(signature, signature_len) }?;
        ops::verify_final(session, signature)
    })
}
