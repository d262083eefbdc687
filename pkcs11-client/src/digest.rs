//! The hash functions the module computes locally: for hash-and-sign mechanisms, so only the
//! digest travels, and for C_Digest.

use cryptoki_sys::*;
use ring::digest as ring_digest;
use sha2::Digest as _;

/// A hash function of PKCS#11's SHA-1 and SHA-2 mechanisms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    const ALL: [Self; 5] = [
        Self::Sha1,
        Self::Sha224,
        Self::Sha256,
        Self::Sha384,
        Self::Sha512,
    ];

    /// Returns the digest mechanism, such as CKM_SHA256.
    pub(crate) fn ckm(self) -> CK_MECHANISM_TYPE {
        match self {
            Self::Sha1 => CKM_SHA_1,
            Self::Sha224 => CKM_SHA224,
            Self::Sha256 => CKM_SHA256,
            Self::Sha384 => CKM_SHA384,
            Self::Sha512 => CKM_SHA512,
        }
    }

    /// Returns the hash whose digest mechanism is `ckm`.
    pub(crate) fn from_ckm(ckm: CK_MECHANISM_TYPE) -> Option<Self> {
        Self::ALL.into_iter().find(|hash| hash.ckm() == ckm)
    }

    /// The MGF1 mask generation function that uses this hash, for RSA-PSS.
    pub(crate) fn mgf1(self) -> CK_RSA_PKCS_MGF_TYPE {
        match self {
            Self::Sha1 => CKG_MGF1_SHA1,
            Self::Sha224 => CKG_MGF1_SHA224,
            Self::Sha256 => CKG_MGF1_SHA256,
            Self::Sha384 => CKG_MGF1_SHA384,
            Self::Sha512 => CKG_MGF1_SHA512,
        }
    }

    /// Digest length in bytes.
    pub(crate) fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha224 => 28,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Starts a hash computation.
    pub(crate) fn start(self) -> Hasher {
        let algorithm = match self {
            Self::Sha1 => &ring_digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha224 => return Hasher::Sha224(sha2::Sha224::new()),
            Self::Sha256 => &ring_digest::SHA256,
            Self::Sha384 => &ring_digest::SHA384,
            Self::Sha512 => &ring_digest::SHA512,
        };
        Hasher::Ring(ring_digest::Context::new(algorithm))
    }
}

/// A hash computation in progress.
#[derive(Clone)]
pub(crate) enum Hasher {
    Ring(ring_digest::Context),
    Sha224(sha2::Sha224),
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher(..)")
    }
}

impl Hasher {
    /// Adds input.
    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Self::Ring(context) => context.update(data),
            Self::Sha224(hasher) => hasher.update(data),
        }
    }

    /// Returns the digest of the input so far, leaving the computation unchanged.
    pub(crate) fn digest(&self) -> Vec<u8> {
        match self.clone() {
            Self::Ring(context) => context.finish().as_ref().to_vec(),
            Self::Sha224(hasher) => hasher.finalize().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_known_answers() {
        // Digests of "abc" from FIPS 180-4's examples, first 4 bytes.
        let expected: [(Hash, [u8; 4]); 5] = [
            (Hash::Sha1, [0xa9, 0x99, 0x3e, 0x36]),
            (Hash::Sha224, [0x23, 0x09, 0x7d, 0x22]),
            (Hash::Sha256, [0xba, 0x78, 0x16, 0xbf]),
            (Hash::Sha384, [0xcb, 0x00, 0x75, 0x3f]),
            (Hash::Sha512, [0xdd, 0xaf, 0x35, 0xa1]),
        ];
        for (hash, prefix) in expected {
            let mut hasher = hash.start();
            hasher.update(b"ab");
            hasher.update(b"c");
            let digest = hasher.digest();
            assert_eq!(digest.len(), hash.output_len(), "{hash:?}");
            assert_eq!(digest[..4], prefix, "{hash:?}");
        }
    }

    #[test]
    fn mechanism_round_trips() {
        for hash in Hash::ALL {
            assert_eq!(Hash::from_ckm(hash.ckm()), Some(hash));
        }
        assert_eq!(Hash::from_ckm(CKM_MD5), None);
    }
}
