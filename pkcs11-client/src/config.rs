//! Client configuration: where the keyserver is, how to trust it, and the credential.
//!
//! The file is TOML, named by `KEYRELAY_CONFIG` or else [`DEFAULT_PATH`]. The environment
//! variables `KEYRELAY_KEY_ID` and `KEYRELAY_KEY_SECRET` override the credential in the file,
//! so CI systems can inject it as a secret.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keyrelay_protocol::KeySecret;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Configuration file read when `KEYRELAY_CONFIG` is not set.
pub(crate) const DEFAULT_PATH: &str = "/etc/keyrelay/client.toml";

/// The configuration file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    server: String,
    server_name: String,
    ca_certificate: PathBuf,
    key_id: Option<String>,
    key_secret: Option<String>,
    key_secret_file: Option<PathBuf>,
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_seconds: u64,
    #[serde(default = "default_timeout")]
    timeout_seconds: u64,
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_timeout() -> u64 {
    30
}

/// Settings resolved from the file and the environment.
pub(crate) struct Config {
    /// Keyserver address, `host:port`.
    pub(crate) server: String,
    /// Name the keyserver's certificate must carry.
    pub(crate) server_name: String,
    /// PEM file with the CA certificates that may issue the keyserver's certificate.
    pub(crate) ca_certificate: PathBuf,
    /// Public half of the credential.
    pub(crate) key_id: String,
    /// Secret half, if configured. Without it, the PIN given to C_Login is the KeySecret.
    pub(crate) key_secret: Option<KeySecret>,
    /// Token names presented as slots before the keyserver is asked, needed when the
    /// KeySecret only arrives with C_Login.
    pub(crate) tokens: Vec<String>,
    /// Bound on connecting and authenticating.
    pub(crate) connect_timeout: Duration,
    /// Bound on each request, signing included.
    pub(crate) timeout: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server)
            .field("server_name", &self.server_name)
            .field("ca_certificate", &self.ca_certificate)
            .field("key_id", &self.key_id)
            .field("key_secret", &self.key_secret.as_ref().map(|_| "(set)"))
            .field("tokens", &self.tokens)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Config {
    /// Loads the configuration named by the environment.
    pub(crate) fn from_env() -> Result<Self> {
        let path = std::env::var_os("KEYRELAY_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
        let key_id = std::env::var("KEYRELAY_KEY_ID").ok();
        let key_secret = std::env::var("KEYRELAY_KEY_SECRET")
            .ok()
            .map(Zeroizing::new);
        Self::load(&path, key_id, key_secret)
    }

    /// Loads `path`, with the credential overrides taken from the environment.
    fn load(
        path: &Path,
        key_id: Option<String>,
        key_secret: Option<Zeroizing<String>>,
    ) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read {}: {e}; set KEYRELAY_CONFIG to the client configuration file",
                path.display()
            ))
        })?;
        let file: File =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::resolve(file, base, key_id, key_secret)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    fn resolve(
        file: File,
        base: &Path,
        key_id: Option<String>,
        key_secret: Option<Zeroizing<String>>,
    ) -> std::result::Result<Self, String> {
        let key_id = key_id
            .or(file.key_id)
            .filter(|id| !id.is_empty())
            .ok_or("key_id is missing: set it in the file or in KEYRELAY_KEY_ID")?;
        let key_secret = match key_secret {
            Some(secret) => Some(secret),
            None => file_secret(file.key_secret, file.key_secret_file.as_deref(), base)?,
        };
        if key_secret.is_none() && file.tokens.is_empty() {
            return Err(
                "without a KeySecret, list the token names in `tokens` so the module \
                        can present slots before C_Login supplies the secret as the PIN"
                    .into(),
            );
        }
        if file.timeout_seconds == 0 || file.connect_timeout_seconds == 0 {
            return Err("timeout_seconds and connect_timeout_seconds must be at least 1".into());
        }
        Ok(Self {
            server: file.server,
            server_name: file.server_name,
            ca_certificate: base.join(file.ca_certificate),
            key_id,
            key_secret: key_secret.map(|s| KeySecret::new(s.as_bytes().to_vec())),
            tokens: file.tokens,
            connect_timeout: Duration::from_secs(file.connect_timeout_seconds),
            timeout: Duration::from_secs(file.timeout_seconds),
        })
    }
}

fn file_secret(
    inline: Option<String>,
    file: Option<&Path>,
    base: &Path,
) -> std::result::Result<Option<Zeroizing<String>>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err("set only one of key_secret and key_secret_file".into()),
        (Some(secret), None) => Ok(Some(Zeroizing::new(secret))),
        (None, Some(file)) => {
            let path = base.join(file);
            let text = fs::read_to_string(&path)
                .map_err(|e| format!("cannot read key_secret_file {}: {e}", path.display()))?;
            Ok(Some(Zeroizing::new(
                text.trim_end_matches(['\r', '\n']).to_owned(),
            )))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("client.toml");
        fs::write(&path, text).unwrap();
        path
    }

    const BASE: &str = "server = \"127.0.0.1:4433\"\nserver_name = \"localhost\"\n\
                        ca_certificate = \"ca.pem\"\nkey_id = \"kr_1\"\n";

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "keyrelay-config-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = temp_dir();
        fs::write(dir.join("secret"), "abc\n").unwrap();
        let path = write(&dir, &format!("{BASE}key_secret_file = \"secret\"\n"));
        let config = Config::load(&path, None, None).unwrap();
        assert_eq!(config.key_secret.unwrap().expose(), b"abc");
        assert_eq!(config.ca_certificate, dir.join("ca.pem"));
    }

    #[test]
    fn environment_overrides_file() {
        let dir = temp_dir();
        let path = write(&dir, &format!("{BASE}key_secret = \"file\"\n"));
        let config = Config::load(
            &path,
            Some("kr_env".into()),
            Some(Zeroizing::new("env".into())),
        )
        .unwrap();
        assert_eq!(config.key_id, "kr_env");
        assert_eq!(config.key_secret.unwrap().expose(), b"env");
    }

    #[test]
    fn pin_mode_requires_tokens() {
        let dir = temp_dir();
        let path = write(&dir, BASE);
        let error = Config::load(&path, None, None).unwrap_err().to_string();
        assert!(error.contains("tokens"), "{error}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let dir = temp_dir();
        let path = write(&dir, &format!("{BASE}tokens = [\"t\"]\nsecret = \"x\"\n"));
        let error = Config::load(&path, None, None).unwrap_err().to_string();
        assert!(error.contains("unknown field"), "{error}");
    }

    #[test]
    fn debug_hides_secret() {
        let dir = temp_dir();
        let path = write(&dir, &format!("{BASE}key_secret = \"hunter2\"\n"));
        let config = Config::load(&path, None, None).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
