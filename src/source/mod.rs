//! Where events come from. Every source decodes into [`crate::event::Envelope`] and hands it to
//! [`crate::pipeline::Pipeline::ingest`].

pub mod http;
