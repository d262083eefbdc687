//! The conformance cases. Each returns a JSON value that holds only what must be equal
//! between SoftHSM2 and keyrelay: return codes as names, lengths, values and verdicts.

use std::ptr;

use cryptoki_sys::*;
use ring::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Value, json};

use crate::{Context, MESSAGE, Mechanism, Module, attribute, hex};

pub(crate) fn run(case: &str, module: Module, token: &str, pin: String) -> Value {
    match case {
        "function_list" => function_list(&module),
        "interface_list" => interface_list(&module),
        "initialize_forms" => initialize_forms(&module),
        "not_initialized" => not_initialized(&module),
        "wrong_pin" => wrong_pin(&module, token),
        "fork" => crate::process::fork_case(module, token, pin),
        "threads" => crate::process::threads_case(Context::open(module, token, pin)),
        "reconnect" => crate::process::reconnect_case(Context::open(module, token, pin)),
        other => {
            let context = Context::open(module, token, pin);
            match other {
                "info_padding" => info_padding(&context),
                "slot_list_sizing" => slot_list_sizing(&context),
                "session_states" => session_states(&context),
                "attribute_template" => attribute_template(&context),
                "attribute_sizing" => attribute_sizing(&context),
                "ec_encoding" => ec_encoding(&context),
                "sign_sizing" => sign_sizing(&context),
                "operation_state" => operation_state(&context),
                "mechanism_list" => mechanism_list(&context),
                "sign_rsa_pkcs1" => sign_rsa_pkcs1(&context),
                "sign_rsa_pss" => sign_rsa_pss(&context),
                "sign_ecdsa" => sign_ecdsa(&context),
                "sign_eddsa" => sign_eddsa(&context),
                "multipart" => multipart(&context),
                "local_operations" => local_operations(&context),
                "object_management" => object_management(&context),
                "always_authenticate" => always_authenticate(&context),
                _ => panic!("unknown case {other:?}"),
            }
        }
    }
}

/// The name of a return code, as the PKCS#11 headers spell it.
pub(crate) fn rv(code: CK_RV) -> Value {
    let name = match code {
        CKR_OK => "CKR_OK",
        CKR_HOST_MEMORY => "CKR_HOST_MEMORY",
        CKR_GENERAL_ERROR => "CKR_GENERAL_ERROR",
        CKR_FUNCTION_FAILED => "CKR_FUNCTION_FAILED",
        CKR_ARGUMENTS_BAD => "CKR_ARGUMENTS_BAD",
        CKR_CANT_LOCK => "CKR_CANT_LOCK",
        CKR_ATTRIBUTE_SENSITIVE => "CKR_ATTRIBUTE_SENSITIVE",
        CKR_ATTRIBUTE_TYPE_INVALID => "CKR_ATTRIBUTE_TYPE_INVALID",
        CKR_ACTION_PROHIBITED => "CKR_ACTION_PROHIBITED",
        CKR_DATA_INVALID => "CKR_DATA_INVALID",
        CKR_DATA_LEN_RANGE => "CKR_DATA_LEN_RANGE",
        CKR_DEVICE_ERROR => "CKR_DEVICE_ERROR",
        CKR_DEVICE_REMOVED => "CKR_DEVICE_REMOVED",
        CKR_FUNCTION_NOT_SUPPORTED => "CKR_FUNCTION_NOT_SUPPORTED",
        CKR_KEY_HANDLE_INVALID => "CKR_KEY_HANDLE_INVALID",
        CKR_KEY_TYPE_INCONSISTENT => "CKR_KEY_TYPE_INCONSISTENT",
        CKR_KEY_FUNCTION_NOT_PERMITTED => "CKR_KEY_FUNCTION_NOT_PERMITTED",
        CKR_MECHANISM_INVALID => "CKR_MECHANISM_INVALID",
        CKR_MECHANISM_PARAM_INVALID => "CKR_MECHANISM_PARAM_INVALID",
        CKR_OBJECT_HANDLE_INVALID => "CKR_OBJECT_HANDLE_INVALID",
        CKR_OPERATION_ACTIVE => "CKR_OPERATION_ACTIVE",
        CKR_OPERATION_NOT_INITIALIZED => "CKR_OPERATION_NOT_INITIALIZED",
        CKR_PIN_INCORRECT => "CKR_PIN_INCORRECT",
        CKR_SESSION_HANDLE_INVALID => "CKR_SESSION_HANDLE_INVALID",
        CKR_SIGNATURE_INVALID => "CKR_SIGNATURE_INVALID",
        CKR_SIGNATURE_LEN_RANGE => "CKR_SIGNATURE_LEN_RANGE",
        CKR_TEMPLATE_INCOMPLETE => "CKR_TEMPLATE_INCOMPLETE",
        CKR_TEMPLATE_INCONSISTENT => "CKR_TEMPLATE_INCONSISTENT",
        CKR_TOKEN_WRITE_PROTECTED => "CKR_TOKEN_WRITE_PROTECTED",
        CKR_UNWRAPPING_KEY_HANDLE_INVALID => "CKR_UNWRAPPING_KEY_HANDLE_INVALID",
        CKR_USER_ALREADY_LOGGED_IN => "CKR_USER_ALREADY_LOGGED_IN",
        CKR_USER_NOT_LOGGED_IN => "CKR_USER_NOT_LOGGED_IN",
        CKR_USER_TYPE_INVALID => "CKR_USER_TYPE_INVALID",
        CKR_BUFFER_TOO_SMALL => "CKR_BUFFER_TOO_SMALL",
        CKR_CRYPTOKI_NOT_INITIALIZED => "CKR_CRYPTOKI_NOT_INITIALIZED",
        CKR_CRYPTOKI_ALREADY_INITIALIZED => "CKR_CRYPTOKI_ALREADY_INITIALIZED",
        CKR_OPERATION_CANCEL_FAILED => "CKR_OPERATION_CANCEL_FAILED",
        other => return Value::String(format!("{other:#x}")),
    };
    Value::String(name.to_owned())
}

