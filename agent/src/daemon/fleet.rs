//! The daemon's side of the fleet control plane: which config runs at start, the last good
//! pushed config on disk, runtime priority overrides, and what the coordinator is told.
//!
//! Precedence (the autonomy rule): `[node]`, `[coordinator]` and `[telemetry]` always come from
//! the local file (they say where this host keeps its state and how it reaches the world).
//! Everything else comes from `<state_dir>/applied.toml`, the last config the coordinator pushed
//! and this agent applied, when that file is newer than the local file; otherwise from the local
//! file. A pushed config is written there only after it runs, atomically (write, fsync, rename),
//! so a restart, a crash or an absent coordinator never loses the last good config, and editing
//! the local file (making it newer) hands control back to it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hav_proto::config::{NodeConfig, parse_node_config};
use hav_proto::transport::ClientTlsFiles;
use hav_proto::v1::{self, Event, InstanceState, StateSnapshot, VrrpState, event};
use hav_vrrp::Priority;
use hav_vrrp::engine::{Engine, State};

use crate::control::{self, Backoff, ControlConfig, DaemonSide};

/// The file holding the last applied pushed config, in the state dir.
pub const APPLIED_FILE: &str = "applied.toml";
/// First line of [`APPLIED_FILE`]: the config version follows.
const VERSION_HEADER: &str = "# hav applied config version ";
/// The priority a drained node runs every instance at: any peer wins.
pub const DRAIN_PRIORITY: Priority = Priority(1);

/// The config to run and the coordinator version it came from (0: the local file).
#[derive(Debug)]
pub struct Selected {
    pub config: NodeConfig,
    pub version: u64,
}

/// Applies the precedence rule to `local`, the config loaded from `local_path`.
pub fn select(local_path: &Path, local: NodeConfig) -> Selected {
    let applied_path = local.node.state_dir.join(APPLIED_FILE);
    let newer = match (modified(&applied_path), modified(local_path)) {
        (Some(applied), Some(local)) => applied > local,
        (Some(_), None) => true,
        _ => false,
    };
    if !newer {
        return Selected {
            config: local,
            version: 0,
        };
    }
    match read_applied(&applied_path).and_then(|(version, text)| {
        let pushed = parse(&text, version, &local)?;
        Ok((version, pushed))
    }) {
        Ok((version, config)) => {
            tracing::info!(
                version,
                path = %applied_path.display(),
                "running the last config pushed by the coordinator (newer than the local file)"
            );
            Selected { config, version }
        }
        Err(error) => {
            tracing::error!(path = %applied_path.display(), %error, "ignoring the applied config; running the local file");
            Selected {
                config: local,
                version: 0,
            }
        }
    }
}

/// Parses a pushed config and puts the local `[node]`, `[coordinator]` and `[telemetry]` in it.
pub fn parse(text: &str, version: u64, local: &NodeConfig) -> Result<NodeConfig, String> {
    let mut pushed = parse_node_config(text, &format!("coordinator config version {version}"))
        .map_err(|errors| errors.lines().join("; "))?;
    if pushed.node.name != local.node.name {
        return Err(format!(
            "config version {version} is for node {:?}, this is {:?}",
            pushed.node.name, local.node.name
        ));
    }
    pushed.keep_local(local);
    Ok(pushed)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_applied(path: &Path) -> Result<(u64, String), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let version = text
        .lines()
        .next()
        .and_then(|line| line.strip_prefix(VERSION_HEADER))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("first line is not `{VERSION_HEADER}N`"))?;
    Ok((version, text))
}

/// A pushed config written next to where it will live, renamed into place once it runs.
pub struct Staged {
    staged: PathBuf,
    target: PathBuf,
}

impl Staged {
    /// Writes and syncs `<state_dir>/applied.toml.new`.
    pub fn write(state_dir: &Path, version: u64, text: &str) -> std::io::Result<Staged> {
        std::fs::create_dir_all(state_dir)?;
        let target = state_dir.join(APPLIED_FILE);
        let staged = state_dir.join(format!("{APPLIED_FILE}.new"));
        let mut file = std::fs::File::create(&staged)?;
        writeln!(file, "{VERSION_HEADER}{version}")?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        Ok(Staged { staged, target })
    }

