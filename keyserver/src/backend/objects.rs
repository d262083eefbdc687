//! Key lookup and catalogue attributes, read once at startup.
//!
//! Only public attributes are read, so a private key's CKA_VALUE, private exponent and primes
//! are never requested. An attribute the backend reports as sensitive is listed as
//! [`AttributeValue::Sensitive`] without its value.

use cryptoki::error::Error;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;
use keyrelay_protocol::{Attribute as WireAttribute, AttributeValue};

use crate::policy::KeyLocator;
use crate::signing::KeyKind;

/// Attributes of a private key sent to clients, before the overrides below.
const PRIVATE_KEY_ATTRIBUTES: &[AttributeType] = &[
    AttributeType::Class,
    AttributeType::KeyType,
    AttributeType::Id,
    AttributeType::Label,
    AttributeType::Token,
    AttributeType::Private,
    AttributeType::Modifiable,
    AttributeType::Sensitive,
    AttributeType::Extractable,
    AttributeType::AlwaysSensitive,
    AttributeType::NeverExtractable,
    AttributeType::Local,
    AttributeType::Sign,
    AttributeType::SignRecover,
    AttributeType::AlwaysAuthenticate,
    AttributeType::Subject,
    AttributeType::Modulus,
    AttributeType::PublicExponent,
    AttributeType::EcParams,
    AttributeType::KeyGenMechanism,
];

/// keyrelay only signs, so clients see these private key attributes as false whatever the
/// backend object's values.
const PRIVATE_KEY_FALSE: &[AttributeType] = &[
    AttributeType::Decrypt,
    AttributeType::Unwrap,
    AttributeType::Derive,
];

const PUBLIC_KEY_ATTRIBUTES: &[AttributeType] = &[
    AttributeType::Class,
    AttributeType::KeyType,
    AttributeType::Id,
    AttributeType::Label,
    AttributeType::Token,
    AttributeType::Private,
    AttributeType::Modifiable,
    AttributeType::Verify,
    AttributeType::Modulus,
    AttributeType::ModulusBits,
    AttributeType::PublicExponent,
    AttributeType::EcParams,
    AttributeType::EcPoint,
    AttributeType::Subject,
    AttributeType::Local,
];

const PUBLIC_KEY_FALSE: &[AttributeType] = &[AttributeType::Encrypt, AttributeType::Wrap];

// NOTE: CKA_CERTIFICATE_CATEGORY is left out because cryptoki 0.12 has no AttributeType for
// it and rejects it when converting the backend's reply.
const CERTIFICATE_ATTRIBUTES: &[AttributeType] = &[
    AttributeType::Class,
    AttributeType::CertificateType,
    AttributeType::Id,
    AttributeType::Label,
    AttributeType::Token,
    AttributeType::Private,
    AttributeType::Modifiable,
    AttributeType::Trusted,
    AttributeType::Value,
    AttributeType::Subject,
    AttributeType::Issuer,
    AttributeType::SerialNumber,
];

/// Returns every private key matching `locator`.
pub(super) fn find_private_keys(
    session: &Session,
    locator: &KeyLocator,
) -> Result<Vec<ObjectHandle>, Error> {
    let selector = match locator {
        KeyLocator::Label(label) => Attribute::Label(label.as_bytes().to_vec()),
        KeyLocator::Id(id) => Attribute::Id(id.clone()),
    };
    session.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), selector])
}

/// Returns the first object of `class` whose CKA_ID is `id`, and how many matched.
pub(super) fn find_companion(
    session: &Session,
    class: ObjectClass,
    id: &[u8],
) -> Result<(Option<ObjectHandle>, usize), Error> {
    let found = session.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])?;
    Ok((found.first().copied(), found.len()))
}

/// Facts about a private key that signing depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KeyFacts {
    /// An RSA or EC key.
    Supported {
        /// Key type.
        kind: KeyKind,
        /// CKA_ID, empty if the key has none.
        id: Vec<u8>,
    },
    /// A key type the server does not sign with yet.
    Unsupported(String),
}

