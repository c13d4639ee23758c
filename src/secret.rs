//! A secret value (token, password, signing key) that never shows in debug output or logs, and the
//! constant-time check of a presented credential against one.
//!
//! Layer 0: depends on no other module of the crate, so channels, sources and the configuration can
//! all hold one without importing each other.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret: shown as `***` in debug output and never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Secret {
    /// The secret's value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Compares a presented credential with the expected one in constant time. Both are hashed first, so
/// neither the content nor the length of the secret leaks through timing.
pub fn token_matches(presented: Option<&[u8]>, expected: &Secret) -> bool {
    let a = Sha256::digest(presented.unwrap_or_default());
    let b = Sha256::digest(expected.expose().as_bytes());
    presented.is_some() && bool::from(a.ct_eq(&b))
}

/// A new link token: 128 random bits from the operating system's generator, as 32 hex digits (safe in a
/// URL path, unguessable). Only its [`link_token_hash`] is stored: the link in the message is the secret.
pub fn new_link_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The stored form of a link token: its SHA-256, hex. A lookup by this hash leaks nothing useful through
/// timing: a guess's hash shares no prefix with a real one's that the guesser could steer.
pub fn link_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        let s = Secret("Bearer abc".into());
        assert!(token_matches(Some(b"Bearer abc"), &s));
        assert!(!token_matches(Some(b"Bearer abd"), &s));
        assert!(!token_matches(Some(b"Bearer abc "), &s));
        assert!(!token_matches(Some(b""), &s));
        assert!(!token_matches(None, &s));
    }
}
