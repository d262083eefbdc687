//! Unit tests of the audit log: record shape, chaining, recovery, rotation, verify and find.

use std::os::unix::fs::PermissionsExt;

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
    settings: AuditSettings,
}

impl Fixture {
    fn new(max_file_bytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let signing_key = dir.path().join("audit-key.pem");
        generate_key(&signing_key, &dir.path().join("audit-key.pub")).unwrap();
        let settings = AuditSettings {
            signing_key,
            anchor_interval_seconds: 3600,
            max_file_bytes,
        };
        Self { dir, settings }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    fn open(&self) -> AuditLog {
        AuditLog::open(&self.path(), &self.settings, "policyhash").unwrap()
    }

    fn public_key(&self) -> Vec<u8> {
        load_public_key(&self.dir.path().join("audit-key.pub")).unwrap()
    }

    fn verify(&self) -> Result<VerifyReport, AuditError> {
        verify(&chain_files(&self.path()).unwrap(), &self.public_key())
    }
}

fn sign_record() -> AuditRecord {
    let client = "127.0.0.1:50000".parse().unwrap();
    let mut record = AuditRecord::new(AuditEvent::Sign, "kr_0123456789abcdef", client);
    record.token = Some("demo".into());
    record.key = Some("release-rsa".into());
    record.mechanism = Some(mechanism_name(cryptoki_sys::CKM_SHA256_RSA_PKCS));
    record.input = Some(InputKind::Digest);
    record.data_sha256 = Some(sha256_hex(b"digest"));
    record.signature_sha256 = Some(sha256_hex(b"signature"));
    record.latency_us = 1234;
    record
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn record_json_shape() {
    let value = serde_json::to_value(sign_record()).unwrap();

    assert_eq!(value["event"], "sign");
    assert_eq!(value["input"], "digest");
    assert_eq!(value["result"], "ok");
    assert_eq!(value["mechanism"], "CKM_SHA256_RSA_PKCS");
    assert_eq!(value["client"], "127.0.0.1:50000");
    assert_eq!(value["reason"], serde_json::Value::Null);
    assert_eq!(value["latency_us"], 1234);
    assert!(value.get("seq").is_some());
    assert!(value.get("prev_sha256").is_some());
    assert!(value.get("certificate_sha256").is_some());
    assert!(value.get("caller").is_some());
}

#[test]
fn time_format_has_microseconds() {
    let time = now_rfc3339();

    assert_eq!(time.len(), "2026-12-04T16:30:00.123456Z".len(), "{time}");
    assert!(time.ends_with('Z'));
    assert_eq!(&time[10..11], "T");
    assert_eq!(&time[19..20], ".");
}

#[test]
fn mechanism_name_known_and_unknown() {
    assert_eq!(mechanism_name(cryptoki_sys::CKM_ECDSA), "CKM_ECDSA");
    assert_eq!(mechanism_name(0x8000_1234), "0x80001234");
}

#[test]
fn pss_parameter_named() {
    let parameter = keyrelay_protocol::MechanismParameter::RsaPss {
        hash: cryptoki_sys::CKM_SHA256,
        mgf: cryptoki_sys::CKG_MGF1_SHA256,
        salt_len: 32,
    };

    let value = parameter_json(&parameter).unwrap();

    assert_eq!(value["hash"], "CKM_SHA256");
    assert_eq!(value["mgf"], "CKG_MGF1_SHA256");
    assert_eq!(value["salt_len"], 32);
}

#[test]
fn log_chains_records_with_mode_0600() {
    let fixture = Fixture::new(1 << 20);
    let log = fixture.open();

    log.anchor("start", None).unwrap();
    log.write(&sign_record()).unwrap();
    log.write(&sign_record()).unwrap();

    let records = lines(&fixture.path());
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["prev_sha256"], GENESIS_SHA256);
    assert_eq!(records[2]["seq"], 2);
    let mode = std::fs::metadata(fixture.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let report = fixture.verify().unwrap();
    assert_eq!(report.records, 3);
    assert_eq!(report.anchors, 1);
    assert_eq!(report.unanchored, 2);
}

#[test]
fn reopen_continues_chain() {
    let fixture = Fixture::new(1 << 20);
    fixture.open().write(&sign_record()).unwrap();

    fixture.open().write(&sign_record()).unwrap();

    assert_eq!(lines(&fixture.path())[1]["seq"], 1);
    assert!(fixture.verify().is_ok());
}

#[test]
fn reopen_cuts_partial_line() {
    let fixture = Fixture::new(1 << 20);
    fixture.open().write(&sign_record()).unwrap();
    let mut file = OpenOptions::new()
        .append(true)
        .open(fixture.path())
        .unwrap();
    file.write_all(b"{\"time\":\"2026").unwrap();

    fixture.open().write(&sign_record()).unwrap();

    assert_eq!(lines(&fixture.path()).len(), 2);
    assert!(fixture.verify().is_ok());
}

#[test]
fn edited_record_detected_at_its_line() {
    let fixture = Fixture::new(1 << 20);
    let log = fixture.open();
    for _ in 0..3 {
        log.write(&sign_record()).unwrap();
    }
    let text = std::fs::read_to_string(fixture.path()).unwrap();
    let edited: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 1 {
                l.replace("release-rsa", "release-ec")
            } else {
                l.into()
            }
        })
        .collect();
    std::fs::write(fixture.path(), edited.join("\n") + "\n").unwrap();

