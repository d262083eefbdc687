//! Round-trip and limit tests for every message.

use super::*;

fn round_trip<T>(message: T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = encode(&message).unwrap();
    let decoded: T = decode(&bytes).unwrap();
    assert_eq!(decoded, message);
}

fn sample_catalogue() -> Catalogue {
    Catalogue {
        max_input_len: 4096,
        tokens: vec![TokenEntry {
            name: "test-token".into(),
            slot_id: slot_id_for_token("test-token"),
            manufacturer: "SoftHSM project".into(),
            model: "SoftHSM v2".into(),
            serial_number: "0123456789abcdef".into(),
            mechanisms: vec![MechanismEntry {
                mechanism: 1,
                min_key_size: 2048,
                max_key_size: 4096,
                flags: 0x800,
            }],
            objects: vec![ObjectEntry {
                handle: object_handle_for("test-token", "rsa", 3),
                key_name: "rsa".into(),
                attributes: vec![
                    Attribute {
                        kind: 0,
                        value: AttributeValue::Ulong(3),
                    },
                    Attribute {
                        kind: 0x102,
                        value: AttributeValue::Bytes(vec![1, 2]),
                    },
                    Attribute {
                        kind: 0x108,
                        value: AttributeValue::Bool(true),
                    },
                    Attribute {
                        kind: 0x11,
                        value: AttributeValue::Sensitive,
                    },
                ],
            }],
        }],
    }
}

#[test]
fn hello_round_trip() {
    round_trip(Request::Hello(Hello {
        version: PROTOCOL_VERSION,
        key_id: "kr_0123".into(),
        key_secret: KeySecret::new(b"secret".to_vec()),
        caller: CallerContext {
            host_name: "build-7".into(),
            os_user: "ci".into(),
            executable: "/usr/bin/osslsigncode".into(),
            executable_sha256: "00".repeat(32),
            command_line: vec!["osslsigncode".into(), "-pass".into(), "<redacted>".into()],
            ci: vec![("GITHUB_RUN_ID".into(), "42".into())],
        },
    }));
}

#[test]
fn sign_request_round_trip() {
    let parameters = [
        MechanismParameter::None,
        MechanismParameter::RsaPss {
            hash: 0x250,
            mgf: 2,
            salt_len: 32,
        },
        MechanismParameter::Eddsa {
            prehash: false,
            context: b"ctx".to_vec(),
        },
    ];
    for parameter in parameters {
        for input in [SignInput::Data(vec![7; 51]), SignInput::Digest(vec![9; 32])] {
            round_trip(Request::Sign(SignRequest {
                key_name: "rsa".into(),
                mechanism: 0x40,
                parameter: parameter.clone(),
                input,
            }));
        }
    }
}

#[test]
fn responses_round_trip() {
    round_trip(Response::Welcome(sample_catalogue()));
    round_trip(Response::Signature(vec![1; 256]));
    round_trip(Response::Error(ErrorReply {
        code: ErrorCode::BACKEND,
        backend_rv: 0x30,
        message: "device error".into(),
    }));
}

#[test]
fn decode_rejects_trailing_bytes() {
    let mut bytes = encode(&Response::Signature(vec![1, 2, 3])).unwrap();
    bytes.push(0);
    assert!(matches!(
        decode::<Response>(&bytes),
        Err(ProtocolError::TrailingBytes { extra: 1 })
    ));
}

#[test]
fn decode_rejects_oversized_input() {
    let bytes = vec![0; MAX_MESSAGE_LEN + 1];
    assert!(matches!(
        decode::<Response>(&bytes),
        Err(ProtocolError::TooLarge { .. })
    ));
}

#[test]
fn decode_bounds_claimed_length() {
    // Variant 1 (Signature), then a varint length of u64::MAX: the limit rejects it before
    // any allocation of that size is attempted.
    let bytes = [1u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        decode::<Response>(&bytes),
        Err(ProtocolError::Malformed(_))
    ));
}

#[test]
fn encode_rejects_oversized_message() {
    let message = Response::Signature(vec![0; MAX_MESSAGE_LEN]);
    assert!(encode(&message).is_err());
}

#[test]
fn key_secret_debug_is_redacted() {
    let secret = KeySecret::new(b"hunter2".to_vec());
    assert_eq!(format!("{secret:?}"), "KeySecret(..)");
}

#[test]
fn slot_ids_are_stable() {
    // These values are part of the interface: SunPKCS11 configurations name slots by id.
    assert_eq!(slot_id_for_token(""), 0x011c_9dc5);
    assert_eq!(slot_id_for_token("release"), slot_id_for_token("release"));
    assert_ne!(slot_id_for_token("release"), slot_id_for_token("test"));
    assert!(slot_id_for_token("release") <= 0x7fff_ffff);
}

#[test]
fn object_handles_differ_by_class() {
    let private = object_handle_for("t", "k", 3);
    let certificate = object_handle_for("t", "k", 1);
    assert_ne!(private, certificate);
    assert_ne!(private, 0);
}

#[test]
fn fuzz_harness_accepts_garbage() {
    for bytes in [&[][..], &[0], &[1, 2, 3], &[0, 0, 0, 0, 0]] {
        fuzz_decode(bytes);
    }
    fuzz_decode(&encode(&Response::Welcome(sample_catalogue())).unwrap());
}
