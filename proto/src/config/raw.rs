//! The config document as written: serde structs that refuse unknown keys.
//!
//! Every field is optional and every number is an `i64`, so deserializing only fails on an unknown
//! key or a value of the wrong TOML type; range checks, defaults and cross-references belong to
//! `validate`, which reports them with their key path. The same structs serialize the canonical
//! form of a validated config.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

pub(crate) use super::raw_network::{RawRoute, RawRule, RawVmac};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNodeConfig {
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "table"
    )]
    pub node: Option<RawNode>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "tables"
    )]
    pub instance: Option<Vec<RawInstance>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "tables"
    )]
    pub script: Option<Vec<RawScript>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "tables"
    )]
    pub process: Option<Vec<RawProcess>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "tables"
    )]
    pub track_file: Option<Vec<RawTrackFile>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "tables"
    )]
    pub probe: Option<Vec<RawProbe>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "tables"
    )]
    pub sync_group: Option<Vec<RawSyncGroup>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "tables"
    )]
    pub virtual_server: Option<Vec<RawVirtualServer>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "table"
    )]
    pub telemetry: Option<RawTelemetry>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "table"
    )]
    pub coordinator: Option<RawCoordinator>,
}

/// `[telemetry]`. The sampling ratio is the one float of the schema.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_tls: Option<RawMetricsTls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling_ratio: Option<f64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "table"
    )]
    pub resource: Option<std::collections::BTreeMap<String, String>>,
}

/// `[telemetry.metrics_tls]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetricsTls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCoordinator {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<OneOrMany>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_socket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handover_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_fifo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_fifo_script: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_auto_priority: Option<i64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "table"
    )]
    pub smtp: Option<RawSmtp>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInstance {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vrid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advert_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preempt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preempt_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_drain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unicast_peers: Option<Vec<StringOr<RawPeer>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_pass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vips: Option<Vec<StringOr<RawVip>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_interface: Option<Vec<StringOr<RawTrackRef>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_script: Option<Vec<StringOr<RawTrackRef>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_process: Option<Vec<StringOr<RawTrackRef>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_file: Option<Vec<StringOr<RawTrackRef>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_probe: Option<Vec<StringOr<RawTrackRef>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_master: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_backup: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_fault: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_stop: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_alert: Option<bool>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "table"
    )]
    pub garp: Option<RawGarp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "table"
    )]
    pub vmac: Option<RawVmac>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "tables"
    )]
    pub route: Option<Vec<RawRoute>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "tables"
    )]
    pub rule: Option<Vec<RawRule>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPeer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVip {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrackRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGarp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_repeat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_refresh: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScript {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fall: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rise: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProcess {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_procs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrackFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProbe {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fall: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rise: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSyncGroup {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_master: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_backup: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_fault: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_stop: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_alert: Option<bool>,
}

/// `[node.smtp]`: where state-change mail goes (keepalived's `smtp_server`, `notification_email`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSmtp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helo_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<bool>,
}

/// `[[virtual_server]]`: keepalived's `virtual_server`, balanced by nftables.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVirtualServer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lb_algo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lb_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_loop: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hysteresis: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum_up: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum_down: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sorry_server: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "tables"
    )]
    pub real_server: Option<Vec<RawRealServer>>,
}

/// `[[virtual_server.real_server]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRealServer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inhibit_on_failure: Option<bool>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "table"
    )]
    pub check: Option<RawRealServerCheck>,
}

/// `[virtual_server.real_server.check]`: keepalived's TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRealServerCheck {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", alias = "nb_get_retry")]
    pub retry: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_before_retry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtualhost: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<Vec<String>>,
}

/// A TOML table only: serde would also build a struct from an array, field by field, which
/// turns `[[node]]` into a confusing message about `name`.
struct Table<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Table<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TableVisitor(PhantomData))
    }
}

struct TableVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for TableVisitor<T> {
    type Value = Table<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Table)
    }
}

fn table<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Option::<Table<T>>::deserialize(deserializer).map(|table| table.map(|Table(inner)| inner))
}

fn tables<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Vec<T>>, D::Error> {
    Option::<Vec<Table<T>>>::deserialize(deserializer)
        .map(|tables| tables.map(|tables| tables.into_iter().map(|Table(inner)| inner).collect()))
}

/// A value written either as one string or as a list of them (`address = "a:1"` or
/// `address = ["a:1", "b:1"]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A list entry written either as a short string (`"198.51.100.100/24"`) or as a table.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum StringOr<T> {
    Short(String),
    Table(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for StringOr<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StringOrVisitor(PhantomData))
    }
}

struct StringOrVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for StringOrVisitor<T> {
    type Value = StringOr<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a table")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(StringOr::Short(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(StringOr::Short(value))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(StringOr::Table)
    }
}
