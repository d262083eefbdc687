//! End-to-end test of `keyserver serve` against a real SoftHSM2 token.
//!
//! The test creates a token in a temporary folder with `softhsm2-util` and `pkcs11-tool`,
//! starts the keyserver binary with `SOFTHSM2_CONF` pointing at that folder, and drives it
//! with a quinn client over loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki_sys::{
    CKA_CLASS, CKA_DECRYPT, CKA_EC_POINT, CKA_MODULUS, CKA_PRIVATE_EXPONENT, CKA_PUBLIC_EXPONENT,
    CKA_SENSITIVE, CKA_SIGN, CKA_VALUE, CKM_ECDSA, CKM_ECDSA_SHA256, CKM_RSA_PKCS,
    CKM_RSA_PKCS_PSS, CKM_SHA256, CKM_SHA256_RSA_PKCS, CKO_CERTIFICATE, CKO_PRIVATE_KEY,
    CKO_PUBLIC_KEY,
};
use keyrelay_protocol::{
    ALPN, AttributeValue, CallerContext, Catalogue, ErrorCode, ErrorReply, Hello, KeySecret,
    MechanismParameter, ObjectEntry, PROTOCOL_VERSION, Request, Response, SignInput, SignRequest,
    TokenEntry, decode, encode, slot_id_for_token,
};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use rustls_pki_types::CertificateDer;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN_LABEL: &str = "keyrelay-test";
const USER_PIN: &str = "246810";
const SO_PIN: &str = "13579113";
const KEY_ID: &str = "kr_00112233aabbccdd";
const KEY_SECRET: &str = "5e2b9c1f0a7d4e3b8c6a2f1e0d9c8b7a6f5e4d3c2b1a09f8e7d6c5b4a3928170";
const OTHER_KEY_ID: &str = "kr_ffeeddccbbaa9988";
const OTHER_SECRET: &str = "0000000000000000000000000000000000000000000000000000000000000001";
const MESSAGE: &[u8] = b"keyrelay end-to-end test message";

/// A temporary folder holding a SoftHSM2 configuration, its token store and the policy.
struct Fixture {
    dir: tempfile::TempDir,
    certificate_der: Vec<u8>,
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn softhsm_conf(&self) -> PathBuf {
        self.path("softhsm2.conf")
    }
}

/// Runs a tool with `SOFTHSM2_CONF` set on the child, failing with the Debian package to
/// install if the tool is missing.
fn run_tool(fixture: &Fixture, program: &str, package: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .env("SOFTHSM2_CONF", fixture.softhsm_conf())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); install the Debian package {package}")
        });
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn pkcs11_tool(fixture: &Fixture, args: &[&str]) {
    let login = [
        "--module",
        MODULE,
        "--token-label",
        TOKEN_LABEL,
        "--login",
        "--pin",
        USER_PIN,
    ];
    run_tool(
        fixture,
        "pkcs11-tool",
        "opensc",
        &[&login[..], args].concat(),
    );
}

fn generate_key_pair(fixture: &Fixture, key_type: &str, label: &str, id: &str) {
    let args = [
        "--keypairgen",
        "--key-type",
        key_type,
        "--label",
        label,
        "--id",
        id,
    ];
    pkcs11_tool(fixture, &args);
}

fn create_token(fixture: &Fixture) {
    assert!(
        Path::new(MODULE).exists(),
        "{MODULE} is missing; install the Debian package softhsm2"
    );
    std::fs::create_dir(fixture.path("tokens")).unwrap();
    let conf = format!(
        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
        fixture.path("tokens").display()
    );
    std::fs::write(fixture.softhsm_conf(), conf).unwrap();

    let label = ["--label", TOKEN_LABEL];
    let pins = ["--so-pin", SO_PIN, "--pin", USER_PIN];
    let init = [&["--init-token", "--free"][..], &label, &pins].concat();
    run_tool(fixture, "softhsm2-util", "softhsm2", &init);

    generate_key_pair(fixture, "rsa:2048", "rsa-signing", "01");
    generate_key_pair(fixture, "EC:prime256v1", "ec-signing", "02");
    generate_key_pair(fixture, "EC:prime256v1", "other-ec", "03");

    // A certificate sharing the EC key's CKA_ID. Its public key is the TLS test key, not the
    // token's, so it only checks that the catalogue carries the certificate object.
    let der = fixture.path("ec-cert.der");
    std::fs::write(&der, &fixture.certificate_der).unwrap();
    let der = der.to_str().unwrap();
    let write = ["--write-object", der, "--type", "cert"];
    pkcs11_tool(
        fixture,
        &[&write[..], &["--id", "02", "--label", "ec-cert"]].concat(),
    );
}

