//! Unit tests of policy parsing and validation.

use super::*;

const VERIFIER: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

fn valid_policy() -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:4433"
certificate_chain = "tls/server-chain.pem"
private_key = "tls/server-key.pem"
audit_log = "audit.jsonl"

[tokens.demo]
module = "/usr/lib/softhsm/libsofthsm2.so"
label = "keyrelay-demo"
pin_file = "token.pin"

[keys.release-rsa]
token = "demo"
label = "rsa-signing"
environment = "release"

[keys.release-ec]
token = "demo"
id = "0a0B"
environment = "release"

[[clients]]
key_id = "kr_0123456789abcdef"
secret_sha256 = "{VERIFIER}"
keys = ["release-rsa"]
environment = "release"

[audit]
signing_key = "audit-key.pem"
"#
    )
}

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(text, Path::new("/etc/keyrelay/policy.toml"))
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Err(PolicyError::Invalid { problems, .. }) => problems,
        other => panic!("expected PolicyError::Invalid, got {other:?}"),
    }
}

#[test]
fn valid_policy_parses() {
    let policy = parse(&valid_policy()).unwrap();

    assert_eq!(policy.server.listen, "127.0.0.1:4433".parse().unwrap());
    assert_eq!(policy.server.max_input_len, DEFAULT_MAX_INPUT_LEN);
    assert_eq!(policy.server.sessions_per_token, DEFAULT_SESSIONS_PER_TOKEN);
    assert_eq!(
        policy.server.audit_log,
        Path::new("/etc/keyrelay/audit.jsonl")
    );
    let token = &policy.tokens["demo"];
    assert_eq!(token.pin, PinSource::File("/etc/keyrelay/token.pin".into()));
    assert_eq!(token.label, "keyrelay-demo");
    assert_eq!(
        policy.keys["release-ec"].locator,
        KeyLocator::Id(vec![0x0a, 0x0b])
    );
    let client = &policy.clients[0];
    assert_eq!(client.verifier.to_hex(), VERIFIER);
    assert!(client.keys.contains("release-rsa"));
}

#[test]
fn optional_server_settings_read() {
    let text = valid_policy().replace(
        "audit_log = \"audit.jsonl\"\n",
        "audit_log = \"audit.jsonl\"\nmax_input_len = 512\nsessions_per_token = 2\n",
    );

    let policy = parse(&text).unwrap();

    assert_eq!(policy.server.max_input_len, 512);
    assert_eq!(policy.server.sessions_per_token, 2);
}

#[test]
fn unknown_field_named_with_line() {
    let text = valid_policy().replace("label = \"rsa-signing\"", "lable = \"rsa-signing\"");

    let err = parse(&text).unwrap_err();

    let PolicyError::Syntax { line, message, .. } = &err else {
        panic!("expected PolicyError::Syntax, got {err:?}");
    };
    assert_eq!(*line, 14);
    assert!(message.contains("lable"), "{message}");
    assert!(err.to_string().contains("policy.toml:14:"), "{err}");
}

#[test]
fn missing_field_named() {
    let text = valid_policy().replace("audit_log = \"audit.jsonl\"\n", "");

    let err = parse(&text).unwrap_err().to_string();

    assert!(err.contains("audit_log"), "{err}");
}

#[test]
fn dangling_client_key_named_with_line() {
    let text = valid_policy().replace("keys = [\"release-rsa\"]", "keys = [\"release-dsa\"]");

    let problems = problems(&text);

    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, 25);
    assert_eq!(problems[0].field, "clients[0].keys");
    assert!(problems[0].message.contains("release-dsa"));
}

#[test]
fn dangling_key_token_named_with_line() {
    let text = valid_policy().replace("token = \"demo\"\nid", "token = \"dmeo\"\nid");

    let problems = problems(&text);

    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, 18);
    assert_eq!(problems[0].field, "keys.release-ec.token");
}