fn function_list(module: &Module) -> Value {
    // Every entry of CK_FUNCTION_LIST after the version is a function pointer.
    let entries = [
        module.functions.C_Initialize.is_some(),
        module.functions.C_Finalize.is_some(),
        module.functions.C_GetInfo.is_some(),
        module.functions.C_GetFunctionList.is_some(),
        module.functions.C_GetSlotList.is_some(),
        module.functions.C_GetSlotInfo.is_some(),
        module.functions.C_GetTokenInfo.is_some(),
        module.functions.C_GetMechanismList.is_some(),
        module.functions.C_GetMechanismInfo.is_some(),
        module.functions.C_OpenSession.is_some(),
        module.functions.C_CloseSession.is_some(),
        module.functions.C_CloseAllSessions.is_some(),
        module.functions.C_GetSessionInfo.is_some(),
        module.functions.C_Login.is_some(),
        module.functions.C_Logout.is_some(),
        module.functions.C_GetAttributeValue.is_some(),
        module.functions.C_FindObjectsInit.is_some(),
        module.functions.C_FindObjects.is_some(),
        module.functions.C_FindObjectsFinal.is_some(),
        module.functions.C_SignInit.is_some(),
        module.functions.C_Sign.is_some(),
        module.functions.C_SignUpdate.is_some(),
        module.functions.C_SignFinal.is_some(),
        module.functions.C_VerifyInit.is_some(),
        module.functions.C_Verify.is_some(),
        module.functions.C_DigestInit.is_some(),
        module.functions.C_Digest.is_some(),
        module.functions.C_GenerateRandom.is_some(),
        module.functions.C_WaitForSlotEvent.is_some(),
    ];
    let version = module.functions.version;
    json!({
        "version": format!("{}.{}", version.major, version.minor),
        "missing_entries": entries.iter().filter(|present| !**present).count(),
    })
}

/// C_GetInterfaceList and C_GetInterface exist from PKCS#11 v3.0 on; SoftHSM 2.6.1 is v2.40
/// and has neither, so the test checks keyrelay's result on its own.
fn interface_list(module: &Module) -> Value {
    // SAFETY: looking up a symbol by name in the loaded module.
    let library = unsafe { libloading_library(&module.library_path) };
    let Some(library) = library else {
        return json!({ "symbol": false });
    };
    let mut count: CK_ULONG = 0;
    // SAFETY: a NULL list requests the count only.
    let first = unsafe { library.C_GetInterfaceList(ptr::null_mut(), &mut count) };
    let mut interfaces = vec![
        CK_INTERFACE {
            pInterfaceName: ptr::null_mut(),
            pFunctionList: ptr::null_mut(),
            flags: 0,
        };
        count as usize
    ];
    // SAFETY: `interfaces` has room for `count` entries.
    let second = unsafe { library.C_GetInterfaceList(interfaces.as_mut_ptr(), &mut count) };
    let described: Vec<Value> = interfaces
        .iter()
        .map(|interface| {
            // SAFETY: the module fills each entry with a NUL-terminated name and a function
            // list whose first member is a CK_VERSION.
            let (name, version) = unsafe {
                (
                    std::ffi::CStr::from_ptr(interface.pInterfaceName.cast())
                        .to_string_lossy()
                        .into_owned(),
                    *interface.pFunctionList.cast::<CK_VERSION>(),
                )
            };
            json!({ "name": name, "version": format!("{}.{}", version.major, version.minor) })
        })
        .collect();
    let mut default: *mut CK_INTERFACE = ptr::null_mut();
    // SAFETY: NULL name and version select the default interface.
    let get = unsafe { library.C_GetInterface(ptr::null_mut(), ptr::null_mut(), &mut default, 0) };
    json!({
        "symbol": true,
        "count_rv": rv(first),
        "list_rv": rv(second),
        "interfaces": described,
        "default_rv": rv(get),
        "default_found": !default.is_null(),
    })
}

/// Loads the library again (the dynamic loader returns the same instance) and returns it if
/// it exports C_GetInterfaceList.
///
/// # Safety
/// `path` must name a PKCS#11 module.
unsafe fn libloading_library(path: &str) -> Option<Pkcs11> {
    // SAFETY: guaranteed by the caller.
    let library = unsafe { Pkcs11::new(path) }.ok()?;
    library.C_GetInterfaceList.is_ok().then_some(library)
}

