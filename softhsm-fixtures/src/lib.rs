//! Throwaway SoftHSM2 tokens and test certificates for keyrelay's end-to-end tests and demo.
//!
//! [`TokenFixture::create`] makes a folder with its own `softhsm2.conf` and token store and
//! initialises a token with random PINs. It then generates key pairs on the token and stores a
//! code-signing certificate from a per-fixture test CA next to each key pair, with the same
//! CKA_ID and CKA_LABEL. [`issue_tls_server_cert`] writes a TLS test CA and a server certificate for the
//! keyserver.
//!
//! The work is done by the command-line tools `softhsm2-util` (Debian package `softhsm2`) and
//! `pkcs11-tool` (Debian package `opensc`), run as child processes with `SOFTHSM2_CONF` set on
//! the child only. This crate never loads SoftHSM into the calling process and never changes
//! the process environment, so tests running in parallel threads can each create fixtures.
//!
//! ```no_run
//! use softhsm_fixtures::{TokenFixture, standard_keys};
//!
//! let fixture = TokenFixture::create_temporary("keyrelay-test", &standard_keys())?;
//! println!("SOFTHSM2_CONF={}", fixture.softhsm2_conf().display());
//! # anyhow::Ok(())
//! ```

#![forbid(unsafe_code)]

mod ca;
mod files;
mod listing;
mod pubkey;
mod spec;
mod tls;
mod token;
mod tools;

pub use listing::{ListedObject, ObjectClass, parse_object_listing};
pub use spec::{
    Curve, EC_SIGNING_LABEL, KeyKind, KeySpec, RSA_OTHER_LABEL, RSA_SIGNING_LABEL, standard_keys,
};
pub use tls::{SERVER_CHAIN_FILE, SERVER_KEY_FILE, TLS_CA_FILE, TlsFiles, issue_tls_server_cert};
pub use token::{
    CA_CERTIFICATE_FILE, CA_KEY_FILE, CERTS_DIR, FixtureKey, SOFTHSM2_CONF_FILE, TOKEN_DIR,
    TokenFixture, USER_PIN_FILE,
};
pub use tools::{SOFTHSM2_CONF_ENV, softhsm_module};
