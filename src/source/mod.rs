//! Where events come from: the webhook ([`http`]) and live Traccar servers ([`traccar`]). Every source decodes into [`crate::event::Envelope`] and hands it to
//! [`crate::pipeline::Pipeline::ingest`].

pub mod http;
pub mod traccar;
