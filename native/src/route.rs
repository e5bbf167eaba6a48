//! State keys that Bytewax keeps on a chosen worker.
//!
//! Bytewax hands an item of a stateful step to worker `hash(key) % workers`,
//! where `hash` is the Rust standard library's default hasher over the key
//! string (the state key's derived `Hash`). A key whose hash leaves
//! `residue` modulo `modulus` therefore lands on worker `residue % workers`
//! for every worker count that divides `modulus`.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// The hash Bytewax routes the state key `key` by.
pub fn route_hash(key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// The first of `name~0`, `name~1`, … whose hash leaves `residue` modulo
/// `modulus`. Hashes spread evenly, so about `modulus` keys are tried.
pub fn key_routed_to(name: &str, residue: u64, modulus: u64) -> String {
    let residue = residue % modulus;
    (0u64..)
        .map(|salt| format!("{name}~{salt}"))
        .find(|key| route_hash(key) % modulus == residue)
        .expect("some salt gives every residue")
}
