//! PKCS#11 conformance: each case of the `pkcs11-conformance` probe runs once against
//! SoftHSM2 directly and once through keyrelay, and the two results must be equal.
//!
//! Intended differences are checked explicitly: keyrelay lists only the mechanisms the policy
//! allows (a subset of SoftHSM2's), refuses key generation, object creation and unwrapping,
//! and offers PKCS#11 v3.0 interfaces and fork safety that SoftHSM 2.6.1 lacks.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use keyrelay_tests::tools::{
    Backend, ExtraKey, TokenPlan, ToolEnv, copy_store, output_within_limit,
};
use keyrelay_tests::{SecretSource, build_artifact};
use serde_json::Value;
use softhsm_fixtures::{Curve, KeyKind, KeySpec, RSA_OTHER_LABEL};

/// Token with the RSA and ECDSA keys, as SoftHSM2 label and policy token name.
const TOKEN: &str = "conformance";

/// Token with the Ed25519 key, kept apart because libp11 fails on tokens that hold one.
const EDWARDS_TOKEN: &str = "conformance-ed";

fn extra(label: &str, id_hex: &str, key_type: &str, always_authenticate: bool) -> ExtraKey {
    ExtraKey {
        label: label.to_owned(),
        id_hex: id_hex.to_owned(),
        key_type: key_type.to_owned(),
        always_authenticate,
    }
}

fn plans() -> Vec<TokenPlan> {
    let rsa = |bits| KeyKind::Rsa { bits };
    let mut main = TokenPlan::allowing_all(
        TOKEN,
        vec![
            KeySpec::new("rsa-2048", [0x01], rsa(2048)),
            KeySpec::new("ec-p256", [0x02], KeyKind::Ec { curve: Curve::P256 }),
            KeySpec::new(RSA_OTHER_LABEL, [0x03], rsa(2048)),
            KeySpec::new("rsa-3072", [0x04], rsa(3072)),
            KeySpec::new("rsa-4096", [0x05], rsa(4096)),
            KeySpec::new("ec-p384", [0x06], KeyKind::Ec { curve: Curve::P384 }),
        ],
    );
    main.extra_keys = vec![
        extra("ec-p521", "07", "EC:secp521r1", false),
        extra("rsa-always", "0a", "rsa:2048", true),
    ];
    main.allowed = vec![
        "rsa-2048",
        "ec-p256",
        "rsa-3072",
        "rsa-4096",
        "ec-p384",
        "ec-p521",
        "rsa-always",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let edwards = TokenPlan::allowing_all(
        EDWARDS_TOKEN,
        vec![KeySpec::new("ed-25519", [0x08], KeyKind::Ed25519)],
    );
    vec![main, edwards]
}

/// Returns a plan with only the key the reconnection cases sign with.
fn small_plan() -> TokenPlan {
    TokenPlan::allowing_all(
        TOKEN,
        vec![KeySpec::new(
            "rsa-2048",
            [0x01],
            KeyKind::Rsa { bits: 2048 },
        )],
    )
}

/// The environment shared by the cases of this file.
///
/// NOTE: a static is never dropped, so its temporary folder stays behind in the system's
/// temporary folder; the keyserver still stops when the test process exits.
fn shared_env() -> &'static ToolEnv {
    static ENV: OnceLock<ToolEnv> = OnceLock::new();
    ENV.get_or_init(|| ToolEnv::start(&plans()).expect("the conformance environment starts"))
}

