//! Token PINs: their sources in the policy, and a wrapper that never prints them.

use std::fmt;
use std::path::PathBuf;

use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::PolicyError;

/// Source of the PIN of one backend token. The policy never contains a PIN itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// A file whose content, without its trailing newline, is the PIN.
    File(PathBuf),
    /// An environment variable of the keyserver process.
    Env(String),
}

/// A token PIN. It is wiped from memory on drop, and `Debug` prints none of it.
pub struct Pin(AuthPin);

impl Pin {
    /// Exposes the PIN to cryptoki, for `C_Login` only.
    pub fn auth_pin(&self) -> &AuthPin {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(..)")
    }
}

impl PinSource {
    /// Reads the PIN of token `token`.
    ///
    /// # Errors
    ///
    /// A missing or unreadable file, an unset variable or an empty PIN. The error names the
    /// file or variable, never the value.
    pub fn read(&self, token: &str) -> Result<Pin, PolicyError> {
        let text = self.read_text(token)?;
        let pin = text.trim_end_matches(['\n', '\r']);
        if pin.is_empty() {
            return Err(PolicyError::PinEmpty {
                token: token.to_owned(),
                source_name: self.to_string(),
            });
        }
        Ok(Pin(AuthPin::new(Box::from(pin))))
    }

    fn read_text(&self, token: &str) -> Result<Zeroizing<String>, PolicyError> {
        match self {
            Self::File(path) => {
                std::fs::read_to_string(path)
                    .map(Zeroizing::new)
                    .map_err(|source| PolicyError::PinFile {
                        token: token.to_owned(),
                        path: path.clone(),
                        source,
                    })
            }
            Self::Env(name) => {
                std::env::var(name)
                    .map(Zeroizing::new)
                    .map_err(|_| PolicyError::PinEnv {
                        token: token.to_owned(),
                        var: name.clone(),
                    })
            }
        }
    }
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "PIN file {}", path.display()),
            Self::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn expose(pin: &Pin) -> String {
        pin.auth_pin().expose_secret().to_owned()
    }

    #[test]
    fn pin_file_trailing_newline_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.pin");
        std::fs::write(&path, "1234\r\n").unwrap();

        let pin = PinSource::File(path).read("demo").unwrap();

        assert_eq!(expose(&pin), "1234");
    }

    #[test]
    fn pin_debug_hides_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.pin");
        std::fs::write(&path, "987654\n").unwrap();

        let pin = PinSource::File(path).read("demo").unwrap();

        assert_eq!(format!("{pin:?}"), "Pin(..)");
    }

    #[test]
    fn pin_file_missing_names_file() {
        let path = PathBuf::from("/nonexistent/keyrelay/token.pin");

        let err = PinSource::File(path).read("demo").unwrap_err().to_string();

        assert!(err.contains("/nonexistent/keyrelay/token.pin"), "{err}");
        assert!(err.contains("demo"), "{err}");
    }

    #[test]
    fn pin_env_unset_names_variable() {
        let source = PinSource::Env("KEYRELAY_TEST_PIN_THAT_IS_NEVER_SET".into());

        let err = source.read("demo").unwrap_err().to_string();

        assert!(err.contains("KEYRELAY_TEST_PIN_THAT_IS_NEVER_SET"), "{err}");
    }

    #[test]
    fn pin_empty_file_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.pin");
        std::fs::write(&path, "\n").unwrap();

        let err = PinSource::File(path).read("demo").unwrap_err();

        assert!(matches!(err, PolicyError::PinEmpty { .. }), "{err}");
    }
}
