//! Object attributes in their native C layout: C_GetAttributeValue and template matching.

use cryptoki_sys::*;
use keyrelay_protocol::{AttributeValue, ObjectEntry};

use crate::error::{Error, Result};
use crate::ffi;

/// Attribute types that hold private-key material. The keyserver never sends them, and the
/// module reports them as sensitive rather than absent.
const SECRET_TYPES: [CK_ATTRIBUTE_TYPE; 7] = [
    CKA_VALUE,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_COEFFICIENT,
];

/// Lookup result for one attribute type of one object.
enum Lookup {
    Value(Vec<u8>),
    Sensitive,
    Invalid,
}

fn lookup(object: &ObjectEntry, kind: CK_ATTRIBUTE_TYPE) -> Lookup {
    match object.attribute(kind.into()) {
        Some(AttributeValue::Bool(value)) => Lookup::Value(vec![CK_BBOOL::from(*value)]),
        Some(AttributeValue::Ulong(value)) => match CK_ULONG::try_from(*value) {
            Ok(value) => Lookup::Value(value.to_ne_bytes().to_vec()),
            Err(_) => Lookup::Invalid,
        },
        Some(AttributeValue::Bytes(bytes)) => Lookup::Value(bytes.clone()),
        Some(AttributeValue::Sensitive) => Lookup::Sensitive,
        None if is_private_key(object) && SECRET_TYPES.contains(&kind) => Lookup::Sensitive,
        None => Lookup::Invalid,
    }
}

fn is_private_key(object: &ObjectEntry) -> bool {
    object.attribute(CKA_CLASS.into()) == Some(&AttributeValue::Ulong(CKO_PRIVATE_KEY.into()))
}

/// Checks that `key` is an object of `class` holding a key of `key_type`, as C_SignInit and
/// C_VerifyInit require.
pub(crate) fn check_key_type(
    key: &ObjectEntry,
    class: CK_OBJECT_CLASS,
    key_type: CK_KEY_TYPE,
) -> Result<()> {
    let has = |kind: CK_ATTRIBUTE_TYPE, value: CK_ULONG| {
        key.attribute(kind.into()) == Some(&AttributeValue::Ulong(value.into()))
    };
    if has(CKA_CLASS, class) && has(CKA_KEY_TYPE, key_type) {
        Ok(())
    } else {
        Err(Error::KeyTypeInconsistent)
    }
}

/// Returns a byte-array attribute a key needs, such as CKA_MODULUS.
pub(crate) fn key_bytes(key: &ObjectEntry, kind: CK_ATTRIBUTE_TYPE) -> Result<&[u8]> {
    match key.attribute(kind.into()) {
        Some(AttributeValue::Bytes(bytes)) => Ok(bytes),
        _ => Err(Error::KeyTypeInconsistent),
    }
}

/// Fills a C_GetAttributeValue template (PKCS#11 v2.40 section 5.7).
///
/// Every entry is processed. Sensitive and unknown types, and values that do not fit,
/// get CK_UNAVAILABLE_INFORMATION as their length while the other entries are filled. The
/// call then fails with CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID or
/// CKR_BUFFER_TOO_SMALL. When several apply, the specification lets the module return any of
/// them; it returns them in that order of precedence, as SoftHSM2 does.
pub(crate) fn get_values(object: &ObjectEntry, template: &mut [CK_ATTRIBUTE]) -> Result<()> {
    let mut outcome: Result<()> = Ok(());
    for entry in template.iter_mut() {
        if let Err(error) = fill(object, entry) {
            entry.ulValueLen = CK_UNAVAILABLE_INFORMATION;
            if precedence(&error) > outcome.as_ref().err().map_or(0, precedence) {
                outcome = Err(error);
            }
        }
    }
    outcome
}

fn precedence(error: &Error) -> u8 {
    match error {
        Error::AttributeSensitive(_) => 3,
        Error::AttributeTypeInvalid(_) => 2,
        _ => 1,
    }
}

