//! Slots, sessions and login state, all answered locally from the keyserver's catalogue.

use std::collections::{BTreeMap, HashMap};

use cryptoki_sys::*;
use keyrelay_protocol::{AttributeValue, Catalogue, ObjectEntry, TokenEntry, slot_id_for_token};

use crate::digest::Hasher;
use crate::error::{Error, Result};
use crate::sign::SignOperation;
use crate::verify::VerifyOperation;

/// Slots, sessions and what the keyserver lets this client see.
#[derive(Debug)]
pub(crate) struct State {
    slots: BTreeMap<CK_SLOT_ID, Slot>,
    catalogue_loaded: bool,
    max_input_len: usize,
    sessions: HashMap<CK_SESSION_HANDLE, Session>,
    next_session: CK_SESSION_HANDLE,
}

/// One keyserver token presented as a slot with its token always present.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) token: TokenEntry,
    pub(crate) logged_in: bool,
}

/// One PKCS#11 session. It depends on no connection, so it survives reconnects.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) slot_id: CK_SLOT_ID,
    pub(crate) read_write: bool,
    pub(crate) find: Option<FindOperation>,
    pub(crate) sign: Option<SignOperation>,
    pub(crate) digest: Option<Hasher>,
    pub(crate) verify: Option<VerifyOperation>,
}

/// Handles matched by C_FindObjectsInit, not yet returned by C_FindObjects.
#[derive(Debug)]
pub(crate) struct FindOperation {
    pending: Vec<CK_OBJECT_HANDLE>,
}

impl FindOperation {
    /// Takes up to `max` handles.
    pub(crate) fn next(&mut self, max: usize) -> Vec<CK_OBJECT_HANDLE> {
        let count = max.min(self.pending.len());
        self.pending.drain(..count).collect()
    }
}

impl State {
    /// Creates the state with one slot per configured token name.
    pub(crate) fn new(tokens: &[String]) -> Self {
        let mut state = Self {
            slots: BTreeMap::new(),
            catalogue_loaded: false,
            max_input_len: 0,
            sessions: HashMap::new(),
            next_session: 1,
        };
        for name in tokens {
            let token = TokenEntry {
                name: name.clone(),
                slot_id: slot_id_for_token(name),
                ..TokenEntry::default()
            };
            state.insert_token(token);
        }
        state
    }

    /// Tells whether the keyserver's catalogue has been received.
    pub(crate) fn catalogue_loaded(&self) -> bool {
        self.catalogue_loaded
    }

    /// Merges the catalogue: new tokens become slots, known ones get fresh contents.
    pub(crate) fn merge_catalogue(&mut self, catalogue: Catalogue) {
        self.max_input_len = usize::try_from(catalogue.max_input_len).unwrap_or(usize::MAX);
        for token in catalogue.tokens {
            self.insert_token(token);
        }
        self.catalogue_loaded = true;
    }

    fn insert_token(&mut self, token: TokenEntry) {
        // Slot ids are 31-bit values (see `slot_id_for_token`), so they fit any CK_ULONG.
        let slot_id = token.slot_id as CK_SLOT_ID;
        match self.slots.get_mut(&slot_id) {
            Some(slot) => slot.token = token,
            None => {
                self.slots.insert(
                    slot_id,
                    Slot {
                        token,
                        logged_in: false,
                    },
                );
            }
        }
    }

    /// Returns the slot ids in ascending order, which is the order of C_GetSlotList.
    pub(crate) fn slot_ids(&self) -> Vec<CK_SLOT_ID> {
        self.slots.keys().copied().collect()
    }

    pub(crate) fn slot(&self, slot_id: CK_SLOT_ID) -> Result<&Slot> {
        self.slots
            .get(&slot_id)
            .ok_or(Error::SlotIdInvalid(slot_id))
    }

    pub(crate) fn slot_mut(&mut self, slot_id: CK_SLOT_ID) -> Result<&mut Slot> {
        self.slots
            .get_mut(&slot_id)
            .ok_or(Error::SlotIdInvalid(slot_id))
    }

    /// Maximum input of a sign request that does not hash, as the keyserver reported it.
    pub(crate) fn max_input_len(&self) -> usize {
        self.max_input_len
    }

