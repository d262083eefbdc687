//! Entries of the function list that the module does not implement.
//!
//! Each returns CKR_FUNCTION_NOT_SUPPORTED. The module signs and answers queries; it never
//! creates, changes or destroys objects, never exports or unwraps keys, and never encrypts.

use std::ffi::c_void;

use cryptoki_sys::*;

macro_rules! not_supported {
    ($($name:ident($($argument:ty),*);)*) => {
        $(
            pub(crate) extern "C" fn $name($(_: $argument),*) -> CK_RV {
                tracing::debug!(function = stringify!($name), "function not supported");
                CKR_FUNCTION_NOT_SUPPORTED
            }
        )*
    };
}

type Session = CK_SESSION_HANDLE;
type Object = CK_OBJECT_HANDLE;
type Bytes = *mut CK_BYTE;
type Len = CK_ULONG;
type LenOut = *mut CK_ULONG;
type Template = *mut CK_ATTRIBUTE;
type Mechanism = *mut CK_MECHANISM;
type ObjectOut = *mut CK_OBJECT_HANDLE;

not_supported! {
    C_InitToken(CK_SLOT_ID, Bytes, Len, Bytes);
    C_InitPIN(Session, Bytes, Len);
    C_SetPIN(Session, Bytes, Len, Bytes, Len);
    C_GetOperationState(Session, Bytes, LenOut);
    C_SetOperationState(Session, Bytes, Len, Object, Object);
    C_CreateObject(Session, Template, Len, ObjectOut);
    C_CopyObject(Session, Object, Template, Len, ObjectOut);
    C_DestroyObject(Session, Object);
    C_GetObjectSize(Session, Object, LenOut);
    C_SetAttributeValue(Session, Object, Template, Len);
    C_EncryptInit(Session, Mechanism, Object);
    C_Encrypt(Session, Bytes, Len, Bytes, LenOut);
    C_EncryptUpdate(Session, Bytes, Len, Bytes, LenOut);
    C_EncryptFinal(Session, Bytes, LenOut);
    C_DecryptInit(Session, Mechanism, Object);
    C_Decrypt(Session, Bytes, Len, Bytes, LenOut);
    C_DecryptUpdate(Session, Bytes, Len, Bytes, LenOut);
    C_DecryptFinal(Session, Bytes, LenOut);
    C_DigestKey(Session, Object);
    C_SignRecoverInit(Session, Mechanism, Object);
    C_SignRecover(Session, Bytes, Len, Bytes, LenOut);
    C_VerifyRecoverInit(Session, Mechanism, Object);
    C_VerifyRecover(Session, Bytes, Len, Bytes, LenOut);
    C_DigestEncryptUpdate(Session, Bytes, Len, Bytes, LenOut);
    C_DecryptDigestUpdate(Session, Bytes, Len, Bytes, LenOut);
    C_SignEncryptUpdate(Session, Bytes, Len, Bytes, LenOut);
    C_DecryptVerifyUpdate(Session, Bytes, Len, Bytes, LenOut);
    C_GenerateKey(Session, Mechanism, Template, Len, ObjectOut);
    C_GenerateKeyPair(Session, Mechanism, Template, Len, Template, Len, ObjectOut, ObjectOut);
    C_WrapKey(Session, Mechanism, Object, Object, Bytes, LenOut);
    C_UnwrapKey(Session, Mechanism, Object, Bytes, Len, Template, Len, ObjectOut);
    C_DeriveKey(Session, Mechanism, Object, Template, Len, ObjectOut);
    C_GetFunctionStatus(Session);
    C_CancelFunction(Session);
    C_WaitForSlotEvent(CK_FLAGS, *mut CK_SLOT_ID, *mut c_void);
    C_LoginUser(Session, CK_USER_TYPE, Bytes, Len, Bytes, Len);
    C_MessageEncryptInit(Session, Mechanism, Object);
    C_EncryptMessage(Session, *mut c_void, Len, Bytes, Len, Bytes, Len, Bytes, LenOut);
    C_EncryptMessageBegin(Session, *mut c_void, Len, Bytes, Len);
    C_EncryptMessageNext(Session, *mut c_void, Len, Bytes, Len, Bytes, LenOut, CK_FLAGS);
    C_MessageEncryptFinal(Session);
    C_MessageDecryptInit(Session, Mechanism, Object);
    C_DecryptMessage(Session, *mut c_void, Len, Bytes, Len, Bytes, Len, Bytes, LenOut);
    C_DecryptMessageBegin(Session, *mut c_void, Len, Bytes, Len);
    C_DecryptMessageNext(Session, *mut c_void, Len, Bytes, Len, Bytes, LenOut, CK_FLAGS);
    C_MessageDecryptFinal(Session);
    C_MessageSignInit(Session, Mechanism, Object);
    C_SignMessage(Session, *mut c_void, Len, Bytes, Len, Bytes, LenOut);
    C_SignMessageBegin(Session, *mut c_void, Len);
    C_SignMessageNext(Session, *mut c_void, Len, Bytes, Len, Bytes, LenOut);
    C_MessageSignFinal(Session);
    C_MessageVerifyInit(Session, Mechanism, Object);
    C_VerifyMessage(Session, *mut c_void, Len, Bytes, Len, Bytes, Len);
    C_VerifyMessageBegin(Session, *mut c_void, Len);
    C_VerifyMessageNext(Session, *mut c_void, Len, Bytes, Len, Bytes, Len);
    C_MessageVerifyFinal(Session);
}
