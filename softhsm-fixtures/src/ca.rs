//! Throwaway certificate authorities that issue code-signing and TLS server certificates.
//!
//! Each CA has an ECDSA P-256 key held in memory. It is a test CA: its private key may be
//! written next to the fixture, and nothing should ever trust it outside tests.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
    SubjectPublicKeyInfo,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

/// How far back `notBefore` lies, so that small clock differences do not matter.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// Lifetime of every certificate issued here: 10 years of 365 days.
const LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Length of random serial numbers in bytes, within RFC 5280's limit of 20.
const SERIAL_LEN: usize = 16;

/// A self-signed CA with its signing key.
pub(crate) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// Generates a CA key and a self-signed CA certificate with subject CN `common_name`.
    pub(crate) fn generate(common_name: &str) -> Result<Self> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .context("failed to generate the test CA's ECDSA P-256 key")?;

        let mut params = base_params(common_name)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];

        let issuer = CertifiedIssuer::self_signed(params, key)
            .with_context(|| format!("failed to self-sign test CA {common_name:?}"))?;
        Ok(Self { issuer })
    }

    /// Returns the CA certificate in PEM.
    pub(crate) fn certificate_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Returns the CA private key as PKCS#8 PEM.
    pub(crate) fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a code-signing certificate with subject CN `common_name` for a DER SPKI.
    ///
    /// The certificate has key usage digitalSignature, extended key usage codeSigning, basic
    /// constraints CA:FALSE and a random serial number.
    pub(crate) fn issue_code_signing(
        &self,
        spki_der: &[u8],
        common_name: &str,
    ) -> Result<Certificate> {
        let public_key = SubjectPublicKeyInfo::from_der(spki_der)
            .with_context(|| format!("public key of {common_name:?} is not a supported SPKI"))?;

        let mut params = base_params(common_name)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.use_authority_key_identifier_extension = true;

        params
            .signed_by(&public_key, &*self.issuer)
            .with_context(|| format!("failed to issue the certificate of {common_name:?}"))
    }

    /// Issues a TLS server certificate for `key` whose SANs are `names`.
    ///
    /// A name that parses as an IP address becomes an IP SAN, any other name a DNS SAN.
    pub(crate) fn issue_tls_server(&self, key: &KeyPair, names: &[&str]) -> Result<Certificate> {
        let owned: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(owned)
            .with_context(|| format!("invalid TLS server name in {names:?}"))?;
        let common_name = names.first().copied().unwrap_or("keyrelay test server");
        apply_base(&mut params, common_name)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;

        params
            .signed_by(key, &*self.issuer)
            .with_context(|| format!("failed to issue the TLS server certificate for {names:?}"))
    }
}

/// Returns parameters with subject CN `common_name`, a random serial and a validity period.
fn base_params(common_name: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    apply_base(&mut params, common_name)?;
    Ok(params)
}

fn apply_base(params: &mut CertificateParams, common_name: &str) -> Result<()> {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "keyrelay test fixtures");
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;

    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + LIFETIME;
    params.serial_number = Some(random_serial()?);
    Ok(())
}

/// Returns a positive random serial number of [`SERIAL_LEN`] bytes.
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; SERIAL_LEN];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow!("the system random number generator failed"))?;
    // Clear the top bit so the DER INTEGER is positive, and set the next one so that the
    // encoding always takes SERIAL_LEN bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;
    use x509_parser::prelude::*;

    #[test]
    fn code_signing_certificate_fields() {
        let ca = TestCa::generate("unit test CA").unwrap();
        let subject_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = subject_key.subject_public_key_info();

        let certificate = ca.issue_code_signing(&spki, "signer").unwrap();
        let (_, parsed) = parse_x509_certificate(certificate.der()).unwrap();

        assert_eq!(parsed.public_key().raw, &spki[..]);
        let common_name = parsed.subject().iter_common_name().next().unwrap();
        assert_eq!(common_name.as_str().unwrap(), "signer");
        assert!(
            parsed
                .key_usage()
                .unwrap()
                .unwrap()
                .value
                .digital_signature()
        );
        assert!(
            parsed
                .extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .code_signing
        );
        assert!(!parsed.is_ca());
        assert_eq!(parsed.raw_serial().len(), SERIAL_LEN);
    }

    #[test]
    fn serials_differ() {
        let ca = TestCa::generate("unit test CA").unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = key.subject_public_key_info();

        let first = ca.issue_code_signing(&spki, "a").unwrap();
        let second = ca.issue_code_signing(&spki, "a").unwrap();
        let serial = |der: &[u8]| parse_x509_certificate(der).unwrap().1.raw_serial().to_vec();

        assert_ne!(serial(first.der()), serial(second.der()));
    }

    #[test]
    fn ca_certificate_is_ca() {
        let ca = TestCa::generate("unit test CA").unwrap();
        let pem = ca.certificate_pem();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let certificate = block.parse_x509().unwrap();

        assert!(certificate.is_ca());
        assert_eq!(certificate.subject(), certificate.issuer());
        assert!(
            certificate
                .key_usage()
                .unwrap()
                .unwrap()
                .value
                .key_cert_sign()
        );
    }
}