/// Dummy mutex callbacks for CK_C_INITIALIZE_ARGS; a module that uses them gets working
/// no-op locks, which is enough for one thread.
extern "C" fn create_mutex(mutex: *mut *mut std::ffi::c_void) -> CK_RV {
    // SAFETY: the module passes a writable pointer by the CreateMutex contract.
    unsafe { *mutex = ptr::dangling_mut::<u8>().cast() };
    CKR_OK
}

extern "C" fn mutex_operation(_mutex: *mut std::ffi::c_void) -> CK_RV {
    CKR_OK
}

fn initialize_forms(module: &Module) -> Value {
    let forms: [(&str, CK_FLAGS, bool); 4] = [
        ("os_locking", CKF_OS_LOCKING_OK, false),
        ("no_locking", 0, false),
        ("mutex_callbacks", 0, true),
        ("callbacks_and_os_locking", CKF_OS_LOCKING_OK, true),
    ];
    let mut results = serde_json::Map::new();
    let null = module.initialize();
    let again = module.initialize();
    let finalize = call!(module, C_Finalize, ptr::null_mut());
    let reinit = module.initialize();
    call!(module, C_Finalize, ptr::null_mut());
    results.insert("null".into(), rv(null));
    results.insert("already_initialized".into(), rv(again));
    results.insert("finalize".into(), rv(finalize));
    results.insert("reinitialize".into(), rv(reinit));
    for (name, flags, callbacks) in forms {
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: callbacks.then_some(create_mutex as _),
            DestroyMutex: callbacks.then_some(mutex_operation as _),
            LockMutex: callbacks.then_some(mutex_operation as _),
            UnlockMutex: callbacks.then_some(mutex_operation as _),
            flags,
            pReserved: ptr::null_mut(),
        };
        let code = call!(module, C_Initialize, ptr::from_mut(&mut args).cast());
        if code == CKR_OK {
            call!(module, C_Finalize, ptr::null_mut());
        }
        results.insert(name.into(), rv(code));
    }
    Value::Object(results)
}

fn not_initialized(module: &Module) -> Value {
    let mut count = 0;
    json!({
        "slot_list": rv(call!(module, C_GetSlotList, CK_TRUE, ptr::null_mut(), &mut count)),
        "finalize": rv(call!(module, C_Finalize, ptr::null_mut())),
    })
}

fn wrong_pin(module: &Module, token: &str) -> Value {
    assert_eq!(module.initialize(), CKR_OK, "C_Initialize failed");
    let slot = module.slot(token);
    let session = module.open(slot);
    json!({ "login": rv(module.login(session, CKU_USER, "0000-wrong")) })
}

/// Checks that a PKCS#11 string is blank-padded and contains no NUL.
fn padded(bytes: &[u8]) -> Value {
    json!({
        "no_nul": !bytes.contains(&0),
        "padded": bytes.last() == Some(&b' ') || bytes.iter().all(|b| *b != b' '),
    })
}

fn info_padding(context: &Context) -> Value {
    let module = &context.module;
    // SAFETY: these info structures are plain data; all-zero bytes are valid values.
    let (mut info, mut token, mut slot): (CK_INFO, CK_TOKEN_INFO, CK_SLOT_INFO) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed(), std::mem::zeroed()) };
    call!(module, C_GetInfo, &mut info);
    call!(module, C_GetTokenInfo, context.slot, &mut token);
    call!(module, C_GetSlotInfo, context.slot, &mut slot);
    json!({
        "library_manufacturer": padded(&info.manufacturerID),
        "library_description": padded(&info.libraryDescription),
        "slot_description": padded(&slot.slotDescription),
        "token_label": padded(&token.label),
        "token_manufacturer": padded(&token.manufacturerID),
        "token_model": padded(&token.model),
        "token_serial": padded(&token.serialNumber),
        "token_flags_login_required": token.flags & CKF_LOGIN_REQUIRED != 0,
        "token_flags_initialized": token.flags & CKF_TOKEN_INITIALIZED != 0,
    })
}

fn slot_list_sizing(context: &Context) -> Value {
    let module = &context.module;
    let mut count: CK_ULONG = 0;
    let query = call!(module, C_GetSlotList, CK_TRUE, ptr::null_mut(), &mut count);
    let needed = count;
    let mut short: CK_ULONG = 0;
    let mut slot = 0;
    let too_small = call!(module, C_GetSlotList, CK_TRUE, &mut slot, &mut short);
    json!({
        "query": rv(query),
        "at_least_one": needed >= 1,
        "short_buffer": rv(if needed > 0 { too_small } else { CKR_BUFFER_TOO_SMALL }),
        "short_buffer_count_set": short == needed,
    })
}

fn session_state(module: &Module, session: CK_SESSION_HANDLE) -> Value {
    // SAFETY: CK_SESSION_INFO is plain data; all-zero bytes are a valid value.
    let mut info: CK_SESSION_INFO = unsafe { std::mem::zeroed() };
    let code = call!(module, C_GetSessionInfo, session, &mut info);
    if code != CKR_OK {
        return rv(code);
    }
    json!({ "state": info.state, "flags": info.flags })
}

