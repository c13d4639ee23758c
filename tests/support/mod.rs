//! Loopback peers for the integration tests: a Telegram Bot API stand-in, a
//! recording HTTP sink, an SMTP server and a Traccar server. Each test starts the peers it
//! needs and points the relay at them. `browser` drives headless Chromium for the web console.

// Every test crate compiles this module, but each uses only some of it.
#![allow(dead_code)]

pub mod browser;
pub mod chat;
pub mod gotify;
pub mod matrix;
pub mod ntfy;
pub mod pg;
pub mod pushover;
pub mod sink;
pub mod smtp;
pub mod stored;
pub mod telegram;
pub mod traccar;