fn fill(object: &ObjectEntry, entry: &mut CK_ATTRIBUTE) -> Result<()> {
    let value = match lookup(object, entry.type_) {
        Lookup::Value(value) => value,
        Lookup::Sensitive => return Err(Error::AttributeSensitive(entry.type_)),
        Lookup::Invalid => return Err(Error::AttributeTypeInvalid(entry.type_)),
    };
    // SAFETY: by the C_GetAttributeValue contract, a non-NULL pValue is valid for
    // ulValueLen bytes, and `entry` itself is a valid template entry.
    unsafe { ffi::write_sized(&value, entry.pValue.cast(), &mut entry.ulValueLen) }
}

/// Tells whether `object` carries every attribute of a C_FindObjectsInit template with an
/// equal value. Sensitive and unknown attributes never match.
pub(crate) fn matches(object: &ObjectEntry, template: &[CK_ATTRIBUTE]) -> Result<bool> {
    for entry in template {
        let wanted = ffi::attribute_value(entry)?;
        match lookup(object, entry.type_) {
            Lookup::Value(value) if value == wanted => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::ptr;

    use keyrelay_protocol::Attribute;

    use super::*;

    fn private_key() -> ObjectEntry {
        let attribute = |kind: CK_ATTRIBUTE_TYPE, value| Attribute {
            kind: kind.into(),
            value,
        };
        ObjectEntry {
            handle: 1,
            key_name: "k".into(),
            attributes: vec![
                attribute(CKA_CLASS, AttributeValue::Ulong(CKO_PRIVATE_KEY.into())),
                attribute(CKA_ID, AttributeValue::Bytes(vec![1, 2])),
                attribute(CKA_SIGN, AttributeValue::Bool(true)),
            ],
        }
    }

    fn entry(type_: CK_ATTRIBUTE_TYPE, buffer: &mut [u8]) -> CK_ATTRIBUTE {
        CK_ATTRIBUTE {
            type_,
            pValue: buffer.as_mut_ptr().cast(),
            ulValueLen: buffer.len() as CK_ULONG,
        }
    }

    #[test]
    fn mixed_template_fills_valid_entries() {
        let object = private_key();
        let (mut id, mut exponent, mut bogus) = ([0u8; 8], [0u8; 8], [0u8; 8]);
        let mut template = [
            entry(CKA_ID, &mut id),
            entry(CKA_PRIVATE_EXPONENT, &mut exponent),
            entry(CKA_MODULUS, &mut bogus),
        ];
        let error = get_values(&object, &mut template).unwrap_err();
        assert_eq!(
            error.rv(),
            CKR_ATTRIBUTE_SENSITIVE,
            "sensitive takes precedence"
        );
        assert_eq!(template[0].ulValueLen, 2);
        assert_eq!(template[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(template[2].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(&id[..2], &[1, 2]);
    }

    #[test]
    fn secret_component_is_sensitive() {
        let object = private_key();
        let mut buffer = [0u8; 8];
        let mut template = [entry(CKA_PRIME_1, &mut buffer)];
        let error = get_values(&object, &mut template).unwrap_err();
        assert_eq!(error.rv(), CKR_ATTRIBUTE_SENSITIVE);
    }

    #[test]
    fn null_buffer_returns_length() {
        let object = private_key();
        let mut template = [CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        }];
        get_values(&object, &mut template).unwrap();
        assert_eq!(
            template[0].ulValueLen as usize,
            std::mem::size_of::<CK_ULONG>()
        );
    }

    #[test]
    fn short_buffer_is_unavailable() {
        let object = private_key();
        let mut buffer = [0u8; 1];
        let mut template = [entry(CKA_ID, &mut buffer)];
        let error = get_values(&object, &mut template).unwrap_err();
        assert_eq!(error.rv(), CKR_BUFFER_TOO_SMALL);
        assert_eq!(template[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    }

    #[test]
    fn template_matching_compares_native_values() {
        let object = private_key();
        let mut class = CKO_PRIVATE_KEY.to_ne_bytes();
        let mut other = CKO_CERTIFICATE.to_ne_bytes();
        assert!(matches(&object, &[entry(CKA_CLASS, &mut class)]).unwrap());
        assert!(!matches(&object, &[entry(CKA_CLASS, &mut other)]).unwrap());
        assert!(matches(&object, &[]).unwrap());
    }
}