#[test]
fn pin_file_and_pin_env_both_rejected() {
    let text = valid_policy().replace(
        "pin_file = \"token.pin\"",
        "pin_file = \"token.pin\"\npin_env = \"DEMO_PIN\"",
    );

    let problems = problems(&text);

    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "tokens.demo.pin_env");
    assert_eq!(problems[0].line, 11);
}

#[test]
fn pin_source_missing_rejected() {
    let text = valid_policy().replace("pin_file = \"token.pin\"\n", "");

    let problems = problems(&text);

    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "tokens.demo");
    assert_eq!(problems[0].line, 7);
}

#[test]
fn pin_env_accepted() {
    let text = valid_policy().replace("pin_file = \"token.pin\"", "pin_env = \"DEMO_PIN\"");

    let policy = parse(&text).unwrap();

    assert_eq!(policy.tokens["demo"].pin, PinSource::Env("DEMO_PIN".into()));
}

#[test]
fn key_label_and_id_both_rejected() {
    let text = valid_policy().replace("label = \"rsa-signing\"", "label = \"rsa\"\nid = \"01\"");

    let problems = problems(&text);

    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "keys.release-rsa.id");
}

#[test]
fn key_bad_hex_id_rejected() {
    let text = valid_policy().replace("id = \"0a0B\"", "id = \"0a0\"");

    let problems = problems(&text);

    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "keys.release-ec.id");
    assert_eq!(problems[0].line, 19);
}

#[test]
fn bad_verifier_hex_rejected() {
    let text = valid_policy().replace(VERIFIER, "not-hex");

    let problems = problems(&text);

    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "clients[0].secret_sha256");
    assert_eq!(problems[0].line, 24);
}

#[test]
fn duplicate_key_id_rejected() {
    let client = format!(
        "\n[[clients]]\nkey_id = \"kr_0123456789abcdef\"\nsecret_sha256 = \"{VERIFIER}\"\n\
         keys = [\"release-ec\"]\nenvironment = \"release\"\n"
    );
    let text = valid_policy() + &client;

    let problems = problems(&text);

    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "clients[1].key_id");
    assert_eq!(problems[0].line, 32);
}

#[test]
fn out_of_range_setting_rejected() {
    let text = valid_policy().replace(
        "audit_log = \"audit.jsonl\"\n",
        "audit_log = \"audit.jsonl\"\nsessions_per_token = 0\n",
    );

    let problems = problems(&text);

    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "server.sessions_per_token");
    assert_eq!(problems[0].line, 6);
}

#[test]
fn several_problems_all_reported() {
    let text = valid_policy()
        .replace("id = \"0a0B\"", "id = \"xyz\"")
        .replace("keys = [\"release-rsa\"]", "keys = [\"nothing\"]");

    let problems = problems(&text);

    assert_eq!(problems.len(), 2);
    assert!(problems[0].line < problems[1].line);
}

/// Finds two token names of the form `tNNN` whose slot ids collide.
fn colliding_token_names() -> (String, String) {
    let mut seen = HashMap::new();
    for i in 0.. {
        let name = format!("t{i}");
        if let Some(other) = seen.insert(slot_id_for_token(&name), name.clone()) {
            return (other, name);
        }
    }
    unreachable!("the slot id space is finite")
}

#[test]
fn slot_id_collision_rejected() {
    let (first, second) = colliding_token_names();
    let tokens = format!(
        "[tokens.{first}]\nmodule = \"m.so\"\nlabel = \"a\"\npin_env = \"P\"\n\n\
         [tokens.{second}]\nmodule = \"m.so\"\nlabel = \"b\"\npin_env = \"P\"\n\n[keys"
    );
    let text = valid_policy().replacen("[keys", &tokens, 1);

    let problems = problems(&text);

    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].message.contains("same slot id"));
}

