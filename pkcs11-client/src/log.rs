//! Logging for the module, which runs inside someone else's process.
//!
//! The module writes to standard error only. `KEYRELAY_LOG` sets the filter in the syntax of
//! `tracing_subscriber::EnvFilter` (for example `debug`); without it, only faults an operator
//! must fix, such as an unreadable configuration, are logged. `KEYRELAY_LOG=off` silences even
//! those.

use std::io::IsTerminal;
use std::sync::Once;

use tracing_subscriber::EnvFilter;

/// Installs the module's log subscriber once per process.
pub(crate) fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = std::env::var("KEYRELAY_LOG").unwrap_or_else(|_| "error".to_owned());
        let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("error"));
        // Loaded as a cdylib, the module has its own copy of tracing's globals, so this cannot
        // displace a host's subscriber.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init();
    });
}