fn session_states(context: &Context) -> Value {
    let module = &context.module;
    let logged_in = session_state(module, context.session);
    let again = module.login(context.session, CKU_USER, &context.pin);
    let logout = call!(module, C_Logout, context.session);
    let logged_out = session_state(module, context.session);
    let logout_again = call!(module, C_Logout, context.session);
    let mut read_only = 0;
    let opened = call!(
        module,
        C_OpenSession,
        context.slot,
        CKF_SERIAL_SESSION,
        ptr::null_mut(),
        None,
        &mut read_only
    );
    let read_only_state = session_state(module, read_only);
    let close_all = call!(module, C_CloseAllSessions, context.slot);
    let closed = session_state(module, context.session);
    let no_serial = call!(
        module,
        C_OpenSession,
        context.slot,
        0,
        ptr::null_mut(),
        None,
        &mut read_only
    );
    json!({
        "logged_in": logged_in,
        "login_again": rv(again),
        "logout": rv(logout),
        "logged_out": logged_out,
        "logout_again": rv(logout_again),
        "open_read_only": rv(opened),
        "read_only": read_only_state,
        "close_all": rv(close_all),
        "after_close_all": closed,
        "open_without_serial": rv(no_serial),
    })
}

/// Length of a template entry after C_GetAttributeValue: a number or "unavailable".
fn entry_len(entry: &CK_ATTRIBUTE) -> Value {
    if entry.ulValueLen == CK_UNAVAILABLE_INFORMATION {
        Value::String("unavailable".into())
    } else {
        json!(entry.ulValueLen)
    }
}

fn attribute_template(context: &Context) -> Value {
    let module = &context.module;
    let key = context.private_key("rsa-2048");
    let mut label = [0u8; 64];
    let mut exponent = [0u8; 512];
    let mut invalid = [0u8; 16];
    let mut modulus = [0u8; 512];
    let mut sign = [0u8; 1];
    let mut template = [
        attribute(CKA_LABEL, label.as_mut_ptr().cast(), label.len()),
        attribute(
            CKA_PRIVATE_EXPONENT,
            exponent.as_mut_ptr().cast(),
            exponent.len(),
        ),
        attribute(0x7fff_0001, invalid.as_mut_ptr().cast(), invalid.len()),
        attribute(CKA_MODULUS, modulus.as_mut_ptr().cast(), modulus.len()),
        attribute(CKA_SIGN, sign.as_mut_ptr().cast(), sign.len()),
    ];
    let code = call!(
        module,
        C_GetAttributeValue,
        context.session,
        key,
        template.as_mut_ptr(),
        template.len() as CK_ULONG
    );
    let label_len = template[0].ulValueLen as usize;
    let modulus_len = template[3].ulValueLen as usize;
    json!({
        "rv": rv(code),
        "lengths": template.iter().map(entry_len).collect::<Vec<_>>(),
        "label": String::from_utf8_lossy(&label[..label_len.min(64)]),
        "modulus": hex(&modulus[..modulus_len.min(512)]),
        "sign": sign[0],
    })
}

fn attribute_sizing(context: &Context) -> Value {
    let module = &context.module;
    let key = context.private_key("rsa-2048");
    let mut query = attribute(CKA_LABEL, ptr::null_mut(), 0);
    let first = call!(
        module,
        C_GetAttributeValue,
        context.session,
        key,
        &mut query,
        1
    );
    let mut short = [0u8; 2];
    let mut entry = attribute(CKA_LABEL, short.as_mut_ptr().cast(), short.len());
    let second = call!(
        module,
        C_GetAttributeValue,
        context.session,
        key,
        &mut entry,
        1
    );
    json!({
        "query": rv(first),
        "query_len": query.ulValueLen,
        "short_buffer": rv(second),
        "short_buffer_len": entry_len(&entry),
    })
}

fn ec_encoding(context: &Context) -> Value {
    let module = &context.module;
    let mut keys = serde_json::Map::new();
    for label in ["ec-p256", "ec-p384", "ec-p521"] {
        let public = context.public_key(label);
        let private = context.private_key(label);
        let read = |object, kind| match module.attribute(context.session, object, kind) {
            Ok(value) => hex(&value),
            Err(code) => rv(code),
        };
        keys.insert(
            label.into(),
            json!({
                "public_ec_params": read(public, CKA_EC_PARAMS),
                "public_ec_point": read(public, CKA_EC_POINT),
                "private_ec_params": read(private, CKA_EC_PARAMS),
            }),
        );
    }
    Value::Object(keys)
}

