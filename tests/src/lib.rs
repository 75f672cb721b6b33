//! Shared harness for the cross-process tests: network namespaces named with a per-run prefix,
//! bridges and veths inside them, and processes started there; everything removed on drop.
//!
//! - [`netns`]: named namespaces, processes in them, netlink address waits, stale sweeps.
//! - [`topology`]: LANs (a bridge in a switch namespace) and hosts attached to them.
//! - [`probe`]: a client that polls a VIP over HTTP and measures the failover outage.
//! - [`keepalived`]: keepalived config generation and a runner in a namespace.
//! - [`agent`]: hav-agent node configs, the agent in a namespace, its status, state waits.
//! - [`bench`]: the failover benchmark (contenders, scenarios, figures) and the scale benchmarks
//!   (many instances a node; 10 ms adverts under CPU load).
//! - [`chaos`]: the chaos soak (a fleet of pairs, seeded faults, invariants, report).
//! - [`coordinator`]: a hav-coordinator process on loopback as systemd runs it ($NOTIFY_SOCKET, signals).
//! - [`fleet`]: a fleet lab: agents, a hav-coordinator on the LAN, certificates, havctl.
//! - [`otlp`]: an OTLP/gRPC trace collector in the test process.
//! - [`journal`]: a stand-in for journald and a private mount namespace that points a program at it.
//! - [`dns`]: a BIND 9 authoritative server (named) in a lab host, for the DNS the coordinator updates.
//! - [`etcd`]: a real three-member etcd cluster on loopback, for the coordinator's etcd store.
//! - [`smtp`]: a real SMTP server (aiosmtpd) in a lab host, for the agent's mail alerts.
//!
//! Running: everything needs root (named namespaces), iproute2, iputils-ping and keepalived
//! (`agent_notify` also Debian's `python3-aiosmtpd`; `scripts/setup-host.sh` installs them all).
//! `cargo nextest run -p hav-tests` runs the harness smoke tests and the `agent_*` tests with real
//! hav-agent processes one at a time (test group `netns` in `.config/nextest.toml`; the agent is
//! `HAV_AGENT_BIN` or `hav-agent` next to the test binary: a workspace run builds it, a
//! `-p hav-tests` run does not, so `cargo build -p hav-agent` first; the `fleet_*` tests also
//! need `hav-coordinator` and `havctl`: `cargo build -p hav-agent -p hav-coordinator -p havctl`); `cargo run -p hav-tests --bin hav-failover-bench --
//! --reps 5` prints the failover tables; `cargo run -p hav-tests --bin hav-chaos -- --minutes 30`
//! runs the chaos soak (after `cargo build --workspace --bins`). `HAV_TESTS_KEEP_LOGS=1` keeps
//! every run's logs under
//! `/tmp/hav-tests/<prefix>/` (they are always kept when a test panics).

pub mod agent;
pub mod bench;
pub mod browser;
pub mod chaos;
pub mod coordinator;
pub mod dns;
pub mod etcd;
pub mod fleet;
pub mod flows;
pub mod interrupt;
pub mod journal;
pub mod keepalived;
pub mod lb;
pub mod netns;
pub mod otlp;
pub mod probe;
pub mod smtp;
pub mod topology;
pub mod webhook;
