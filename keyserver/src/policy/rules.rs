//! Access rules that both `[keys.NAME]` tables and `[[clients]]` entries may carry: allowed
//! mechanisms and digest algorithms, a validity window, source networks and quotas.
//!
//! A request must satisfy the rules of its client and those of its key. A rule that is absent
//! does not restrict.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use cryptoki_sys as ck;
use ipnet::IpNet;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use toml::Spanned;
use toml::value::Datetime;

use super::Validator;
use super::schema::RawRules;
use crate::signing::{CLIENT_MECHANISMS, ClientMechanism};

/// A hash function that a signature covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DigestAlgorithm {
    /// SHA-1, 20 bytes. Broken for collision resistance.
    Sha1,
    /// SHA-224, 28 bytes.
    Sha224,
    /// SHA-256, 32 bytes.
    Sha256,
    /// SHA-384, 48 bytes.
    Sha384,
    /// SHA-512, 64 bytes.
    Sha512,
}

impl DigestAlgorithm {
    /// Every algorithm, weakest first.
    pub const ALL: [Self; 5] = [
        Self::Sha1,
        Self::Sha224,
        Self::Sha256,
        Self::Sha384,
        Self::Sha512,
    ];

    /// Returns the name the policy uses, such as `sha256`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha224 => "sha224",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// Returns the digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha224 => 28,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Finds the algorithm whose policy name is `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Returns the digest mechanism, such as CKM_SHA256.
    pub fn ckm(self) -> u64 {
        match self {
            Self::Sha1 => ck::CKM_SHA_1,
            Self::Sha224 => ck::CKM_SHA224,
            Self::Sha256 => ck::CKM_SHA256,
            Self::Sha384 => ck::CKM_SHA384,
            Self::Sha512 => ck::CKM_SHA512,
        }
    }

    /// Finds the algorithm of a CKM_SHA* digest mechanism, as a PSS parameter names it.
    pub fn from_hash_mechanism(mechanism: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.ckm() == mechanism)
    }

    /// Finds the algorithm whose digest is `len` bytes long.
    pub fn from_output_len(len: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.output_len() == len)
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the digest algorithm of a sign request is found for a mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestSource {
    /// A hash-and-sign mechanism fixes it.
    Fixed(DigestAlgorithm),
    /// The `hashAlg` of the CK_RSA_PKCS_PSS_PARAMS.
    PssParameter,
    /// The algorithm identifier inside the DigestInfo that raw CKM_RSA_PKCS signs.
    DigestInfo,
    /// The length of the hash that raw CKM_ECDSA signs.
    DigestLength,
    /// EdDSA hashes inside the algorithm, so digest rules do not apply to it.
    Intrinsic,
}

/// Returns the CKM_* value of a mechanism named in a policy: the name of a mechanism the
/// keyserver can serve, or a `0x` hex value for a vendor mechanism.
pub fn mechanism_from_name(name: &str) -> Option<u64> {
    if let Some(hex) = name.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok();
    }
    CLIENT_MECHANISMS
        .iter()
        .find(|known| known.name == name)
        .map(|known| known.ckm)
}

/// Returns where the digest algorithm of `mechanism` comes from, or `None` for a mechanism
/// the rules do not know.
pub fn digest_source(mechanism: u64) -> Option<DigestSource> {
    ClientMechanism::find(mechanism).map(ClientMechanism::digest_source)
}

/// Signature quotas. Windows are fixed: the current UTC minute and the current UTC day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// Maximum signatures per UTC minute.
    pub per_minute: Option<u32>,
    /// Maximum signatures per UTC day.
    pub per_day: Option<u32>,
}

impl Quota {
    /// Tells whether no limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.per_minute.is_none() && self.per_day.is_none()
    }
}

/// The access rules of one key or one client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// Allowed client mechanisms (CKM_*); `None` allows all.
    pub mechanisms: Option<BTreeSet<u64>>,
    /// Allowed digest algorithms; `None` allows all.
    pub digests: Option<BTreeSet<DigestAlgorithm>>,
    /// Start of the validity window.
    pub not_before: Option<OffsetDateTime>,
    /// End of the validity window.
    pub not_after: Option<OffsetDateTime>,
    /// Source networks a client may connect from; `None` allows any address.
    pub networks: Option<Vec<IpNet>>,
    /// Signature quotas.
    pub quota: Quota,
}

