//! Message types. Field order is part of the wire format: append new fields and variants at
//! the end and raise [`crate::PROTOCOL_VERSION`] when an older peer could misread a message.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A message from the module to the keyserver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Negotiates the version and authenticates the connection. Must be the first request.
    Hello(Hello),
    /// Signs with one key that the connection's KeyId may use.
    Sign(SignRequest),
}

/// The first request on every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The client's [`crate::PROTOCOL_VERSION`].
    pub version: u16,
    /// Public identifier of the client credential.
    pub key_id: String,
    /// Secret half of the client credential.
    pub key_secret: KeySecret,
    /// The process that loaded the module, as the client reports it. The server records it
    /// for evidence but cannot verify it.
    pub caller: CallerContext,
}

/// Facts about the calling process, collected by the module on the client machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerContext {
    /// Host name of the client machine.
    pub host_name: String,
    /// Name of the operating-system user running the process.
    pub os_user: String,
    /// Path of the process's executable.
    pub executable: String,
    /// Hex SHA-256 of the executable file, or empty if it could not be read.
    pub executable_sha256: String,
    /// Command line, with values that look like passwords, PINs or secrets replaced by
    /// `<redacted>`.
    pub command_line: Vec<String>,
    /// CI job identifiers found in the environment, as variable name and value.
    pub ci: Vec<(String, String)>,
}

/// Secret bytes of a client credential, wiped from memory on drop and never formatted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(transparent)]
pub struct KeySecret(Vec<u8>);

impl KeySecret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Exposes the secret bytes, for hashing or sending only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret(..)")
    }
}

/// A request to sign with one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignRequest {
    /// Name of the key in the server's policy, as given in [`ObjectEntry::key_name`].
    pub key_name: String,
    /// The CKM_* mechanism the calling application asked for.
    pub mechanism: u64,
    /// The mechanism's parameter, decoded from its C structure.
    pub parameter: MechanismParameter,
    /// The bytes to sign.
    pub input: SignInput,
}

/// A mechanism parameter in a form independent of C layout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MechanismParameter {
    /// The mechanism takes no parameter.
    #[default]
    None,
    /// CK_RSA_PKCS_PSS_PARAMS: the hash (CKM_*), the mask generation function (CKG_*) and
    /// the salt length in bytes.
    RsaPss {
        /// CKM_* value of the hash.
        hash: u64,
        /// CKG_* value of the mask generation function.
        mgf: u64,
        /// Salt length in bytes.
        salt_len: u64,
    },
    /// CK_EDDSA_PARAMS: whether the message is pre-hashed (Ed25519ph) and the context.
    Eddsa {
        /// True for the pre-hash variant.
        prehash: bool,
        /// Context string, at most 255 bytes.
        context: Vec<u8>,
    },
}

/// The bytes to sign, and whether the client already hashed them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignInput {
    /// Input for a mechanism that does not hash, such as CKM_RSA_PKCS or CKM_ECDSA, passed
    /// to the backend unchanged.
    Data(Vec<u8>),
    /// Digest computed by the client for a hash-and-sign mechanism such as
    /// CKM_SHA256_RSA_PKCS. Its length must match that mechanism's hash.
    Digest(Vec<u8>),
}

impl SignInput {
    /// Returns the bytes that travel, whichever the kind.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Data(bytes) | Self::Digest(bytes) => bytes,
        }
    }
}

/// A message from the keyserver to the module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Accepts a [`Hello`] and lists what the client may see.
    Welcome(Catalogue),
    /// The signature produced by the backend token.
    Signature(Vec<u8>),
    /// The request failed or was rejected.
    Error(ErrorReply),
}

/// Everything the module needs to handle slot, token, object and mechanism queries locally.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalogue {
    /// Maximum length of [`SignInput::Data`] the server accepts.
    pub max_input_len: u32,
    /// Tokens holding at least one key the client may use, in slot id order.
    pub tokens: Vec<TokenEntry>,
}

/// One backend token as the client sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Token name from the policy, presented as the PKCS#11 token label.
    pub name: String,
    /// Slot id, from [`crate::slot_id_for_token`].
    pub slot_id: u64,
    /// Backend token's manufacturer id.
    pub manufacturer: String,
    /// Backend token's model.
    pub model: String,
    /// Backend token's serial number.
    pub serial_number: String,
    /// Mechanisms the client may use on this token.
    pub mechanisms: Vec<MechanismEntry>,
    /// Objects the client may see on this token.
    pub objects: Vec<ObjectEntry>,
}

