//! Unit tests of sign operations.

use keyrelay_protocol::Attribute;

use super::*;

fn key(key_type: CK_KEY_TYPE, extra: Attribute) -> ObjectEntry {
    let attribute = |kind: CK_ATTRIBUTE_TYPE, value| Attribute {
        kind: kind.into(),
        value,
    };
    ObjectEntry {
        handle: 1,
        key_name: "k".into(),
        attributes: vec![
            attribute(CKA_CLASS, AttributeValue::Ulong(CKO_PRIVATE_KEY.into())),
            attribute(CKA_KEY_TYPE, AttributeValue::Ulong(key_type.into())),
            attribute(CKA_SIGN, AttributeValue::Bool(true)),
            extra,
        ],
    }
}

fn rsa_key() -> ObjectEntry {
    let modulus = AttributeValue::Bytes(vec![0xff; 256]);
    key(
        CKK_RSA,
        Attribute {
            kind: CKA_MODULUS.into(),
            value: modulus,
        },
    )
}

fn ec_key(params: &[u8]) -> ObjectEntry {
    let params = AttributeValue::Bytes(params.to_vec());
    key(
        CKK_EC,
        Attribute {
            kind: CKA_EC_PARAMS.into(),
            value: params,
        },
    )
}

fn none() -> Parameter {
    Parameter::Valid(MechanismParameter::None)
}

fn pss(hash: CK_MECHANISM_TYPE, mgf: CK_RSA_PKCS_MGF_TYPE) -> Parameter {
    let (hash, mgf) = (hash.into(), mgf.into());
    Parameter::Valid(MechanismParameter::RsaPss {
        hash,
        mgf,
        salt_len: 32,
    })
}

fn start(
    mechanism: CK_MECHANISM_TYPE,
    parameter: Parameter,
    key: &ObjectEntry,
) -> Result<SignOperation> {
    SignOperation::new(mechanism, parameter, key, 4096)
}

#[test]
fn rsa_signature_length_is_modulus_length() {
    let operation = start(CKM_RSA_PKCS, none(), &rsa_key()).unwrap();
    assert_eq!(operation.signature_len(), 256);
}

#[test]
fn curve_sets_signature_length() {
    for (params, len) in CURVES.iter().take(3) {
        let operation = start(CKM_ECDSA, none(), &ec_key(params)).unwrap();
        assert_eq!(operation.signature_len(), *len);
    }
}

#[test]
fn ed25519_signature_is_64_bytes() {
    let params = AttributeValue::Bytes(b"\x13\x0cedwards25519".to_vec());
    let key = key(
        CKK_EC_EDWARDS,
        Attribute {
            kind: CKA_EC_PARAMS.into(),
            value: params,
        },
    );
    let operation = start(CKM_EDDSA, none(), &key).unwrap();
    assert_eq!(operation.signature_len(), 64);
}

#[test]
fn mechanism_must_match_key_type() {
    let error = start(CKM_ECDSA, none(), &rsa_key()).unwrap_err();
    assert_eq!(error.rv(), CKR_KEY_TYPE_INCONSISTENT);
}

#[test]
fn unknown_mechanism_is_invalid_before_parameter() {
    let error = start(CKM_MD5_RSA_PKCS, Parameter::Invalid, &rsa_key()).unwrap_err();
    assert_eq!(error.rv(), CKR_MECHANISM_INVALID);
}

#[test]
fn invalid_parameter_is_rejected() {
    let error = start(CKM_RSA_PKCS, Parameter::Invalid, &rsa_key()).unwrap_err();
    assert_eq!(error.rv(), CKR_MECHANISM_PARAM_INVALID);
}

#[test]
fn pss_hash_must_match_mechanism() {
    let error = start(
        CKM_SHA256_RSA_PKCS_PSS,
        pss(CKM_SHA384, CKG_MGF1_SHA384),
        &rsa_key(),
    )
    .unwrap_err();
    assert_eq!(error.rv(), CKR_ARGUMENTS_BAD);
}

