//! The work behind each supported PKCS#11 function, on safe Rust types.
//!
//! Only login and signing reach the keyserver. Every other function uses the catalogue the
//! keyserver sent when the connection was authenticated, or runs locally.

use cryptoki_sys::*;
use keyrelay_protocol::{KeySecret, MechanismEntry, SignRequest};

use crate::attributes;
use crate::digest::Hash;
use crate::error::{Error, Result};
use crate::ffi::Parameter;
use crate::module::{self, Module};
use crate::sign::{self, SignOperation};
use crate::token;
use crate::verify::VerifyOperation;

/// Result of C_Sign or C_SignFinal before it is written to the caller.
#[derive(Debug)]
pub(crate) enum Signed {
    /// The caller asked for the length only; the operation stays active.
    Length(usize),
    /// The caller's buffer is too short for this length; the operation stays active.
    TooSmall(usize),
    /// The signature; the operation has ended.
    Signature(Vec<u8>),
}

/// Fetches the catalogue when the configuration contains a KeySecret and it is still missing.
///
/// A rejected KeySecret leaves the configured token names as the only slots, so that the
/// caller's C_Login reports CKR_PIN_INCORRECT. Without configured token names there is no
/// slot to log in on, so the call fails with CKR_DEVICE_ERROR rather than showing an empty
/// slot list that would hide the cause.
fn ensure_catalogue(module: &Module) -> Result<()> {
    let Some(secret) = module.configured_secret.clone() else {
        return Ok(());
    };
    if module.state().catalogue_loaded() {
        return Ok(());
    }
    match authenticate(module, secret) {
        Err(Error::PinIncorrect) => {
            log_rejected_secret(module);
            if module.state().slot_ids().is_empty() {
                return Err(Error::Server(
                    "the configured KeyId or KeySecret was rejected".into(),
                ));
            }
            Ok(())
        }
        other => other,
    }
}

/// Logs a configured credential that the keyserver rejected: an operator must fix it.
fn log_rejected_secret(module: &Module) {
    tracing::error!(
        key_id = module.key_id(),
        "the keyserver rejected the configured KeyId or KeySecret (from key_secret, \
         key_secret_file or KEYRELAY_KEY_SECRET); check both against the keyserver's policy"
    );
}

fn authenticate(module: &Module, secret: KeySecret) -> Result<()> {
    let remote = module.remote.clone();
    let catalogue = module.block_on(async move { remote.authenticate(secret).await })?;
    tracing::debug!(tokens = catalogue.tokens.len(), "catalogue received");
    module.state().merge_catalogue(catalogue);
    Ok(())
}

pub(crate) fn slot_list() -> Result<Vec<CK_SLOT_ID>> {
    let module = module::get()?;
    ensure_catalogue(&module)?;
    Ok(module.state().slot_ids())
}

/// Returns the module with its catalogue fetched when a KeySecret is configured, for the
/// calls that name a slot. Java's SunPKCS11 calls C_GetSlotInfo on its configured slot
/// before C_GetSlotList, so these calls cannot rely on an earlier slot listing.
fn module_with_catalogue() -> Result<std::sync::Arc<Module>> {
    let module = module::get()?;
    ensure_catalogue(&module)?;
    Ok(module)
}

pub(crate) fn slot_info(slot_id: CK_SLOT_ID, info: &mut CK_SLOT_INFO) -> Result<()> {
    let module = module_with_catalogue()?;
    let state = module.state();
    token::fill_slot_info(&state.slot(slot_id)?.token, info);
    Ok(())
}

pub(crate) fn token_info(slot_id: CK_SLOT_ID, info: &mut CK_TOKEN_INFO) -> Result<()> {
    let module = module_with_catalogue()?;
    let state = module.state();
    let sessions = state.session_count(slot_id);
    token::fill_token_info(&state.slot(slot_id)?.token, sessions, info);
    Ok(())
}