impl Rules {
    /// Tells whether `now` falls inside the validity window.
    pub fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before.is_none_or(|start| now >= start)
            && self.not_after.is_none_or(|end| now <= end)
    }

    /// Tells whether a client at `address` may connect. An IPv4-mapped IPv6 address is
    /// compared as IPv4.
    pub fn allows_address(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.networks
            .as_ref()
            .is_none_or(|networks| networks.iter().any(|net| net.contains(&address)))
    }

    /// Tells whether `mechanism` is allowed.
    pub fn allows_mechanism(&self, mechanism: u64) -> bool {
        self.mechanisms
            .as_ref()
            .is_none_or(|allowed| allowed.contains(&mechanism))
    }

    /// Tells whether `digest` is allowed.
    pub fn allows_digest(&self, digest: DigestAlgorithm) -> bool {
        self.digests
            .as_ref()
            .is_none_or(|allowed| allowed.contains(&digest))
    }

    /// Tells whether the rules restrict digest algorithms at all.
    pub fn restricts_digests(&self) -> bool {
        self.digests.is_some()
    }
}

impl Validator<'_> {
    /// Validates the access rules of the entry whose fields start with `prefix`.
    pub(super) fn rules(&mut self, prefix: &str, raw: RawRules) -> Rules {
        let not_before = raw
            .not_before
            .as_ref()
            .and_then(|t| self.datetime(t, &format!("{prefix}.not_before")));
        let not_after = raw
            .not_after
            .as_ref()
            .and_then(|t| self.datetime(t, &format!("{prefix}.not_after")));
        if let (Some(start), Some(end), Some(spanned)) = (not_before, not_after, &raw.not_after)
            && start > end
        {
            let message = "is earlier than not_before, so the entry is never valid";
            self.problem(spanned, format!("{prefix}.not_after"), message);
        }
        Rules {
            mechanisms: raw.mechanisms.map(|m| self.mechanisms(prefix, &m)),
            digests: raw.digests.map(|d| self.digests(prefix, &d)),
            not_before,
            not_after,
            networks: raw.networks.map(|n| self.networks(prefix, &n)),
            quota: Quota {
                per_minute: self.positive(raw.signatures_per_minute, prefix, "per_minute"),
                per_day: self.positive(raw.signatures_per_day, prefix, "per_day"),
            },
        }
    }

    pub(super) fn datetime(
        &mut self,
        value: &Spanned<Datetime>,
        field: &str,
    ) -> Option<OffsetDateTime> {
        let text = value.get_ref().to_string();
        match OffsetDateTime::parse(&text, &Rfc3339) {
            Ok(time) => Some(time),
            Err(_) => {
                let message = format!(
                    "\"{text}\" is not a full date and time with an offset; \
                     write it like 2027-01-31T00:00:00Z"
                );
                self.problem(value, field.to_owned(), message);
                None
            }
        }
    }

    fn mechanisms(&mut self, prefix: &str, names: &Spanned<Vec<Spanned<String>>>) -> BTreeSet<u64> {
        let field = format!("{prefix}.mechanisms");
        let mut allowed = BTreeSet::new();
        for name in names.get_ref() {
            match mechanism_from_name(name.get_ref()) {
                Some(value) => {
                    allowed.insert(value);
                }
                None => {
                    let known: Vec<&str> = CLIENT_MECHANISMS.iter().map(|m| m.name).collect();
                    let message = format!(
                        "unknown mechanism \"{}\"; use one of {} or a 0x hex value",
                        name.get_ref(),
                        known.join(", ")
                    );
                    self.problem(name, field.clone(), message);
                }
            }
        }
        self.require_entries(names, &field);
        allowed
    }

    fn digests(
        &mut self,
        prefix: &str,
        names: &Spanned<Vec<Spanned<String>>>,
    ) -> BTreeSet<DigestAlgorithm> {
        let field = format!("{prefix}.digests");
        let mut allowed = BTreeSet::new();
        for name in names.get_ref() {
            match DigestAlgorithm::from_name(name.get_ref()) {
                Some(digest) => {
                    allowed.insert(digest);
                }
                None => {
                    let message = format!(
                        "unknown digest algorithm \"{}\"; use sha1, sha224, sha256, sha384 \
                         or sha512",
                        name.get_ref()
                    );
                    self.problem(name, field.clone(), message);
                }
            }
        }
        self.require_entries(names, &field);
        allowed
    }

    fn networks(&mut self, prefix: &str, cidrs: &Spanned<Vec<Spanned<String>>>) -> Vec<IpNet> {
        let field = format!("{prefix}.networks");
        let mut networks = Vec::new();
        for cidr in cidrs.get_ref() {
            match parse_network(cidr.get_ref()) {
                Some(network) => networks.push(network),
                None => {
                    let message = format!(
                        "\"{}\" is not a network in CIDR notation, such as 10.1.0.0/16, \
                         192.0.2.7/32 or 2001:db8::/32",
                        cidr.get_ref()
                    );
                    self.problem(cidr, field.clone(), message);
                }
            }
        }
        self.require_entries(cidrs, &field);
        networks
    }

    /// Reports an empty list, which would allow nothing: an entry that must never be used is
    /// removed instead.
    fn require_entries<T>(&mut self, list: &Spanned<Vec<T>>, field: &str) {
        if list.get_ref().is_empty() {
            let message = "must not be empty; remove the field to allow all";
            self.problem(list, field.to_owned(), message);
        }
    }

    fn positive(&mut self, value: Option<Spanned<u32>>, prefix: &str, name: &str) -> Option<u32> {
        let value = value?;
        if *value.get_ref() == 0 {
            let message = "must be at least 1; to forbid every signature, remove the entry instead";
            self.problem(&value, format!("{prefix}.signatures_{name}"), message);
        }
        Some(*value.get_ref())
    }
}

