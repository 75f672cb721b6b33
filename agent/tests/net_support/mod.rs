//! A two-namespace lab for the `net` integration tests: a veth pair between two anonymous
//! network namespaces, built in a dedicated thread that vanishes with them.
//!
//! `run` starts a thread, unshares two network namespaces A and B (the thread keeps a file
//! descriptor on each and sits in A), builds a current-thread tokio runtime there and wires:
//!
//! ```text
//!   ns A  hva  198.51.100.1/24  2001:db8::1/64  fe80::a/64   <-veth->  hvb  198.51.100.2/24  2001:db8::2/64  fe80::b/64  ns B
//! ```
//!
//! IPv6 addresses are added with `nodad`, both links are awaited until their operational state is
//! up (netlink events, no sleeps). Nothing touches the host's namespace.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::channel::mpsc::UnboundedReceiver;
use futures::{StreamExt, TryStreamExt};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, State};
use nix::sched::{CloneFlags, setns, unshare};
use rtnetlink::packet_core::NetlinkMessage;
use rtnetlink::sys::SocketAddr;
use rtnetlink::{Handle, LinkUnspec, LinkVeth, MulticastGroup};

/// Safety net for every awaited event.
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub const IFACE_A: &str = "hva";
pub const IFACE_B: &str = "hvb";
pub const V4_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const V4_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const V6_A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const V6_B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub const LL_A: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xa);
pub const LL_B: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xb);

type Events = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// The lab, handed to the test body. The calling thread is in namespace A.
pub struct Lab {
    ns_a: OwnedFd,
    ns_b: OwnedFd,
    /// rtnetlink in namespace A.
    pub netlink_a: Handle,
    /// rtnetlink in namespace B.
    pub netlink_b: Handle,
}

impl Lab {
    /// Runs `f` with the thread in namespace B (sockets it opens stay in B), then returns to A.
    pub fn in_b<T>(&self, f: impl FnOnce() -> T) -> T {
        setns(self.ns_b.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
        let result = f();
        setns(self.ns_a.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
        result
    }

    /// The MAC of `iface` in namespace A, from netlink.
    pub async fn mac_a(&self, iface: &str) -> [u8; 6] {
        let link = self
            .netlink_a
            .link()
            .get()
            .match_name(iface.to_owned())
            .execute();
        let link = Box::pin(link).try_next().await.unwrap().unwrap();
        link.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
                _ => None,
            })
            .unwrap()
    }

    /// Every address message on `iface` in namespace A.
    pub async fn addresses_a(&self, iface: &str) -> Vec<AddressMessage> {
        let index = link_index(&self.netlink_a, iface).await;
        self.netlink_a
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .unwrap()
    }
}

/// The address of an address message (`IFA_LOCAL`, else `IFA_ADDRESS`).
pub fn address_of(message: &AddressMessage) -> Option<IpAddr> {
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(addr) => Some(*addr),
        _ => None,
    });
    local.or_else(|| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(addr) => Some(*addr),
            _ => None,
        })
    })
}

/// The label of an address message.
pub fn label_of(message: &AddressMessage) -> Option<String> {
    message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Label(label) => Some(label.clone()),
        _ => None,
    })
}

/// The full flags of an address message.
pub fn flags_of(message: &AddressMessage) -> AddressFlags {
    message
        .attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Flags(flags) => Some(*flags),
            _ => None,
        })
        .unwrap_or(AddressFlags::empty())
}

/// Runs `test` in a fresh lab; panics in the test fail the calling test.
pub fn run<F, Fut>(test: F)
where
    F: FnOnce(Lab) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) needs root");
        let ns_a = namespace_fd();
        unshare(CloneFlags::CLONE_NEWNET).unwrap();
        let ns_b = namespace_fd();
        setns(ns_a.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Namespace B lives only as long as a reference to it: keep one for the whole test, even
        // if the test body drops its `Lab` early (its veth end, and so `hva`, would vanish).
        let keep_b = ns_b.try_clone().unwrap();
        runtime.block_on(async move {
            let lab = build(ns_a, ns_b).await;
            test(lab).await;
        });
        drop(keep_b);
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

fn namespace_fd() -> OwnedFd {
    File::open("/proc/thread-self/ns/net").unwrap().into()
}

async fn build(ns_a: OwnedFd, ns_b: OwnedFd) -> Lab {
    let (connection, netlink_a, mut events_a) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link]).unwrap();
    tokio::spawn(connection);
    setns(ns_b.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
    let opened = rtnetlink::new_multicast_connection(&[MulticastGroup::Link]);
    setns(ns_a.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
    let (connection, netlink_b, mut events_b) = opened.unwrap();
    tokio::spawn(connection);

    set_up(&netlink_a, "lo").await;
    set_up(&netlink_b, "lo").await;
    netlink_a
        .link()
        .add(LinkVeth::new(IFACE_A, IFACE_B).build())
        .execute()
        .await
        .unwrap();
    let index_b = link_index(&netlink_a, IFACE_B).await;
    let move_b = LinkUnspec::new_with_index(index_b)
        .setns_by_fd(ns_b.as_raw_fd())
        .build();
    netlink_a.link().set(move_b).execute().await.unwrap();
    set_up(&netlink_a, IFACE_A).await;
    set_up(&netlink_b, IFACE_B).await;
    wait_operational(&netlink_a, &mut events_a, IFACE_A).await;
    wait_operational(&netlink_b, &mut events_b, IFACE_B).await;

    for (handle, iface, v4, v6, ll) in [
        (&netlink_a, IFACE_A, V4_A, V6_A, LL_A),
        (&netlink_b, IFACE_B, V4_B, V6_B, LL_B),
    ] {
        add_address(handle, iface, IpAddr::V4(v4), 24).await;
        add_address(handle, iface, IpAddr::V6(v6), 64).await;
        add_address(handle, iface, IpAddr::V6(ll), 64).await;
    }
    Lab {
        ns_a,
        ns_b,
        netlink_a,
        netlink_b,
    }
}

/// Adds an address (IPv6 with `nodad`, so it is never tentative).
pub async fn add_address(handle: &Handle, iface: &str, addr: IpAddr, prefix_len: u8) {
    let index = link_index(handle, iface).await;
    let mut request = handle.address().add(index, addr, prefix_len);
    if addr.is_ipv6() {
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    request.execute().await.unwrap();
}

pub async fn link_index(handle: &Handle, iface: &str) -> u32 {
    let link = handle.link().get().match_name(iface.to_owned()).execute();
    Box::pin(link)
        .try_next()
        .await
        .unwrap()
        .unwrap()
        .header
        .index
}

pub async fn set_up(handle: &Handle, iface: &str) {
    let index = link_index(handle, iface).await;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .unwrap();
}

/// Awaits the operational state "up" of `iface` (the veth carrier is on and its queue active),
/// re-checking on every link event.
async fn wait_operational(handle: &Handle, events: &mut Events, iface: &str) {
    loop {
        let link = handle.link().get().match_name(iface.to_owned()).execute();
        let link = Box::pin(link).try_next().await.unwrap().unwrap();
        if link
            .attributes
            .contains(&LinkAttribute::OperState(State::Up))
        {
            return;
        }
        tokio::time::timeout(TIMEOUT, events.next())
            .await
            .unwrap_or_else(|_| panic!("{iface} did not come up"));
    }
}

/// A state directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let suffix: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let path = std::env::temp_dir().join(format!("hav-{name}-{}-{suffix}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `nft` in the calling thread's namespace, `stdin` on its standard input; its standard output.
pub fn nft(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the nft program (apt-get install nftables)");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(pipe);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "nft {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}
