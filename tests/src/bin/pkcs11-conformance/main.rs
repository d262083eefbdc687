//! Conformance probe: loads a PKCS#11 module, runs one named case and prints one JSON line
//! with what it observed (return codes, lengths, attribute values, signature validity).
//!
//! Usage: `pkcs11-conformance MODULE TOKEN_LABEL CASE`, with the user PIN in the environment
//! variable `CONFORMANCE_PIN`. The end-to-end test `conformance` runs each case once against
//! SoftHSM2 and once through keyrelay and compares the two lines. Signatures are checked with
//! `ring` against the public key read from the token; only deterministic signatures (PKCS#1
//! v1.5, Ed25519) are printed, as hex.

#![allow(
    clippy::macro_metavars_in_unsafe,
    reason = "call! passes raw arguments to C functions, which is unsafe at every call site"
)]

use std::ffi::c_void;
use std::ptr;

use cryptoki_sys::*;
use serde_json::{Value, json};

/// A loaded module and its function list.
struct Module {
    _library: Pkcs11,
    functions: &'static CK_FUNCTION_LIST,
    library_path: String,
}

/// Calls a function of the function list. Every argument must satisfy that function's
/// PKCS#11 contract: valid pointers of the stated lengths, or NULL where NULL is allowed.
#[macro_export]
macro_rules! call {
    ($module:expr, $name:ident $(, $argument:expr)* $(,)?) => {{
        let function = $module.functions.$name.expect(stringify!($name));
        // SAFETY: the function list comes from the module's C_GetFunctionList and stays valid
        // while the library is loaded; the caller passes arguments that follow the contract.
        unsafe { function($($argument),*) }
    }};
}

impl Module {
    fn load(path: &str) -> Self {
        // SAFETY: loading a PKCS#11 module runs its initialisers, which is what the probe is
        // for; the path names a PKCS#11 module given on the command line.
        let library = unsafe { Pkcs11::new(path) }.expect("the module loads");
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: C_GetFunctionList writes one pointer into `list`.
        let rv = unsafe { library.C_GetFunctionList(&mut list) };
        assert_eq!(rv, CKR_OK, "C_GetFunctionList failed");
        // SAFETY: the module returned a non-NULL pointer to its static function list, which
        // lives as long as the library, which `Module` keeps loaded.
        let functions = unsafe { list.as_ref() }.expect("a function list");
        Self {
            _library: library,
            functions,
            library_path: path.to_owned(),
        }
    }

    fn initialize(&self) -> CK_RV {
        call!(self, C_Initialize, ptr::null_mut())
    }

    /// C_Initialize with CKF_OS_LOCKING_OK, which SoftHSM2 needs before several threads call it.
    fn initialize_threaded(&self) -> CK_RV {
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: ptr::null_mut(),
        };
        call!(self, C_Initialize, ptr::from_mut(&mut args).cast())
    }

    fn slot(&self, label: &str) -> CK_SLOT_ID {
        let mut count: CK_ULONG = 0;
        call!(self, C_GetSlotList, CK_TRUE, ptr::null_mut(), &mut count);
        let mut slots = vec![0; count as usize];
        let rv = call!(self, C_GetSlotList, CK_TRUE, slots.as_mut_ptr(), &mut count);
        assert_eq!(rv, CKR_OK, "C_GetSlotList failed");
        slots.truncate(count as usize);
        for slot in slots {
            // SAFETY: CK_TOKEN_INFO is plain data; all-zero bytes are a valid value.
            let mut info: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
            if call!(self, C_GetTokenInfo, slot, &mut info) == CKR_OK
                && String::from_utf8_lossy(&info.label).trim_end() == label
            {
                return slot;
            }
        }
        panic!("no token labelled {label:?}");
    }

    fn open(&self, slot: CK_SLOT_ID) -> CK_SESSION_HANDLE {
        let mut session = 0;
        let rv = call!(
            self,
            C_OpenSession,
            slot,
            CKF_SERIAL_SESSION | CKF_RW_SESSION,
            ptr::null_mut(),
            None,
            &mut session
        );
        assert_eq!(rv, CKR_OK, "C_OpenSession failed");
        session
    }

    fn login(&self, session: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &str) -> CK_RV {
        let mut pin = pin.as_bytes().to_vec();
        call!(
            self,
            C_Login,
            session,
            user,
            pin.as_mut_ptr(),
            pin.len() as CK_ULONG
        )
    }

    /// Finds the one object of `class` labelled `label`.
    fn find(
        &self,
        session: CK_SESSION_HANDLE,
        class: CK_OBJECT_CLASS,
        label: &str,
    ) -> Option<CK_OBJECT_HANDLE> {
        let mut class = class;
        let mut label = label.as_bytes().to_vec();
        let mut template = [
            attribute(
                CKA_CLASS,
                ptr::from_mut(&mut class).cast(),
                size_of::<CK_ULONG>(),
            ),
            attribute(CKA_LABEL, label.as_mut_ptr().cast(), label.len()),
        ];
        let rv = call!(self, C_FindObjectsInit, session, template.as_mut_ptr(), 2);
        assert_eq!(rv, CKR_OK, "C_FindObjectsInit failed");
        let mut object = 0;
        let mut count = 0;
        call!(self, C_FindObjects, session, &mut object, 1, &mut count);
        call!(self, C_FindObjectsFinal, session);
        (count == 1).then_some(object)
    }

    /// Reads one attribute by the two-call convention.
    fn attribute(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        kind: CK_ATTRIBUTE_TYPE,
    ) -> Result<Vec<u8>, CK_RV> {
        let mut entry = attribute(kind, ptr::null_mut(), 0);
        let rv = call!(self, C_GetAttributeValue, session, object, &mut entry, 1);
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut value = vec![0u8; entry.ulValueLen as usize];
        entry.pValue = value.as_mut_ptr().cast();
        let rv = call!(self, C_GetAttributeValue, session, object, &mut entry, 1);
        if rv != CKR_OK {
            return Err(rv);
        }
        value.truncate(entry.ulValueLen as usize);
        Ok(value)
    }

    fn sign_init(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: &mut Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> CK_RV {
        let mut raw = mechanism.raw();
        call!(self, C_SignInit, session, &mut raw, key)
    }

    /// C_Sign with a length query first; returns the code and the signature.
    fn sign(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> (CK_RV, Vec<u8>) {
        let mut data = data.to_vec();
        let mut len: CK_ULONG = 0;
        let rv = call!(
            self,
            C_Sign,
            session,
            data.as_mut_ptr(),
            data.len() as CK_ULONG,
            ptr::null_mut(),
            &mut len
        );
        if rv != CKR_OK {
            return (rv, Vec::new());
        }
        let mut signature = vec![0u8; len as usize];
        let rv = call!(
            self,
            C_Sign,
            session,
            data.as_mut_ptr(),
            data.len() as CK_ULONG,
            signature.as_mut_ptr(),
            &mut len
        );
        signature.truncate(len as usize);
        (rv, signature)
    }
}

fn attribute(kind: CK_ATTRIBUTE_TYPE, value: *mut c_void, len: usize) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: kind,
        pValue: value,
        ulValueLen: len as CK_ULONG,
    }
}

