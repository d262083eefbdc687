//! A minimal PKCS#11 caller over `cryptoki-sys`: load a module, initialize it for several
//! threads, open and log in a session, find a private key by label and sign.
//!
//! Errors carry the function name and the CK_RV in hex, because a benchmark only needs to
//! stop with a clear message, not to compare return codes.

use std::ptr;

use anyhow::{Context, Result, bail};
use cryptoki_sys::*;

/// A loaded PKCS#11 module and its function list.
pub struct Module {
    _library: Pkcs11,
    functions: &'static CK_FUNCTION_LIST,
}

/// Calls a function of the module's function list and fails on any CK_RV other than CKR_OK.
/// Every argument must follow that function's PKCS#11 contract: valid pointers of the stated
/// lengths, or NULL where NULL is allowed.
macro_rules! check {
    ($module:expr, $name:ident $(, $argument:expr)* $(,)?) => {{
        let function = $module
            .functions
            .$name
            .context(concat!(stringify!($name), " is missing from the function list"))?;
        // SAFETY: the function list comes from the module's C_GetFunctionList and stays valid
        // while `Module` keeps the library loaded; each call site passes arguments that follow
        // the function's contract.
        let rv = unsafe { function($($argument),*) };
        if rv != CKR_OK {
            bail!(concat!(stringify!($name), " failed with CK_RV {:#x}"), rv);
        }
    }};
}

impl Module {
    /// Loads the module at `path` and reads its function list.
    pub fn load(path: &str) -> Result<Self> {
        // SAFETY: loading a PKCS#11 module runs its initializers; the caller names a PKCS#11
        // module, which is built to be loaded this way.
        let library = unsafe { Pkcs11::new(path) }
            .with_context(|| format!("cannot load the PKCS#11 module {path}"))?;
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: C_GetFunctionList writes one pointer into `list`.
        let rv = unsafe { library.C_GetFunctionList(&mut list) };
        if rv != CKR_OK {
            bail!("C_GetFunctionList failed with CK_RV {rv:#x}");
        }
        // SAFETY: on CKR_OK the module returned a pointer to its static function list, which
        // lives as long as the library, and `Module` keeps the library loaded.
        let functions = unsafe { list.as_ref() }.context("C_GetFunctionList returned NULL")?;
        Ok(Self {
            _library: library,
            functions,
        })
    }

    /// Calls C_Initialize with CKF_OS_LOCKING_OK, which SoftHSM2 needs before several threads
    /// call it.
    pub fn initialize(&self) -> Result<()> {
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: ptr::null_mut(),
        };
        check!(self, C_Initialize, ptr::from_mut(&mut args).cast());
        Ok(())
    }

    /// Calls C_Finalize.
    pub fn finalize(&self) -> Result<()> {
        check!(self, C_Finalize, ptr::null_mut());
        Ok(())
    }

    /// Returns the slot whose token is labelled `label`.
    pub fn slot(&self, label: &str) -> Result<CK_SLOT_ID> {
        let mut count: CK_ULONG = 0;
        check!(self, C_GetSlotList, CK_TRUE, ptr::null_mut(), &mut count);
        let mut slots = vec![0; count as usize];
        check!(self, C_GetSlotList, CK_TRUE, slots.as_mut_ptr(), &mut count);
        slots.truncate(count as usize);
        for slot in slots {
            // SAFETY: CK_TOKEN_INFO is plain data, and all-zero bytes are a valid value.
            let mut info: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
            check!(self, C_GetTokenInfo, slot, &mut info);
            if String::from_utf8_lossy(&info.label).trim_end() == label {
                return Ok(slot);
            }
        }
        bail!("no token labelled {label:?} is present")
    }

    /// Opens a read-only session on `slot`.
    pub fn open_session(&self, slot: CK_SLOT_ID) -> Result<CK_SESSION_HANDLE> {
        let mut session = 0;
        check!(
            self,
            C_OpenSession,
            slot,
            CKF_SERIAL_SESSION,
            ptr::null_mut(),
            None,
            &mut session
        );
        Ok(session)
    }

    /// Logs the user in. In PKCS#11 a login applies to every session of the application on
    /// that token, so later sessions need none.
    pub fn login(&self, session: CK_SESSION_HANDLE, pin: &str) -> Result<()> {
        let mut pin = pin.as_bytes().to_vec();
        check!(
            self,
            C_Login,
            session,
            CKU_USER,
            pin.as_mut_ptr(),
            pin.len() as CK_ULONG
        );
        Ok(())
    }

    /// Returns the private key labelled `label`.
    pub fn private_key(&self, session: CK_SESSION_HANDLE, label: &str) -> Result<CK_OBJECT_HANDLE> {
        let mut class = CKO_PRIVATE_KEY;
        let mut label_bytes = label.as_bytes().to_vec();
        let mut template = [
            CK_ATTRIBUTE {
                type_: CKA_CLASS,
                pValue: ptr::from_mut(&mut class).cast(),
                ulValueLen: size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
            },
            CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: label_bytes.as_mut_ptr().cast(),
                ulValueLen: label_bytes.len() as CK_ULONG,
            },
        ];
        let template_len = template.len() as CK_ULONG;
        check!(
            self,
            C_FindObjectsInit,
            session,
            template.as_mut_ptr(),
            template_len
        );
        let mut object = 0;
        let mut count = 0;
        let found = (|| -> Result<()> {
            check!(self, C_FindObjects, session, &mut object, 1, &mut count);
            Ok(())
        })();
        check!(self, C_FindObjectsFinal, session);
        found?;
        if count != 1 {
            bail!("no private key labelled {label:?} was found");
        }
        Ok(object)
    }

    /// Signs `data` with `key` by C_SignInit and one C_Sign into a buffer large enough for
    /// RSA-4096, and returns the signature.
    pub fn sign(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let mut raw = CK_MECHANISM {
            mechanism,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        check!(self, C_SignInit, session, &mut raw, key);
        let mut input = data.to_vec();
        let mut signature = vec![0u8; 512];
        let mut len = signature.len() as CK_ULONG;
        check!(
            self,
            C_Sign,
            session,
            input.as_mut_ptr(),
            input.len() as CK_ULONG,
            signature.as_mut_ptr(),
            &mut len
        );
        signature.truncate(len as usize);
        Ok(signature)
    }
}
