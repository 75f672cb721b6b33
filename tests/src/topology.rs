//! Test topologies: LANs and hosts, each host a named network namespace.
//!
//! A LAN is a bridge `<prefix>-br` inside its own switch namespace `<prefix>-sw-<lan>`; attaching
//! a host creates a veth pair whose switch end `<prefix>-<host>` joins the bridge and whose host
//! end `<prefix>-<lan>` gets the host's addresses (IPv6 with `nodad`, DAD off in every host).
//! A [`Lab`] owns all of it: dropping it (also while a test panics) kills the processes left
//! in its namespaces and deletes them, and removes the run's marker file.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::netns::{
    ExecOutput, LOG_ROOT, MARKER_DIR, Marker, Namespace, NetnsError, NsProcess, Presence,
    RunPrefix, SpawnSpec,
};

/// Addressing of one LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanSpec {
    /// The IPv4 network (host part zero); hosts get `.<octet>`.
    pub ipv4_network: Ipv4Addr,
    pub ipv4_prefix_len: u8,
    /// The IPv6 /64 (host part zero); hosts get `::<octet>` (hex digits of the decimal octet).
    pub ipv6_network: Option<Ipv6Addr>,
}

impl LanSpec {
    /// 198.51.100.0/24 and 2001:db8::/64 (TEST-NET-2 and the documentation prefix).
    pub const PRIMARY: LanSpec = LanSpec {
        ipv4_network: Ipv4Addr::new(198, 51, 100, 0),
        ipv4_prefix_len: 24,
        ipv6_network: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0)),
    };
    /// 203.0.113.0/24 and 2001:db8:0:1::/64, for a second (WAN/sync-group) LAN.
    pub const SECONDARY: LanSpec = LanSpec {
        ipv4_network: Ipv4Addr::new(203, 0, 113, 0),
        ipv4_prefix_len: 24,
        ipv6_network: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0)),
    };

    /// The IPv4 address of host `octet` on this LAN.
    pub fn ipv4(&self, octet: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.ipv4_network.octets();
        Ipv4Addr::new(a, b, c, octet)
    }

    /// The IPv6 address of host `octet` on this LAN.
    pub fn ipv6(&self, octet: u8) -> Option<Ipv6Addr> {
        self.ipv6_network.map(|net| {
            let mut segments = net.segments();
            segments[7] = u16::from(octet);
            Ipv6Addr::from(segments)
        })
    }
}

/// One host's port on one LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub host: String,
    pub lan: String,
    /// Interface name inside the host's namespace.
    pub iface: String,
    /// Bridge port name inside the LAN's switch namespace.
    pub switch_port: String,
    pub ipv4: Ipv4Addr,
    pub ipv4_prefix_len: u8,
    pub ipv6: Option<Ipv6Addr>,
}

/// Which end of a host's veth a link cut acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEnd {
    /// The bridge port: the host sees carrier loss (like a pulled cable / switch port down).
    Switch,
    /// The host's own interface (administratively down).
    Host,
}

#[derive(Debug)]
struct Lan {
    spec: LanSpec,
    switch: Namespace,
    bridge: String,
}

/// A set of hosts and LANs for one test; everything removed on drop.
#[derive(Debug)]
pub struct Lab {
    prefix: RunPrefix,
    log_dir: PathBuf,
    marker: PathBuf,
    hosts: BTreeMap<String, Namespace>,
    lans: BTreeMap<String, Lan>,
    attachments: Vec<Attachment>,
    keep_logs: AtomicBool,
}

