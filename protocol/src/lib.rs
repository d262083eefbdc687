//! Wire messages exchanged between the keyrelay PKCS#11 module and the keyserver.
//!
//! Each request travels on its own QUIC bidirectional stream: the client writes one encoded
//! [`Request`] and finishes its side, the server writes one encoded [`Response`] and finishes
//! its side. The first stream of a connection carries [`Request::Hello`], which negotiates the
//! protocol version and authenticates the client; every later stream relies on that.
//!
//! Messages are encoded with bincode 2 in its standard configuration. Decoding is bounded by
//! [`MAX_MESSAGE_LEN`], so a peer cannot make the other side allocate more than that.
//!
//! This crate holds data and encoding only: no I/O, no async runtime, no FFI.

#![forbid(unsafe_code)]

mod message;

pub use message::{
    Attribute, AttributeValue, CallerContext, Catalogue, ErrorCode, ErrorReply, Hello, KeySecret,
    MechanismEntry, MechanismParameter, ObjectEntry, Request, Response, SignInput, SignRequest,
    TokenEntry,
};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Version of the message set in this crate. A server answers a Hello that names another
/// version with [`ErrorCode::UNSUPPORTED_VERSION`].
pub const PROTOCOL_VERSION: u16 = 1;

/// ALPN protocol identifier that both sides require during the TLS handshake.
pub const ALPN: &[u8] = b"keyrelay/1";

/// Maximum length in bytes of one encoded message, in either direction.
pub const MAX_MESSAGE_LEN: usize = 1 << 20;

/// Errors from encoding or decoding a message.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The message is longer than [`MAX_MESSAGE_LEN`].
    #[error("message of {len} bytes exceeds the limit of {MAX_MESSAGE_LEN} bytes")]
    TooLarge {
        /// Length of the rejected message in bytes.
        len: usize,
    },
    /// The bytes do not decode to the expected message type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message decoded but bytes were left over after it.
    #[error("{extra} unexpected bytes after the message")]
    TrailingBytes {
        /// Number of bytes after the end of the message.
        extra: usize,
    },
    /// The message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_LEN>()
}

/// Encodes a message, failing if the result would exceed [`MAX_MESSAGE_LEN`].
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, ProtocolError> {
    let bytes = bincode::serde::encode_to_vec(message, config())
        .map_err(|e| ProtocolError::Encode(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(ProtocolError::TooLarge { len: bytes.len() });
    }
    Ok(bytes)
}

/// Decodes exactly one message from `bytes`, with allocation bounded by [`MAX_MESSAGE_LEN`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(ProtocolError::TooLarge { len: bytes.len() });
    }
    let (message, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(ProtocolError::TrailingBytes {
            extra: bytes.len() - used,
        });
    }
    Ok(message)
}

/// Returns the PKCS#11 slot id under which the module presents the token named `token_name`.
///
/// The id depends on the name alone, so it stays the same across server restarts, policy
/// changes and client machines. Tools such as Java's SunPKCS11 select a token by slot id, so
/// this function must never change. It is the 32-bit FNV-1a hash of the UTF-8 name with the
/// top bit cleared, which keeps the id positive in a signed 32-bit integer.
pub fn slot_id_for_token(token_name: &str) -> u64 {
    u64::from(fnv1a_32(token_name.as_bytes()) & 0x7fff_ffff)
}

/// Returns the object handle the module uses for one object of a policy key.
///
/// `class` is the object's CKO_* value. The handle depends only on the names and the class,
/// so a session's handles stay valid after the module reconnects. It is never zero, because
/// zero is CK_INVALID_HANDLE.
pub fn object_handle_for(token_name: &str, key_name: &str, class: u64) -> u64 {
    let mut input = Vec::with_capacity(token_name.len() + key_name.len() + 10);
    input.extend_from_slice(token_name.as_bytes());
    input.push(0);
    input.extend_from_slice(key_name.as_bytes());
    input.push(0);
    input.extend_from_slice(&class.to_le_bytes());
    let handle = fnv1a_32(&input) & 0x7fff_ffff;
    u64::from(handle.max(1))
}

fn fnv1a_32(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(PRIME)
    })
}

/// Decodes arbitrary bytes as each message type. Fuzz targets call this harness.
pub fn fuzz_decode(bytes: &[u8]) {
    if let Ok(request) = decode::<Request>(bytes) {
        let encoded = encode(&request).expect("a decoded request encodes again");
        assert_eq!(decode::<Request>(&encoded).ok(), Some(request));
    }
    if let Ok(response) = decode::<Response>(bytes) {
        let encoded = encode(&response).expect("a decoded response encodes again");
        assert_eq!(decode::<Response>(&encoded).ok(), Some(response));
    }
}

#[cfg(test)]
mod tests;
