//! havctl: the operator's tool for a hav fleet. It talks to hav-coordinator over mTLS gRPC
//! ([`client`]) and runs the fleet's certificate authority ([`certs`]), and converts keepalived.conf files
//! ([`import`]). [`commands`] holds the
//! command-line interface; every failure prints as one line with what to do, and every result
//! through [`output`] (`-o json`: one JSON document).

pub mod certs;
pub mod client;
pub mod commands;
pub mod contexts;
pub mod dashboard;
pub mod import;
pub mod local;
pub mod orchestrate;
pub mod output;
pub mod priority;