    /// Makes it the last good config (atomic rename, then the directory synced).
    pub fn commit(self) -> std::io::Result<()> {
        std::fs::rename(&self.staged, &self.target)?;
        if let Some(dir) = self.target.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Throws it away (the apply failed).
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.staged);
    }
}

/// Starts the control link if the config has a `[coordinator]` table; never waits for it.
pub fn spawn_link(config: &NodeConfig) -> Option<Link> {
    let link = config.coordinator.as_ref()?;
    let (side, task) = control::spawn(ControlConfig {
        coordinators: link.addresses.clone(),
        node_name: config.node.name.clone(),
        tls: ClientTlsFiles {
            ca: link.ca.clone(),
            cert: link.cert.clone(),
            key: link.key.clone(),
        },
        software_version: env!("CARGO_PKG_VERSION").to_owned(),
        capabilities: vec![
            "apply-config".into(),
            "drain".into(),
            "priority-override".into(),
            "exec".into(),
        ],
        backoff: Backoff::new(Duration::from_millis(200), v1::AGENT_RECONNECT_MAX),
    });
    tracing::info!(coordinators = ?link.addresses, "control link started");
    Some(Link { side, _task: task })
}

/// The running control link.
pub struct Link {
    pub side: DaemonSide,
    _task: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Publishes `snapshot` unless only its time changed.
    pub fn publish(&self, snapshot: StateSnapshot) {
        self.side.snapshots.send_if_modified(|current| {
            let mut compare = snapshot.clone();
            compare.unix_ms = current.unix_ms;
            let changed = *current != compare;
            if changed {
                *current = snapshot;
            }
            changed
        });
    }

    pub fn event(&self, kind: event::Kind) {
        self.side.events.send(Event {
            unix_ms: unix_ms(),
            kind: Some(kind),
        });
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where [`Overrides::save`] keeps them in the state dir.
const OVERRIDES_FILE: &str = "overrides.json";

/// The overrides on disk: expiries on the wall clock, so a restart keeps what remains.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct SavedOverrides {
    drained: bool,
    /// Instance → (priority, expiry in Unix milliseconds; `None`: until cleared).
    instances: BTreeMap<String, (u8, Option<u64>)>,
}

/// Runtime priority overrides: per instance (with an optional expiry) and the drain.
#[derive(Debug, Default)]
pub struct Overrides {
    pub drained: bool,
    per_instance: BTreeMap<String, (Priority, Option<Instant>)>,
}

impl Overrides {
    pub fn set(&mut self, instance: &str, priority: Priority, ttl: Option<Duration>, now: Instant) {
        let until = ttl.map(|ttl| now + ttl);
        self.per_instance
            .insert(instance.to_owned(), (priority, until));
    }

    pub fn clear(&mut self, instance: &str) -> bool {
        self.per_instance.remove(instance).is_some()
    }

    /// The override `instance` runs with: its own, else the drain's.
    pub fn of(&self, instance: &str) -> Option<Priority> {
        match self.per_instance.get(instance) {
            Some((priority, _)) => Some(*priority),
            None if self.drained => Some(DRAIN_PRIORITY),
            None => None,
        }
    }

    /// The earliest expiry.
    pub fn next_expiry(&self) -> Option<Instant> {
        if self.per_instance.is_empty() {
            return None;
        }
        self.per_instance
            .values()
            .filter_map(|(_, until)| *until)
            .min()
    }

