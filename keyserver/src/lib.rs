//! keyrelay keyserver: authenticates keyrelay clients over QUIC, checks each sign request
//! against an administrator-edited policy, signs on a local PKCS#11 token and writes an audit
//! record for every authentication and signature.
//!
//! The binary is a thin wrapper around [`app::serve`], [`app::check`] and
//! [`app::new_credential`].

#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod catalogue;
pub mod credential;
pub mod policy;
pub mod server;
pub mod signing;

pub use app::{CheckSummary, Error, check, new_credential, serve};
