//! The catalogue a client receives in its Welcome: the tokens, objects and mechanisms its
//! allowlist lets it see, and nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;

use keyrelay_protocol::{Catalogue, MechanismEntry, TokenEntry};

use crate::backend::{Backend, Key, Token};
use crate::policy::ClientPolicy;
use crate::signing::ClientMechanism;

/// Builds the catalogue for `client`.
///
/// It lists each token holding at least one allowed key, in slot id order. Each token lists
/// the objects of the allowed keys only, by backend object handle (private key, and the public
/// key and certificate
/// sharing its CKA_ID), and the client mechanisms for the key types among them that the
/// backend token supports.
pub fn build(backend: &Backend, client: &ClientPolicy, max_input_len: u32) -> Catalogue {
    let mut keys_by_token: BTreeMap<String, Vec<Arc<Key>>> = BTreeMap::new();
    for key in client.keys.iter().filter_map(|name| backend.key(name)) {
        keys_by_token
            .entry(key.token.clone())
            .or_default()
            .push(key);
    }
    for keys in keys_by_token.values_mut() {
        keys.sort_by_key(|key| key.token_order());
    }
    let mut tokens: Vec<TokenEntry> = keys_by_token
        .into_iter()
        .filter_map(|(name, keys)| Some(token_entry(backend.token(&name)?, &keys)))
        .collect();
    tokens.sort_by_key(|token| token.slot_id);
    Catalogue {
        max_input_len,
        tokens,
    }
}

fn token_entry(token: &Token, keys: &[Arc<Key>]) -> TokenEntry {
    let (manufacturer, model, serial_number) = token.description();
    TokenEntry {
        name: token.name.clone(),
        slot_id: token.slot_id,
        manufacturer: manufacturer.to_owned(),
        model: model.to_owned(),
        serial_number: serial_number.to_owned(),
        mechanisms: mechanisms(token, keys),
        objects: keys.iter().flat_map(|key| key.objects.clone()).collect(),
    }
}

/// Lists the sign mechanisms that suit at least one of `keys`, and the digest mechanisms.
fn mechanisms(token: &Token, keys: &[Arc<Key>]) -> Vec<MechanismEntry> {
    let usable = |entry: &&MechanismEntry| match ClientMechanism::find(entry.mechanism) {
        Some(mechanism) => keys.iter().any(|key| mechanism.applies_to(key.kind)),
        None => true,
    };
    token.mechanisms().filter(usable).cloned().collect()
}
