//! Throwaway SoftHSM2 tokens with key pairs and code-signing certificates.
//!
//! A fixture folder has this layout:
//!
//! ```text
//! softhsm2.conf      SoftHSM2 configuration, with tokendir = tokens/
//! tokens/            SoftHSM2 token store (file backend)
//! user.pin           user PIN, no trailing newline, mode 0600
//! ca.pem             test CA certificate
//! ca-key.pem         test CA private key (PKCS#8), mode 0600
//! certs/LABEL.pem    certificate of key LABEL (PEM)
//! certs/LABEL.der    certificate of key LABEL (DER)
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use tempfile::TempDir;

use crate::ca::TestCa;
use crate::files::{create_dir, prepare_empty_dir, random_hex, write_file, write_private_file};
use crate::listing::{ListedObject, parse_object_listing};
use crate::pubkey::read_public_key_spki;
use crate::spec::{KeyKind, KeySpec, validate_key_specs, validate_token_label};
use crate::tools::{SOFTHSM2_UTIL, TokenTarget, ToolCommand, softhsm_module};

/// File name of the fixture's SoftHSM2 configuration.
pub const SOFTHSM2_CONF_FILE: &str = "softhsm2.conf";

/// Folder name of the fixture's SoftHSM2 token store.
pub const TOKEN_DIR: &str = "tokens";

/// File name of the user PIN file.
pub const USER_PIN_FILE: &str = "user.pin";

/// File name of the test CA certificate (PEM).
pub const CA_CERTIFICATE_FILE: &str = "ca.pem";

/// File name of the test CA private key (PKCS#8 PEM).
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// Folder name of the key certificates.
pub const CERTS_DIR: &str = "certs";

/// Random bytes per PIN. The hex PIN is twice as long.
const PIN_BYTES: usize = 16;

/// A key pair on a fixture token, with its certificate from the fixture's test CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixtureKey {
    label: String,
    id: Vec<u8>,
    kind: KeyKind,
    public_key_spki_der: Vec<u8>,
    certificate_der: Vec<u8>,
    certificate_pem_path: PathBuf,
    certificate_der_path: PathBuf,
}

impl FixtureKey {
    /// Returns the CKA_LABEL shared by the private key, public key and certificate.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Returns the CKA_ID shared by the private key, public key and certificate.
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    /// Returns the CKA_ID as lowercase hex.
    pub fn id_hex(&self) -> String {
        hex::encode(&self.id)
    }

    /// Returns the key type and size.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Returns the public key as DER SubjectPublicKeyInfo, as read from the token.
    pub fn public_key_spki_der(&self) -> &[u8] {
        &self.public_key_spki_der
    }

    /// Returns the DER certificate, which is also stored on the token.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// Returns the path of the certificate in PEM.
    pub fn certificate_pem_path(&self) -> &Path {
        &self.certificate_pem_path
    }

    /// Returns the path of the certificate in DER.
    pub fn certificate_der_path(&self) -> &Path {
        &self.certificate_der_path
    }
}

/// A SoftHSM2 token in its own folder, with key pairs and certificates from a test CA.
///
/// The token has a random user PIN and SO PIN. Generated private keys keep SoftHSM 2.6.1's
/// defaults, so besides CKA_SIGN they also allow CKA_DECRYPT and CKA_UNWRAP (and CKA_DERIVE for
/// EC keys). Each public key, private key and certificate has its [`KeySpec`]'s CKA_LABEL and
/// CKA_ID. Certificates are public token objects, readable without logging in.
///
/// The `Debug` output never shows the PINs.
pub struct TokenFixture {
    dir: PathBuf,
    target: TokenTarget,
    user_pin: String,
    so_pin: String,
    user_pin_file: PathBuf,
    ca_certificate_pem: PathBuf,
    keys: Vec<FixtureKey>,
    /// Deletes the folder on drop when the fixture was made by
    /// [`TokenFixture::create_temporary`]. Declared last so that it is dropped last.
    temp_dir: Option<TempDir>,
}

