//! What both daemons need to serve Prometheus metrics: the text exposition writer ([`text`]) and
//! the tiny `GET /metrics` HTTP server ([`http`]).
//!
//! They live here because hav-agent and hav-coordinator both depend on this crate and on nothing
//! else in common. Each daemon keeps its own registry of values; this module only turns lines
//! into the text format and serves whatever a render function returns.

pub mod http;
pub mod text;
pub mod tls;
