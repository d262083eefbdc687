//! The module's error type and its single mapping to CK_RV.

use cryptoki_sys::*;
use keyrelay_protocol::{ErrorCode, ErrorReply};

/// Result of an internal operation.
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// Why a PKCS#11 call failed. Each variant maps to exactly one CKR_* value in [`Error::rv`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// C_Initialize has not been called in this process.
    #[error("the module is not initialized")]
    NotInitialized,
    /// C_Initialize was called twice without C_Finalize.
    #[error("the module is already initialized")]
    AlreadyInitialized,
    /// A pointer or length argument is invalid.
    #[error("invalid arguments: {0}")]
    ArgumentsBad(&'static str),
    /// The client configuration cannot be used.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The caller's output buffer is too short; the needed length was written back.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// The function is not part of what the module supports.
    #[error("function not supported")]
    FunctionNotSupported,
    #[error("invalid slot id {0}")]
    SlotIdInvalid(CK_SLOT_ID),
    #[error("invalid session handle {0}")]
    SessionHandleInvalid(CK_SESSION_HANDLE),
    #[error("parallel sessions are not supported: CKF_SERIAL_SESSION is required")]
    ParallelNotSupported,
    #[error("invalid object handle {0}")]
    ObjectHandleInvalid(CK_OBJECT_HANDLE),
    #[error("attribute {0:#x} is sensitive")]
    AttributeSensitive(CK_ATTRIBUTE_TYPE),
    #[error("attribute {0:#x} is not valid for this object")]
    AttributeTypeInvalid(CK_ATTRIBUTE_TYPE),
    #[error("invalid key handle {0}")]
    KeyHandleInvalid(CK_OBJECT_HANDLE),
    #[error("the key cannot be used with this mechanism")]
    KeyTypeInconsistent,
    #[error("the key does not permit signing")]
    KeyFunctionNotPermitted,
    #[error("mechanism {0:#x} is not available on this token")]
    MechanismInvalid(CK_MECHANISM_TYPE),
    #[error("mechanism parameter is invalid")]
    MechanismParamInvalid,
    #[error("an operation of this kind is already active in the session")]
    OperationActive,
    #[error("no operation of this kind is active in the session")]
    OperationNotInitialized,
    #[error("input length is out of range for the mechanism")]
    DataLenRange,
    #[error("the user is already logged in")]
    UserAlreadyLoggedIn,
    #[error("the user is not logged in")]
    UserNotLoggedIn,
    #[error("user type {0} is not supported")]
    UserTypeInvalid(CK_USER_TYPE),
    #[error("PIN or KeySecret rejected by the keyserver")]
    PinIncorrect,
    #[error("the signature is invalid")]
    SignatureInvalid,
    #[error("the signature has the wrong length")]
    SignatureLenRange,
    #[error("the random source takes no seed")]
    RandomSeedNotSupported,
    /// The keyserver's policy refused the request; the message names the rule.
    #[error("refused by the keyserver's policy: {0}")]
    PolicyRefused(String),
    /// The keyserver rejected the request with a reason that has no closer CKR_* value.
    #[error("keyserver: {0}")]
    Server(String),
    /// The keyserver passed on a CKR_* value returned by the backend token.
    #[error("backend token returned {rv:#x}: {message}")]
    Backend { rv: CK_RV, message: String },
    /// The connection to the keyserver failed.
    #[error("keyserver connection failed: {0}")]
    Network(String),
    /// No connection to the keyserver could be established in time: it is gone.
    #[error("keyserver unreachable: {0}")]
    Unreachable(String),
    /// A fault inside the module, such as a caught panic.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Returns the CKR_* value reported to the caller.
    pub(crate) fn rv(&self) -> CK_RV {
        match self {
            Self::NotInitialized => CKR_CRYPTOKI_NOT_INITIALIZED,
            Self::AlreadyInitialized => CKR_CRYPTOKI_ALREADY_INITIALIZED,
            Self::ArgumentsBad(_) => CKR_ARGUMENTS_BAD,
            Self::Config(_) => CKR_GENERAL_ERROR,
            Self::BufferTooSmall => CKR_BUFFER_TOO_SMALL,
            Self::FunctionNotSupported => CKR_FUNCTION_NOT_SUPPORTED,
            Self::SlotIdInvalid(_) => CKR_SLOT_ID_INVALID,
            Self::SessionHandleInvalid(_) => CKR_SESSION_HANDLE_INVALID,
            Self::ParallelNotSupported => CKR_SESSION_PARALLEL_NOT_SUPPORTED,
            Self::ObjectHandleInvalid(_) => CKR_OBJECT_HANDLE_INVALID,
            Self::AttributeSensitive(_) => CKR_ATTRIBUTE_SENSITIVE,
            Self::AttributeTypeInvalid(_) => CKR_ATTRIBUTE_TYPE_INVALID,
            Self::KeyHandleInvalid(_) => CKR_KEY_HANDLE_INVALID,
            Self::KeyTypeInconsistent => CKR_KEY_TYPE_INCONSISTENT,
            Self::KeyFunctionNotPermitted => CKR_KEY_FUNCTION_NOT_PERMITTED,
            Self::MechanismInvalid(_) => CKR_MECHANISM_INVALID,
            Self::MechanismParamInvalid => CKR_MECHANISM_PARAM_INVALID,
            Self::OperationActive => CKR_OPERATION_ACTIVE,
            Self::OperationNotInitialized => CKR_OPERATION_NOT_INITIALIZED,
            Self::DataLenRange => CKR_DATA_LEN_RANGE,
            Self::UserAlreadyLoggedIn => CKR_USER_ALREADY_LOGGED_IN,
            Self::UserNotLoggedIn => CKR_USER_NOT_LOGGED_IN,
            Self::UserTypeInvalid(_) => CKR_USER_TYPE_INVALID,
            Self::PinIncorrect => CKR_PIN_INCORRECT,
            Self::RandomSeedNotSupported => CKR_RANDOM_SEED_NOT_SUPPORTED,
            Self::SignatureInvalid => CKR_SIGNATURE_INVALID,
            Self::SignatureLenRange => CKR_SIGNATURE_LEN_RANGE,
            Self::PolicyRefused(_) => CKR_FUNCTION_REJECTED,
            Self::Server(_) | Self::Network(_) => CKR_DEVICE_ERROR,
            Self::Unreachable(_) => CKR_DEVICE_REMOVED,
            Self::Backend { rv, .. } => *rv,
            Self::Internal(_) => CKR_GENERAL_ERROR,
        }
    }

    /// Converts a keyserver error reply.
    pub(crate) fn from_reply(reply: ErrorReply) -> Self {
        match reply.code {
            ErrorCode::AUTHENTICATION_FAILED => Self::PinIncorrect,
            ErrorCode::KEY_NOT_ALLOWED => Self::KeyHandleInvalid(0),
            ErrorCode::MECHANISM_INVALID => Self::MechanismInvalid(0),
            ErrorCode::INPUT_INVALID => Self::DataLenRange,
            ErrorCode::POLICY_REFUSED => Self::PolicyRefused(reply.message),
            ErrorCode::BACKEND => match CK_RV::try_from(reply.backend_rv) {
                Ok(rv) if rv != CKR_OK => Self::Backend {
                    rv,
                    message: reply.message,
                },
                _ => Self::Server(reply.message),
            },
            code => Self::Server(format!("{code}: {}", reply.message)),
        }
    }

    /// Tells whether the failure is worth an `error` log line even without debug logging:
    /// faults an operator must fix, as opposed to results a caller expects to handle.
    pub(crate) fn is_operator_fault(&self) -> bool {
        matches!(
            self,
            Self::Config(_)
                | Self::PolicyRefused(_)
                | Self::Server(_)
                | Self::Network(_)
                | Self::Unreachable(_)
                | Self::Internal(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: ErrorCode, backend_rv: u64) -> ErrorReply {
        ErrorReply {
            code,
            backend_rv,
            message: "detail".into(),
        }
    }

    #[test]
    fn authentication_failure_maps_to_pin_incorrect() {
        let error = Error::from_reply(reply(ErrorCode::AUTHENTICATION_FAILED, 0));
        assert_eq!(error.rv(), CKR_PIN_INCORRECT);
    }

    #[test]
    fn backend_rv_passes_through() {
        let error = Error::from_reply(reply(ErrorCode::BACKEND, CKR_DATA_INVALID.into()));
        assert_eq!(error.rv(), CKR_DATA_INVALID);
    }

    #[test]
    fn backend_without_rv_is_device_error() {
        let error = Error::from_reply(reply(ErrorCode::BACKEND, 0));
        assert_eq!(error.rv(), CKR_DEVICE_ERROR);
    }

    #[test]
    fn policy_refusal_is_function_rejected() {
        let error = Error::from_reply(reply(ErrorCode::POLICY_REFUSED, 0));
        assert_eq!(error.rv(), CKR_FUNCTION_REJECTED);
    }

    #[test]
    fn unknown_code_is_device_error() {
        let error = Error::from_reply(reply(ErrorCode(999), 0));
        assert_eq!(error.rv(), CKR_DEVICE_ERROR);
    }
}
