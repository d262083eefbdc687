//! OpenSC's `pkcs11-tool --test` and `--sign`, once with SoftHSM2's module and once with
//! keyrelay's. Deterministic signatures must be identical; the others must verify with the
//! key's certificate.

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;

use anyhow::Result;
use keyrelay_tests::tools::{Backend, TOOLS_TOKEN, TokenPlan, ToolEnv, standard_plan, stdout_text};
use keyrelay_tests::{require_tool, run};
use softhsm_fixtures::{EC_SIGNING_LABEL, KeyKind, KeySpec, RSA_OTHER_LABEL, RSA_SIGNING_LABEL};

/// Builds a `pkcs11-tool` command logged in to the tools token through `backend`.
fn pkcs11_tool(env: &ToolEnv, backend: Backend, token: &str) -> Result<Command> {
    require_tool("pkcs11-tool", "opensc")?;
    let mut command = env.command("pkcs11-tool", backend)?;
    command
        .arg("--module")
        .arg(env.module(backend)?)
        .args(["--token-label", token, "--login", "--pin"])
        .arg(env.pin(backend, token));
    Ok(command)
}

/// Signs a fixed message with `mechanism` (pkcs11-tool's name) and returns the signature.
fn sign(
    env: &ToolEnv,
    backend: Backend,
    token: &str,
    label: &str,
    mechanism: &str,
    input: &[u8],
) -> Result<Vec<u8>> {
    let input_file = env.dir.path().join(format!("input-{mechanism}"));
    fs::write(&input_file, input)?;
    let output = env
        .dir
        .path()
        .join(format!("{backend:?}-{label}-{mechanism}.sig"));
    let id = env.key(label).id_hex();
    run(pkcs11_tool(env, backend, token)?
        .args(["--sign", "-m", mechanism, "--id", &id])
        .arg("--input-file")
        .arg(&input_file)
        .arg("--output-file")
        .arg(&output))?;
    Ok(fs::read(output)?)
}

/// Verifies `signature` over `message` with `openssl dgst`, the key's public key and
/// `options` (`-sigopt` values).
fn verify(
    env: &ToolEnv,
    label: &str,
    digest: &str,
    message: &[u8],
    signature: &[u8],
    options: &[&str],
) -> Result<()> {
    let public_key = env.dir.path().join(format!("{label}-public.pem"));
    let spki = env.dir.path().join(format!("{label}-public.der"));
    fs::write(&spki, env.key(label).public_key_spki_der())?;
    run(Command::new("openssl")
        .args(["pkey", "-pubin", "-inform", "DER", "-in"])
        .arg(&spki)
        .arg("-out")
        .arg(&public_key))?;
    let message_file = env.dir.path().join("message.bin");
    let signature_file = env.dir.path().join("signature.bin");
    fs::write(&message_file, message)?;
    fs::write(&signature_file, signature)?;
    let mut command = Command::new("openssl");
    command
        .args(["dgst", &format!("-{digest}"), "-verify"])
        .arg(&public_key)
        .arg("-signature")
        .arg(&signature_file);
    for option in options {
        command.args(["-sigopt", option]);
    }
    let report = stdout_text(command.arg(&message_file))?;
    assert!(report.contains("Verified OK"), "{report}");
    Ok(())
}

/// Converts a raw r||s ECDSA signature to the DER form openssl verifies.
fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let half = raw.len() / 2;
    let integer = |bytes: &[u8]| {
        let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
        let mut value = if trimmed.first().is_some_and(|&b| b >= 0x80) {
            vec![0]
        } else {
            Vec::new()
        };
        value.extend(trimmed);
        let mut encoded = vec![0x02, value.len() as u8];
        encoded.extend(value);
        encoded
    };
    let mut body = integer(&raw[..half]);
    body.extend(integer(&raw[half..]));
    let mut der = vec![0x30];
    if body.len() >= 0x80 {
        der.push(0x81);
    }
    der.push(body.len() as u8);
    der.extend(body);
    der
}