/// A mechanism with its parameter kept alive next to it.
struct Mechanism {
    kind: CK_MECHANISM_TYPE,
    pss: Option<CK_RSA_PKCS_PSS_PARAMS>,
}

impl Mechanism {
    fn plain(kind: CK_MECHANISM_TYPE) -> Self {
        Self { kind, pss: None }
    }

    fn pss(
        kind: CK_MECHANISM_TYPE,
        hash: CK_MECHANISM_TYPE,
        mgf: CK_RSA_PKCS_MGF_TYPE,
        salt: usize,
    ) -> Self {
        let params = CK_RSA_PKCS_PSS_PARAMS {
            hashAlg: hash,
            mgf,
            sLen: salt as CK_ULONG,
        };
        Self {
            kind,
            pss: Some(params),
        }
    }

    fn raw(&mut self) -> CK_MECHANISM {
        match &mut self.pss {
            Some(params) => CK_MECHANISM {
                mechanism: self.kind,
                pParameter: ptr::from_mut(params).cast(),
                ulParameterLen: size_of::<CK_RSA_PKCS_PSS_PARAMS>() as CK_ULONG,
            },
            None => CK_MECHANISM {
                mechanism: self.kind,
                pParameter: ptr::null_mut(),
                ulParameterLen: 0,
            },
        }
    }
}

/// The message every signing case signs.
const MESSAGE: &[u8] = b"keyrelay conformance message";

/// A logged-in session on the token, ready for a case.
struct Context {
    module: Module,
    slot: CK_SLOT_ID,
    session: CK_SESSION_HANDLE,
    pin: String,
}

impl Context {
    fn open(module: Module, token: &str, pin: String) -> Self {
        assert_eq!(module.initialize_threaded(), CKR_OK, "C_Initialize failed");
        let slot = module.slot(token);
        let session = module.open(slot);
        let rv = module.login(session, CKU_USER, &pin);
        assert_eq!(rv, CKR_OK, "C_Login failed");
        Self {
            module,
            slot,
            session,
            pin,
        }
    }

    fn private_key(&self, label: &str) -> CK_OBJECT_HANDLE {
        self.private_key_in(self.session, label)
    }

    fn private_key_in(&self, session: CK_SESSION_HANDLE, label: &str) -> CK_OBJECT_HANDLE {
        self.module
            .find(session, CKO_PRIVATE_KEY, label)
            .unwrap_or_else(|| panic!("no private key {label:?}"))
    }

    fn public_key(&self, label: &str) -> CK_OBJECT_HANDLE {
        self.module
            .find(self.session, CKO_PUBLIC_KEY, label)
            .unwrap_or_else(|| panic!("no public key {label:?}"))
    }
}

fn main() {
    let arguments: Vec<String> = std::env::args().collect();
    let [_, module, token, case] = arguments.as_slice() else {
        eprintln!("usage: pkcs11-conformance MODULE TOKEN_LABEL CASE (PIN in CONFORMANCE_PIN)");
        std::process::exit(2);
    };
    let pin = std::env::var("CONFORMANCE_PIN").unwrap_or_default();
    let module = Module::load(module);
    let result = cases::run(case, module, token, pin);
    println!("{}", json!({ "case": case, "result": result }));
}

mod cases;
mod process;

/// Hex of `bytes`, for JSON output.
fn hex(bytes: &[u8]) -> Value {
    Value::String(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
