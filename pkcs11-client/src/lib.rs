//! `libkeyrelay_pkcs11.so`: a PKCS#11 module that signs with keys held by a keyrelay keyserver.
//!
//! Signing tools load this module like any token's. Slot, token, object, attribute and
//! mechanism queries are answered locally from the catalogue the keyserver sends when the
//! connection is authenticated; each signature costs one QUIC round trip. Hash-and-sign
//! mechanisms hash locally, so only the digest travels.
//!
//! The module exports only `C_GetFunctionList`. It implements the PKCS#11 v2.40 functions
//! that OpenSSL's pkcs11 engine (libp11) and Java's SunPKCS11 call to sign; every other entry
//! returns CKR_FUNCTION_NOT_SUPPORTED. No panic crosses the C boundary.

#![allow(non_snake_case, reason = "the C functions keep their PKCS#11 names")]
#![allow(
    clippy::useless_conversion,
    clippy::unnecessary_fallible_conversions,
    reason = "CK_ULONG is 64 bits wide on some targets and 32 on others; conversions stay portable"
)]

mod attributes;
mod caller;
mod config;
mod digest;
mod error;
mod exports;
mod ffi;
mod function_list;
mod log;
mod module;
mod ops;
mod remote;
mod sign;
mod state;
mod token;
mod unsupported;
mod verify;

use cryptoki_sys::*;

use function_list::{FUNCTION_LIST, INTERFACES, interface_version};

/// C_GetFunctionList (PKCS#11 v2.40 section 5.2): returns the v2.40 function list.
///
/// # Safety
/// `list` must be NULL or valid for writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    exports::guard("C_GetFunctionList", || {
        // SAFETY: guaranteed by the caller.
        let list = unsafe { ffi::out(list) }?;
        // The pointer is mutable only because the C type says so: callers never write
        // through it, and the static stays in read-only memory.
        *list = std::ptr::from_ref(&FUNCTION_LIST).cast_mut();
        Ok(())
    })
}

/// C_GetInterfaceList (PKCS#11 v3.0 section 5.2): the v3.0 and v2.40 interfaces, by the
/// two-call convention.
///
/// # Safety
/// `count` must be NULL or valid; a non-NULL `list` must hold `*count` entries.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInterfaceList(
    list: *mut CK_INTERFACE,
    count: *mut CK_ULONG,
) -> CK_RV {
    exports::guard("C_GetInterfaceList", || {
        // SAFETY: guaranteed by the caller.
        let count = unsafe { ffi::out(count) }?;
        let capacity = ffi::to_usize(*count)?;
        let interfaces = &INTERFACES.0;
        *count = ffi::to_ulong(interfaces.len());
        if list.is_null() {
            return Ok(());
        }
        if capacity < interfaces.len() {
            return Err(error::Error::BufferTooSmall);
        }
        for (index, interface) in interfaces.iter().enumerate() {
            // SAFETY: `list` has room for `capacity >= interfaces.len()` entries.
            unsafe { list.add(index).write(*interface) };
        }
        Ok(())
    })
}

/// C_GetInterface (PKCS#11 v3.0 section 5.2): finds an interface by name, version and flags.
/// A NULL name selects the default, v3.0; a NULL version accepts any.
///
/// # Safety
/// `name` must be NULL or NUL-terminated, `version` NULL or valid, and `interface` valid
/// for writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInterface(
    name: *mut CK_UTF8CHAR,
    version: *mut CK_VERSION,
    interface: *mut *mut CK_INTERFACE,
    flags: CK_FLAGS,
) -> CK_RV {
    exports::guard("C_GetInterface", || {
        // SAFETY: guaranteed by the caller.
        let interface = unsafe { ffi::out(interface) }?;
        // SAFETY: guaranteed by the caller.
        let name = unsafe { ffi::c_string(name) };
        // SAFETY: guaranteed by the caller.
        let version = unsafe { version.as_ref() };
        let found = INTERFACES.0.iter().find(|candidate| {
            let claimed = interface_version(candidate);
            name.is_none_or(|name| name == b"PKCS 11")
                && version.is_none_or(|v| v.major == claimed.major && v.minor == claimed.minor)
                && candidate.flags & flags == flags
        });
        let found = found.ok_or(error::Error::ArgumentsBad("no interface matches"))?;
        *interface = std::ptr::from_ref(found).cast_mut();
        Ok(())
    })
}