const MESSAGE: &[u8] = b"keyrelay signs this message";

#[test]
fn sign_rsa_pkcs_matches_softhsm() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    for mechanism in [
        "SHA256-RSA-PKCS",
        "SHA384-RSA-PKCS",
        "SHA512-RSA-PKCS",
        "SHA1-RSA-PKCS",
    ] {
        let direct = sign(
            &env,
            Backend::Direct,
            TOOLS_TOKEN,
            RSA_SIGNING_LABEL,
            mechanism,
            MESSAGE,
        )?;
        let keyrelay = sign(
            &env,
            Backend::Keyrelay,
            TOOLS_TOKEN,
            RSA_SIGNING_LABEL,
            mechanism,
            MESSAGE,
        )?;
        assert!(direct == keyrelay, "{mechanism}: the signatures differ");
    }
    Ok(())
}

#[test]
fn sign_rsa_pss_verifies() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    for backend in Backend::BOTH {
        let signature = sign(
            &env,
            backend,
            TOOLS_TOKEN,
            RSA_SIGNING_LABEL,
            "SHA256-RSA-PKCS-PSS",
            MESSAGE,
        )?;
        verify(
            &env,
            RSA_SIGNING_LABEL,
            "sha256",
            MESSAGE,
            &signature,
            &["rsa_padding_mode:pss", "rsa_pss_saltlen:32"],
        )
        .map_err(|error| error.context(format!("{backend:?}")))?;
    }
    Ok(())
}

/// SoftHSM 2.6.1 has no hash-and-sign ECDSA mechanisms, so pkcs11-tool signs a SHA-256
/// digest with CKM_ECDSA on both backends.
#[test]
fn sign_ecdsa_verifies() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    let digest = ring::digest::digest(&ring::digest::SHA256, MESSAGE);
    for backend in Backend::BOTH {
        let signature = sign(
            &env,
            backend,
            TOOLS_TOKEN,
            EC_SIGNING_LABEL,
            "ECDSA",
            digest.as_ref(),
        )?;
        assert_eq!(signature.len(), 64, "{backend:?}: P-256 r||s is 64 bytes");
        verify(
            &env,
            EC_SIGNING_LABEL,
            "sha256",
            MESSAGE,
            &ecdsa_der(&signature),
            &[],
        )
        .map_err(|error| error.context(format!("{backend:?}")))?;
    }
    Ok(())
}

/// Name of the token with the Ed25519 key, kept apart because of libp11.
const EDWARDS_TOKEN: &str = "keyrelay-edwards";

#[test]
fn sign_eddsa_matches_softhsm() -> Result<()> {
    let plan = TokenPlan::allowing_all(
        EDWARDS_TOKEN,
        vec![KeySpec::new("ed-signing", [0x08], KeyKind::Ed25519)],
    );
    let env = ToolEnv::start(&[plan])?;
    let direct = sign(
        &env,
        Backend::Direct,
        EDWARDS_TOKEN,
        "ed-signing",
        "EDDSA",
        MESSAGE,
    )?;
    let keyrelay = sign(
        &env,
        Backend::Keyrelay,
        EDWARDS_TOKEN,
        "ed-signing",
        "EDDSA",
        MESSAGE,
    )?;
    assert!(
        direct == keyrelay,
        "Ed25519 signatures are deterministic and must be identical"
    );
    // openssl verifies Ed25519 over the whole message with -rawin.
    let message_file = env.dir.path().join("message.bin");
    let signature_file = env.dir.path().join("signature.bin");
    fs::write(&message_file, MESSAGE)?;
    fs::write(&signature_file, &keyrelay)?;
    let report = stdout_text(
        Command::new("openssl")
            .args(["pkeyutl", "-verify", "-rawin", "-certin", "-inkey"])
            .arg(env.key("ed-signing").certificate_pem_path())
            .arg("-in")
            .arg(&message_file)
            .arg("-sigfile")
            .arg(&signature_file),
    )?;
    assert!(
        report.contains("Signature Verified Successfully"),
        "{report}"
    );
    Ok(())
}