fn sign_sizing(context: &Context) -> Value {
    let module = &context.module;
    let key = context.private_key("rsa-2048");
    let mut mechanism = Mechanism::plain(CKM_SHA256_RSA_PKCS);
    let init = module.sign_init(context.session, &mut mechanism, key);
    let mut data = MESSAGE.to_vec();
    let mut len: CK_ULONG = 0;
    let query = call!(
        module,
        C_Sign,
        context.session,
        data.as_mut_ptr(),
        data.len() as CK_ULONG,
        ptr::null_mut(),
        &mut len
    );
    let needed = len;
    let mut short = [0u8; 8];
    let mut short_len: CK_ULONG = short.len() as CK_ULONG;
    let too_small = call!(
        module,
        C_Sign,
        context.session,
        data.as_mut_ptr(),
        data.len() as CK_ULONG,
        short.as_mut_ptr(),
        &mut short_len
    );
    let mut signature = vec![0u8; needed as usize];
    let mut full_len = needed;
    let retry = call!(
        module,
        C_Sign,
        context.session,
        data.as_mut_ptr(),
        data.len() as CK_ULONG,
        signature.as_mut_ptr(),
        &mut full_len
    );
    json!({
        "init": rv(init),
        "query": rv(query),
        "query_len": needed,
        "short_buffer": rv(too_small),
        "short_buffer_len": short_len,
        "retry": rv(retry),
        "signature": hex(&signature[..full_len as usize]),
    })
}

fn operation_state(context: &Context) -> Value {
    let module = &context.module;
    let key = context.private_key("rsa-2048");
    let (without_init, _) = module.sign(context.session, MESSAGE);
    let mut mechanism = Mechanism::plain(CKM_RSA_PKCS);
    let init = module.sign_init(context.session, &mut mechanism, key);
    let init_again = module.sign_init(context.session, &mut mechanism, key);
    // Raw PKCS#1 v1.5 accepts at most modulus length - 11 bytes, so 300 bytes fail.
    let (too_long, _) = module.sign(context.session, &[0x5a; 300]);
    let (after_error, _) = module.sign(context.session, MESSAGE);
    // Each of the next checks gets a fresh session, so no earlier step leaves an operation.
    let mut wrong = Mechanism::plain(CKM_ECDSA);
    let wrong_key_type = module.sign_init(module.open(context.slot), &mut wrong, key);
    let invalid_key = module.sign_init(module.open(context.slot), &mut mechanism, 0xdead_beef);
    json!({
        "sign_without_init": rv(without_init),
        "init": rv(init),
        "init_while_active": rv(init_again),
        "data_too_long": rv(too_long),
        "sign_after_error": rv(after_error),
        "ecdsa_on_rsa_key": rv(wrong_key_type),
        "invalid_key_handle": rv(invalid_key),
    })
}

fn mechanism_list(context: &Context) -> Value {
    let module = &context.module;
    let mut count: CK_ULONG = 0;
    call!(
        module,
        C_GetMechanismList,
        context.slot,
        ptr::null_mut(),
        &mut count
    );
    let mut mechanisms = vec![0; count as usize];
    let code = call!(
        module,
        C_GetMechanismList,
        context.slot,
        mechanisms.as_mut_ptr(),
        &mut count
    );
    mechanisms.truncate(count as usize);
    mechanisms.sort_unstable();
    let mut infos = serde_json::Map::new();
    for mechanism in &mechanisms {
        // SAFETY: CK_MECHANISM_INFO is plain data; all-zero bytes are a valid value.
        let mut info: CK_MECHANISM_INFO = unsafe { std::mem::zeroed() };
        let info_rv = call!(
            module,
            C_GetMechanismInfo,
            context.slot,
            *mechanism,
            &mut info
        );
        infos.insert(
            format!("{mechanism:#x}"),
            json!({
                "rv": rv(info_rv),
                "min": info.ulMinKeySize,
                "max": info.ulMaxKeySize,
                "sign": info.flags & CKF_SIGN != 0,
            }),
        );
    }
    json!({ "rv": rv(code), "mechanisms": infos })
}

/// Signs MESSAGE (or its digest for raw mechanisms) and checks the result with `verify`.
fn sign_case(
    context: &Context,
    label: &str,
    mut mechanism: Mechanism,
    input: &[u8],
    deterministic: bool,
    verify: impl Fn(&[u8]) -> bool,
) -> Value {
    let key = context.private_key(label);
    let init = context
        .module
        .sign_init(context.session, &mut mechanism, key);
    if init != CKR_OK {
        return json!({ "init": rv(init) });
    }
    let (code, signature) = context.module.sign(context.session, input);
    let mut result = json!({
        "init": rv(init),
        "sign": rv(code),
        "length": signature.len(),
        "valid": code == CKR_OK && verify(&signature),
    });
    if deterministic {
        result["signature"] = hex(&signature);
    }
    result
}

fn rsa_public(context: &Context, label: &str) -> (Vec<u8>, Vec<u8>) {
    let public = context.public_key(label);
    let module = &context.module;
    let n = module
        .attribute(context.session, public, CKA_MODULUS)
        .expect("CKA_MODULUS");
    let e = module
        .attribute(context.session, public, CKA_PUBLIC_EXPONENT)
        .expect("CKA_PUBLIC_EXPONENT");
    (n, e)
}

/// The DER DigestInfo prefix of SHA-256 (RFC 8017, 9.2, note 1).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

