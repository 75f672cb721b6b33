//! Interface tracker against real netlink, in an anonymous network namespace of its own (the
//! host's interfaces are never touched): a dummy link created, set up and down, carrier off and
//! on, renamed, deleted.

mod track_support;

use futures::TryStreamExt;
use hav_agent::track::{self, Health, InterfaceSpec, TrackSpec};
use rtnetlink::{Handle, LinkDummy, LinkUnspec};
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
    handle.link().set(message).execute().await.expect("set link");
}

#[test]
fn follows_a_dummy_link() {
    in_fresh_netns(|| async {
        let (connection, handle, _) = rtnetlink::new_connection().expect("netlink");
        tokio::spawn(connection);
        let name = unique("h");
        let (tx, mut rx) = mpsc::channel(16);
        let spec = InterfaceSpec { name: name.clone() };
        let _tracker = track::spawn("link", TrackSpec::Interface(spec), tx).expect("spawn");

        let absent = next_health(&mut rx).await;
        assert!(down_reason(&absent).contains("no link named"), "{absent:?}");

        handle.link().add(LinkDummy::new(&name).build()).execute().await.expect("add dummy");
        let index = index_of(&handle, &name).await;
        set(&handle, LinkUnspec::new_with_index(index).up().build()).await;
        assert_eq!(next_health(&mut rx).await, Health::Up);

        set(&handle, LinkUnspec::new_with_index(index).carrier(false).build()).await;
        let no_carrier = next_health(&mut rx).await;
        assert_eq!(down_reason(&no_carrier), "no carrier");
        set(&handle, LinkUnspec::new_with_index(index).carrier(true).build()).await;
        assert_eq!(next_health(&mut rx).await, Health::Up);

        set(&handle, LinkUnspec::new_with_index(index).down().build()).await;
        let admin_down = next_health(&mut rx).await;
        assert_eq!(down_reason(&admin_down), "administratively down");
        set(&handle, LinkUnspec::new_with_index(index).up().build()).await;
        assert_eq!(next_health(&mut rx).await, Health::Up);

        // Renaming needs the link down; the rename itself then takes it away (no new event,
        // already down), and renaming back while up brings it back.
        let other = unique("h");
        set(&handle, LinkUnspec::new_with_index(index).down().build()).await;
        assert!(matches!(next_health(&mut rx).await, Health::Down { .. }));
        set(&handle, LinkUnspec::new_with_index(index).name(other.clone()).build()).await;
        set(&handle, LinkUnspec::new_with_index(index).up().build()).await;
        set(&handle, LinkUnspec::new_with_index(index).down().build()).await;
        set(&handle, LinkUnspec::new_with_index(index).name(name.clone()).build()).await;
        set(&handle, LinkUnspec::new_with_index(index).up().build()).await;
        // Had the tracker followed the renamed link, it would have reported Up then Down.
        assert_eq!(next_health(&mut rx).await, Health::Up);

        handle.link().del(index).execute().await.expect("delete");
        let deleted = next_health(&mut rx).await;
        assert_eq!(down_reason(&deleted), format!("{name} deleted"));
    });
}

#[test]
fn a_link_that_exists_and_is_up_at_start_is_reported_up() {
    in_fresh_netns(|| async {
        let (connection, handle, _) = rtnetlink::new_connection().expect("netlink");
        tokio::spawn(connection);
        let name = unique("h");
        handle.link().add(LinkDummy::new(&name).up().build()).execute().await.expect("add dummy");
        let (tx, mut rx) = mpsc::channel(16);
        let spec = InterfaceSpec { name: name.clone() };
        let _tracker = track::spawn("link", TrackSpec::Interface(spec), tx).expect("spawn");
        assert_eq!(next_health(&mut rx).await, Health::Up);
    });
}