#[test]
fn relative_module_resolved_bare_name_kept() {
    let text = valid_policy().replace("/usr/lib/softhsm/libsofthsm2.so", "libsofthsm2.so");
    let policy = parse(&text).unwrap();
    assert_eq!(policy.tokens["demo"].module, Path::new("libsofthsm2.so"));

    let text = valid_policy().replace("/usr/lib/softhsm/libsofthsm2.so", "lib/p11.so");
    let policy = parse(&text).unwrap();
    assert_eq!(
        policy.tokens["demo"].module,
        Path::new("/etc/keyrelay/lib/p11.so")
    );
}

#[test]
fn line_and_column_counts_from_one() {
    assert_eq!(line_and_column("ab\ncd", 0), (1, 1));
    assert_eq!(line_and_column("ab\ncd", 4), (2, 2));
}

#[test]
fn environment_mixing_names_both() {
    let text = valid_policy().replace(
        "keys = [\"release-rsa\"]\nenvironment = \"release\"",
        "keys = [\"release-rsa\"]\nenvironment = \"test\"",
    );

    let problems = problems(&text);

    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field, "clients[0].keys");
    assert!(
        problems[0].message.contains("\"test\""),
        "{}",
        problems[0].message
    );
    assert!(
        problems[0].message.contains("\"release\""),
        "{}",
        problems[0].message
    );
}

#[test]
fn access_rules_parse() {
    let text = valid_policy().replace(
        "environment = \"release\"\n\n[keys.release-ec]",
        "environment = \"release\"\nmechanisms = [\"CKM_RSA_PKCS_PSS\"]\n\
         digests = [\"sha256\", \"sha384\"]\nnot_after = 2027-01-31T00:00:00Z\n\
         networks = [\"10.1.0.0/16\", \"192.0.2.7\"]\n\
         signatures_per_minute = 10\nsignatures_per_day = 500\n\n[keys.release-ec]",
    );

    let policy = parse(&text).unwrap();

    let rules = &policy.keys["release-rsa"].rules;
    assert_eq!(
        rules.mechanisms,
        Some([cryptoki_sys::CKM_RSA_PKCS_PSS].into())
    );
    assert!(rules.allows_digest(DigestAlgorithm::Sha384));
    assert!(!rules.allows_digest(DigestAlgorithm::Sha1));
    assert!(rules.allows_address("10.1.200.3".parse().unwrap()));
    assert!(!rules.allows_address("10.2.0.1".parse().unwrap()));
    assert_eq!(rules.quota.per_minute, Some(10));
    assert_eq!(rules.quota.per_day, Some(500));
    assert!(rules.not_after.is_some());
}

#[test]
fn bad_rules_each_reported() {
    let text = valid_policy().replace(
        "environment = \"release\"\n\n[keys.release-ec]",
        "environment = \"release\"\nmechanisms = [\"CKM_RSA_X\"]\ndigests = [\"md5\"]\n\
         not_before = 2027-01-31\nnetworks = [\"10.1.0.0/33\"]\nsignatures_per_day = 0\n\
         \n[keys.release-ec]",
    );

    let problems = problems(&text);

    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "keys.release-rsa.mechanisms",
            "keys.release-rsa.digests",
            "keys.release-rsa.not_before",
            "keys.release-rsa.networks",
            "keys.release-rsa.signatures_per_day",
        ]
    );
}

#[test]
fn listen_without_port_shows_expected_form() {
    let text = valid_policy().replace("\"127.0.0.1:4433\"", "\"127.0.0.1\"");

    let error = parse(&text).unwrap_err().to_string();

    assert!(error.contains("expected IP:PORT"), "{error}");
    assert!(error.contains(":2:"), "the line is named: {error}");
}

#[test]
fn unknown_client_environment_suggests_typo() {
    let text = valid_policy().replace(
        "keys = [\"release-rsa\"]\nenvironment = \"release\"",
        "keys = [\"release-rsa\"]\nenvironment = \"relaese\"",
    );

    let problems = problems(&text);

    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].message.contains("check it for a typo"),
        "{problems:?}"
    );
}
