//! keyrelay keyserver: authenticates keyrelay clients over QUIC, checks each sign request
//! against an administrator-edited policy, signs on a local PKCS#11 token and writes an audit
//! record for every authentication and signature.
//!
//! The binary is a thin wrapper around [`app::serve`], [`check::check`],
//! [`app::new_credential`], the [`policy_edit`] functions and the [`audit`] tools.

// Only `backend::raw` may use unsafe code: it calls the backend's C functions for the one
// sequence cryptoki does not offer.
#![deny(unsafe_code)]

pub mod access;
pub mod app;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod catalogue;
pub mod check;
pub mod credential;
pub mod digest_info;
pub mod policy;
pub mod policy_edit;
pub mod quota;
pub mod server;
pub mod signing;
pub mod state;

pub use app::{Error, new_credential, serve};
pub use check::{CheckReport, check};