    /// What an earlier run kept in `state_dir` (see [`Overrides::save`]), without what expired
    /// meanwhile; nothing when there is no file or it cannot be read (said in the log).
    pub fn load(state_dir: &Path, now: Instant) -> Overrides {
        let path = state_dir.join(OVERRIDES_FILE);
        let saved: SavedOverrides = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(saved) => saved,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "priority overrides unreadable: none kept");
                    return Overrides::default();
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Overrides::default();
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "priority overrides unreadable: none kept");
                return Overrides::default();
            }
        };
        let wall_now = unix_ms_now();
        let mut overrides = Overrides {
            drained: saved.drained,
            per_instance: BTreeMap::new(),
        };
        for (instance, (priority, expires)) in saved.instances {
            let until = match expires {
                None => None,
                Some(at) if at <= wall_now => continue,
                Some(at) => Some(now + Duration::from_millis(at - wall_now)),
            };
            overrides
                .per_instance
                .insert(instance, (Priority(priority), until));
        }
        if overrides.drained || !overrides.per_instance.is_empty() {
            tracing::info!(
                drained = overrides.drained,
                instances = ?overrides.per_instance.keys().collect::<Vec<_>>(),
                "priority overrides kept from the previous run"
            );
        }
        overrides
    }

    /// Writes the overrides into `state_dir` (whole, then renamed into place), so that a
    /// restart runs with them before any coordinator is reached.
    pub fn save(&self, state_dir: &Path, now: Instant) -> std::io::Result<()> {
        let wall_now = unix_ms_now();
        let saved = SavedOverrides {
            drained: self.drained,
            instances: (self.per_instance.iter())
                .map(|(name, (priority, until))| {
                    let expires = until.map(|until| {
                        let left = until.saturating_duration_since(now).as_millis();
                        wall_now + u64::try_from(left).unwrap_or(u64::MAX / 2)
                    });
                    (name.clone(), (priority.get(), expires))
                })
                .collect(),
        };
        let path = state_dir.join(OVERRIDES_FILE);
        let tmp = state_dir.join(format!("{OVERRIDES_FILE}.new"));
        std::fs::write(&tmp, serde_json::to_vec(&saved).unwrap_or_default())?;
        std::fs::rename(&tmp, &path)
    }

    /// Drops the overrides that expired by `now`; their names.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> = (self.per_instance.iter())
            .filter(|(_, (_, until))| until.is_some_and(|until| until <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &expired {
            self.per_instance.remove(name);
        }
        expired
    }
}

/// The node's state as the coordinator sees it.
pub fn snapshot(
    engine: &Engine,
    config: &NodeConfig,
    version: u64,
    overrides: &Overrides,
    draining: impl Fn(hav_vrrp::engine::RouterId) -> Option<usize>,
) -> StateSnapshot {
    let instances = (engine.status().iter())
        .map(|status| {
            let instance = config.instance(&status.name);
            InstanceState {
                name: status.name.clone(),
                vrid: instance.map_or(0, |i| u32::from(i.vrid.get())),
                state: vrrp_state(status.state) as i32,
                effective_priority: u32::from(status.effective_priority.get()),
                configured_priority: u32::from(status.base_priority.get()),
                vips_held: match (status.holds_vips, instance) {
                    (true, Some(instance)) => (instance.vips.iter())
                        .map(|vip| format!("{}/{}", vip.address, vip.prefix_len))
                        .collect(),
                    _ => Vec::new(),
                },
                interface: instance.map(|i| i.interface.clone()).unwrap_or_default(),
                priority_override: overrides.of(&status.name).map(|p| u32::from(p.get())),
                advert_interval_ms: instance.map_or(0, |i| {
                    u32::try_from(i.advert_interval.as_duration().as_millis()).unwrap_or(u32::MAX)
                }),
                draining_connections: draining(status.id)
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            }
        })
        .collect();
    StateSnapshot {
        config_version: version,
        instances,
        drained: overrides.drained,
        unix_ms: unix_ms(),
    }
}

