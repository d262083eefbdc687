//! Signing with keys that carry CKA_ALWAYS_AUTHENTICATE, through the backend's C functions.
//!
//! Such a key needs a C_Login with CKU_CONTEXT_SPECIFIC between C_SignInit and C_Sign
//! (PKCS#11 v2.40 section 4.9). cryptoki 0.12 runs C_SignInit and C_Sign in one call, so this
//! module calls the backend's function list directly for that one sequence, on a session
//! that cryptoki opened and logged in. It is the keyserver's only unsafe code.

#![allow(unsafe_code)]

use std::path::Path;
use std::ptr;

use cryptoki::context::Function;
use cryptoki::error::{Error, Rv};
use cryptoki::mechanism::Mechanism;
use cryptoki::types::AuthPin;
use cryptoki_sys::{
    CK_C_GetFunctionList, CK_FUNCTION_LIST, CK_MECHANISM, CK_OBJECT_HANDLE, CK_RV,
    CK_SESSION_HANDLE, CK_ULONG, CKU_CONTEXT_SPECIFIC,
};
use secrecy::ExposeSecret;

/// The backend module's function list, for the calls cryptoki does not offer.
pub(super) struct RawFunctions {
    /// Keeps the module loaded while `functions` is in use. The module is already loaded by
    /// cryptoki, so this only raises the loader's reference count.
    _library: libloading::Library,
    functions: *const CK_FUNCTION_LIST,
}

// SAFETY: a PKCS#11 function list is immutable after C_GetFunctionList returns it, and the
// module was initialized with CKF_OS_LOCKING_OK, so its functions may be called from any
// thread. Each session is used by one thread at a time, through the session pool.
unsafe impl Send for RawFunctions {}
// SAFETY: as above; `RawFunctions` has no interior mutability.
unsafe impl Sync for RawFunctions {}

impl std::fmt::Debug for RawFunctions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawFunctions(..)")
    }
}

impl RawFunctions {
    /// Loads the function list of the module at `path`.
    pub(super) fn load(path: &Path) -> Result<Self, String> {
        // SAFETY: loading a PKCS#11 module runs its initializers; cryptoki already loaded this
        // same module from the same path, so no new code runs.
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
        // SAFETY: C_GetFunctionList has this signature in every PKCS#11 module.
        let get: libloading::Symbol<'_, CK_C_GetFunctionList> =
            unsafe { library.get(b"C_GetFunctionList\0") }.map_err(|e| e.to_string())?;
        let get = (*get).ok_or("C_GetFunctionList is NULL")?;
        let mut functions = ptr::null_mut();
        // SAFETY: `functions` is a valid place for the pointer the module writes.
        let rv = unsafe { get(&mut functions) };
        if rv != 0 || functions.is_null() {
            return Err(format!("C_GetFunctionList returned {rv:#x}"));
        }
        Ok(Self {
            _library: library,
            functions,
        })
    }

    /// Runs C_SignInit, C_Login(CKU_CONTEXT_SPECIFIC) and C_Sign on `session` and returns
    /// the signature of `data`.
    pub(super) fn sign_with_context_login(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: &Mechanism<'_>,
        key: CK_OBJECT_HANDLE,
        pin: &AuthPin,
        data: &[u8],
    ) -> Result<Vec<u8>, Error> {
        // SAFETY: the function list stays valid while `_library` keeps the module loaded.
        let functions = unsafe { &*self.functions };
        let mut mechanism = CK_MECHANISM::from(mechanism);
        let sign_init = functions.C_SignInit.ok_or(Error::NullFunctionPointer)?;
        // SAFETY: `mechanism` and its parameter outlive the call, which only reads them.
        let rv = unsafe { sign_init(session, &mut mechanism, key) };
        check(rv, Function::SignInit)?;
        self.context_login(session, pin)?;
        self.sign(session, data)
    }

    fn context_login(&self, session: CK_SESSION_HANDLE, pin: &AuthPin) -> Result<(), Error> {
        // SAFETY: as in `sign_with_context_login`.
        let functions = unsafe { &*self.functions };
        let login = functions.C_Login.ok_or(Error::NullFunctionPointer)?;
        let pin = pin.expose_secret().as_bytes();
        let len = CK_ULONG::try_from(pin.len()).map_err(|_| Error::InvalidValue)?;
        // SAFETY: the PIN bytes outlive the call; PKCS#11 takes them as CK_UTF8CHAR_PTR and
        // only reads them.
        let rv = unsafe { login(session, CKU_CONTEXT_SPECIFIC, pin.as_ptr().cast_mut(), len) };
        check(rv, Function::Login)
    }

    /// Runs C_Sign by the two-call convention: the length, then the signature.
    fn sign(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<Vec<u8>, Error> {
        // SAFETY: as in `sign_with_context_login`.
        let functions = unsafe { &*self.functions };
        let sign = functions.C_Sign.ok_or(Error::NullFunctionPointer)?;
        let data_len = CK_ULONG::try_from(data.len()).map_err(|_| Error::InvalidValue)?;
        let data_ptr = data.as_ptr().cast_mut();
        let mut len: CK_ULONG = 0;
        // SAFETY: `data` is valid for `data_len` bytes and only read; a NULL output asks for
        // the length, which the module writes to `len`.
        let rv = unsafe { sign(session, data_ptr, data_len, ptr::null_mut(), &mut len) };
        check(rv, Function::Sign)?;
        let mut signature = vec![0u8; usize::try_from(len).map_err(|_| Error::InvalidValue)?];
        // SAFETY: `signature` is writable for `len` bytes.
        let rv = unsafe {
            sign(
                session,
                data_ptr,
                data_len,
                signature.as_mut_ptr(),
                &mut len,
            )
        };
        check(rv, Function::Sign)?;
        signature.truncate(usize::try_from(len).map_err(|_| Error::InvalidValue)?);
        Ok(signature)
    }
}

fn check(rv: CK_RV, function: Function) -> Result<(), Error> {
    Rv::from(rv).into_result(function)
}