    let error = fixture.verify().unwrap_err();

    let AuditError::Corrupt { line, message, .. } = &error else {
        panic!("expected a corrupt chain, got {error}");
    };
    assert_eq!(*line, 2, "{message}");
    assert!(message.contains("record 1 was changed"), "{message}");
}

#[test]
fn removed_record_detected() {
    let fixture = Fixture::new(1 << 20);
    let log = fixture.open();
    for _ in 0..3 {
        log.write(&sign_record()).unwrap();
    }
    let text = std::fs::read_to_string(fixture.path()).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| l)
        .collect();
    std::fs::write(fixture.path(), kept.join("\n") + "\n").unwrap();

    let error = fixture.verify().unwrap_err().to_string();

    assert!(error.contains("sequence number 2 follows 0"), "{error}");
}

#[test]
fn anchor_from_other_key_rejected() {
    let fixture = Fixture::new(1 << 20);
    fixture.open().anchor("start", None).unwrap();
    let other = Fixture::new(1 << 20);

    let error = verify(&[fixture.path()], &other.public_key()).unwrap_err();

    assert!(
        error.to_string().contains("not by the audit key given"),
        "{error}"
    );
}

#[test]
fn rotation_keeps_chain_verifiable() {
    let fixture = Fixture::new(4096);
    let log = fixture.open();

    for _ in 0..40 {
        log.write(&sign_record()).unwrap();
    }

    let files = chain_files(&fixture.path()).unwrap();
    assert!(files.len() >= 3, "{files:?}");
    assert_eq!(lines(files.last().unwrap())[0]["anchor"]["cause"], "rotate");
    let report = fixture.verify().unwrap();
    assert_eq!(report.files, files.len());
    assert_eq!(report.first_seq, 0);
    assert!(report.anchors >= 2);
}

#[test]
fn find_by_signature_and_digest() {
    let fixture = Fixture::new(1 << 20);
    let log = fixture.open();
    log.write(&sign_record()).unwrap();
    let files = [fixture.path()];

    let by_signature = find(&files, &FindQuery::Signature(b"signature".to_vec())).unwrap();
    let by_digest = find(&files, &FindQuery::Digest(b"digest".to_vec())).unwrap();
    let missing = find(&files, &FindQuery::Digest(vec![1; 32])).unwrap();

    assert_eq!(by_signature.len(), 1);
    assert_eq!(by_signature[0].line, 1);
    assert_eq!(by_digest.len(), 1);
    assert!(missing.is_empty());
}

#[test]
fn log_record_never_holds_secret() {
    let secret = "3f1c5a0e9b7d2468ace013579bdf2468ace013579bdf2468ace013579bdf2468";
    let client = "127.0.0.1:1".parse().unwrap();
    let record = AuditRecord::new(AuditEvent::Authenticate, "kr_0123456789abcdef", client);

    let line = serde_json::to_string(&record).unwrap();

    assert!(!line.contains(secret));
    assert!(!line.contains("secret"));
}

#[test]
fn log_open_missing_folder_names_path() {
    let fixture = Fixture::new(1 << 20);
    let path = Path::new("/nonexistent/keyrelay/audit.jsonl");

    let err = AuditLog::open(path, &fixture.settings, "").unwrap_err();

    assert!(
        err.to_string()
            .contains("/nonexistent/keyrelay/audit.jsonl")
    );
}