impl fmt::Debug for TokenFixture {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<&str> = self.keys.iter().map(FixtureKey::label).collect();
        formatter
            .debug_struct("TokenFixture")
            .field("dir", &self.dir)
            .field("token_label", &self.target.token_label)
            .field("keys", &labels)
            .field("temporary", &self.temp_dir.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenFixture {
    /// Creates a token labelled `token_label` holding `keys` in `folder`.
    ///
    /// `folder` is created if needed and must be empty. Runs `softhsm2-util` and
    /// `pkcs11-tool` as child processes with `SOFTHSM2_CONF` pointing at the fixture's own
    /// configuration. The system SoftHSM2 configuration and tokens are never used.
    pub fn create(folder: &Path, token_label: &str, keys: &[KeySpec]) -> Result<Self> {
        validate_token_label(token_label)?;
        validate_key_specs(keys)?;
        let module = softhsm_module()?;
        let dir = prepare_empty_dir(folder)?;

        Self::populate(dir, module, token_label, keys).with_context(|| {
            format!(
                "failed to create SoftHSM2 token {token_label:?} in {}",
                folder.display()
            )
        })
    }

    /// Creates a token like [`TokenFixture::create`] in a new temporary folder, which is
    /// deleted when the fixture is dropped.
    pub fn create_temporary(token_label: &str, keys: &[KeySpec]) -> Result<Self> {
        let temp_dir = tempfile::Builder::new()
            .prefix("softhsm-fixture-")
            .tempdir()
            .context("failed to create a temporary folder for a SoftHSM2 token fixture")?;
        let mut fixture = Self::create(temp_dir.path(), token_label, keys)?;
        fixture.temp_dir = Some(temp_dir);
        Ok(fixture)
    }

    fn populate(
        dir: PathBuf,
        module: PathBuf,
        token_label: &str,
        specs: &[KeySpec],
    ) -> Result<Self> {
        let conf = write_softhsm_conf(&dir)?;
        let target = TokenTarget {
            module,
            conf,
            token_label: token_label.to_owned(),
        };

        let user_pin = random_hex(PIN_BYTES)?;
        let so_pin = random_hex(PIN_BYTES)?;
        let user_pin_file = dir.join(USER_PIN_FILE);
        write_private_file(&user_pin_file, user_pin.as_bytes())?;
        init_token(&target, &user_pin, &so_pin)?;

        let (ca, ca_certificate_pem) = create_test_ca(&dir, token_label)?;

        let certs_dir = dir.join(CERTS_DIR);
        create_dir(&certs_dir)?;
        let mut keys = Vec::with_capacity(specs.len());
        for spec in specs {
            let key = add_key(&target, &user_pin, &ca, &certs_dir, spec)
                .with_context(|| format!("failed to add key {:?}", spec.label))?;
            keys.push(key);
        }

        let temp_dir = None;
        Ok(Self {
            dir,
            target,
            user_pin,
            so_pin,
            user_pin_file,
            ca_certificate_pem,
            keys,
            temp_dir,
        })
    }

    /// Returns the fixture folder (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the fixture's SoftHSM2 configuration file, the value for `SOFTHSM2_CONF`.
    pub fn softhsm2_conf(&self) -> &Path {
        &self.target.conf
    }

    /// Returns the SoftHSM2 PKCS#11 module used to create the token.
    pub fn module(&self) -> &Path {
        &self.target.module
    }

    /// Returns the token label (CKA_LABEL of the token, `--token-label` of pkcs11-tool).
    pub fn token_label(&self) -> &str {
        &self.target.token_label
    }

    /// Returns the user PIN (hex).
    pub fn user_pin(&self) -> &str {
        &self.user_pin
    }

    /// Returns the security officer PIN (hex). It is kept in memory only.
    pub fn so_pin(&self) -> &str {
        &self.so_pin
    }

    /// Returns the file that contains the user PIN without a trailing newline (mode 0600).
    pub fn user_pin_file(&self) -> &Path {
        &self.user_pin_file
    }

    /// Returns the path of the test CA certificate (PEM).
    pub fn ca_certificate_pem(&self) -> &Path {
        &self.ca_certificate_pem
    }

    /// Returns the key with CKA_LABEL `label`, if the fixture has one.
    pub fn key(&self, label: &str) -> Option<&FixtureKey> {
        self.keys.iter().find(|key| key.label == label)
    }

    /// Returns the keys in the order of the [`KeySpec`]s they were created from.
    pub fn keys(&self) -> &[FixtureKey] {
        &self.keys
    }

    /// Logs in with the user PIN and lists the token's objects with `pkcs11-tool`.
    pub fn list_objects(&self) -> Result<Vec<ListedObject>> {
        let listing = self
            .target
            .pkcs11_tool_login(&self.user_pin)
            .arg("--list-objects")
            .run_text()?;
        Ok(parse_object_listing(&listing))
    }
}

/// Writes `softhsm2.conf` and creates the token folder it names.
fn write_softhsm_conf(dir: &Path) -> Result<PathBuf> {
    let token_dir = dir.join(TOKEN_DIR);
    create_dir(&token_dir)?;

    // SoftHSM2 reads one `key = value` per line, so the path must be one line of text.
    let token_dir_text = token_dir
        .to_str()
        .filter(|text| !text.contains(['\n', '\r']))
        .ok_or_else(|| {
            anyhow!(
                "token folder {} is not one line of UTF-8: use a plainer path",
                token_dir.display()
            )
        })?;

    let conf = dir.join(SOFTHSM2_CONF_FILE);
    let contents = format!(
        "# SoftHSM2 configuration of one keyrelay test fixture.\n\
         directories.tokendir = {token_dir_text}\n\
         objectstore.backend = file\n\
         log.level = ERROR\n"
    );
    write_file(&conf, contents.as_bytes())?;
    Ok(conf)
}

/// Generates the fixture's test CA and writes its certificate and private key into `dir`.
fn create_test_ca(dir: &Path, token_label: &str) -> Result<(TestCa, PathBuf)> {
    let ca = TestCa::generate(&format!("keyrelay test CA for token {token_label}"))?;
    let certificate_path = dir.join(CA_CERTIFICATE_FILE);
    write_file(&certificate_path, ca.certificate_pem().as_bytes())?;
    write_private_file(&dir.join(CA_KEY_FILE), ca.key_pem().as_bytes())?;
    Ok((ca, certificate_path))
}

fn init_token(target: &TokenTarget, user_pin: &str, so_pin: &str) -> Result<()> {
    ToolCommand::new(SOFTHSM2_UTIL, &target.conf)
        .arg("--init-token")
        .arg("--free")
        .arg("--label")
        .arg(&target.token_label)
        .arg("--pin")
        .secret_arg(user_pin)
        .arg("--so-pin")
        .secret_arg(so_pin)
        .run()?;
    Ok(())
}

/// Generates the key pair of `spec` on the token, issues its certificate, writes the
/// certificate files and stores the certificate on the token.
fn add_key(
    target: &TokenTarget,
    user_pin: &str,
    ca: &TestCa,
    certs_dir: &Path,
    spec: &KeySpec,
) -> Result<FixtureKey> {
    generate_key_pair(target, user_pin, spec)?;
    let public_key_spki_der = read_public_key_spki(target, spec)?;
    let certificate = ca.issue_code_signing(&public_key_spki_der, &spec.label)?;

    let certificate_pem_path = certs_dir.join(format!("{}.pem", spec.label));
    let certificate_der_path = certs_dir.join(format!("{}.der", spec.label));
    write_file(&certificate_pem_path, certificate.pem().as_bytes())?;
    write_file(&certificate_der_path, certificate.der())?;
    write_certificate(target, user_pin, spec, &certificate_der_path)?;

    Ok(FixtureKey {
        label: spec.label.clone(),
        id: spec.id.clone(),
        kind: spec.kind,
        public_key_spki_der,
        certificate_der: certificate.der().to_vec(),
        certificate_pem_path,
        certificate_der_path,
    })
}

fn generate_key_pair(target: &TokenTarget, user_pin: &str, spec: &KeySpec) -> Result<()> {
    target
        .pkcs11_tool_login(user_pin)
        .arg("--keypairgen")
        .arg("--key-type")
        .arg(spec.kind.pkcs11_tool_key_type())
        .arg("--id")
        .arg(spec.id_hex())
        .arg("--label")
        .arg(&spec.label)
        .run()?;
    Ok(())
}

fn write_certificate(
    target: &TokenTarget,
    user_pin: &str,
    spec: &KeySpec,
    der_path: &Path,
) -> Result<()> {
    target
        .pkcs11_tool_login(user_pin)
        .arg("--write-object")
        .arg(der_path)
        .arg("--type")
        .arg("cert")
        .arg("--id")
        .arg(spec.id_hex())
        .arg("--label")
        .arg(&spec.label)
        .run()?;
    Ok(())
}
