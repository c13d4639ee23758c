//! A secret value (token, password, signing key) that never shows in debug output or logs.
//!
//! Layer 0: depends on no other module of the crate, so channels, sources and the configuration can
//! all hold one without importing each other.

use std::fmt;

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
