//! Connection counts of parked VIPs, taken on a blocking thread so that the event loop never
//! waits for a dump of the host's TCP table (a walk of a hash every network namespace shares,
//! which on a busy host with many TIME_WAIT sockets took half a second and stopped every
//! instance's adverts meanwhile).
//!
//! Guarantees: [`BackgroundCounts::latest`] answers at once with the newest count finished for
//! those addresses since they were last [`BackgroundCounts::seed`]ed, and starts the next count
//! unless one is running; a count started before the last seed is discarded, so a count taken
//! before a new hand-over never stands for it. A parked VIP's connections only end (no
//! connection opens on it), so an answer one count old only delays the let-go by that much; a
//! count that finds none wakes [`BackgroundCounts::none_left`] at once, so the let-go waits
//! for no further tick.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// How connections are counted (`sockdiag::count_tcp_connections` in the daemon).
pub type Counter = fn(&BTreeSet<IpAddr>) -> io::Result<usize>;

#[derive(Default)]
struct Entry {
    /// Bumped by every seed: a count started under an older one is stale.
    generation: u64,
    latest: Option<Result<usize, String>>,
    running: bool,
}

/// The latest counts, by the addresses counted.
pub struct BackgroundCounts {
    count: Counter,
    entries: Arc<Mutex<HashMap<BTreeSet<IpAddr>, Entry>>>,
    none_left: Arc<tokio::sync::Notify>,
}

impl BackgroundCounts {
    pub fn new(count: Counter) -> Self {
        Self {
            count,
            entries: Arc::default(),
            none_left: Arc::default(),
        }
    }

    /// Notified when a count that stands (not older than its seed) found no connection.
    pub fn none_left(&self) -> &tokio::sync::Notify {
        &self.none_left
    }

    /// A count taken now for a new hand-over of `addresses`: later answers are this one or
    /// newer.
    pub fn seed(&self, addresses: &BTreeSet<IpAddr>, connections: usize) {
        let mut entries = lock(&self.entries);
        let entry = entries.entry(addresses.clone()).or_default();
        entry.generation += 1;
        entry.latest = Some(Ok(connections));
    }

    /// The newest finished count of `addresses` (an error if the last one failed, or if none
    /// finished since the seed), and the next count started in the background.
    pub fn latest(&self, addresses: &BTreeSet<IpAddr>) -> io::Result<usize> {
        let mut entries = lock(&self.entries);
        let entry = entries.entry(addresses.clone()).or_default();
        if !entry.running {
            entry.running = true;
            let (count, shared, generation) = (self.count, self.entries.clone(), entry.generation);
            let (addresses, none_left) = (addresses.clone(), self.none_left.clone());
            tokio::task::spawn_blocking(move || {
                let counted = count(&addresses).map_err(|error| error.to_string());
                let mut entries = lock(&shared);
                if let Some(entry) = entries.get_mut(&addresses) {
                    entry.running = false;
                    if entry.generation == generation {
                        let none = matches!(counted, Ok(0));
                        entry.latest = Some(counted);
                        if none {
                            none_left.notify_one();
                        }
                    }
                }
            });
        }
        match &entry.latest {
            Some(Ok(connections)) => Ok(*connections),
            Some(Err(error)) => Err(io::Error::other(error.clone())),
            None => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "no count finished yet",
            )),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a lookup and a few assignments: a poisoned lock is still whole.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// What the fake counter finds.
    static FOUND: AtomicUsize = AtomicUsize::new(0);
    /// Held by the test to keep a count from finishing.
    static GATE: Mutex<()> = Mutex::new(());

    fn fake(_: &BTreeSet<IpAddr>) -> io::Result<usize> {
        let _held = lock(&GATE);
        Ok(FOUND.load(Ordering::SeqCst))
    }

    fn running(counts: &BackgroundCounts, vips: &BTreeSet<IpAddr>) -> bool {
        lock(&counts.entries).get(vips).is_some_and(|e| e.running)
    }

    /// Until no count of `vips` runs (the test's safety net: 5 s).
    async fn idle(counts: &BackgroundCounts, vips: &BTreeSet<IpAddr>) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while running(counts, vips) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the count ends");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_at_once_and_never_with_a_count_older_than_the_seed() {
        let counts = BackgroundCounts::new(fake);
        let vips: BTreeSet<IpAddr> = ["198.51.100.10".parse().expect("address")].into();

        counts.seed(&vips, 3);
        FOUND.store(1, Ordering::SeqCst);
        // The seed answers at once; the count it starts runs in the background.
        assert_eq!(counts.latest(&vips).expect("seeded"), 3);
        idle(&counts, &vips).await;
        assert_eq!(counts.latest(&vips).expect("counted"), 1);
        idle(&counts, &vips).await;

        // A count still running when the VIPs are handed over again is not this hand-over's.
        let gate = lock(&GATE);
        FOUND.store(0, Ordering::SeqCst);
        assert_eq!(counts.latest(&vips).expect("counted"), 1);
        assert!(running(&counts, &vips), "a count started");
        counts.seed(&vips, 5);
        drop(gate);
        idle(&counts, &vips).await;
        assert_eq!(
            counts.latest(&vips).expect("seeded"),
            5,
            "the stale 0 is dropped"
        );
        // Counts started after the seed do stand; one that finds none says so at once.
        idle(&counts, &vips).await;
        assert_eq!(counts.latest(&vips).expect("counted"), 0);
        tokio::time::timeout(Duration::from_secs(5), counts.none_left().notified())
            .await
            .expect("a count of none wakes the loop");
    }
}