impl Lab {
    /// A new empty lab with a fresh prefix; writes the marker `/run/hav-tests/<prefix>.pid`
    /// first so that a crash at any later point is found by [`crate::netns::sweep_stale`].
    pub fn new() -> Result<Lab, NetnsError> {
        let prefix = RunPrefix::generate()?;
        fs::create_dir_all(MARKER_DIR).map_err(|e| NetnsError::Io {
            what: format!("create {MARKER_DIR}"),
            source: e,
        })?;
        let marker = Path::new(MARKER_DIR).join(format!("{prefix}.pid"));
        fs::write(&marker, Marker::current()?.render()).map_err(|e| NetnsError::Io {
            what: format!("write {}", marker.display()),
            source: e,
        })?;
        let log_dir = Path::new(LOG_ROOT).join(prefix.as_str());
        Ok(Lab {
            prefix,
            log_dir,
            marker,
            hosts: BTreeMap::new(),
            lans: BTreeMap::new(),
            attachments: Vec::new(),
            keep_logs: AtomicBool::new(std::env::var_os("HAV_TESTS_KEEP_LOGS").is_some()),
        })
    }

    pub fn prefix(&self) -> &RunPrefix {
        &self.prefix
    }

    /// Where the logs of spawned processes and generated files of this run live. The directory
    /// is removed on drop unless the thread is panicking, [`Lab::keep_logs`] was called, or
    /// `HAV_TESTS_KEEP_LOGS` is set.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Keeps the log directory after drop (call it when a run failed without panicking).
    pub fn keep_logs(&self) {
        self.keep_logs.store(true, Ordering::Relaxed);
    }

