//! The node config: its schema, loading and validation.
//!
//! A node config is a TOML document (see `deploy/examples/`). [`load_node_config`] reads it from a
//! file with `HAV_<SECTION>__<KEY>` environment overrides; [`parse_node_config`] takes text, such
//! as a config pushed by the coordinator; [`node_config_from_document`] takes a document a program
//! built (the fleet expansion). All return either a fully validated [`NodeConfig`] or every
//! problem found, each naming the origin, the key path and what was expected. A
//! [`NodeConfig`] serializes back to canonical TOML ([`NodeConfig::to_toml`]) that parses to an
//! equal value.

mod alerts;
mod canonical;
mod canonical_network;
pub mod duration;
mod error;
mod load;
mod network;
mod node;
mod probe_url;
mod raw;
mod raw_network;
mod validate;

pub use alerts::{
    DEFAULT_SMTP_CONNECT_TIMEOUT, DEFAULT_SMTP_PORT, MailAddress, NotifyFifo, RealtimePriority,
    Smtp, SmtpHost, SmtpServer, is_host_name,
};
pub use error::{ConfigError, ConfigErrors, KeyPath, Problem, Segment};
pub use load::{
    ENV_PREFIX, load_node_config, load_node_config_with_env, node_config_from_document,
    parse_node_config,
};
pub use network::{MAIN_TABLE, Prefix, RouteKind, VirtualRoute, VirtualRule, Vmac};
pub use node::{
    CheckKind, LbAlgo, LbKind, LbProtocol, RealServer, RealServerCheck, SorryServer, VirtualPorts,
    VirtualServer,
};
pub use node::{
    Command, CoordinatorLink, GarpSchedule, Instance, InstanceFingerprint, MetricsTls, NodeConfig,
    NodeSettings, Notify, OtlpEndpoint, Probe, ProbeKind, ProcessMatch, SamplingRatio, Script,
    SyncGroup, Telemetry, Track, TrackFile, TrackTarget, TrackWeight, TrackedProcess, Transport,
    UnicastPeer, Vip,
};
pub use probe_url::{MAX_TARGET_LEN, ProbeUrl, Scheme, UrlHost};
pub use validate::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_DELAY_BEFORE_RETRY, DEFAULT_DELAY_LOOP, DEFAULT_FLOW_TIMEOUT,
    DEFAULT_STATE_DIR, MAX_REAL_SERVERS, MAX_WEIGHT,
};
