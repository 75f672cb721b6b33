//! Interface tracker against real netlink, in an anonymous network namespace of its own (the
//! host's interfaces are never touched): a veth link created, set up and down, its carrier lost
//! and regained by setting its peer down and up, renamed, deleted. (veth rather than dummy: the
//! test kernel has no dummy driver, and a veth peer gives a real carrier change.)

mod track_support;

use futures::TryStreamExt;
use hav_agent::track::{self, Health, InterfaceSpec, TrackSpec};
use rtnetlink::{Handle, LinkUnspec, LinkVeth};
use tokio::sync::mpsc;
use track_support::{down_reason, next_health, unique};

/// Runs `scenario` on a current-thread runtime in a thread that has its own network namespace;
/// the namespace vanishes with the thread.
fn in_fresh_netns<F>(scenario: impl FnOnce() -> F + Send + 'static)
where
    F: Future<Output = ()>,
{
    let outcome = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (needs root)");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(scenario());
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn index_of(handle: &Handle, name: &str) -> u32 {
    let link = handle
        .link()
        .get()
        .match_name(name)
        .execute()
        .try_next()
        .await
        .expect("get link")
        .expect("link exists");
    link.header.index
}

async fn set(handle: &Handle, message: rtnetlink::packet_route::link::LinkMessage) {
    handle
        .link()
        .set(message)
        .execute()
        .await
        .expect("set link");
}

#[test]
fn follows_a_veth_link() {
    in_fresh_netns(|| async {
        let (connection, handle, _) = rtnetlink::new_connection().expect("netlink");
        tokio::spawn(connection);
        let name = unique("h");
        let peer = unique("h");
        let (tx, mut rx) = mpsc::channel(16);
        let spec = InterfaceSpec { name: name.clone() };
        let _tracker = track::spawn("link", TrackSpec::Interface(spec), tx).expect("spawn");

        let absent = next_health(&mut rx).await;
        assert!(down_reason(&absent).contains("no link named"), "{absent:?}");

        handle
            .link()
            .add(LinkVeth::new(&name, &peer).build())
            .execute()
            .await
            .expect("add veth");
        let index = index_of(&handle, &name).await;
        let peer_index = index_of(&handle, &peer).await;
        // Up, but the peer is down: no carrier, still down (so no event yet).
        set(&handle, LinkUnspec::new_with_index(index).up().build()).await;
        set(&handle, LinkUnspec::new_with_index(peer_index).up().build()).await;
        assert_eq!(next_health(&mut rx).await, Health::Up);

        set(
            &handle,
            LinkUnspec::new_with_index(peer_index).down().build(),
        )
        .await;
        let no_carrier = next_health(&mut rx).await;
        assert_eq!(down_reason(&no_carrier), "no carrier");
        set(&handle, LinkUnspec::new_with_index(peer_index).up().build()).await;
        assert_eq!(next_health(&mut rx).await, Health::Up);

        set(&handle, LinkUnspec::new_with_index(index).down().build()).await;
        let admin_down = next_health(&mut rx).await;
        assert_eq!(down_reason(&admin_down), "administratively down");
        set(&handle, LinkUnspec::new_with_index(index).up().build()).await;
        assert_eq!(next_health(&mut rx).await, Health::Up);

        // Renaming needs the link down. Renamed away, the link is no longer the tracked one:
        // setting it up under its new name is not reported.
        set(&handle, LinkUnspec::new_with_index(index).down().build()).await;
        assert!(matches!(next_health(&mut rx).await, Health::Down { .. }));
        let other = unique("h");
        set(
            &handle,
            LinkUnspec::new_with_index(index)
                .name(other.clone())
                .build(),
        )
        .await;
        set(&handle, LinkUnspec::new_with_index(index).up().build()).await;
        // The name is free: a new pair takes it, up but without carrier, then gets carrier.
        let peer2 = unique("h");
        handle
            .link()
            .add(LinkVeth::new(&name, &peer2).build())
            .execute()
            .await
            .expect("add veth");
        let index2 = index_of(&handle, &name).await;
        let peer2_index = index_of(&handle, &peer2).await;
        set(&handle, LinkUnspec::new_with_index(index2).up().build()).await;
        set(
            &handle,
            LinkUnspec::new_with_index(peer2_index).up().build(),
        )
        .await;
        assert_eq!(next_health(&mut rx).await, Health::Up);
        set(&handle, LinkUnspec::new_with_index(index2).down().build()).await;
        // A tracker that had followed the renamed link would have reported Up for it and then
        // "no carrier" for the new link here.
        let admin_down = next_health(&mut rx).await;
        assert_eq!(down_reason(&admin_down), "administratively down");
        set(&handle, LinkUnspec::new_with_index(index2).up().build()).await;
        assert_eq!(next_health(&mut rx).await, Health::Up);

        // Deleting an up link (the kernel closes it first, then deletes it).
        handle.link().del(index2).execute().await.expect("delete");
        assert!(matches!(next_health(&mut rx).await, Health::Down { .. }));
    });
}

#[test]
fn a_link_that_exists_and_is_up_at_start_is_reported_up() {
    in_fresh_netns(|| async {
        let (connection, handle, _) = rtnetlink::new_connection().expect("netlink");
        tokio::spawn(connection);
        let (name, peer) = (unique("h"), unique("h"));
        handle
            .link()
            .add(LinkVeth::new(&name, &peer).up().build())
            .execute()
            .await
            .expect("add veth");
        let peer_index = index_of(&handle, &peer).await;
        set(&handle, LinkUnspec::new_with_index(peer_index).up().build()).await;
        let (tx, mut rx) = mpsc::channel(16);
        let spec = InterfaceSpec { name: name.clone() };
        let _tracker = track::spawn("link", TrackSpec::Interface(spec), tx).expect("spawn");
        assert_eq!(next_health(&mut rx).await, Health::Up);
    });
}