    /// Opens a session on `slot_id` (C_OpenSession).
    pub(crate) fn open_session(
        &mut self,
        slot_id: CK_SLOT_ID,
        flags: CK_FLAGS,
    ) -> Result<CK_SESSION_HANDLE> {
        self.slot(slot_id)?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error::ParallelNotSupported);
        }
        let handle = self.next_session;
        self.next_session += 1;
        let session = Session {
            slot_id,
            read_write: flags & CKF_RW_SESSION != 0,
            find: None,
            sign: None,
            digest: None,
            verify: None,
        };
        self.sessions.insert(handle, session);
        Ok(handle)
    }

    /// Closes one session. Closing a slot's last session logs its user out (PKCS#11 v2.40
    /// section 5.6, C_CloseSession).
    pub(crate) fn close_session(&mut self, handle: CK_SESSION_HANDLE) -> Result<()> {
        let session = self
            .sessions
            .remove(&handle)
            .ok_or(Error::SessionHandleInvalid(handle))?;
        self.logout_if_unused(session.slot_id);
        Ok(())
    }

    /// Closes every session of `slot_id`.
    pub(crate) fn close_all_sessions(&mut self, slot_id: CK_SLOT_ID) -> Result<()> {
        self.slot(slot_id)?;
        self.sessions
            .retain(|_, session| session.slot_id != slot_id);
        self.logout_if_unused(slot_id);
        Ok(())
    }

    fn logout_if_unused(&mut self, slot_id: CK_SLOT_ID) {
        if self.session_count(slot_id).0 > 0 {
            return;
        }
        if let Some(slot) = self.slots.get_mut(&slot_id) {
            slot.logged_in = false;
        }
    }

    /// Counts the sessions of `slot_id`: all of them, and the read-write ones.
    pub(crate) fn session_count(&self, slot_id: CK_SLOT_ID) -> (usize, usize) {
        let sessions = self.sessions.values().filter(|s| s.slot_id == slot_id);
        sessions.fold((0, 0), |(all, rw), s| {
            (all + 1, rw + usize::from(s.read_write))
        })
    }

    pub(crate) fn session(&self, handle: CK_SESSION_HANDLE) -> Result<&Session> {
        self.sessions
            .get(&handle)
            .ok_or(Error::SessionHandleInvalid(handle))
    }

    pub(crate) fn session_mut(&mut self, handle: CK_SESSION_HANDLE) -> Result<&mut Session> {
        self.sessions
            .get_mut(&handle)
            .ok_or(Error::SessionHandleInvalid(handle))
    }

    /// Returns the CKS_* state of a session (C_GetSessionInfo).
    pub(crate) fn session_state(&self, handle: CK_SESSION_HANDLE) -> Result<CK_STATE> {
        let session = self.session(handle)?;
        let logged_in = self.slot(session.slot_id)?.logged_in;
        Ok(match (session.read_write, logged_in) {
            (false, false) => CKS_RO_PUBLIC_SESSION,
            (false, true) => CKS_RO_USER_FUNCTIONS,
            (true, false) => CKS_RW_PUBLIC_SESSION,
            (true, true) => CKS_RW_USER_FUNCTIONS,
        })
    }

    /// Returns an object the session may see: public objects always, private ones only
    /// after login.
    pub(crate) fn object(
        &self,
        handle: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> Result<&ObjectEntry> {
        self.visible_objects(handle)?
            .find(|entry| CK_OBJECT_HANDLE::try_from(entry.handle) == Ok(object))
            .ok_or(Error::ObjectHandleInvalid(object))
    }

    /// Returns a key object the session may see, for C_SignInit and C_VerifyInit.
    pub(crate) fn key(
        &self,
        handle: CK_SESSION_HANDLE,
        key: CK_OBJECT_HANDLE,
    ) -> Result<&ObjectEntry> {
        self.object(handle, key).map_err(|error| match error {
            Error::ObjectHandleInvalid(_) => Error::KeyHandleInvalid(key),
            other => other,
        })
    }

    /// Iterates over the objects the session may see.
    pub(crate) fn visible_objects(
        &self,
        handle: CK_SESSION_HANDLE,
    ) -> Result<impl Iterator<Item = &ObjectEntry>> {
        let slot = self.slot(self.session(handle)?.slot_id)?;
        let logged_in = slot.logged_in;
        Ok(slot
            .token
            .objects
            .iter()
            .filter(move |entry| logged_in || !is_private(entry)))
    }

    /// Starts a search with the handles already matched.
    pub(crate) fn start_find(
        &mut self,
        handle: CK_SESSION_HANDLE,
        matches: Vec<CK_OBJECT_HANDLE>,
    ) -> Result<()> {
        let session = self.session_mut(handle)?;
        if session.find.is_some() {
            return Err(Error::OperationActive);
        }
        session.find = Some(FindOperation { pending: matches });
        Ok(())
    }
}