pub fn vrrp_state(state: State) -> VrrpState {
    match state {
        State::Initialize => VrrpState::Initialize,
        State::Backup => VrrpState::Backup,
        State::Master => VrrpState::Master,
        State::Fault => VrrpState::Fault,
        #[allow(unreachable_patterns)]
        _ => VrrpState::Unspecified,
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_survive_a_restart_through_the_state_dir_without_what_expired() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = Instant::now();
        assert!(
            Overrides::load(dir.path(), now).of("a").is_none(),
            "no file"
        );
        let mut overrides = Overrides::default();
        overrides.set("a", Priority(50), None, now);
        overrides.set("b", Priority(60), Some(Duration::from_secs(3600)), now);
        overrides.set("c", Priority(70), Some(Duration::from_millis(1)), now);
        overrides.drained = true;
        overrides.save(dir.path(), now).expect("saved");
        std::thread::sleep(Duration::from_millis(5));
        let later = Instant::now();
        let kept = Overrides::load(dir.path(), later);
        assert!(kept.drained);
        assert_eq!(kept.per_instance.get("a"), Some(&(Priority(50), None)));
        let (priority, until) = kept.per_instance["b"];
        assert_eq!(priority, Priority(60));
        let left = until.expect("an expiry").duration_since(later);
        assert!(
            left > Duration::from_secs(3590) && left <= Duration::from_secs(3600),
            "{left:?}"
        );
        assert!(!kept.per_instance.contains_key("c"), "expired meanwhile");
        std::fs::write(dir.path().join(OVERRIDES_FILE), "{not json").expect("write");
        assert!(Overrides::load(dir.path(), later).per_instance.is_empty());
    }

    #[test]
    fn overrides_expire_and_drain_applies_where_no_override_is_set() {
        let now = Instant::now();
        let mut overrides = Overrides::default();
        overrides.set("a", Priority(200), Some(Duration::from_secs(5)), now);
        overrides.set("b", Priority(50), None, now);
        overrides.drained = true;
        assert_eq!(overrides.of("a"), Some(Priority(200)));
        assert_eq!(overrides.of("c"), Some(DRAIN_PRIORITY));
        assert_eq!(overrides.next_expiry(), Some(now + Duration::from_secs(5)));
        assert!(overrides.expire(now + Duration::from_secs(4)).is_empty());
        assert_eq!(overrides.expire(now + Duration::from_secs(5)), vec!["a"]);
        assert_eq!(overrides.of("a"), Some(DRAIN_PRIORITY));
        overrides.drained = false;
        assert_eq!(overrides.of("a"), None);
        assert_eq!(overrides.next_expiry(), None);
    }

    const LOCAL: &str = "[node]\nname = \"lb-1\"\nstate_dir = \"STATE\"\n\
        [coordinator]\naddress = \"198.51.100.1:7400\"\nca = \"/ca\"\ncert = \"/c\"\nkey = \"/k\"\n";
    const PUSHED: &str = "[node]\nname = \"lb-1\"\n[[instance]]\nname = \"v\"\n\
        interface = \"eth0\"\nvrid = 1\nvips = [\"198.51.100.100/24\"]\n";

    #[test]
    fn the_newer_of_local_file_and_applied_config_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let local_path = dir.path().join("agent.toml");
        let local_text = LOCAL.replace("STATE", &state.display().to_string());
        std::fs::write(&local_path, &local_text).expect("write");
        let local = || parse_node_config(&local_text, "local").expect("valid");
        // Nothing applied yet: the local file.
        assert_eq!(select(&local_path, local()).version, 0);
        // Applied later: it runs, with the local [node] and [coordinator].
        let pushed = parse(PUSHED, 7, &local()).expect("valid push");
        Staged::write(&state, 7, PUSHED)
            .expect("stage")
            .commit()
            .expect("commit");
        let future = SystemTime::now() + Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(state.join(APPLIED_FILE))
            .and_then(|f| f.set_modified(future))
            .expect("mtime");
        let selected = select(&local_path, local());
        assert_eq!(selected.version, 7);
        assert_eq!(selected.config, pushed);
        assert_eq!(selected.config.node.state_dir, state);
        assert!(selected.config.coordinator.is_some());
        // The local file edited afterwards: it wins again.
        std::fs::File::options()
            .write(true)
            .open(&local_path)
            .and_then(|f| f.set_modified(future + Duration::from_secs(1)))
            .expect("mtime");
        assert_eq!(select(&local_path, local()).version, 0);
    }

    #[test]
    fn a_config_for_another_node_is_refused() {
        let local =
            parse_node_config(&LOCAL.replace("STATE", "/var/lib/hav"), "local").expect("valid");
        let error = parse(&PUSHED.replace("lb-1", "lb-2"), 3, &local).expect_err("other node");
        assert!(error.contains("is for node \"lb-2\""), "{error}");
    }
}