/// One mechanism as C_GetMechanismInfo reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MechanismEntry {
    /// CKM_* value.
    pub mechanism: u64,
    /// Minimum key size, in the unit PKCS#11 defines for the mechanism.
    pub min_key_size: u64,
    /// Maximum key size, in the unit PKCS#11 defines for the mechanism.
    pub max_key_size: u64,
    /// CKF_* flags.
    pub flags: u64,
}

/// One object (private key, public key or certificate) of a policy key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Object handle, from [`crate::object_handle_for`].
    pub handle: u64,
    /// Name of the policy key the object belongs to.
    pub key_name: String,
    /// Attributes copied from the backend object.
    pub attributes: Vec<Attribute>,
}

impl ObjectEntry {
    /// Returns the value of attribute `kind`, if the object has it.
    pub fn attribute(&self, kind: u64) -> Option<&AttributeValue> {
        self.attributes
            .iter()
            .find(|a| a.kind == kind)
            .map(|a| &a.value)
    }
}

/// One attribute of an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    /// CKA_* value.
    pub kind: u64,
    /// The value, typed so that each side can lay it out in its own CK_ULONG size.
    pub value: AttributeValue,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttributeValue {
    /// A CK_BBOOL.
    Bool(bool),
    /// A CK_ULONG, such as CKA_CLASS or CKA_KEY_TYPE.
    Ulong(u64),
    /// A byte array, such as CKA_ID, CKA_LABEL or CKA_MODULUS.
    Bytes(Vec<u8>),
    /// The attribute exists but the backend marks it sensitive or unextractable.
    Sensitive,
}

/// The reason a request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// The CKR_* value the backend returned, for [`ErrorCode::BACKEND`], else zero.
    pub backend_rv: u64,
    /// Human-readable detail, safe to log: it never contains a secret.
    pub message: String,
}

/// Numbered error codes. A number keeps its meaning forever and is never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// The KeyId is unknown or the KeySecret does not match. The reply does not say which.
    pub const AUTHENTICATION_FAILED: Self = Self(1);
    /// The server does not speak the protocol version in the Hello.
    pub const UNSUPPORTED_VERSION: Self = Self(2);
    /// A request other than Hello arrived before authentication succeeded.
    pub const NOT_AUTHENTICATED: Self = Self(3);
    /// The key does not exist or the KeyId may not use it. The reply does not say which.
    pub const KEY_NOT_ALLOWED: Self = Self(4);
    /// The mechanism is not supported for this key or not allowed by the policy.
    pub const MECHANISM_INVALID: Self = Self(5);
    /// The input does not suit the mechanism, for example a digest of the wrong length.
    pub const INPUT_INVALID: Self = Self(6);
    /// The backend token failed; [`ErrorReply::backend_rv`] holds its CKR_* value.
    pub const BACKEND: Self = Self(7);
    /// The audit record could not be written, so the key was not used.
    pub const AUDIT_UNAVAILABLE: Self = Self(8);
    /// The request was malformed or out of order.
    pub const BAD_REQUEST: Self = Self(9);
    /// The server failed for a reason of its own.
    pub const INTERNAL: Self = Self(10);
    /// The mechanism parameter is invalid or does not suit the mechanism.
    pub const MECHANISM_PARAM_INVALID: Self = Self(11);
    /// The policy refuses the request: a rule on mechanisms, digests, validity, source
    /// networks or quotas. The message names the rule.
    pub const POLICY_REFUSED: Self = Self(12);
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::AUTHENTICATION_FAILED => "authentication failed",
            Self::UNSUPPORTED_VERSION => "unsupported protocol version",
            Self::NOT_AUTHENTICATED => "not authenticated",
            Self::KEY_NOT_ALLOWED => "key not allowed",
            Self::MECHANISM_INVALID => "mechanism invalid",
            Self::INPUT_INVALID => "input invalid",
            Self::BACKEND => "backend token error",
            Self::AUDIT_UNAVAILABLE => "audit log unavailable",
            Self::BAD_REQUEST => "bad request",
            Self::INTERNAL => "internal server error",
            Self::MECHANISM_PARAM_INVALID => "mechanism parameter invalid",
            Self::POLICY_REFUSED => "refused by policy",
            _ => return write!(f, "error code {}", self.0),
        };
        f.write_str(name)
    }
}
