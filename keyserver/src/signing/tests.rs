//! Unit tests of the sign rules.

use super::*;

const RSA_2048: KeyKind = KeyKind::Rsa { modulus_len: 256 };

fn digest(len: usize) -> Vec<u8> {
    vec![0xab; len]
}

fn code(result: Result<BackendOperation, Rejection>) -> ErrorCode {
    result.unwrap_err().code
}

fn pss(hash: u64, mgf: u64) -> MechanismParameter {
    MechanismParameter::RsaPss {
        hash,
        mgf,
        salt_len: 32,
    }
}

#[test]
fn digest_info_frames_each_digest() {
    for hash in DigestAlgorithm::ALL {
        let info = digest_info(hash, &digest(hash.output_len()));
        // A DER SEQUENCE whose length covers the whole DigestInfo, ending in an OCTET STRING
        // of the digest's length.
        assert_eq!(info[0], 0x30, "{hash:?}");
        assert_eq!(usize::from(info[1]), info.len() - 2, "{hash:?}");
        let octet_string_len = info[info.len() - hash.output_len() - 1];
        assert_eq!(usize::from(octet_string_len), hash.output_len(), "{hash:?}");
    }
}

#[test]
fn sha256_digest_info_holds_its_oid() {
    // 2.16.840.1.101.3.4.2.1, the OID of SHA-256, DER-encoded.
    let oid_sha256 = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    let info = digest_info(DigestAlgorithm::Sha256, &digest(32));
    assert_eq!(&info[6..15], &oid_sha256);
    assert_eq!(info.len(), 51);
}

#[test]
fn rsa_pkcs_passes_data() {
    let input = SignInput::Data(vec![7; 245]);
    let op = plan(
        RSA_2048,
        CKM_RSA_PKCS,
        &MechanismParameter::None,
        &input,
        4096,
    )
    .unwrap();
    assert_eq!(op.mechanism, BaseMechanism::RsaPkcs);
    assert_eq!(op.payload, vec![7; 245]);
}

#[test]
fn rsa_pkcs_data_too_long() {
    let input = SignInput::Data(vec![7; 246]);
    let result = plan(
        RSA_2048,
        CKM_RSA_PKCS,
        &MechanismParameter::None,
        &input,
        4096,
    );
    assert_eq!(code(result), ErrorCode::INPUT_INVALID);
}

#[test]
fn sha384_rsa_wraps_digest() {
    let input = SignInput::Digest(digest(48));
    let op = plan(
        RSA_2048,
        CKM_SHA384_RSA_PKCS,
        &MechanismParameter::None,
        &input,
        4096,
    )
    .unwrap();
    assert_eq!(op.mechanism, BaseMechanism::RsaPkcs);
    assert_eq!(
        op.payload,
        digest_info(DigestAlgorithm::Sha384, &digest(48))
    );
}

#[test]
fn digest_length_must_match_hash() {
    let input = SignInput::Digest(digest(32));
    let result = plan(
        RSA_2048,
        CKM_SHA512_RSA_PKCS,
        &MechanismParameter::None,
        &input,
        4096,
    );
    assert_eq!(code(result), ErrorCode::INPUT_INVALID);
}

#[test]
fn sha256_pss_passes_digest_and_parameter() {
    let input = SignInput::Digest(digest(32));
    let parameter = pss(CKM_SHA256, CKG_MGF1_SHA256);
    let op = plan(RSA_2048, CKM_SHA256_RSA_PKCS_PSS, &parameter, &input, 4096).unwrap();
    assert_eq!(op.mechanism, BaseMechanism::RsaPkcsPss);
    assert_eq!(op.parameter, parameter);
    assert_eq!(op.payload, digest(32));
}

#[test]
fn pss_hash_must_match_mechanism() {
    let input = SignInput::Digest(digest(32));
    let parameter = pss(CKM_SHA384, CKG_MGF1_SHA384);
    let result = plan(RSA_2048, CKM_SHA256_RSA_PKCS_PSS, &parameter, &input, 4096);
    assert_eq!(code(result), ErrorCode::MECHANISM_PARAM_INVALID);
}