#[test]
fn pss_rejects_unknown_mgf() {
    let error = start(CKM_SHA256_RSA_PKCS_PSS, pss(CKM_SHA256, 0x99), &rsa_key()).unwrap_err();
    assert_eq!(error.rv(), CKR_ARGUMENTS_BAD);
    let parameter = pss(CKM_SHA256, CKG_MGF1_SHA1);
    let error = start(CKM_RSA_PKCS_PSS, parameter, &rsa_key()).unwrap_err();
    assert_eq!(error.rv(), CKR_ARGUMENTS_BAD);
}

#[test]
fn raw_pss_input_is_one_digest() {
    let operation = start(
        CKM_RSA_PKCS_PSS,
        pss(CKM_SHA256, CKG_MGF1_SHA256),
        &rsa_key(),
    )
    .unwrap();
    assert!(operation.single_part_request(&[0; 32]).is_ok());
    let error = operation.single_part_request(&[0; 48]).unwrap_err();
    assert_eq!(error.rv(), CKR_DATA_LEN_RANGE);
}

#[test]
fn hashed_pss_sends_digest_and_parameter() {
    let parameter = pss(CKM_SHA384, CKG_MGF1_SHA384);
    let operation = start(CKM_SHA384_RSA_PKCS_PSS, parameter, &rsa_key()).unwrap();
    let request = operation.single_part_request(b"data").unwrap();
    assert!(matches!(request.input, SignInput::Digest(ref d) if d.len() == 48));
    assert!(matches!(
        request.parameter,
        MechanismParameter::RsaPss { salt_len: 32, .. }
    ));
}

#[test]
fn raw_rsa_input_is_bounded_by_modulus() {
    let operation = start(CKM_RSA_PKCS, none(), &rsa_key()).unwrap();
    assert!(operation.single_part_request(&[0; 245]).is_ok());
    let error = operation.single_part_request(&[0; 246]).unwrap_err();
    assert_eq!(error.rv(), CKR_DATA_LEN_RANGE);
}

#[test]
fn multipart_hashes_like_single_part() {
    let mut operation = start(CKM_SHA256_RSA_PKCS, none(), &rsa_key()).unwrap();
    let single = operation.single_part_request(b"hello world").unwrap();
    operation.update(b"hello ").unwrap();
    operation.update(b"world").unwrap();
    let multi = operation.final_request().unwrap();
    assert_eq!(single, multi);
    let expected = ring::digest::digest(&ring::digest::SHA256, b"hello world");
    assert_eq!(multi.input, SignInput::Digest(expected.as_ref().to_vec()));
}

#[test]
fn raw_mechanism_has_no_multipart() {
    let mut operation = start(CKM_ECDSA, none(), &ec_key(CURVES[0].0)).unwrap();
    assert_eq!(
        operation.update(b"x").unwrap_err().rv(),
        CKR_OPERATION_NOT_INITIALIZED
    );
}

#[test]
fn single_part_after_update_is_rejected() {
    let mut operation = start(CKM_ECDSA_SHA256, none(), &ec_key(CURVES[0].0)).unwrap();
    operation.update(b"x").unwrap();
    assert_eq!(
        operation.single_part_request(b"y").unwrap_err().rv(),
        CKR_OPERATION_ACTIVE
    );
}

#[test]
fn always_authenticate_key_needs_context_login() {
    let mut key = rsa_key();
    let always = AttributeValue::Bool(true);
    key.attributes.push(Attribute {
        kind: CKA_ALWAYS_AUTHENTICATE.into(),
        value: always,
    });
    let mut operation = start(CKM_RSA_PKCS, none(), &key).unwrap();
    assert_eq!(
        operation.single_part_request(b"x").unwrap_err().rv(),
        CKR_USER_NOT_LOGGED_IN
    );
    operation.authorized = true;
    assert!(operation.single_part_request(b"x").is_ok());
}