fn write_tls_and_policy(fixture: &mut Fixture) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    fixture.certificate_der = certified.cert.der().to_vec();
    std::fs::write(fixture.path("server-chain.pem"), certified.cert.pem()).unwrap();
    std::fs::write(
        fixture.path("server-key.pem"),
        certified.signing_key.serialize_pem(),
    )
    .unwrap();
    std::fs::write(fixture.path("token.pin"), format!("{USER_PIN}\n")).unwrap();
    keyserver::audit::generate_key(
        &fixture.path("audit-key.pem"),
        &fixture.path("audit-key.pub"),
    )
    .unwrap();
    std::fs::write(fixture.path("policy.toml"), policy_text()).unwrap();
}

fn verifier(secret: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        secret.as_bytes(),
    ))
}

fn policy_text() -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
certificate_chain = "server-chain.pem"
private_key = "server-key.pem"
audit_log = "audit.jsonl"
max_input_len = 1024

[tokens.test]
module = "{MODULE}"
label = "{TOKEN_LABEL}"
pin_file = "token.pin"

[keys.release-rsa]
token = "test"
label = "rsa-signing"
environment = "test"

[keys.release-ec]
token = "test"
id = "02"
environment = "test"

[keys.other]
token = "test"
label = "other-ec"
environment = "test"

[[clients]]
key_id = "{KEY_ID}"
secret_sha256 = "{}"
keys = ["release-rsa", "release-ec"]
environment = "test"

[[clients]]
key_id = "{OTHER_KEY_ID}"
secret_sha256 = "{}"
keys = ["other"]
environment = "test"

[audit]
signing_key = "audit-key.pem"
"#,
        verifier(KEY_SECRET),
        verifier(OTHER_SECRET)
    )
}

fn keyserver(fixture: &Fixture, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyserver"));
    command
        .args(args)
        .env("SOFTHSM2_CONF", fixture.softhsm_conf())
        .env("RUST_LOG", "info");
    command
}

