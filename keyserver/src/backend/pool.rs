//! A pool of read-only sessions on one backend token.
//!
//! cryptoki's `Session` is `Send` but not `Sync`, so each session serves one thread at a time:
//! a caller checks one out, uses it and puts it back. Checking out blocks while all sessions
//! are busy, so callers run on blocking threads, never on the async runtime.

use std::sync::{Condvar, Mutex, MutexGuard};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;

use crate::policy::Pin;

/// Sessions of one token, all logged in as the user.
pub(super) struct SessionPool {
    context: Pkcs11,
    slot: Slot,
    pin: Pin,
    idle: Mutex<Vec<Session>>,
    returned: Condvar,
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPool")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl SessionPool {
    /// Opens `size` read-only sessions on `slot` and logs the user in once, which logs in
    /// every session of this process on the token.
    pub(super) fn open(context: &Pkcs11, slot: Slot, size: u32, pin: Pin) -> Result<Self, Error> {
        let mut sessions = Vec::with_capacity(size as usize);
        for _ in 0..size {
            sessions.push(context.open_ro_session(slot)?);
        }
        login(&sessions[0], &pin)?;
        Ok(Self {
            context: context.clone(),
            slot,
            pin,
            idle: Mutex::new(sessions),
            returned: Condvar::new(),
        })
    }

    /// Runs `operation` on an idle session, waiting for one if all are busy. Blocks.
    ///
    /// If the token reports CKR_USER_NOT_LOGGED_IN, for example after the token was reset,
    /// this logs in again and retries once. If the session itself became invalid, this
    /// replaces it with a new session and retries once.
    pub(super) fn run<T>(
        &self,
        mut operation: impl FnMut(&Session) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut session = self.checkout();
        match operation(&session) {
            Err(Error::Pkcs11(RvError::UserNotLoggedIn, _)) => {
                let slot = self.slot;
                tracing::warn!(%slot, "backend session not logged in; logging in again");
                login(&session, &self.pin)?;
                operation(&session)
            }
            Err(Error::Pkcs11(RvError::SessionHandleInvalid | RvError::SessionClosed, _)) => {
                tracing::warn!(slot = %self.slot, "backend session invalid; opening a new one");
                self.replace(&mut session)?;
                operation(&session)
            }
            result => result,
        }
    }

    /// Runs `operation` as [`SessionPool::run`] does, also giving it the token's PIN, for
    /// the context-specific login that keys with CKA_ALWAYS_AUTHENTICATE need.
    pub(super) fn run_with_pin<T>(
        &self,
        mut operation: impl FnMut(&Session, &Pin) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.run(|session| operation(session, &self.pin))
    }

    /// Swaps the session of `checkout` for a new, logged-in one. The old one is closed.
    fn replace(&self, checkout: &mut Checkout<'_>) -> Result<(), Error> {
        let fresh = self.context.open_ro_session(self.slot)?;
        login(&fresh, &self.pin)?;
        checkout.session = Some(fresh);
        Ok(())
    }

    fn checkout(&self) -> Checkout<'_> {
        let mut idle = self.lock();
        loop {
            if let Some(session) = idle.pop() {
                return Checkout {
                    pool: self,
                    session: Some(session),
                };
            }
            idle = self
                .returned
                .wait(idle)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Session>> {
        // The list of idle sessions stays consistent even if a holder panicked.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Logs the user in, treating "already logged in" as success.
fn login(session: &Session, pin: &Pin) -> Result<(), Error> {
    match session.login(UserType::User, Some(pin.auth_pin())) {
        Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        result => result,
    }
}

/// A session taken from the pool, returned to it on drop.
struct Checkout<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
}

impl std::ops::Deref for Checkout<'_> {
    type Target = Session;

    fn deref(&self) -> &Session {
        self.session
            .as_ref()
            .expect("a checkout owns its session until dropped")
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.lock().push(session);
            self.pool.returned.notify_one();
        }
    }
}
