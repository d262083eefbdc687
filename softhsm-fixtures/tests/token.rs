//! End-to-end tests of `TokenFixture` with the real `softhsm2-util` and `pkcs11-tool`.
//!
//! These tests fail, not skip, when the Debian packages softhsm2 or opensc are missing.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::thread;

use common::{check_certificate, list_objects, matching, read_object};
use softhsm_fixtures::{
    CA_KEY_FILE, Curve, EC_SIGNING_LABEL, KeyKind, KeySpec, ObjectClass, RSA_OTHER_LABEL,
    RSA_SIGNING_LABEL, TokenFixture, standard_keys,
};

#[test]
fn standard_token_has_all_objects() {
    let fixture = TokenFixture::create_temporary("std-objects", &standard_keys()).unwrap();
    let objects = list_objects(&fixture);

    assert_eq!(fixture.keys().len(), 3);
    assert_eq!(objects.len(), 9, "objects: {objects:#?}");
    for key in fixture.keys() {
        for class in [
            ObjectClass::PrivateKey,
            ObjectClass::PublicKey,
            ObjectClass::Certificate,
        ] {
            let found = matching(&objects, class, key);
            assert_eq!(
                found.len(),
                1,
                "{class:?} of {} (id {})",
                key.label(),
                key.id_hex()
            );
        }
    }
}

#[test]
fn key_lookup_by_label() {
    let fixture = TokenFixture::create_temporary("std-ids", &standard_keys()).unwrap();
    let ids = |label: &str| fixture.key(label).unwrap().id_hex();

    assert_eq!(ids(RSA_SIGNING_LABEL), "01");
    assert_eq!(ids(EC_SIGNING_LABEL), "02");
    assert_eq!(ids(RSA_OTHER_LABEL), "03");
    assert!(fixture.key("missing").is_none());
}

#[test]
fn certificates_match_token_keys() {
    let fixture = TokenFixture::create_temporary("std-certs", &standard_keys()).unwrap();
    let ca_pem = fs::read(fixture.ca_certificate_pem()).unwrap();

    for key in fixture.keys() {
        check_certificate(key, &ca_pem);

        let token_spki = read_object(&fixture, "pubkey", &key.id_hex());
        assert_eq!(
            token_spki,
            key.public_key_spki_der(),
            "token SPKI of {}",
            key.label()
        );
        let token_certificate = read_object(&fixture, "cert", &key.id_hex());
        assert_eq!(
            token_certificate,
            key.certificate_der(),
            "token cert of {}",
            key.label()
        );
    }
}

#[test]
fn certificate_files_match() {
    let fixture = TokenFixture::create_temporary("std-files", &standard_keys()).unwrap();

    for key in fixture.keys() {
        let der = fs::read(key.certificate_der_path()).unwrap();
        assert_eq!(der, key.certificate_der(), "DER file of {}", key.label());

        let pem = fs::read(key.certificate_pem_path()).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        assert_eq!(
            block.contents,
            key.certificate_der(),
            "PEM file of {}",
            key.label()
        );
    }
}

#[test]
fn other_key_kinds() {
    let specs = vec![
        KeySpec::new("rsa-3072", [0x10], KeyKind::Rsa { bits: 3072 }),
        KeySpec::new("ec-p384", [0x11], KeyKind::Ec { curve: Curve::P384 }),
        KeySpec::new("ed25519", [0x12, 0x34], KeyKind::Ed25519),
    ];
    let fixture = TokenFixture::create_temporary("other-kinds", &specs).unwrap();
    let ca_pem = fs::read(fixture.ca_certificate_pem()).unwrap();
    let objects = list_objects(&fixture);

    assert_eq!(objects.len(), 9, "objects: {objects:#?}");
    for key in fixture.keys() {
        check_certificate(key, &ca_pem);
        for class in [
            ObjectClass::PrivateKey,
            ObjectClass::PublicKey,
            ObjectClass::Certificate,
        ] {
            assert_eq!(
                matching(&objects, class, key).len(),
                1,
                "{class:?} of {}",
                key.label()
            );
        }
    }
}

#[test]
fn ed25519_spki_matches_token_pem() {
    let specs = vec![KeySpec::new("ed", [0x05], KeyKind::Ed25519)];
    let fixture = TokenFixture::create_temporary("ed-spki", &specs).unwrap();
    let key = &fixture.keys()[0];

    // OpenSC 0.23 prints an Ed25519 public key as PEM instead of DER.
    let pem = read_object(&fixture, "pubkey", "05");
    let block = x509_parser::pem::Pem::iter_from_buffer(&pem)
        .next()
        .unwrap()
        .unwrap();

    assert_eq!(block.label, "PUBLIC KEY");
    assert_eq!(block.contents, key.public_key_spki_der());
}