/// The keyserver child process, killed if the test fails before stopping it.
struct Server {
    child: Child,
    address: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(fixture: &Fixture) -> Server {
    let policy = fixture.path("policy.toml");
    let ready = fixture.path("ready");
    let args = [
        "serve",
        "--config",
        policy.to_str().unwrap(),
        "--ready-file",
        ready.to_str().unwrap(),
    ];
    let child = keyserver(fixture, &args)
        .spawn()
        .expect("the keyserver binary starts");
    let mut server = Server {
        child,
        address: "0.0.0.0:0".parse().unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("keyserver exited before it was ready: {status}");
        }
        assert!(Instant::now() < deadline, "keyserver not ready after 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.address = std::fs::read_to_string(&ready).unwrap().parse().unwrap();
    server
}

fn stop_server(mut server: Server) -> ExitStatus {
    let pid = server.child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(
        kill.expect("kill runs; install the Debian package procps")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "keyserver still running 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client_endpoint(certificate_der: &[u8]) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(certificate_der.to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

async fn exchange(connection: &quinn::Connection, request: &Request) -> Response {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&encode(request).unwrap()).await.unwrap();
    send.finish().unwrap();
    let bytes = recv
        .read_to_end(keyrelay_protocol::MAX_MESSAGE_LEN)
        .await
        .unwrap();
    decode(&bytes).unwrap()
}

fn hello(key_id: &str, secret: &str) -> Request {
    Request::Hello(Hello {
        version: PROTOCOL_VERSION,
        key_id: key_id.to_owned(),
        key_secret: KeySecret::new(secret.as_bytes().to_vec()),
        caller: CallerContext::default(),
    })
}

fn sign(key_name: &str, mechanism: u64, input: SignInput) -> Request {
    Request::Sign(SignRequest {
        key_name: key_name.to_owned(),
        mechanism,
        parameter: MechanismParameter::None,
        input,
    })
}

fn error_reply(response: Response) -> ErrorReply {
    match response {
        Response::Error(reply) => reply,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

fn signature_bytes(response: Response) -> Vec<u8> {
    match response {
        Response::Signature(bytes) => bytes,
        other => panic!("expected a signature, got {other:?}"),
    }
}

fn bytes(object: &ObjectEntry, kind: u64) -> Vec<u8> {
    match object.attribute(kind) {
        Some(AttributeValue::Bytes(bytes)) => bytes.clone(),
        other => panic!("attribute {kind:#x} of {} is {other:?}", object.key_name),
    }
}

fn object(token: &TokenEntry, key_name: &str, class: u64) -> ObjectEntry {
    let found = token.objects.iter().find(|o| {
        o.key_name == key_name && o.attribute(CKA_CLASS) == Some(&AttributeValue::Ulong(class))
    });
    found
        .unwrap_or_else(|| panic!("no object of class {class:#x} for {key_name}"))
        .clone()
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// Returns the uncompressed point inside the DER OCTET STRING of CKA_EC_POINT.
fn ec_point(public_key: &ObjectEntry) -> Vec<u8> {
    let der = bytes(public_key, CKA_EC_POINT);
    assert_eq!(der[0], 0x04, "CKA_EC_POINT is a DER OCTET STRING");
    assert_eq!(usize::from(der[1]), der.len() - 2);
    der[2..].to_vec()
}

fn check_catalogue(catalogue: &Catalogue) {
    assert_eq!(catalogue.max_input_len, 1024);
    assert_eq!(catalogue.tokens.len(), 1);
    let token = &catalogue.tokens[0];
    assert_eq!(token.name, "test");
    assert_eq!(token.slot_id, slot_id_for_token("test"));
    assert_eq!(token.manufacturer, "SoftHSM project");

    let mut names: Vec<&str> = token.objects.iter().map(|o| o.key_name.as_str()).collect();
    names.dedup();
    assert_eq!(
        names,
        ["release-ec", "release-rsa"],
        "only allowed keys are listed"
    );
    assert_eq!(token.objects.len(), 5, "two key pairs and one certificate");

    // SoftHSM 2.6 has no hash-and-ECDSA mechanisms, so the intersection lacks them.
    let mechanisms: Vec<u64> = token.mechanisms.iter().map(|m| m.mechanism).collect();
    for expected in [
        CKM_RSA_PKCS,
        CKM_SHA256_RSA_PKCS,
        CKM_RSA_PKCS_PSS,
        CKM_ECDSA,
        CKM_SHA256,
    ] {
        assert!(
            mechanisms.contains(&expected),
            "{expected:#x} in {mechanisms:x?}"
        );
    }
    assert!(!mechanisms.contains(&CKM_ECDSA_SHA256), "{mechanisms:x?}");
    let private = object(token, "release-rsa", CKO_PRIVATE_KEY);
    assert_eq!(
        private.attribute(CKA_SIGN),
        Some(&AttributeValue::Bool(true))
    );
    assert_eq!(
        private.attribute(CKA_DECRYPT),
        Some(&AttributeValue::Bool(false))
    );
    assert_eq!(
        private.attribute(CKA_SENSITIVE),
        Some(&AttributeValue::Bool(true))
    );
    assert_eq!(private.attribute(CKA_PRIVATE_EXPONENT), None);

    let certificate = object(token, "release-ec", CKO_CERTIFICATE);
    assert!(!bytes(&certificate, CKA_VALUE).is_empty());
}

async fn check_rejected_hellos(endpoint: &quinn::Endpoint, address: SocketAddr) -> String {
    let wrong = SECRET_WITH_ONE_DIGIT_CHANGED;
    let connection = endpoint
        .connect(address, "localhost")
        .unwrap()
        .await
        .unwrap();
    let reply = error_reply(exchange(&connection, &hello(KEY_ID, wrong)).await);
    assert_eq!(reply.code, ErrorCode::AUTHENTICATION_FAILED);
    let connection = endpoint
        .connect(address, "localhost")
        .unwrap()
        .await
        .unwrap();
    let unknown =
        error_reply(exchange(&connection, &hello("kr_0000000000000000", KEY_SECRET)).await);
    assert_eq!(unknown.code, ErrorCode::AUTHENTICATION_FAILED);
    assert_eq!(
        unknown.message, reply.message,
        "both failures read the same"
    );
    reply.message
}

const SECRET_WITH_ONE_DIGIT_CHANGED: &str =
    "5e2b9c1f0a7d4e3b8c6a2f1e0d9c8b7a6f5e4d3c2b1a09f8e7d6c5b4a3928171";

async fn check_rsa_signatures(connection: &quinn::Connection, token: &TokenEntry) {
    let public = object(token, "release-rsa", CKO_PUBLIC_KEY);
    let n = bytes(&public, CKA_MODULUS);
    let e = bytes(&public, CKA_PUBLIC_EXPONENT);
    let key = RsaPublicKeyComponents { n: &n, e: &e };
    let digest_info = [
        &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ][..],
        &sha256(MESSAGE),
    ]
    .concat();
    let raw = sign("release-rsa", CKM_RSA_PKCS, SignInput::Data(digest_info));
    let raw = signature_bytes(exchange(connection, &raw).await);
    key.verify(&signature::RSA_PKCS1_2048_8192_SHA256, MESSAGE, &raw)
        .expect("CKM_RSA_PKCS signature over the DigestInfo verifies");
    let hashed = sign(
        "release-rsa",
        CKM_SHA256_RSA_PKCS,
        SignInput::Digest(sha256(MESSAGE)),
    );
    let hashed = signature_bytes(exchange(connection, &hashed).await);
    key.verify(&signature::RSA_PKCS1_2048_8192_SHA256, MESSAGE, &hashed)
        .expect("CKM_SHA256_RSA_PKCS signature verifies");
    assert_eq!(raw, hashed, "PKCS#1 v1.5 signatures are deterministic");
}

async fn check_ec_signatures(connection: &quinn::Connection, token: &TokenEntry) {
    let public = object(token, "release-ec", CKO_PUBLIC_KEY);
    let key = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, ec_point(&public));
    let hashed = sign(
        "release-ec",
        CKM_ECDSA_SHA256,
        SignInput::Digest(sha256(MESSAGE)),
    );
    let reply = error_reply(exchange(connection, &hashed).await);
    assert_eq!(
        reply.code,
        ErrorCode::MECHANISM_INVALID,
        "the backend lacks CKM_ECDSA_SHA256"
    );
    let raw = sign("release-ec", CKM_ECDSA, SignInput::Data(sha256(MESSAGE)));
    let raw = signature_bytes(exchange(connection, &raw).await);
    assert_eq!(raw.len(), 64, "raw r||s for P-256");
    key.verify(MESSAGE, &raw)
        .expect("CKM_ECDSA signature over the hash verifies");
}

async fn check_rejected_requests(connection: &quinn::Connection) {
    let digest = || SignInput::Digest(sha256(MESSAGE));
    let cases = [
        (
            sign("other", CKM_ECDSA, digest()),
            ErrorCode::KEY_NOT_ALLOWED,
        ),
        (
            sign("no-such-key", CKM_ECDSA, digest()),
            ErrorCode::KEY_NOT_ALLOWED,
        ),
        (
            sign("release-ec", CKM_SHA256_RSA_PKCS, digest()),
            ErrorCode::MECHANISM_INVALID,
        ),
        (
            sign("release-ec", CKM_ECDSA, digest()),
            ErrorCode::INPUT_INVALID,
        ),
        (
            sign("release-ec", CKM_ECDSA, SignInput::Data(vec![0; 1025])),
            ErrorCode::INPUT_INVALID,
        ),
        (hello(KEY_ID, KEY_SECRET), ErrorCode::BAD_REQUEST),
    ];
    for (request, code) in cases {
        let reply = error_reply(exchange(connection, &request).await);
        assert_eq!(reply.code, code, "{request:?}: {}", reply.message);
    }
}

fn audit_records(fixture: &Fixture) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixture.path("audit.jsonl")).unwrap();
    assert!(
        !text.contains(KEY_SECRET),
        "the audit log never holds a KeySecret"
    );
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn count(records: &[serde_json::Value], event: &str, result: &str) -> usize {
    records
        .iter()
        .filter(|r| r["event"] == event && r["result"] == result)
        .count()
}

fn check_audit_log(fixture: &Fixture, auth_message: &str) {
    let records = audit_records(fixture);
    assert_eq!(count(&records, "authenticate", "refused"), 2);
    assert_eq!(count(&records, "authenticate", "ok"), 1);
    assert_eq!(count(&records, "sign", "ok"), 3);
    // The Hello on a later stream is a bad request, not a sign request, so it is not audited.
    // The CKM_ECDSA_SHA256 request is refused because the backend lacks that mechanism.
    assert_eq!(count(&records, "sign", "refused"), 6);
    let refused_auth = records.iter().find(|r| r["result"] == "refused").unwrap();
    assert_eq!(refused_auth["reason"], auth_message);
    let signed = records
        .iter()
        .find(|r| r["event"] == "sign" && r["result"] == "ok")
        .unwrap();
    assert_eq!(signed["key_id"], KEY_ID);
    assert_eq!(signed["token"], "test");
    assert_eq!(signed["mechanism"], "CKM_RSA_PKCS");
    assert_eq!(signed["input"], "data");
    assert_eq!(signed["signature_sha256"].as_str().unwrap().len(), 64);
    assert!(signed["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    let not_allowed = records.iter().find(|r| r["key"] == "other").unwrap();
    assert_eq!(not_allowed["result"], "refused");
    assert_eq!(not_allowed["signature_sha256"], serde_json::Value::Null);
}

fn check_command(fixture: &Fixture) {
    let policy = fixture.path("policy.toml");
    let output = keyserver(fixture, &["check", "--config", policy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let broken = fixture.path("broken.toml");
    let text = policy_text().replace("label = \"other-ec\"", "label = \"missing\"");
    std::fs::write(&broken, text).unwrap();
    let output = keyserver(fixture, &["check", "--config", broken.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("key other: no private key with CKA_LABEL \"missing\""),
        "{stderr}"
    );
}

/// Runs `serve` on a policy whose PIN file is missing and checks the startup failure.
fn check_startup_failure(fixture: &Fixture) {
    let policy = fixture.path("no-pin.toml");
    let text = policy_text().replace("pin_file = \"token.pin\"", "pin_file = \"absent.pin\"");
    std::fs::write(&policy, text).unwrap();

    let output = keyserver(fixture, &["serve", "--config", policy.to_str().unwrap()])
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("absent.pin"), "{stderr}");
}

/// Serves with an audit log on /dev/full, where every write fails, and checks that a Hello
/// is rejected with AUDIT_UNAVAILABLE.
async fn check_audit_unavailable(fixture: &Fixture, endpoint: &quinn::Endpoint) {
    let text = policy_text().replace("audit_log = \"audit.jsonl\"", "audit_log = \"/dev/full\"");
    std::fs::write(fixture.path("policy.toml"), text).unwrap();
    std::fs::remove_file(fixture.path("ready")).unwrap();
    let server = start_server(fixture);

    let connection = endpoint
        .connect(server.address, "localhost")
        .unwrap()
        .await
        .unwrap();
    let reply = error_reply(exchange(&connection, &hello(KEY_ID, KEY_SECRET)).await);

    assert_eq!(reply.code, ErrorCode::AUDIT_UNAVAILABLE);
    assert_eq!(stop_server(server).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_authenticates_signs_and_audits() {
    let mut fixture = Fixture {
        dir: tempfile::tempdir().unwrap(),
        certificate_der: Vec::new(),
    };
    write_tls_and_policy(&mut fixture);
    create_token(&fixture);
    check_command(&fixture);
    check_startup_failure(&fixture);
    let server = start_server(&fixture);
    let endpoint = client_endpoint(&fixture.certificate_der);

    let auth_message = check_rejected_hellos(&endpoint, server.address).await;
    let connection = endpoint
        .connect(server.address, "localhost")
        .unwrap()
        .await
        .unwrap();
    let catalogue = match exchange(&connection, &hello(KEY_ID, KEY_SECRET)).await {
        Response::Welcome(catalogue) => catalogue,
        other => panic!("expected a Welcome, got {other:?}"),
    };
    check_catalogue(&catalogue);
    check_rsa_signatures(&connection, &catalogue.tokens[0]).await;
    check_ec_signatures(&connection, &catalogue.tokens[0]).await;
    check_rejected_requests(&connection).await;
    connection.close(0u32.into(), b"done");
    endpoint.wait_idle().await;

    let status = stop_server(server);
    assert_eq!(status.code(), Some(0), "keyserver exits 0 after SIGTERM");
    check_audit_log(&fixture, &auth_message);
    check_audit_unavailable(&fixture, &endpoint).await;
}