fn sign_rsa_pkcs1(context: &Context) -> Value {
    let table: [(&str, CK_MECHANISM_TYPE, &'static sig::RsaParameters); 5] = [
        (
            "CKM_SHA1_RSA_PKCS",
            CKM_SHA1_RSA_PKCS,
            &sig::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        ),
        (
            "CKM_SHA224_RSA_PKCS",
            CKM_SHA224_RSA_PKCS,
            &sig::RSA_PKCS1_2048_8192_SHA256,
        ),
        (
            "CKM_SHA256_RSA_PKCS",
            CKM_SHA256_RSA_PKCS,
            &sig::RSA_PKCS1_2048_8192_SHA256,
        ),
        (
            "CKM_SHA384_RSA_PKCS",
            CKM_SHA384_RSA_PKCS,
            &sig::RSA_PKCS1_2048_8192_SHA384,
        ),
        (
            "CKM_SHA512_RSA_PKCS",
            CKM_SHA512_RSA_PKCS,
            &sig::RSA_PKCS1_2048_8192_SHA512,
        ),
    ];
    let mut results = serde_json::Map::new();
    for label in ["rsa-2048", "rsa-3072", "rsa-4096"] {
        let (n, e) = rsa_public(context, label);
        let components = RsaPublicKeyComponents { n: &n, e: &e };
        for (name, mechanism, params) in table {
            // ring has no SHA-224 verifier, so SHA-224 is compared byte for byte only.
            let checkable = mechanism != CKM_SHA224_RSA_PKCS;
            let result = sign_case(
                context,
                label,
                Mechanism::plain(mechanism),
                MESSAGE,
                true,
                |s| !checkable || components.verify(params, MESSAGE, s).is_ok(),
            );
            results.insert(format!("{label} {name}"), result);
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, MESSAGE);
        let mut digest_info = SHA256_DIGEST_INFO.to_vec();
        digest_info.extend_from_slice(digest.as_ref());
        let raw = sign_case(
            context,
            label,
            Mechanism::plain(CKM_RSA_PKCS),
            &digest_info,
            true,
            |s| {
                components
                    .verify(&sig::RSA_PKCS1_2048_8192_SHA256, MESSAGE, s)
                    .is_ok()
            },
        );
        results.insert(format!("{label} CKM_RSA_PKCS"), raw);
    }
    Value::Object(results)
}

fn sign_rsa_pss(context: &Context) -> Value {
    let mut results = serde_json::Map::new();
    let table: [(
        &str,
        CK_MECHANISM_TYPE,
        CK_MECHANISM_TYPE,
        CK_RSA_PKCS_MGF_TYPE,
        usize,
        &'static sig::RsaParameters,
    ); 3] = [
        (
            "CKM_SHA256_RSA_PKCS_PSS",
            CKM_SHA256_RSA_PKCS_PSS,
            CKM_SHA256,
            CKG_MGF1_SHA256,
            32,
            &sig::RSA_PSS_2048_8192_SHA256,
        ),
        (
            "CKM_SHA384_RSA_PKCS_PSS",
            CKM_SHA384_RSA_PKCS_PSS,
            CKM_SHA384,
            CKG_MGF1_SHA384,
            48,
            &sig::RSA_PSS_2048_8192_SHA384,
        ),
        (
            "CKM_SHA512_RSA_PKCS_PSS",
            CKM_SHA512_RSA_PKCS_PSS,
            CKM_SHA512,
            CKG_MGF1_SHA512,
            64,
            &sig::RSA_PSS_2048_8192_SHA512,
        ),
    ];
    for label in ["rsa-2048", "rsa-3072", "rsa-4096"] {
        let (n, e) = rsa_public(context, label);
        let components = RsaPublicKeyComponents { n: &n, e: &e };
        for (name, mechanism, hash, mgf, salt, params) in table {
            let result = sign_case(
                context,
                label,
                Mechanism::pss(mechanism, hash, mgf, salt),
                MESSAGE,
                false,
                |s| components.verify(params, MESSAGE, s).is_ok(),
            );
            results.insert(format!("{label} {name}"), result);
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, MESSAGE);
        let raw = sign_case(
            context,
            label,
            Mechanism::pss(CKM_RSA_PKCS_PSS, CKM_SHA256, CKG_MGF1_SHA256, 32),
            digest.as_ref(),
            false,
            |s| {
                components
                    .verify(&sig::RSA_PSS_2048_8192_SHA256, MESSAGE, s)
                    .is_ok()
            },
        );
        results.insert(format!("{label} CKM_RSA_PKCS_PSS"), raw);
    }
    // Parameters that contradict each other or the mechanism must be rejected.
    let label = "rsa-2048";
    let mismatched = [
        (
            "hash_mismatch",
            Mechanism::pss(CKM_SHA256_RSA_PKCS_PSS, CKM_SHA384, CKG_MGF1_SHA256, 32),
        ),
        (
            "mgf_mismatch",
            Mechanism::pss(CKM_SHA256_RSA_PKCS_PSS, CKM_SHA256, CKG_MGF1_SHA512, 32),
        ),
        ("no_parameters", Mechanism::plain(CKM_RSA_PKCS_PSS)),
    ];
    for (name, mechanism) in mismatched {
        let result = sign_case(context, label, mechanism, MESSAGE, false, |_| false);
        results.insert(
            name.into(),
            json!({ "init": result["init"], "sign": result["sign"] }),
        );
    }
    Value::Object(results)
}

/// Removes the DER OCTET STRING header that wraps CKA_EC_POINT.
fn ec_point(value: &[u8]) -> &[u8] {
    match value {
        [0x04, 0x81, len, rest @ ..] if *len as usize == rest.len() => rest,
        [0x04, len, rest @ ..] if *len as usize == rest.len() => rest,
        other => other,
    }
}

fn sign_ecdsa(context: &Context) -> Value {
    let mut results = serde_json::Map::new();
    let curves: [(&str, Option<&'static sig::EcdsaVerificationAlgorithm>); 3] = [
        ("ec-p256", Some(&sig::ECDSA_P256_SHA256_FIXED)),
        ("ec-p384", Some(&sig::ECDSA_P384_SHA384_FIXED)),
        // ring has no P-521; its signatures are checked by length only.
        ("ec-p521", None),
    ];
    let hashed = [
        ("CKM_ECDSA_SHA1", CKM_ECDSA_SHA1),
        ("CKM_ECDSA_SHA224", CKM_ECDSA_SHA224),
        ("CKM_ECDSA_SHA256", CKM_ECDSA_SHA256),
        ("CKM_ECDSA_SHA384", CKM_ECDSA_SHA384),
        ("CKM_ECDSA_SHA512", CKM_ECDSA_SHA512),
    ];
    for (label, algorithm) in curves {
        let public = context.public_key(label);
        let point = context
            .module
            .attribute(context.session, public, CKA_EC_POINT)
            .expect("CKA_EC_POINT");
        let point = ec_point(&point).to_vec();
        let digest_algorithm = if label == "ec-p384" {
            &ring::digest::SHA384
        } else {
            &ring::digest::SHA256
        };
        let digest = ring::digest::digest(digest_algorithm, MESSAGE);
        let verify = |s: &[u8]| match algorithm {
            Some(algorithm) => UnparsedPublicKey::new(algorithm, &point)
                .verify(MESSAGE, s)
                .is_ok(),
            None => true,
        };
        let raw = sign_case(
            context,
            label,
            Mechanism::plain(CKM_ECDSA),
            digest.as_ref(),
            false,
            verify,
        );
        results.insert(format!("{label} CKM_ECDSA"), raw);
        for (name, mechanism) in hashed {
            // Only the hash that matches the ring verifier is checked; the others by length.
            let matching = (label == "ec-p256" && mechanism == CKM_ECDSA_SHA256)
                || (label == "ec-p384" && mechanism == CKM_ECDSA_SHA384);
            let result = sign_case(
                context,
                label,
                Mechanism::plain(mechanism),
                MESSAGE,
                false,
                |s| !matching || verify(s),
            );
            results.insert(format!("{label} {name}"), result);
        }
    }
    Value::Object(results)
}

fn sign_eddsa(context: &Context) -> Value {
    let label = "ed-25519";
    let public = context.public_key(label);
    let point = context
        .module
        .attribute(context.session, public, CKA_EC_POINT)
        .expect("CKA_EC_POINT");
    let point = ec_point(&point).to_vec();
    sign_case(
        context,
        label,
        Mechanism::plain(CKM_EDDSA),
        MESSAGE,
        true,
        |s| {
            UnparsedPublicKey::new(&sig::ED25519, &point)
                .verify(MESSAGE, s)
                .is_ok()
        },
    )
}

fn multipart(context: &Context) -> Value {
    let module = &context.module;
    let key = context.private_key("rsa-2048");
    let mut mechanism = Mechanism::plain(CKM_SHA256_RSA_PKCS);
    let init = module.sign_init(context.session, &mut mechanism, key);
    let mut codes = Vec::new();
    for chunk in MESSAGE.chunks(5) {
        let mut part = chunk.to_vec();
        codes.push(rv(call!(
            module,
            C_SignUpdate,
            context.session,
            part.as_mut_ptr(),
            part.len() as CK_ULONG
        )));
    }
    let mut len: CK_ULONG = 0;
    let query = call!(
        module,
        C_SignFinal,
        context.session,
        ptr::null_mut(),
        &mut len
    );
    let mut short = [0u8; 4];
    let mut short_len: CK_ULONG = 4;
    let too_small = call!(
        module,
        C_SignFinal,
        context.session,
        short.as_mut_ptr(),
        &mut short_len
    );
    let mut signature = vec![0u8; len as usize];
    let final_rv = call!(
        module,
        C_SignFinal,
        context.session,
        signature.as_mut_ptr(),
        &mut len
    );
    let mut raw = Mechanism::plain(CKM_RSA_PKCS);
    let raw_init = module.sign_init(context.session, &mut raw, key);
    let mut part = MESSAGE.to_vec();
    let raw_update = call!(
        module,
        C_SignUpdate,
        context.session,
        part.as_mut_ptr(),
        part.len() as CK_ULONG
    );
    json!({
        "init": rv(init),
        "updates": codes,
        "final_query": rv(query),
        "final_short_buffer": rv(too_small),
        "final": rv(final_rv),
        "signature": hex(&signature[..len as usize]),
        "raw_rsa_init": rv(raw_init),
        "raw_rsa_update": rv(raw_update),
    })
}

fn local_operations(context: &Context) -> Value {
    let module = &context.module;
    let key = context.private_key("rsa-2048");
    let public = context.public_key("rsa-2048");
    let mut mechanism = Mechanism::plain(CKM_SHA256_RSA_PKCS);
    module.sign_init(context.session, &mut mechanism, key);
    let (_, mut signature) = module.sign(context.session, MESSAGE);
    let mut raw = mechanism.raw();
    let verify_init = call!(module, C_VerifyInit, context.session, &mut raw, public);
    let mut data = MESSAGE.to_vec();
    let verify = call!(
        module,
        C_Verify,
        context.session,
        data.as_mut_ptr(),
        data.len() as CK_ULONG,
        signature.as_mut_ptr(),
        signature.len() as CK_ULONG
    );
    if let Some(last) = signature.last_mut() {
        *last ^= 1;
    }
    call!(module, C_VerifyInit, context.session, &mut raw, public);
    let tampered = call!(
        module,
        C_Verify,
        context.session,
        data.as_mut_ptr(),
        data.len() as CK_ULONG,
        signature.as_mut_ptr(),
        signature.len() as CK_ULONG
    );
    let mut digest_mechanism = Mechanism::plain(CKM_SHA256).raw();
    let digest_init = call!(module, C_DigestInit, context.session, &mut digest_mechanism);
    let mut digest = [0u8; 32];
    let mut digest_len: CK_ULONG = 32;
    let digest_rv = call!(
        module,
        C_Digest,
        context.session,
        data.as_mut_ptr(),
        data.len() as CK_ULONG,
        digest.as_mut_ptr(),
        &mut digest_len
    );
    let mut random = [0u8; 32];
    let random_rv = call!(
        module,
        C_GenerateRandom,
        context.session,
        random.as_mut_ptr(),
        32
    );
    json!({
        "verify_init": rv(verify_init),
        "verify": rv(verify),
        "verify_tampered": rv(tampered),
        "digest_init": rv(digest_init),
        "digest": rv(digest_rv),
        "digest_value": hex(&digest[..digest_len as usize]),
        "random": rv(random_rv),
        "random_not_zero": random.iter().any(|b| *b != 0),
    })
}

/// Operations that create keys or objects, or export private-key material. SoftHSM2 allows
/// most of them; the test requires keyrelay to refuse each with a proper code.
fn object_management(context: &Context) -> Value {
    let module = &context.module;
    let key = context.private_key("rsa-2048");
    let mut generate = Mechanism::plain(CKM_EC_KEY_PAIR_GEN).raw();
    let mut params = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let mut public_template = [attribute(
        CKA_EC_PARAMS,
        params.as_mut_ptr().cast(),
        params.len(),
    )];
    let (mut public, mut private) = (0, 0);
    let generate_rv = call!(
        module,
        C_GenerateKeyPair,
        context.session,
        &mut generate,
        public_template.as_mut_ptr(),
        1,
        ptr::null_mut(),
        0,
        &mut public,
        &mut private
    );
    let mut class = CKO_DATA;
    let mut value = *b"keyrelay";
    let mut data_template = [
        attribute(
            CKA_CLASS,
            ptr::from_mut(&mut class).cast(),
            size_of::<CK_ULONG>(),
        ),
        attribute(CKA_VALUE, value.as_mut_ptr().cast(), value.len()),
    ];
    let mut created = 0;
    let create_rv = call!(
        module,
        C_CreateObject,
        context.session,
        data_template.as_mut_ptr(),
        2,
        &mut created
    );
    let mut wrapped = [0u8; 256];
    let mut unwrap = Mechanism::plain(CKM_RSA_PKCS).raw();
    let mut unwrapped = 0;
    let unwrap_rv = call!(
        module,
        C_UnwrapKey,
        context.session,
        &mut unwrap,
        key,
        wrapped.as_mut_ptr(),
        wrapped.len() as CK_ULONG,
        ptr::null_mut(),
        0,
        &mut unwrapped
    );
    let exponent = module
        .attribute(context.session, key, CKA_PRIVATE_EXPONENT)
        .err()
        .unwrap_or(CKR_OK);
    json!({
        "generate_key_pair": rv(generate_rv),
        "create_object": rv(create_rv),
        "unwrap_key": rv(unwrap_rv),
        "private_exponent": rv(exponent),
    })
}

fn always_authenticate(context: &Context) -> Value {
    let module = &context.module;
    let key = context.private_key("rsa-always");
    let flag = module.attribute(context.session, key, CKA_ALWAYS_AUTHENTICATE);
    let mut mechanism = Mechanism::plain(CKM_SHA256_RSA_PKCS);
    let init = module.sign_init(context.session, &mut mechanism, key);
    let (without_login, _) = module.sign(context.session, MESSAGE);
    module.sign_init(context.session, &mut mechanism, key);
    let context_login = module.login(context.session, CKU_CONTEXT_SPECIFIC, &context.pin);
    let (with_login, signature) = module.sign(context.session, MESSAGE);
    json!({
        "attribute": flag.map(|value| hex(&value)).unwrap_or_else(rv),
        "init": rv(init),
        "sign_without_context_login": rv(without_login),
        "context_login": rv(context_login),
        "sign_after_context_login": rv(with_login),
        "signature": hex(&signature),
    })
}