#[test]
fn concurrent_fixtures_stay_separate() {
    let handles: Vec<_> = (0..4)
        .map(|_| thread::spawn(|| TokenFixture::create_temporary("shared", &standard_keys())))
        .collect();
    let fixtures: Vec<TokenFixture> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();

    for fixture in &fixtures {
        let objects = list_objects(fixture);
        assert_eq!(
            objects.len(),
            9,
            "objects of {}: {objects:#?}",
            fixture.dir().display()
        );
        let spki = read_object(fixture, "pubkey", "01");
        assert_eq!(spki, fixture.keys()[0].public_key_spki_der());
    }

    let mut spkis: Vec<&[u8]> = fixtures
        .iter()
        .map(|f| f.keys()[0].public_key_spki_der())
        .collect();
    spkis.sort();
    spkis.dedup();
    assert_eq!(spkis.len(), fixtures.len(), "two fixtures share a key");
}

#[test]
fn pins_are_random_and_stored() {
    let first = TokenFixture::create_temporary("pins-a", &standard_keys()[..1]).unwrap();
    let second = TokenFixture::create_temporary("pins-b", &standard_keys()[..1]).unwrap();

    assert_eq!(first.user_pin().len(), 32);
    assert!(first.user_pin().chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(first.user_pin(), second.user_pin());
    assert_ne!(first.user_pin(), first.so_pin());

    let pin_file = fs::read_to_string(first.user_pin_file()).unwrap();
    assert_eq!(pin_file, first.user_pin());
    let mode = fs::metadata(first.user_pin_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let ca_key_mode = fs::metadata(first.dir().join(CA_KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(ca_key_mode & 0o777, 0o600);
}

#[test]
fn debug_hides_pins() {
    let fixture = TokenFixture::create_temporary("debug", &standard_keys()[..1]).unwrap();
    let debug = format!("{fixture:?}");

    assert!(!debug.contains(fixture.user_pin()), "{debug}");
    assert!(!debug.contains(fixture.so_pin()), "{debug}");
    assert!(debug.contains("debug"), "{debug}");
}

#[test]
fn conf_points_inside_folder() {
    let fixture = TokenFixture::create_temporary("conf", &standard_keys()[..1]).unwrap();
    let conf = fs::read_to_string(fixture.softhsm2_conf()).unwrap();
    let token_dir = fixture.dir().join("tokens");

    assert!(fixture.softhsm2_conf().starts_with(fixture.dir()));
    assert!(
        conf.contains(&format!("directories.tokendir = {}\n", token_dir.display())),
        "{conf}"
    );
    assert!(conf.contains("objectstore.backend = file\n"), "{conf}");
    assert!(conf.contains("log.level = ERROR\n"), "{conf}");
    assert!(
        fs::read_dir(&token_dir).unwrap().next().is_some(),
        "token folder is empty"
    );
}

#[test]
fn temporary_folder_removed_on_drop() {
    let fixture = TokenFixture::create_temporary("drop", &standard_keys()[..1]).unwrap();
    let dir = fixture.dir().to_path_buf();
    assert!(dir.is_dir());

    drop(fixture);
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn create_in_given_folder() {
    let parent = tempfile::tempdir().unwrap();
    let folder = parent.path().join("nested/fixture");

    let fixture = TokenFixture::create(&folder, "given", &standard_keys()[..1]).unwrap();
    assert_eq!(fixture.dir(), folder.canonicalize().unwrap());

    drop(fixture);
    assert!(
        folder.is_dir(),
        "a non-temporary fixture folder must stay after drop"
    );
}

#[test]
fn non_empty_folder_rejected() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("leftover"), b"x").unwrap();

    let error = TokenFixture::create(dir.path(), "busy", &standard_keys()).unwrap_err();
    assert!(error.to_string().contains("is not empty"), "{error:#}");
}

#[test]
fn list_objects_logs_in() {
    let fixture = TokenFixture::create_temporary("listing", &standard_keys()).unwrap();
    let objects = fixture.list_objects().unwrap();

    let private_keys = objects
        .iter()
        .filter(|o| o.class == ObjectClass::PrivateKey)
        .count();
    assert_eq!(private_keys, 3);
}