/// Returns the mechanisms of a slot: the catalogue's, or before it arrives the ones the
/// module can forward, with default sizes.
fn mechanisms(module: &Module, slot_id: CK_SLOT_ID) -> Result<Vec<MechanismEntry>> {
    let state = module.state();
    let slot = state.slot(slot_id)?;
    if !state.catalogue_loaded() {
        return Ok(token::default_mechanisms());
    }
    let usable = slot
        .token
        .mechanisms
        .iter()
        .filter(|entry| CK_MECHANISM_TYPE::try_from(entry.mechanism).is_ok_and(forwardable));
    Ok(usable.cloned().collect())
}

/// Tells whether the module handles `mechanism`: signing through the keyserver, or hashing
/// locally.
fn forwardable(mechanism: CK_MECHANISM_TYPE) -> bool {
    sign::supports(mechanism) || Hash::from_ckm(mechanism).is_some()
}

pub(crate) fn mechanism_list(slot_id: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>> {
    let module = module_with_catalogue()?;
    let entries = mechanisms(&module, slot_id)?;
    Ok(entries
        .iter()
        .filter_map(|e| CK_MECHANISM_TYPE::try_from(e.mechanism).ok())
        .collect())
}

pub(crate) fn mechanism_info(
    slot_id: CK_SLOT_ID,
    mechanism: CK_MECHANISM_TYPE,
    info: &mut CK_MECHANISM_INFO,
) -> Result<()> {
    let module = module_with_catalogue()?;
    let entries = mechanisms(&module, slot_id)?;
    let entry = entries
        .iter()
        .find(|entry| CK_MECHANISM_TYPE::try_from(entry.mechanism) == Ok(mechanism))
        .ok_or(Error::MechanismInvalid(mechanism))?;
    token::fill_mechanism_info(entry, info);
    Ok(())
}

pub(crate) fn open_session(slot_id: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
    module_with_catalogue()?
        .state()
        .open_session(slot_id, flags)
}

pub(crate) fn close_session(session: CK_SESSION_HANDLE) -> Result<()> {
    module::get()?.state().close_session(session)
}

pub(crate) fn close_all_sessions(slot_id: CK_SLOT_ID) -> Result<()> {
    module::get()?.state().close_all_sessions(slot_id)
}

pub(crate) fn session_info(session: CK_SESSION_HANDLE, info: &mut CK_SESSION_INFO) -> Result<()> {
    let module = module::get()?;
    let state = module.state();
    let entry = state.session(session)?;
    info.slotID = entry.slot_id;
    info.state = state.session_state(session)?;
    info.flags = CKF_SERIAL_SESSION | if entry.read_write { CKF_RW_SESSION } else { 0 };
    info.ulDeviceError = 0;
    Ok(())
}

/// Logs the user in (C_Login).
///
/// With a KeySecret in the configuration, the connection is authenticated with it and the
/// PIN is ignored. Without one, the PIN is the KeySecret: a new connection authenticates with
/// it unless the current one already did.
pub(crate) fn login(session: CK_SESSION_HANDLE, user_type: CK_USER_TYPE, pin: &[u8]) -> Result<()> {
    let module = module::get()?;
    if user_type == CKU_CONTEXT_SPECIFIC {
        return context_login(&module, session, pin);
    }
    let slot_id = {
        let state = module.state();
        let slot_id = state.session(session)?.slot_id;
        if user_type != CKU_USER {
            return Err(Error::UserTypeInvalid(user_type));
        }
        if state.slot(slot_id)?.logged_in {
            return Err(Error::UserAlreadyLoggedIn);
        }
        slot_id
    };
    let secret = match &module.configured_secret {
        Some(secret) => secret.clone(),
        None => KeySecret::new(pin.to_vec()),
    };
    let remote = module.remote.clone();
    let check = secret.clone();
    let current = module.block_on(async move { Ok(remote.is_authenticated_with(&check).await) })?;
    if !current || !module.state().catalogue_loaded() {
        authenticate(&module, secret).inspect_err(|error| {
            if matches!(error, Error::PinIncorrect) && module.configured_secret.is_some() {
                log_rejected_secret(&module);
            }
        })?;
    }
    module.state().slot_mut(slot_id)?.logged_in = true;
    Ok(())
}

/// Authorizes the active sign operation of a key with CKA_ALWAYS_AUTHENTICATE (PKCS#11 v2.40
/// section 4.9). The PIN must be the KeySecret already in use, unless one is configured.
fn context_login(module: &Module, session: CK_SESSION_HANDLE, pin: &[u8]) -> Result<()> {
    {
        let state = module.state();
        let entry = state.session(session)?;
        entry.sign.as_ref().ok_or(Error::OperationNotInitialized)?;
        if !state.slot(entry.slot_id)?.logged_in {
            return Err(Error::UserNotLoggedIn);
        }
    }
    if module.configured_secret.is_none() {
        let remote = module.remote.clone();
        let secret = KeySecret::new(pin.to_vec());
        let matches =
            module.block_on(async move { Ok(remote.is_authenticated_with(&secret).await) })?;
        if !matches {
            return Err(Error::PinIncorrect);
        }
    }
    let mut state = module.state();
    let operation = state
        .session_mut(session)?
        .sign
        .as_mut()
        .ok_or(Error::OperationNotInitialized)?;
    operation.authorized = true;
    Ok(())
}

pub(crate) fn logout(session: CK_SESSION_HANDLE) -> Result<()> {
    let module = module::get()?;
    let mut state = module.state();
    let slot_id = state.session(session)?.slot_id;
    let slot = state.slot_mut(slot_id)?;
    if !slot.logged_in {
        return Err(Error::UserNotLoggedIn);
    }
    slot.logged_in = false;
    Ok(())
}

pub(crate) fn find_objects_init(
    session: CK_SESSION_HANDLE,
    template: &[CK_ATTRIBUTE],
) -> Result<()> {
    let module = module::get()?;
    let mut state = module.state();
    let mut matches = Vec::new();
    for object in state.visible_objects(session)? {
        if attributes::matches(object, template)? {
            matches.push(CK_OBJECT_HANDLE::try_from(object.handle).unwrap_or(CK_INVALID_HANDLE));
        }
    }
    matches.retain(|&handle| handle != CK_INVALID_HANDLE);
    state.start_find(session, matches)
}

pub(crate) fn find_objects(
    session: CK_SESSION_HANDLE,
    max: usize,
) -> Result<Vec<CK_OBJECT_HANDLE>> {
    let module = module::get()?;
    let mut state = module.state();
    let find = state
        .session_mut(session)?
        .find
        .as_mut()
        .ok_or(Error::OperationNotInitialized)?;
    Ok(find.next(max))
}

pub(crate) fn find_objects_final(session: CK_SESSION_HANDLE) -> Result<()> {
    let module = module::get()?;
    let mut state = module.state();
    let entry = state.session_mut(session)?;
    entry.find.take().ok_or(Error::OperationNotInitialized)?;
    Ok(())
}

pub(crate) fn get_attribute_value(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: &mut [CK_ATTRIBUTE],
) -> Result<()> {
    let module = module::get()?;
    let state = module.state();
    attributes::get_values(state.object(session, object)?, template)
}

/// Checks that `mechanism` is on the list of the session's token.
fn check_mechanism(
    module: &Module,
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
) -> Result<()> {
    let slot_id = module.state().session(session)?.slot_id;
    let available = mechanisms(module, slot_id)?;
    if available
        .iter()
        .any(|e| CK_MECHANISM_TYPE::try_from(e.mechanism) == Ok(mechanism))
    {
        Ok(())
    } else {
        Err(Error::MechanismInvalid(mechanism))
    }
}

pub(crate) fn sign_init(
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    parameter: Parameter,
    key: CK_OBJECT_HANDLE,
) -> Result<()> {
    let module = module::get()?;
    check_mechanism(&module, session, mechanism)?;
    let mut state = module.state();
    if state.session(session)?.sign.is_some() {
        return Err(Error::OperationActive);
    }
    let object = state.key(session, key)?;
    let operation = SignOperation::new(mechanism, parameter, object, state.max_input_len())?;
    state.session_mut(session)?.sign = Some(operation);
    Ok(())
}

pub(crate) fn sign(
    session: CK_SESSION_HANDLE,
    data: &[u8],
    capacity: Option<usize>,
) -> Result<Signed> {
    finish_sign(session, capacity, |operation| {
        operation.single_part_request(data)
    })
}

pub(crate) fn sign_update(session: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
    let module = module::get()?;
    let mut state = module.state();
    let entry = state.session_mut(session)?;
    let operation = entry.sign.as_mut().ok_or(Error::OperationNotInitialized)?;
    let result = operation.update(data);
    if result.is_err() {
        entry.sign = None;
    }
    result
}

pub(crate) fn sign_final(session: CK_SESSION_HANDLE, capacity: Option<usize>) -> Result<Signed> {
    finish_sign(session, capacity, SignOperation::final_request)
}

/// Ends a sign operation by the two-call convention, with one keyserver request at most.
///
/// A length query or a short buffer leaves the operation active and sends nothing. Any other
/// outcome ends it, except a signature that turns out longer than the buffer: it is kept for
/// the retry, so the backend signs once.
fn finish_sign(
    session: CK_SESSION_HANDLE,
    capacity: Option<usize>,
    build: impl FnOnce(&SignOperation) -> Result<SignRequest>,
) -> Result<Signed> {
    let module = module::get()?;
    let request = {
        let mut state = module.state();
        let entry = state.session_mut(session)?;
        let operation = entry.sign.as_mut().ok_or(Error::OperationNotInitialized)?;
        let needed = operation.signature_len();
        match capacity {
            None => return Ok(Signed::Length(needed)),
            Some(capacity) if capacity < needed => return Ok(Signed::TooSmall(needed)),
            Some(_) => {}
        }
        if let Some(signature) = operation.result.take() {
            entry.sign = None;
            return Ok(Signed::Signature(signature));
        }
        let request = build(operation);
        let operation = entry.sign.take();
        (request?, operation)
    };
    let (request, operation) = request;
    let remote = module.remote.clone();
    let signature = module.block_on(async move { remote.sign(request).await })?;
    match operation {
        Some(mut operation) if capacity.is_some_and(|capacity| signature.len() > capacity) => {
            let needed = signature.len();
            operation.result = Some(signature);
            module.state().session_mut(session)?.sign = Some(operation);
            Ok(Signed::TooSmall(needed))
        }
        _ => Ok(Signed::Signature(signature)),
    }
}

pub(crate) fn digest_init(session: CK_SESSION_HANDLE, mechanism: CK_MECHANISM_TYPE) -> Result<()> {
    let module = module::get()?;
    let slot_id = module.state().session(session)?.slot_id;
    let available = mechanisms(&module, slot_id)?;
    let hash = Hash::from_ckm(mechanism)
        .filter(|_| {
            available
                .iter()
                .any(|e| CK_MECHANISM_TYPE::try_from(e.mechanism) == Ok(mechanism))
        })
        .ok_or(Error::MechanismInvalid(mechanism))?;
    let mut state = module.state();
    let entry = state.session_mut(session)?;
    if entry.digest.is_some() {
        return Err(Error::OperationActive);
    }
    entry.digest = Some(hash.start());
    Ok(())
}

/// Runs a digest step on the session's active digest operation. An error ends the
/// operation, as PKCS#11 requires for every result except CKR_BUFFER_TOO_SMALL.
fn with_digest<T>(
    session: CK_SESSION_HANDLE,
    step: impl FnOnce(&mut crate::digest::Hasher) -> Result<T>,
) -> Result<T> {
    let module = module::get()?;
    let mut state = module.state();
    let entry = state.session_mut(session)?;
    let hasher = entry
        .digest
        .as_mut()
        .ok_or(Error::OperationNotInitialized)?;
    let result = step(hasher);
    if result
        .as_ref()
        .is_err_and(|error| !matches!(error, Error::BufferTooSmall))
    {
        entry.digest = None;
    }
    result
}

pub(crate) fn digest_update(session: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
    with_digest(session, |hasher| {
        hasher.update(data);
        Ok(())
    })
}

/// Computes the digest for C_Digest (with `data`) or C_DigestFinal (without), and writes it
/// through `write`, which applies the two-call convention. The operation ends once the
/// digest has been written.
pub(crate) fn digest_finish(
    session: CK_SESSION_HANDLE,
    data: Option<&[u8]>,
    write: impl FnOnce(&[u8]) -> Result<bool>,
) -> Result<()> {
    let done = with_digest(session, |hasher| {
        let mut copy = hasher.clone();
        if let Some(data) = data {
            copy.update(data);
        }
        write(&copy.digest())
    })?;
    if done {
        let module = module::get()?;
        module.state().session_mut(session)?.digest = None;
    }
    Ok(())
}

pub(crate) fn generate_random(session: CK_SESSION_HANDLE, buffer: &mut [u8]) -> Result<()> {
    use ring::rand::SecureRandom;
    module::get()?.state().session(session)?;
    ring::rand::SystemRandom::new()
        .fill(buffer)
        .map_err(|_| Error::Internal("the system random source failed".into()))
}

pub(crate) fn session_cancel(session: CK_SESSION_HANDLE, flags: CK_FLAGS) -> Result<()> {
    let module = module::get()?;
    let mut state = module.state();
    let entry = state.session_mut(session)?;
    if flags & CKF_SIGN != 0 {
        entry.sign = None;
    }
    if flags & CKF_DIGEST != 0 {
        entry.digest = None;
    }
    if flags & CKF_VERIFY != 0 {
        entry.verify = None;
    }
    if flags & CKF_FIND_OBJECTS != 0 {
        entry.find = None;
    }
    Ok(())
}

pub(crate) fn verify_init(
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    parameter: Parameter,
    key: CK_OBJECT_HANDLE,
) -> Result<()> {
    let module = module::get()?;
    check_mechanism(&module, session, mechanism)?;
    let mut state = module.state();
    if state.session(session)?.verify.is_some() {
        return Err(Error::OperationActive);
    }
    let object = state.key(session, key)?;
    let operation = VerifyOperation::new(mechanism, parameter, object)?;
    state.session_mut(session)?.verify = Some(operation);
    Ok(())
}

/// Runs the final step of a verification. The operation ends whatever the outcome.
fn finish_verify(
    session: CK_SESSION_HANDLE,
    step: impl FnOnce(&VerifyOperation) -> Result<()>,
) -> Result<()> {
    let module = module::get()?;
    let operation = {
        let mut state = module.state();
        let entry = state.session_mut(session)?;
        entry.verify.take().ok_or(Error::OperationNotInitialized)?
    };
    step(&operation)
}

pub(crate) fn verify(session: CK_SESSION_HANDLE, data: &[u8], signature: &[u8]) -> Result<()> {
    finish_verify(session, |operation| operation.verify(data, signature))
}

pub(crate) fn verify_update(session: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
    let module = module::get()?;
    let mut state = module.state();
    let entry = state.session_mut(session)?;
    let operation = entry
        .verify
        .as_mut()
        .ok_or(Error::OperationNotInitialized)?;
    let result = operation.update(data);
    if result.is_err() {
        entry.verify = None;
    }
    result
}

pub(crate) fn verify_final(session: CK_SESSION_HANDLE, signature: &[u8]) -> Result<()> {
    finish_verify(session, |operation| operation.verify_final(signature))
}