/// Reads the key type, CKA_ID and, for RSA, the modulus length of a private key.
pub(super) fn key_facts(session: &Session, key: ObjectHandle) -> Result<KeyFacts, Error> {
    let wanted = [
        AttributeType::KeyType,
        AttributeType::Id,
        AttributeType::Modulus,
    ];
    let mut key_type = None;
    let mut id = Vec::new();
    let mut modulus_len = 0;
    for attribute in session.get_attributes(key, &wanted)? {
        match attribute {
            Attribute::KeyType(value) => key_type = Some(value),
            Attribute::Id(value) => id = value,
            Attribute::Modulus(value) => modulus_len = unsigned_len(&value),
            _ => {}
        }
    }
    let kind = match key_type {
        Some(KeyType::RSA) => KeyKind::Rsa { modulus_len },
        Some(KeyType::EC) => KeyKind::Ec,
        Some(KeyType::EC_EDWARDS) => KeyKind::Edwards,
        Some(other) => return Ok(KeyFacts::Unsupported(other.to_string())),
        None => return Ok(KeyFacts::Unsupported("no CKA_KEY_TYPE".into())),
    };
    Ok(KeyFacts::Supported { kind, id })
}

/// Length of a big-endian unsigned integer without its leading zero bytes.
fn unsigned_len(bytes: &[u8]) -> usize {
    bytes.len() - bytes.iter().take_while(|&&b| b == 0).count()
}

/// The kind of object whose attributes are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ObjectKind {
    /// CKO_PRIVATE_KEY.
    PrivateKey,
    /// CKO_PUBLIC_KEY.
    PublicKey,
    /// CKO_CERTIFICATE.
    Certificate,
}

impl ObjectKind {
    /// Returns the CKO_* value.
    pub(super) fn class(self) -> ObjectClass {
        match self {
            Self::PrivateKey => ObjectClass::PRIVATE_KEY,
            Self::PublicKey => ObjectClass::PUBLIC_KEY,
            Self::Certificate => ObjectClass::CERTIFICATE,
        }
    }

    fn attribute_lists(self) -> (&'static [AttributeType], &'static [AttributeType]) {
        match self {
            Self::PrivateKey => (PRIVATE_KEY_ATTRIBUTES, PRIVATE_KEY_FALSE),
            Self::PublicKey => (PUBLIC_KEY_ATTRIBUTES, PUBLIC_KEY_FALSE),
            Self::Certificate => (CERTIFICATE_ATTRIBUTES, &[]),
        }
    }
}

/// Reads the catalogue attributes of one object, in list order, then applies the overrides.
///
/// cryptoki's `get_attributes` drops sensitive attributes silently, so each attribute is first
/// probed with `get_attribute_info`, which distinguishes sensitive from absent.
pub(super) fn catalogue_attributes(
    session: &Session,
    object: ObjectHandle,
    kind: ObjectKind,
) -> Result<Vec<WireAttribute>, Error> {
    let (wanted, forced_false) = kind.attribute_lists();
    let infos = session.get_attribute_info(object, wanted)?;
    let mut readable = Vec::new();
    let mut sensitive = Vec::new();
    for (&attribute_type, info) in wanted.iter().zip(infos) {
        match info {
            AttributeInfo::Available(_) => readable.push(attribute_type),
            AttributeInfo::Sensitive => sensitive.push(attribute_type),
            _ => {}
        }
    }
    let mut attributes = read_values(session, object, &readable)?;
    attributes.extend(
        sensitive
            .into_iter()
            .map(|t| wire(t, AttributeValue::Sensitive)),
    );
    attributes.sort_by_key(|a| position(wanted, a.kind));
    for &attribute_type in forced_false {
        set(
            &mut attributes,
            wire(attribute_type, AttributeValue::Bool(false)),
        );
    }
    Ok(attributes)
}

fn read_values(
    session: &Session,
    object: ObjectHandle,
    types: &[AttributeType],
) -> Result<Vec<WireAttribute>, Error> {
    if types.is_empty() {
        return Ok(Vec::new());
    }
    let values = session.get_attributes(object, types)?;
    Ok(values
        .iter()
        .filter_map(|attribute| Some(wire(attribute.attribute_type(), wire_value(attribute)?)))
        .collect())
}

fn position(list: &[AttributeType], kind: u64) -> usize {
    list.iter()
        .position(|&t| u64::from(t) == kind)
        .unwrap_or(usize::MAX)
}

