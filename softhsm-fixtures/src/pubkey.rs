//! Reads a token key's public key as a DER SubjectPublicKeyInfo (SPKI).
//!
//! RSA keys come from `pkcs11-tool --read-object --type pubkey`, which prints DER SPKI.
//! EC and Ed25519 keys are built from the CKA_EC_POINT and CKA_EC_PARAMS values that
//! `pkcs11-tool --list-objects` prints, because OpenSC 0.23.0 `--read-object` fails on P-384
//! public keys ("cannot create EVP_PKEY") and prints PEM instead of DER for Ed25519 keys.

use anyhow::{Context, Result, anyhow, ensure};
use yasna::models::ObjectIdentifier;

use crate::listing::{ListedObject, ObjectClass, parse_object_listing};
use crate::spec::{Curve, KeyKind, KeySpec};
use crate::tools::TokenTarget;

/// id-ecPublicKey (RFC 5480).
const EC_PUBLIC_KEY_OID: &[u64] = &[1, 2, 840, 10045, 2, 1];

/// id-Ed25519 (RFC 8410).
const ED25519_OID: &[u64] = &[1, 3, 101, 112];

/// Reads the public key of `spec` from the token as DER SPKI.
pub(crate) fn read_public_key_spki(target: &TokenTarget, spec: &KeySpec) -> Result<Vec<u8>> {
    let spki = match spec.kind {
        KeyKind::Rsa { .. } => read_rsa_spki(target, spec)?,
        KeyKind::Ec { curve } => ec_spki(&listed_public_key(target, spec)?, curve)?,
        KeyKind::Ed25519 => ed25519_spki(&listed_public_key(target, spec)?)?,
    };
    Ok(spki)
}

fn read_rsa_spki(target: &TokenTarget, spec: &KeySpec) -> Result<Vec<u8>> {
    let output = target
        .pkcs11_tool()
        .arg("--read-object")
        .arg("--type")
        .arg("pubkey")
        .arg("--id")
        .arg(spec.id_hex())
        .run()?;

    let spki = output.stdout;
    ensure!(
        spki.first() == Some(&0x30),
        "pkcs11-tool --read-object printed no DER SubjectPublicKeyInfo for key {:?}",
        spec.label
    );
    Ok(spki)
}

/// Finds the public key object of `spec` in the token's object listing.
fn listed_public_key(target: &TokenTarget, spec: &KeySpec) -> Result<ListedObject> {
    let listing = target.pkcs11_tool().arg("--list-objects").run_text()?;
    parse_object_listing(&listing)
        .into_iter()
        .find(|object| {
            object.class == ObjectClass::PublicKey && object.id().as_deref() == Some(&spec.id[..])
        })
        .ok_or_else(|| {
            anyhow!(
                "public key with CKA_ID {} (key {:?}) not found in pkcs11-tool --list-objects",
                spec.id_hex(),
                spec.label
            )
        })
}

/// Builds the SPKI of an ECDSA key whose CKA_EC_PARAMS must name `curve`.
pub(crate) fn ec_spki(object: &ListedObject, curve: Curve) -> Result<Vec<u8>> {
    let params = object
        .hex_attribute("EC_PARAMS")
        .context("EC_PARAMS missing or not hex")?;
    ensure!(
        params == curve.ec_params_der(),
        "CKA_EC_PARAMS {} is not the OID of {curve:?}",
        hex::encode(&params)
    );

    let point = ec_point(object)?;
    Ok(yasna::construct_der(|writer| {
        writer.write_sequence(|writer| {
            writer.next().write_sequence(|writer| {
                writer
                    .next()
                    .write_oid(&ObjectIdentifier::from_slice(EC_PUBLIC_KEY_OID));
                writer.next().write_der(&params);
            });
            writer.next().write_bitvec_bytes(&point, point.len() * 8);
        });
    }))
}

/// Builds the SPKI of an Ed25519 key, whose algorithm identifier has no parameters.
pub(crate) fn ed25519_spki(object: &ListedObject) -> Result<Vec<u8>> {
    let point = ec_point(object)?;
    ensure!(
        point.len() == 32,
        "Ed25519 public key is {} bytes long, expected 32",
        point.len()
    );

    Ok(yasna::construct_der(|writer| {
        writer.write_sequence(|writer| {
            writer.next().write_sequence(|writer| {
                writer
                    .next()
                    .write_oid(&ObjectIdentifier::from_slice(ED25519_OID));
            });
            writer.next().write_bitvec_bytes(&point, point.len() * 8);
        });
    }))
}

/// Returns the point inside CKA_EC_POINT, which SoftHSM stores as a DER OCTET STRING.
fn ec_point(object: &ListedObject) -> Result<Vec<u8>> {
    let wrapped = object
        .hex_attribute("EC_POINT")
        .context("EC_POINT missing or not hex")?;
    yasna::parse_der(&wrapped, |reader| reader.read_bytes()).map_err(|error| {
        anyhow!(
            "CKA_EC_POINT {} is not a DER OCTET STRING: {error}",
            hex::encode(&wrapped)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::parse_object_listing;

    const P256_LISTING: &str = "\
Public Key Object; EC  EC_POINT 256 bits
  EC_POINT:   04410403cedc6550c28a461fb24262e675b37d038ced60cfdf5fdea0af8d1c842957621af1eb0c1585a75bc4734a11fecbc916ef8f66e7f67cf0e9020f1bde6fbec1f6
  EC_PARAMS:  06082a8648ce3d030107
  label:      ec-signing
  ID:         02
";

    /// The SPKI that `pkcs11-tool --read-object --type pubkey --id 02` printed for the key
    /// listed in `P256_LISTING`.
    const P256_SPKI_HEX: &str = "3059301306072a8648ce3d020106082a8648ce3d0301070342000403cedc6550c28a461fb24262e675b37d038ced60cfdf5fdea0af8d1c842957621af1eb0c1585a75bc4734a11fecbc916ef8f66e7f67cf0e9020f1bde6fbec1f6";

    #[test]
    fn p256_spki_matches_read_object() {
        let object = &parse_object_listing(P256_LISTING)[0];
        let spki = ec_spki(object, Curve::P256).unwrap();
        assert_eq!(hex::encode(spki), P256_SPKI_HEX);
    }

    #[test]
    fn wrong_curve_rejected() {
        let object = &parse_object_listing(P256_LISTING)[0];
        let message = ec_spki(object, Curve::P384).unwrap_err().to_string();
        assert!(message.contains("is not the OID of P384"), "{message}");
    }

    #[test]
    fn ed25519_spki_layout() {
        let listing = "Public Key Object; EC_EDWARDS\n  EC_POINT:   0420faa8c4c0cd48b60a654ea972f5124d3c3720efa891d87eaaf6e62a2c5c117a6a\n";
        let spki = ed25519_spki(&parse_object_listing(listing)[0]).unwrap();
        assert_eq!(
            hex::encode(spki),
            "302a300506032b6570032100faa8c4c0cd48b60a654ea972f5124d3c3720efa891d87eaaf6e62a2c5c117a6a"
        );
    }
}