/// Builds a probe command for `case` on `token` through `backend`, with its own SoftHSM2 store copy
/// when direct.
fn probe(env: &ToolEnv, backend: Backend, token: &str, case: &str) -> Result<Command> {
    let program = build_artifact("pkcs11-conformance")?;
    let program = program.to_str().context("a UTF-8 path")?;
    let mut command = match backend {
        Backend::Direct => {
            let copy = tempfile::Builder::new()
                .prefix("conformance-store-")
                .tempdir_in(env.dir.path())?
                .keep();
            let conf = copy_store(env.direct_conf(), &copy)?;
            let mut command = env.direct_command(program);
            command
                .env(softhsm_fixtures::SOFTHSM2_CONF_ENV, conf)
                .env("CONFORMANCE_PIN", env.token(token).user_pin());
            command
        }
        Backend::Keyrelay => {
            let mut command = env.keyrelay_command(program, SecretSource::Pin)?;
            command.env("CONFORMANCE_PIN", &env.credential.secret);
            command
        }
    };
    command.arg(env.module(backend)?).args([token, case]);
    Ok(command)
}

/// Runs `case` through `backend` and returns its `result` value.
fn observe(env: &ToolEnv, backend: Backend, token: &str, case: &str) -> Result<Value> {
    let output = output_within_limit(&probe(env, backend, token, case)?)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().last() else {
        bail!(
            "{backend:?}: the probe printed nothing for {case} ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let value: Value = serde_json::from_str(line)
        .with_context(|| format!("{backend:?}: {case} printed {line:?}"))?;
    Ok(value["result"].clone())
}

/// Runs `case` on both backends and returns (SoftHSM2, keyrelay).
fn both(token: &str, case: &str) -> Result<(Value, Value)> {
    let env = shared_env();
    Ok((
        observe(env, Backend::Direct, token, case)?,
        observe(env, Backend::Keyrelay, token, case)?,
    ))
}

/// Requires keyrelay's result for `case` to equal SoftHSM2's, entry by entry.
fn assert_same(case: &str) -> Result<()> {
    assert_same_on(TOKEN, case)
}

fn assert_same_on(token: &str, case: &str) -> Result<()> {
    let (direct, keyrelay) = both(token, case)?;
    let differences = differences(&direct, &keyrelay, case);
    assert!(
        differences.is_empty(),
        "{case}: keyrelay differs from SoftHSM2:\n{}",
        differences.join("\n")
    );
    Ok(())
}

/// Describes every leaf where `keyrelay` differs from `direct`.
fn differences(direct: &Value, keyrelay: &Value, path: &str) -> Vec<String> {
    match (direct, keyrelay) {
        (Value::Object(a), Value::Object(b)) => {
            let mut found = Vec::new();
            for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                let null = Value::Null;
                found.extend(differences(
                    a.get(key).unwrap_or(&null),
                    b.get(key).unwrap_or(&null),
                    &format!("{path}.{key}"),
                ));
            }
            found
        }
        (a, b) if a == b => Vec::new(),
        (a, b) => vec![format!("  {path}: SoftHSM2 {a}, keyrelay {b}")],
    }
}

#[test]
fn function_list() -> Result<()> {
    assert_same("function_list")
}

#[test]
fn interface_list() -> Result<()> {
    let keyrelay = observe(shared_env(), Backend::Keyrelay, TOKEN, "interface_list")?;
    assert_eq!(
        keyrelay["symbol"], true,
        "C_GetInterfaceList is exported: {keyrelay}"
    );
    assert_eq!(keyrelay["list_rv"], "CKR_OK", "{keyrelay}");
    let interfaces = keyrelay["interfaces"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        interfaces
            .iter()
            .any(|i| i["name"] == "PKCS 11" && i["version"] == "3.0"),
        "a \"PKCS 11\" interface with version 3.0 is listed: {keyrelay}"
    );
    assert_eq!(
        keyrelay["default_found"], true,
        "C_GetInterface(NULL) works: {keyrelay}"
    );
    Ok(())
}

#[test]
fn initialize_forms() -> Result<()> {
    assert_same("initialize_forms")
}

#[test]
fn not_initialized() -> Result<()> {
    assert_same("not_initialized")
}

#[test]
fn info_padding() -> Result<()> {
    assert_same("info_padding")
}

#[test]
fn slot_list_sizing() -> Result<()> {
    assert_same("slot_list_sizing")
}

/// SoftHSM 2.6.1 returns CKR_OK for C_Logout without a login; PKCS#11 requires
/// CKR_USER_NOT_LOGGED_IN, which keyrelay must return. Everything else must match.
#[test]
fn session_states() -> Result<()> {
    let (mut direct, mut keyrelay) = both(TOKEN, "session_states")?;
    let logout_again = keyrelay["logout_again"].clone();
    for value in [&mut direct, &mut keyrelay] {
        value.as_object_mut().map(|o| o.remove("logout_again"));
    }
    let differences = differences(&direct, &keyrelay, "session_states");
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    assert_eq!(
        logout_again, "CKR_USER_NOT_LOGGED_IN",
        "C_Logout without a login"
    );
    Ok(())
}

#[test]
fn wrong_pin() -> Result<()> {
    assert_same("wrong_pin")
}

#[test]
fn attribute_template() -> Result<()> {
    assert_same("attribute_template")
}

#[test]
fn attribute_sizing() -> Result<()> {
    assert_same("attribute_sizing")
}

#[test]
fn ec_encoding() -> Result<()> {
    assert_same("ec_encoding")
}

#[test]
fn sign_sizing() -> Result<()> {
    assert_same("sign_sizing")
}

/// Where SoftHSM 2.6.1 departs from the codes PKCS#11 names, keyrelay returns the named
/// ones: CKR_DATA_LEN_RANGE for raw RSA input longer than the modulus allows (SoftHSM2:
/// CKR_GENERAL_ERROR), CKR_KEY_TYPE_INCONSISTENT for CKM_ECDSA on an RSA key (SoftHSM2
/// accepts it at C_SignInit) and CKR_KEY_HANDLE_INVALID for an unknown key handle (SoftHSM2:
/// CKR_OBJECT_HANDLE_INVALID). Everything else must match.
#[test]
fn operation_state() -> Result<()> {
    let (mut direct, mut keyrelay) = both(TOKEN, "operation_state")?;
    let expected = [
        ("data_too_long", "CKR_DATA_LEN_RANGE"),
        ("ecdsa_on_rsa_key", "CKR_KEY_TYPE_INCONSISTENT"),
        ("invalid_key_handle", "CKR_KEY_HANDLE_INVALID"),
    ];
    for (field, code) in expected {
        assert_eq!(keyrelay[field], code, "operation_state.{field}");
        for value in [&mut direct, &mut keyrelay] {
            value.as_object_mut().map(|o| o.remove(field));
        }
    }
    let differences = differences(&direct, &keyrelay, "operation_state");
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    Ok(())
}

#[test]
fn sign_rsa_pkcs1() -> Result<()> {
    assert_same("sign_rsa_pkcs1")
}

#[test]
fn sign_rsa_pss() -> Result<()> {
    assert_same("sign_rsa_pss")
}

#[test]
fn sign_ecdsa() -> Result<()> {
    assert_same("sign_ecdsa")
}

#[test]
fn sign_eddsa() -> Result<()> {
    assert_same_on(EDWARDS_TOKEN, "sign_eddsa")
}

#[test]
fn multipart() -> Result<()> {
    assert_same("multipart")
}

#[test]
fn local_operations() -> Result<()> {
    assert_same("local_operations")
}

#[test]
fn threads() -> Result<()> {
    assert_same("threads")
}

/// keyrelay lists a subset of SoftHSM2's mechanisms, each with SoftHSM2's info.
#[test]
fn mechanism_list() -> Result<()> {
    let (direct, keyrelay) = both(TOKEN, "mechanism_list")?;
    assert_eq!(keyrelay["rv"], "CKR_OK", "{keyrelay}");
    let listed = keyrelay["mechanisms"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(!listed.is_empty(), "keyrelay lists no mechanism");
    for (mechanism, info) in &listed {
        assert_eq!(
            &direct["mechanisms"][mechanism], info,
            "mechanism {mechanism}: keyrelay's info differs from SoftHSM2's (or SoftHSM2 lacks it)"
        );
    }
    Ok(())
}

/// Codes a module may return when it refuses to create or import keys and objects.
const REFUSALS: [&str; 3] = [
    "CKR_FUNCTION_NOT_SUPPORTED",
    "CKR_ACTION_PROHIBITED",
    "CKR_TOKEN_WRITE_PROTECTED",
];

#[test]
fn object_management() -> Result<()> {
    let (direct, keyrelay) = both(TOKEN, "object_management")?;
    for operation in ["generate_key_pair", "create_object", "unwrap_key"] {
        let code = keyrelay[operation].as_str().unwrap_or_default();
        assert!(
            REFUSALS.contains(&code),
            "{operation}: keyrelay returned {code}, expected one of {REFUSALS:?}"
        );
    }
    assert_eq!(
        keyrelay["private_exponent"], direct["private_exponent"],
        "reading CKA_PRIVATE_EXPONENT"
    );
    Ok(())
}

#[test]
fn always_authenticate() -> Result<()> {
    let (direct, keyrelay) = both(TOKEN, "always_authenticate")?;
    assert_eq!(
        direct["attribute"], "01",
        "the fixture key has CKA_ALWAYS_AUTHENTICATE"
    );
    // PKCS#1 v1.5 signatures are deterministic, so the signatures must be equal too.
    let differences = differences(&direct, &keyrelay, "always_authenticate");
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    Ok(())
}

/// SoftHSM 2.6.1 cannot be re-initialised in a forked child, so keyrelay's behaviour is
/// checked against the PKCS#11 rules alone.
#[test]
fn fork() -> Result<()> {
    let keyrelay = observe(shared_env(), Backend::Keyrelay, TOKEN, "fork")?;
    assert_eq!(keyrelay["parent_before"], "CKR_OK", "{keyrelay}");
    assert_eq!(
        keyrelay["child_without_initialize"], 0,
        "a child that does not call C_Initialize gets CKR_CRYPTOKI_NOT_INITIALIZED: {keyrelay}"
    );
    assert_eq!(
        keyrelay["child_with_initialize"], 0,
        "a child that calls C_Initialize can sign: {keyrelay}"
    );
    assert_eq!(
        keyrelay["parent_after"], "CKR_OK",
        "the parent still signs: {keyrelay}"
    );
    Ok(())
}

/// Runs the `reconnect` case through keyrelay; `between` runs after the first signature.
fn reconnect(env: &mut ToolEnv, between: impl FnOnce(&mut ToolEnv) -> Result<()>) -> Result<Value> {
    let mut child = probe(env, Backend::Keyrelay, TOKEN, "reconnect")?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().context("probe stdout")?);
    let mut first = String::new();
    stdout.read_line(&mut first)?;
    assert!(
        first.contains("CKR_OK"),
        "the first signature failed: {first}"
    );
    between(env)?;
    child
        .stdin
        .take()
        .context("probe stdin")?
        .write_all(b"\n")?;
    let mut last = String::new();
    stdout.read_line(&mut last)?;
    let _ = child.wait();
    let value: Value = serde_json::from_str(&last).with_context(|| format!("{last:?}"))?;
    Ok(value["result"].clone())
}

#[test]
fn session_survives_restart() -> Result<()> {
    let mut env = ToolEnv::start(&[small_plan()])?;
    let result = reconnect(&mut env, ToolEnv::restart_server)?;
    assert_eq!(
        result["after"], "CKR_OK",
        "the session signs after a restart: {result}"
    );
    Ok(())
}

#[test]
fn server_gone_is_device_error() -> Result<()> {
    let mut env = ToolEnv::start(&[small_plan()])?;
    let result = reconnect(&mut env, ToolEnv::stop_server)?;
    let code = result["after"].as_str().unwrap_or_default();
    assert!(
        code == "CKR_DEVICE_ERROR" || code == "CKR_DEVICE_REMOVED",
        "signing without a keyserver returned {code}: {result}"
    );
    assert_eq!(
        result["within_bound"], true,
        "the failure came within 30 s: {result}"
    );
    Ok(())
}