fn set(attributes: &mut Vec<WireAttribute>, attribute: WireAttribute) {
    match attributes.iter_mut().find(|a| a.kind == attribute.kind) {
        Some(existing) => *existing = attribute,
        None => attributes.push(attribute),
    }
}

fn wire(attribute_type: AttributeType, value: AttributeValue) -> WireAttribute {
    WireAttribute {
        kind: attribute_type.into(),
        value,
    }
}

/// Converts a cryptoki attribute value to its wire form. Returns `None` for a type that no
/// catalogue list contains.
fn wire_value(attribute: &Attribute) -> Option<AttributeValue> {
    use AttributeValue::{Bool, Bytes, Ulong};
    let value = match attribute {
        Attribute::Token(b)
        | Attribute::Private(b)
        | Attribute::Modifiable(b)
        | Attribute::Sensitive(b)
        | Attribute::Extractable(b)
        | Attribute::AlwaysSensitive(b)
        | Attribute::NeverExtractable(b)
        | Attribute::Local(b)
        | Attribute::Sign(b)
        | Attribute::SignRecover(b)
        | Attribute::AlwaysAuthenticate(b)
        | Attribute::Verify(b)
        | Attribute::Trusted(b) => Bool(*b),
        Attribute::Class(class) => Ulong(**class),
        Attribute::KeyType(key_type) => Ulong(**key_type),
        Attribute::CertificateType(certificate_type) => Ulong(**certificate_type),
        Attribute::KeyGenMechanism(mechanism) => Ulong(**mechanism),
        Attribute::ModulusBits(bits) => Ulong(**bits),
        Attribute::Id(bytes)
        | Attribute::Label(bytes)
        | Attribute::Subject(bytes)
        | Attribute::Modulus(bytes)
        | Attribute::PublicExponent(bytes)
        | Attribute::EcParams(bytes)
        | Attribute::EcPoint(bytes)
        | Attribute::Value(bytes)
        | Attribute::Issuer(bytes)
        | Attribute::SerialNumber(bytes) => Bytes(bytes.clone()),
        _ => return None,
    };
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_len_skips_leading_zeros() {
        assert_eq!(unsigned_len(&[0, 0, 0x80, 1]), 2);
        assert_eq!(unsigned_len(&[0xff; 256]), 256);
        assert_eq!(unsigned_len(&[]), 0);
    }

    #[test]
    fn private_key_lists_never_read_secret_values() {
        let secret = [
            AttributeType::Value,
            AttributeType::PrivateExponent,
            AttributeType::Prime1,
            AttributeType::Prime2,
            AttributeType::Exponent1,
            AttributeType::Exponent2,
            AttributeType::Coefficient,
        ];
        for attribute_type in secret {
            assert!(
                !PRIVATE_KEY_ATTRIBUTES.contains(&attribute_type),
                "{attribute_type}"
            );
        }
    }

    #[test]
    fn overrides_replace_or_append() {
        let mut attributes = vec![wire(AttributeType::Decrypt, AttributeValue::Bool(true))];

        set(
            &mut attributes,
            wire(AttributeType::Decrypt, AttributeValue::Bool(false)),
        );
        set(
            &mut attributes,
            wire(AttributeType::Derive, AttributeValue::Bool(false)),
        );

        assert_eq!(attributes.len(), 2);
        assert_eq!(attributes[0].value, AttributeValue::Bool(false));
        assert_eq!(attributes[1].kind, cryptoki_sys::CKA_DERIVE);
    }

    #[test]
    fn wire_value_types() {
        let class = wire_value(&Attribute::Class(ObjectClass::PRIVATE_KEY));
        let sign = wire_value(&Attribute::Sign(true));
        let label = wire_value(&Attribute::Label(b"rsa".to_vec()));

        assert_eq!(
            class,
            Some(AttributeValue::Ulong(cryptoki_sys::CKO_PRIVATE_KEY))
        );
        assert_eq!(sign, Some(AttributeValue::Bool(true)));
        assert_eq!(label, Some(AttributeValue::Bytes(b"rsa".to_vec())));
        assert_eq!(wire_value(&Attribute::PrivateExponent(vec![1])), None);
    }
}
