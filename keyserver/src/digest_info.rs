//! PKCS#1 v1.5 DigestInfo values (RFC 8017, section 9.2): the DER structure that
//! CKM_RSA_PKCS signs, made of a hash algorithm identifier and the digest.

use crate::policy::DigestAlgorithm;

/// DER-encoded OID content bytes of each hash algorithm.
const OIDS: [(DigestAlgorithm, &[u8]); 5] = [
    (DigestAlgorithm::Sha1, &[0x2b, 0x0e, 0x03, 0x02, 0x1a]),
    (
        DigestAlgorithm::Sha224,
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04],
    ),
    (
        DigestAlgorithm::Sha256,
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01],
    ),
    (
        DigestAlgorithm::Sha384,
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02],
    ),
    (
        DigestAlgorithm::Sha512,
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03],
    ),
];

/// Parses a DigestInfo and returns its hash algorithm, or `None` if `bytes` is not a
/// DigestInfo of a known algorithm whose digest has the algorithm's length. The NULL
/// parameters may be present or absent, as RFC 8017 allows both.
pub fn parse(bytes: &[u8]) -> Option<DigestAlgorithm> {
    let (outer, rest) = der_element(bytes, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (algorithm, rest) = der_element(outer, 0x30)?;
    let (digest, rest) = der_element(rest, 0x04)?;
    if !rest.is_empty() {
        return None;
    }
    let (oid, parameters) = der_element(algorithm, 0x06)?;
    if !(parameters.is_empty() || parameters == [0x05, 0x00]) {
        return None;
    }
    let (found, _) = OIDS.iter().find(|(_, known)| *known == oid)?;
    (digest.len() == found.output_len()).then_some(*found)
}

/// Builds the DigestInfo of `digest` for `algorithm`, with NULL parameters.
pub fn encode(algorithm: DigestAlgorithm, digest: &[u8]) -> Vec<u8> {
    let (_, oid) = OIDS
        .iter()
        .find(|(known, _)| *known == algorithm)
        .expect("every algorithm has an OID");
    let mut identifier = vec![0x06, oid.len() as u8];
    identifier.extend_from_slice(oid);
    identifier.extend_from_slice(&[0x05, 0x00]);
    let mut body = vec![0x30, identifier.len() as u8];
    body.extend_from_slice(&identifier);
    body.extend_from_slice(&[0x04, digest.len() as u8]);
    body.extend_from_slice(digest);
    let mut info = vec![0x30, body.len() as u8];
    info.extend_from_slice(&body);
    info
}

/// Splits one DER element with tag `tag` and a short-form length off the front of `bytes`,
/// returning its contents and the rest. Every DigestInfo of the listed hashes is shorter than
/// 128 bytes, so the long form is never needed.
fn der_element(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = bytes.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if found != tag || len >= 0x80 || rest.len() < usize::from(len) {
        return None;
    }
    Some(rest.split_at(usize::from(len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_digest_info_parses_back() {
        for algorithm in DigestAlgorithm::ALL {
            let digest = vec![0xab; algorithm.output_len()];

            assert_eq!(parse(&encode(algorithm, &digest)), Some(algorithm));
        }
    }

    #[test]
    fn sha256_encoding_matches_rfc_8017_prefix() {
        let info = encode(DigestAlgorithm::Sha256, &[0; 32]);

        let prefix = [
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ];
        assert_eq!(&info[..19], &prefix);
    }

    #[test]
    fn parse_rejects_wrong_length_and_garbage() {
        let mut info = encode(DigestAlgorithm::Sha256, &[0; 32]);
        info.pop();

        assert_eq!(parse(&info), None);
        assert_eq!(parse(&[0; 32]), None);
        assert_eq!(parse(&[]), None);
    }

    #[test]
    fn parse_accepts_absent_null_parameters() {
        let oid = [0x2b, 0x0e, 0x03, 0x02, 0x1a];
        let mut info = vec![0x30, 0x1f, 0x30, 0x07, 0x06, 0x05];
        info.extend_from_slice(&oid);
        info.extend_from_slice(&[0x04, 0x14]);
        info.extend_from_slice(&[1; 20]);

        assert_eq!(parse(&info), Some(DigestAlgorithm::Sha1));
    }
}