/// Parses a CIDR network; a bare address is a single-host network.
fn parse_network(text: &str) -> Option<IpNet> {
    if let Ok(network) = text.parse::<IpNet>() {
        return Some(network.trunc());
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_names_round_trip() {
        for mechanism in CLIENT_MECHANISMS {
            let name = mechanism.name;
            assert_eq!(mechanism_from_name(name), Some(mechanism.ckm), "{name}");
        }
        assert_eq!(mechanism_from_name("0x80000001"), Some(0x8000_0001));
        assert_eq!(mechanism_from_name("CKM_MD5_RSA_PKCS"), None);
    }

    #[test]
    fn digest_lengths_map_back() {
        for digest in DigestAlgorithm::ALL {
            assert_eq!(
                DigestAlgorithm::from_output_len(digest.output_len()),
                Some(digest)
            );
        }
        assert_eq!(DigestAlgorithm::from_output_len(16), None);
    }

    #[test]
    fn networks_match_canonical_addresses() {
        let rules = Rules {
            networks: Some(vec![parse_network("127.0.0.2").unwrap()]),
            ..Rules::default()
        };

        assert!(rules.allows_address("127.0.0.2".parse().unwrap()));
        assert!(rules.allows_address("::ffff:127.0.0.2".parse().unwrap()));
        assert!(!rules.allows_address("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn validity_window_bounds_inclusive() {
        let start = OffsetDateTime::parse("2026-01-01T00:00:00Z", &Rfc3339).unwrap();
        let end = OffsetDateTime::parse("2026-12-31T00:00:00Z", &Rfc3339).unwrap();
        let rules = Rules {
            not_before: Some(start),
            not_after: Some(end),
            ..Rules::default()
        };

        assert!(rules.is_valid_at(start));
        assert!(rules.is_valid_at(end));
        assert!(!rules.is_valid_at(end + time::Duration::SECOND));
        assert!(!rules.is_valid_at(start - time::Duration::SECOND));
    }
}
