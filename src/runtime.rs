//! The configuration in force with its live channels ([`Runtime`]), and the slot every service reads it
//! from ([`Shared`]), swapped whole on reload.
//!
//! Its own module, below the services, so that delivery, the pipeline, the sources and reload can share
//! the running configuration without importing `app`, which builds and wires them. Building a runtime
//! (at start and on reload) leaves freed memory behind; [`release_freed_memory`] hands it back.

use std::sync::{Arc, RwLock};

use crate::channel_config::Channels;
use crate::settings::Config;

/// A configuration with its live channels.
pub struct Runtime {
    /// The configuration.
    pub config: Config,
    /// Channels built from it.
    pub channels: Channels,
}

/// The current [`Runtime`], replaced whole on reload.
pub struct Shared(RwLock<Arc<Runtime>>);

impl Shared {
    /// Holds `rt`.
    pub fn new(rt: Runtime) -> Shared {
        Shared(RwLock::new(Arc::new(rt)))
    }

    /// The current runtime.
    pub fn get(&self) -> Arc<Runtime> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the runtime; work in progress keeps the one it started with.
    pub fn replace(&self, rt: Runtime) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rt);
    }
}

/// Hands memory freed after a burst of allocations (loading and compiling the configuration, opening the
/// store) back to the operating system. glibc's malloc returns only the top of its heap by itself and
/// keeps freed pages below it resident; with 1,000 rules that is about 0.8 MiB of a ~7 MiB heap for
/// good. Called at start and after a reload; a no-op where the C library is not glibc.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists, under its locks; it is safe to
    // call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