#[test]
fn pss_requires_parameter() {
    let input = SignInput::Data(digest(32));
    let result = plan(
        RSA_2048,
        CKM_RSA_PKCS_PSS,
        &MechanismParameter::None,
        &input,
        4096,
    );
    assert_eq!(code(result), ErrorCode::MECHANISM_PARAM_INVALID);
}

#[test]
fn raw_pss_input_is_hash_of_parameter() {
    let parameter = pss(CKM_SHA256, CKG_MGF1_SHA256);
    let good = SignInput::Data(digest(32));
    assert!(plan(RSA_2048, CKM_RSA_PKCS_PSS, &parameter, &good, 4096).is_ok());
    let bad = SignInput::Data(digest(31));
    let result = plan(RSA_2048, CKM_RSA_PKCS_PSS, &parameter, &bad, 4096);
    assert_eq!(code(result), ErrorCode::INPUT_INVALID);
}

#[test]
fn pss_rejects_unknown_mgf() {
    let input = SignInput::Digest(digest(32));
    let parameter = pss(CKM_SHA256, 0x99);
    let result = plan(RSA_2048, CKM_SHA256_RSA_PKCS_PSS, &parameter, &input, 4096);
    assert_eq!(code(result), ErrorCode::MECHANISM_PARAM_INVALID);
}

#[test]
fn ecdsa_sha512_passes_digest() {
    let input = SignInput::Digest(digest(64));
    let op = plan(
        KeyKind::Ec,
        CKM_ECDSA_SHA512,
        &MechanismParameter::None,
        &input,
        4096,
    )
    .unwrap();
    assert_eq!(op.mechanism, BaseMechanism::Ecdsa);
    assert_eq!(op.payload, digest(64));
}

#[test]
fn ecdsa_data_limited_by_policy() {
    let input = SignInput::Data(vec![1; 65]);
    let none = MechanismParameter::None;
    assert!(plan(KeyKind::Ec, CKM_ECDSA, &none, &input, 65).is_ok());
    assert_eq!(
        code(plan(KeyKind::Ec, CKM_ECDSA, &none, &input, 64)),
        ErrorCode::INPUT_INVALID
    );
}

#[test]
fn eddsa_passes_message_and_context() {
    let input = SignInput::Data(b"message".to_vec());
    let parameter = MechanismParameter::Eddsa {
        prehash: false,
        context: b"ctx".to_vec(),
    };
    let op = plan(KeyKind::Edwards, CKM_EDDSA, &parameter, &input, 4096).unwrap();
    assert_eq!(op.mechanism, BaseMechanism::Eddsa);
    assert_eq!(op.parameter, parameter);
}

#[test]
fn mechanism_must_suit_key_type() {
    let input = SignInput::Digest(digest(32));
    let none = MechanismParameter::None;
    let result = plan(KeyKind::Ec, CKM_SHA256_RSA_PKCS, &none, &input, 4096);
    assert_eq!(code(result), ErrorCode::MECHANISM_INVALID);
    let result = plan(KeyKind::Edwards, CKM_ECDSA_SHA256, &none, &input, 4096);
    assert_eq!(code(result), ErrorCode::MECHANISM_INVALID);
}

#[test]
fn parameter_rejected_where_none_is_taken() {
    let input = SignInput::Digest(digest(32));
    let parameter = pss(CKM_SHA256, CKG_MGF1_SHA256);
    let result = plan(KeyKind::Ec, CKM_ECDSA_SHA256, &parameter, &input, 4096);
    assert_eq!(code(result), ErrorCode::MECHANISM_PARAM_INVALID);
}

#[test]
fn input_kind_must_match() {
    let none = MechanismParameter::None;
    let with_digest = plan(
        RSA_2048,
        CKM_RSA_PKCS,
        &none,
        &SignInput::Digest(digest(32)),
        4096,
    );
    assert_eq!(code(with_digest), ErrorCode::INPUT_INVALID);
    let with_data = plan(
        RSA_2048,
        CKM_SHA256_RSA_PKCS,
        &none,
        &SignInput::Data(digest(32)),
        4096,
    );
    assert_eq!(code(with_data), ErrorCode::INPUT_INVALID);
}
