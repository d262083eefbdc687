//! Parser for the text that `pkcs11-tool --list-objects` prints (OpenSC 0.23).
//!
//! Each object starts with an unindented line such as `Private Key Object; RSA` and continues
//! with indented `name: value` lines such as `  ID:         01`.

/// The class of a listed object, taken from its first line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectClass {
    /// CKO_PRIVATE_KEY (`Private Key Object`).
    PrivateKey,
    /// CKO_PUBLIC_KEY (`Public Key Object`).
    PublicKey,
    /// CKO_CERTIFICATE (`Certificate Object`).
    Certificate,
    /// Any other object class, such as secret keys or data objects.
    Other,
}

/// One object in the output of `pkcs11-tool --list-objects`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    /// Object class.
    pub class: ObjectClass,
    /// The object's first line, such as `Public Key Object; RSA 2048 bits`.
    pub header: String,
    /// The indented `name: value` lines, in output order, with both parts trimmed.
    pub attributes: Vec<(String, String)>,
}

impl ListedObject {
    /// Returns the value of the first attribute line called `name`, such as `EC_POINT`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        let mut matching = self.attributes.iter().filter(|(key, _)| key == name);
        matching.next().map(|(_, value)| value.as_str())
    }

    /// Returns the CKA_LABEL, if the listing shows one.
    pub fn label(&self) -> Option<&str> {
        self.attribute("label")
    }

    /// Returns the CKA_ID decoded from hex, if the listing shows a valid one.
    pub fn id(&self) -> Option<Vec<u8>> {
        self.attribute("ID").and_then(|id| hex::decode(id).ok())
    }

    /// Returns the first whitespace-separated word of attribute `name` decoded from hex.
    ///
    /// `EC_PARAMS` of an Ed25519 key, for example, is printed as hex followed by a comment.
    pub(crate) fn hex_attribute(&self, name: &str) -> Option<Vec<u8>> {
        let value = self.attribute(name)?;
        let first_word = value.split_whitespace().next()?;
        hex::decode(first_word).ok()
    }
}

/// Parses the stdout of `pkcs11-tool --list-objects` into objects.
///
/// Unindented lines that do not mention "object", such as progress messages, are skipped.
pub fn parse_object_listing(text: &str) -> Vec<ListedObject> {
    let mut objects: Vec<ListedObject> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }

        let indented = line.starts_with(char::is_whitespace);
        if !indented {
            if line.to_ascii_lowercase().contains("object") {
                objects.push(start_object(line));
            }
            continue;
        }

        if let (Some(object), Some((name, value))) = (objects.last_mut(), line.split_once(':')) {
            object
                .attributes
                .push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    objects
}

fn start_object(header: &str) -> ListedObject {
    let class = if header.starts_with("Private Key Object") {
        ObjectClass::PrivateKey
    } else if header.starts_with("Public Key Object") {
        ObjectClass::PublicKey
    } else if header.starts_with("Certificate Object") {
        ObjectClass::Certificate
    } else {
        ObjectClass::Other
    };
    ListedObject {
        class,
        header: header.trim().to_owned(),
        attributes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output of OpenSC 0.23 `pkcs11-tool --list-objects` against SoftHSM 2.6.1.
    const SAMPLE: &str = "\
Public Key Object; RSA 2048 bits
  label:      rsa-signing
  ID:         01
  Usage:      encrypt, verify, wrap
  Access:     local
Certificate Object; type = X.509 cert
  label:      ec-signing
  subject:    DN: CN=ec-signing
  serial:     1012519EE3D9FFF584126A453643062BE7BDB237
  ID:         02
Public Key Object; EC_EDWARDS  EC_POINT 255 bits
  EC_POINT:   0420faa8c4c0cd48b60a654ea972f5124d3c3720efa891d87eaaf6e62a2c5c117a6a
  EC_PARAMS:  130c656477617264733235353139 (OID 2.21.100.119.97.114.100.115.50.53.53.49.57)
  label:      ed
  ID:         05
Private Key Object; RSA 
  label:      rsa-signing
  ID:         01
  Usage:      decrypt, sign, unwrap
  Access:     sensitive, always sensitive, never extractable, local
";

    /// Class, CKA_LABEL and CKA_ID of one listed object.
    type ObjectSummary<'a> = (ObjectClass, Option<&'a str>, Option<Vec<u8>>);

    #[test]
    fn classes_and_ids() {
        let objects = parse_object_listing(SAMPLE);
        let summary: Vec<ObjectSummary> = objects
            .iter()
            .map(|o| (o.class, o.label(), o.id()))
            .collect();

        assert_eq!(
            summary,
            vec![
                (ObjectClass::PublicKey, Some("rsa-signing"), Some(vec![1])),
                (ObjectClass::Certificate, Some("ec-signing"), Some(vec![2])),
                (ObjectClass::PublicKey, Some("ed"), Some(vec![5])),
                (ObjectClass::PrivateKey, Some("rsa-signing"), Some(vec![1])),
            ]
        );
    }

    #[test]
    fn value_keeps_inner_colons() {
        let objects = parse_object_listing(SAMPLE);
        assert_eq!(objects[1].attribute("subject"), Some("DN: CN=ec-signing"));
    }

    #[test]
    fn hex_attribute_ignores_comment() {
        let objects = parse_object_listing(SAMPLE);
        let params = objects[2].hex_attribute("EC_PARAMS").unwrap();
        assert_eq!(params, b"\x13\x0cedwards25519");
    }

    #[test]
    fn progress_lines_skipped() {
        let objects = parse_object_listing("Using slot 0 with a present token (0x1)\n");
        assert!(objects.is_empty());
    }
}
