//! A python-pkcs11 script signs with RSA and ECDSA keys, once with SoftHSM2's module and once
//! with keyrelay's.

use std::process::Command;

use anyhow::{Context, Result};
use keyrelay_tests::tools::{Backend, TOOLS_TOKEN, ToolEnv, standard_plan, stdout_text};
use keyrelay_tests::{require_tool, run};
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use softhsm_fixtures::{EC_SIGNING_LABEL, RSA_SIGNING_LABEL};

/// Opens a token by label, logs in, finds a private key by label and signs the message with
/// the named mechanism. Arguments: module, token, PIN, key label, mechanism, message as hex.
/// Prints the signature as hex.
const SIGN_SCRIPT: &str = r#"
import sys
import pkcs11
from pkcs11 import Mechanism, ObjectClass

module, token_label, pin, key_label, mechanism, message = sys.argv[1:7]
token = pkcs11.lib(module).get_token(token_label=token_label)
with token.open(user_pin=pin) as session:
    key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key_label)
    signature = key.sign(bytes.fromhex(message), mechanism=Mechanism[mechanism])
    print(signature.hex())
"#;

const MESSAGE: &[u8] = b"keyrelay signs this message";

fn require_python_pkcs11() -> Result<()> {
    require_tool("python3", "python3")?;
    run(Command::new("python3").args(["-c", "import pkcs11"]))
        .context("python-pkcs11 is missing: run scripts/install-packages.sh")?;
    Ok(())
}

fn sign(
    env: &ToolEnv,
    backend: Backend,
    label: &str,
    mechanism: &str,
    input: &[u8],
) -> Result<Vec<u8>> {
    let text = stdout_text(
        env.command("python3", backend)?
            .args(["-c", SIGN_SCRIPT])
            .arg(env.module(backend)?)
            .args([
                TOOLS_TOKEN,
                &env.pin(backend, TOOLS_TOKEN),
                label,
                mechanism,
            ])
            .arg(hex::encode(input)),
    )?;
    Ok(hex::decode(text.trim())?)
}

#[test]
fn rsa_matches_softhsm() -> Result<()> {
    require_python_pkcs11()?;
    let env = ToolEnv::start(&[standard_plan()])?;
    let direct = sign(
        &env,
        Backend::Direct,
        RSA_SIGNING_LABEL,
        "SHA256_RSA_PKCS",
        MESSAGE,
    )?;
    let keyrelay = sign(
        &env,
        Backend::Keyrelay,
        RSA_SIGNING_LABEL,
        "SHA256_RSA_PKCS",
        MESSAGE,
    )?;
    assert!(
        direct == keyrelay,
        "PKCS#1 v1.5 signatures must be identical"
    );
    assert_eq!(
        env.audited_signatures(RSA_SIGNING_LABEL)?,
        1,
        "one audited signature"
    );
    Ok(())
}

#[test]
fn ecdsa_verifies() -> Result<()> {
    require_python_pkcs11()?;
    let env = ToolEnv::start(&[standard_plan()])?;
    let spki = env.key(EC_SIGNING_LABEL).public_key_spki_der();
    // The uncompressed P-256 point is the last 65 bytes of its SubjectPublicKeyInfo.
    let point = &spki[spki.len() - 65..];
    let digest = ring::digest::digest(&ring::digest::SHA256, MESSAGE);
    for backend in Backend::BOTH {
        let signature = sign(&env, backend, EC_SIGNING_LABEL, "ECDSA", digest.as_ref())?;
        let verified =
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).verify(MESSAGE, &signature);
        assert!(
            verified.is_ok(),
            "{backend:?}: the ECDSA signature does not verify"
        );
    }
    Ok(())
}