/// Runs `pkcs11-tool --test` and returns the lines of its random, digest, signature and
/// verification checks. The decryption checks that follow are left out, because keyrelay
/// only signs. Key numbers and lines about `hidden` are removed, since the policy hides that
/// key from keyrelay's client.
fn self_test(env: &ToolEnv, backend: Backend, hidden: &str) -> Result<Vec<String>> {
    let mut command = pkcs11_tool(env, backend, TOOLS_TOKEN)?;
    let output = keyrelay_tests::tools::output_within_limit(command.arg("--test"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let lines = text
        .lines()
        .take_while(|line| !line.starts_with("Decryption"))
        .filter(|line| !line.contains(hidden))
        .map(|line| {
            let words: Vec<&str> = line
                .split_whitespace()
                .filter(|word| !word.chars().all(|c| c.is_ascii_digit()))
                .collect();
            words.join(" ")
        })
        .collect();
    Ok(lines)
}

#[test]
fn self_test_matches_softhsm() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    let direct = self_test(&env, Backend::Direct, RSA_OTHER_LABEL)?;
    assert!(
        direct.iter().any(|line| line.starts_with("Verify")),
        "pkcs11-tool reached the verification checks on SoftHSM2: {direct:#?}"
    );
    let keyrelay = self_test(&env, Backend::Keyrelay, RSA_OTHER_LABEL)?;
    let keyrelay = without_intended_differences(keyrelay);
    let direct = without_intended_differences(direct);
    // SoftHSM2 returns keys in no fixed order, and pkcs11-tool tests every mechanism of the
    // first RSA key but only one mechanism of later keys, so the checks are compared as
    // section headings and required passes rather than line by line.
    let passed = |lines: &[String]| -> BTreeSet<String> {
        lines
            .iter()
            .filter(|line| line.ends_with("OK"))
            .cloned()
            .collect()
    };
    let headings = |lines: &[String]| -> BTreeSet<String> {
        lines
            .iter()
            .filter(|line| line.ends_with(':'))
            .cloned()
            .collect()
    };
    let report = format!("keyrelay {keyrelay:#?}\nSoftHSM2 {direct:#?}");
    assert_eq!(headings(&keyrelay), headings(&direct), "{report}");
    assert!(passed(&keyrelay).contains("RSA-PKCS: OK"), "{report}");
    let failed = |line: &&String| line.contains("ERR") || line.contains("failed");
    assert!(!keyrelay.iter().any(|line| failed(&line)), "{report}");
    for digest in ["SHA-1: OK", "SHA256: OK"] {
        assert!(passed(&keyrelay).contains(digest), "{digest}: {report}");
    }
    Ok(())
}

/// Drops the lines where keyrelay differs from SoftHSM2 by design: it offers no MD5 and no
/// raw RSA (CKM_RSA_X_509), its random source takes no seed, and it never decrypts.
fn without_intended_differences(lines: Vec<String>) -> Vec<String> {
    let intended = ["MD5", "RSA-X-509", "seeding (C_SeedRandom) not supported"];
    lines
        .into_iter()
        .filter(|line| !intended.iter().any(|word| line.contains(word)))
        .filter(|line| line != "Decrypt: not implemented" && line != "No errors")
        .collect()
}

#[test]
fn self_test_keeps_raw_rsa_out() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    let keyrelay = self_test(&env, Backend::Keyrelay, RSA_OTHER_LABEL)?;
    assert!(
        keyrelay.iter().any(|line| line == "RSA-PKCS: OK"),
        "{keyrelay:#?}"
    );
    assert!(
        !keyrelay.iter().any(|line| line.contains("RSA-X-509")),
        "{keyrelay:#?}"
    );
    Ok(())
}