/// Tells whether an object needs login: CKA_PRIVATE, defaulting to true for private keys.
fn is_private(entry: &ObjectEntry) -> bool {
    match entry.attribute(CKA_PRIVATE.into()) {
        Some(AttributeValue::Bool(private)) => *private,
        _ => {
            entry.attribute(CKA_CLASS.into())
                == Some(&AttributeValue::Ulong(CKO_PRIVATE_KEY.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyrelay_protocol::Attribute;

    fn state_with_objects() -> (State, CK_SLOT_ID) {
        let mut state = State::new(&["t".into()]);
        let slot_id = slot_id_for_token("t");
        let private = ObjectEntry {
            handle: 7,
            key_name: "k".into(),
            attributes: vec![Attribute {
                kind: CKA_CLASS.into(),
                value: AttributeValue::Ulong(CKO_PRIVATE_KEY.into()),
            }],
        };
        let certificate = ObjectEntry {
            handle: 8,
            key_name: "k".into(),
            attributes: vec![Attribute {
                kind: CKA_PRIVATE.into(),
                value: AttributeValue::Bool(false),
            }],
        };
        state.slot_mut(slot_id).unwrap().token.objects = vec![private, certificate];
        (state, slot_id)
    }

    #[test]
    fn private_objects_need_login() {
        let (mut state, slot_id) = state_with_objects();
        let session = state.open_session(slot_id, CKF_SERIAL_SESSION).unwrap();
        assert!(state.object(session, 7).is_err());
        assert!(state.object(session, 8).is_ok());
        state.slot_mut(slot_id).unwrap().logged_in = true;
        assert!(state.object(session, 7).is_ok());
    }

    #[test]
    fn closing_last_session_logs_out() {
        let (mut state, slot_id) = state_with_objects();
        let first = state.open_session(slot_id, CKF_SERIAL_SESSION).unwrap();
        let second = state
            .open_session(slot_id, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .unwrap();
        state.slot_mut(slot_id).unwrap().logged_in = true;
        state.close_session(first).unwrap();
        assert!(state.slot(slot_id).unwrap().logged_in);
        assert_eq!(state.session_state(second).unwrap(), CKS_RW_USER_FUNCTIONS);
        state.close_session(second).unwrap();
        assert!(!state.slot(slot_id).unwrap().logged_in);
    }

    #[test]
    fn session_without_serial_flag_is_rejected() {
        let (mut state, slot_id) = state_with_objects();
        let error = state.open_session(slot_id, 0).unwrap_err();
        assert_eq!(error.rv(), CKR_SESSION_PARALLEL_NOT_SUPPORTED);
    }

    #[test]
    fn unknown_slot_is_invalid() {
        let (mut state, _) = state_with_objects();
        let error = state.open_session(12345, CKF_SERIAL_SESSION).unwrap_err();
        assert_eq!(error.rv(), CKR_SLOT_ID_INVALID);
    }

    #[test]
    fn find_returns_handles_in_batches() {
        let (mut state, slot_id) = state_with_objects();
        let session = state.open_session(slot_id, CKF_SERIAL_SESSION).unwrap();
        state.start_find(session, vec![1, 2, 3]).unwrap();
        assert!(matches!(
            state.start_find(session, vec![]),
            Err(Error::OperationActive)
        ));
        let find = state.session_mut(session).unwrap().find.as_mut().unwrap();
        assert_eq!(find.next(2), vec![1, 2]);
        assert_eq!(find.next(2), vec![3]);
        assert!(find.next(2).is_empty());
    }
}