    /// Creates a LAN: switch namespace `<prefix>-sw-<name>` holding bridge `<prefix>-br`
    /// (STP off, multicast snooping off, so VRRP multicast is flooded).
    pub fn add_lan(&mut self, name: &str, spec: LanSpec) -> Result<(), NetnsError> {
        // The LAN's name becomes the host-side interface name: it must fit IFNAMSIZ.
        self.prefix.name(name)?;
        let switch_name = format!("{}-sw-{name}", self.prefix);
        let switch = Namespace::create(&switch_name, &self.log_dir)?;
        let bridge = self.prefix.name("br")?;
        let lan = Lan {
            spec,
            switch,
            bridge: bridge.clone(),
        };
        // Registered before configuring, so a failure below still removes the namespace.
        let lan = self.lans.entry(name.to_owned()).or_insert(lan);
        lan.switch.ip(&[
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        lan.switch.ip(&["link", "set", &bridge, "up"])?;
        Ok(())
    }

    /// Creates host namespace `<prefix>-<name>` with loopback up and IPv6 DAD disabled.
    pub fn add_host(&mut self, name: &str) -> Result<&Namespace, NetnsError> {
        if name.starts_with("sw-") {
            return Err(NetnsError::InvalidName {
                name: name.to_owned(),
                reason: "host names starting with `sw-` are reserved for switches",
            });
        }
        // The host's name is the bridge-port name on every LAN: it must fit IFNAMSIZ.
        let ns_name = self.prefix.name(name)?;
        let ns = Namespace::create(&ns_name, &self.log_dir)?;
        let ns = self.hosts.entry(name.to_owned()).or_insert(ns);
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        Ok(ns)
    }

    /// Connects `host` to `lan` with address `.<octet>` (and `::<octet>` if the LAN has IPv6).
    pub fn attach(&mut self, host: &str, lan: &str, octet: u8) -> Result<Attachment, NetnsError> {
        self.host(host)?;
        let spec = self.lans.get(lan).ok_or_else(|| unknown("lan", lan))?.spec;
        let attachment = Attachment {
            host: host.to_owned(),
            lan: lan.to_owned(),
            iface: self.prefix.name(lan)?,
            switch_port: self.prefix.name(host)?,
            ipv4: spec.ipv4(octet),
            ipv4_prefix_len: spec.ipv4_prefix_len,
            ipv6: spec.ipv6(octet),
        };
        self.create_link(&attachment)?;
        self.attachments.push(attachment.clone());
        Ok(attachment)
    }

    /// Deletes `host`'s interface `iface` (both ends of the veth go): what a NIC driver unload or
    /// a hot-unplug looks like to the host. [`Lab::recreate_link`] brings it back.
    pub fn delete_link(&self, host: &str, iface: &str) -> Result<(), NetnsError> {
        let attachment = self.attachment(host, iface)?;
        self.host(host)?
            .ip(&["link", "del", &attachment.iface])
            .map(drop)
    }

    /// Recreates a link deleted by [`Lab::delete_link`] with the same names and addresses (the
    /// host sees a new interface, with a new ifindex, under the old name).
    pub fn recreate_link(&self, host: &str, iface: &str) -> Result<(), NetnsError> {
        let attachment = self.attachment(host, iface)?.clone();
        self.create_link(&attachment)
    }

    /// The veth of `attachment`: switch end on the bridge, host end with its addresses, both up.
    fn create_link(&self, attachment: &Attachment) -> Result<(), NetnsError> {
        let host_ns = self.host(&attachment.host)?;
        let lan_state = self
            .lans
            .get(&attachment.lan)
            .ok_or_else(|| unknown("lan", &attachment.lan))?;
        let (port, iface) = (&attachment.switch_port, &attachment.iface);
        let switch = &lan_state.switch;
        switch.ip(&[
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            iface,
            "netns",
            host_ns.name(),
        ])?;
        switch.ip(&["link", "set", port, "master", &lan_state.bridge])?;
        switch.ip(&["link", "set", port, "up"])?;
        host_ns.ip(&[
            "addr",
            "add",
            &format!("{}/{}", attachment.ipv4, attachment.ipv4_prefix_len),
            "dev",
            iface,
        ])?;
        if let Some(v6) = attachment.ipv6 {
            host_ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", iface, "nodad"])?;
        }
        host_ns.ip(&["link", "set", iface, "up"])?;
        Ok(())
    }

    pub fn host(&self, name: &str) -> Result<&Namespace, NetnsError> {
        self.hosts.get(name).ok_or_else(|| unknown("host", name))
    }

    /// The attachment of `host` whose host-side interface is `iface`.
    pub fn attachment(&self, host: &str, iface: &str) -> Result<&Attachment, NetnsError> {
        self.attachments
            .iter()
            .find(|a| a.host == host && a.iface == iface)
            .ok_or_else(|| unknown("attachment", &format!("{host}/{iface}")))
    }

    /// Cuts `host`'s link `iface` at the switch port: the host sees carrier loss.
    pub fn link_down(&self, host: &str, iface: &str) -> Result<(), NetnsError> {
        self.set_link(host, iface, LinkEnd::Switch, false)
    }

    /// Restores a link cut by [`Lab::link_down`].
    pub fn link_up(&self, host: &str, iface: &str) -> Result<(), NetnsError> {
        self.set_link(host, iface, LinkEnd::Switch, true)
    }

    /// Sets one end of `host`'s link `iface` up or down.
    pub fn set_link(
        &self,
        host: &str,
        iface: &str,
        end: LinkEnd,
        up: bool,
    ) -> Result<(), NetnsError> {
        let attachment = self.attachment(host, iface)?;
        let state = if up { "up" } else { "down" };
        match end {
            LinkEnd::Switch => {
                let lan = self
                    .lans
                    .get(&attachment.lan)
                    .ok_or_else(|| unknown("lan", &attachment.lan))?;
                lan.switch
                    .ip(&["link", "set", &attachment.switch_port, state])
                    .map(drop)
            }
            LinkEnd::Host => self
                .host(host)?
                .ip(&["link", "set", &attachment.iface, state])
                .map(drop),
        }
    }

    /// Isolates `host`'s port `iface` on its LAN's bridge (`bridge link set … isolated on`), or
    /// ends that. Isolated ports exchange no frame with each other, multicast included, and
    /// still reach every port that is not isolated: isolating the two nodes of a pair cuts
    /// VRRP between them and nothing else.
    pub fn set_port_isolated(
        &self,
        host: &str,
        iface: &str,
        isolated: bool,
    ) -> Result<(), NetnsError> {
        let attachment = self.attachment(host, iface)?;
        let lan = self
            .lans
            .get(&attachment.lan)
            .ok_or_else(|| unknown("lan", &attachment.lan))?;
        let state = if isolated { "on" } else { "off" };
        let out = lan.switch.exec(&[
            "bridge",
            "link",
            "set",
            "dev",
            &attachment.switch_port,
            "isolated",
            state,
        ])?;
        if out.success() {
            Ok(())
        } else {
            Err(NetnsError::Io {
                what: format!(
                    "bridge link set dev {} isolated {state}",
                    attachment.switch_port
                ),
                source: std::io::Error::other(out.stderr),
            })
        }
    }

    /// Runs `argv` to completion in `host`.
    pub fn exec(&self, host: &str, argv: &[&str]) -> Result<ExecOutput, NetnsError> {
        self.host(host)?.exec(argv)
    }

    /// Starts a process in `host`; see [`Namespace::spawn`].
    pub fn spawn(&self, host: &str, spec: SpawnSpec) -> Result<NsProcess, NetnsError> {
        self.host(host)?.spawn(spec)
    }

    /// The addresses on `host`'s interface `iface`.
    pub fn addresses(&self, host: &str, iface: &str) -> Result<Vec<IpAddr>, NetnsError> {
        self.host(host)?.addresses(iface)
    }

    /// Waits (netlink events, no polling) until `addr` is present on/absent from `host`.
    pub fn wait_address(
        &self,
        host: &str,
        addr: IpAddr,
        want: Presence,
        timeout: Duration,
    ) -> Result<(), NetnsError> {
        self.host(host)?.wait_address(addr, want, timeout)
    }

    /// The names of every namespace this lab created.
    pub fn namespace_names(&self) -> Vec<String> {
        self.hosts
            .values()
            .map(|ns| ns.name().to_owned())
            .chain(self.lans.values().map(|lan| lan.switch.name().to_owned()))
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Hosts first (their veths vanish with them), then the switches.
        for (_, ns) in std::mem::take(&mut self.hosts) {
            let name = ns.name().to_owned();
            if let Err(e) = ns.delete() {
                eprintln!("hav-tests: cannot delete namespace {name}: {e}");
            }
        }
        for (_, lan) in std::mem::take(&mut self.lans) {
            let name = lan.switch.name().to_owned();
            if let Err(e) = lan.switch.delete() {
                eprintln!("hav-tests: cannot delete namespace {name}: {e}");
            }
        }
        let _ = fs::remove_file(&self.marker);
        if std::thread::panicking() || self.keep_logs.load(Ordering::Relaxed) {
            eprintln!("hav-tests: logs kept in {}", self.log_dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.log_dir);
        }
    }
}

/// The reference failover topology: hosts `a` (.11), `b` (.12) and `client` (.100) on LAN
/// `lan` = [`LanSpec::PRIMARY`]; the VIPs are 198.51.100.1 and 2001:db8::1.
#[derive(Debug)]
pub struct Pair {
    pub lab: Lab,
    pub a: Attachment,
    pub b: Attachment,
    pub client: Attachment,
    pub vip4: Ipv4Addr,
    pub vip6: Ipv6Addr,
}

impl Pair {
    pub const LAN: &'static str = "lan";

    pub fn new() -> Result<Pair, NetnsError> {
        let mut lab = Lab::new()?;
        lab.add_lan(Self::LAN, LanSpec::PRIMARY)?;
        for host in ["a", "b", "client"] {
            lab.add_host(host)?;
        }
        let a = lab.attach("a", Self::LAN, 11)?;
        let b = lab.attach("b", Self::LAN, 12)?;
        let client = lab.attach("client", Self::LAN, 100)?;
        Ok(Pair {
            lab,
            a,
            b,
            client,
            vip4: LanSpec::PRIMARY.ipv4(1),
            vip6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
        })
    }

    /// The attachment of node `a` or `b`.
    pub fn node(&self, name: &str) -> Result<&Attachment, NetnsError> {
        match name {
            "a" => Ok(&self.a),
            "b" => Ok(&self.b),
            _ => Err(unknown("node", name)),
        }
    }
}

fn unknown(kind: &'static str, name: &str) -> NetnsError {
    NetnsError::NotFound {
        kind,
        name: name.to_owned(),
    }
}
