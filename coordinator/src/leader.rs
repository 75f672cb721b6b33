//! Which coordinator runs the singletons (the rollout runner, the SLA writer, the DNS reconciler,
//! the split-brain resolver).
//!
//! On redb a coordinator is alone with its store and always leads ([`Role::Sole`]). On etcd the
//! coordinators sharing a prefix elect one: the leader is the holder of the key `P leader`, put
//! only if absent and bound to a lease of `--leader-ttl` that the holder renews every third of
//! it. Guarantees: at most one coordinator holds the key at a time (etcd's transaction); a
//! leader stops believing it leads once its last renewal is a TTL old, counted from before the
//! renewal was sent, so it steps down no later than etcd lets the key expire; every singleton
//! write carries the key's create revision ([`Fence`]) and is refused by etcd once the key is
//! gone or another's, so a deposed leader that has not noticed yet cannot write. A follower
//! watches the key and campaigns as soon as it is deleted (the leader's lease expired or it
//! resigned), and at least once per TTL in case the watch missed it.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// The default `--leader-ttl`: a dead leader's singletons resume on another coordinator within
/// about this (plus etcd's lease-expiry check, up to 500 ms), and a leader renews three times per
/// TTL, so two lost renewals in a row do not depose it.
pub const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(3);
/// The longest wait between two tries to reach etcd: once it serves again, a coordinator leads
/// (or learns who does) within about this, well inside a TTL.
pub(crate) const CAMPAIGN_BACKOFF_MAX: Duration = Duration::from_millis(250);
/// A lease renewal still unanswered after TTL / this is abandoned and tried again.
const RENEWAL_TRIES: u32 = 6;

/// Proof of leadership that a singleton's write carries (see [`crate::store::Store`]'s fenced
/// writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// The store has one coordinator (redb): nothing to fence against.
    Sole,
    /// The etcd leader key `key`, as created at `revision` by this coordinator's campaign.
    Key { key: String, revision: i64 },
}

/// This coordinator's part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Alone with its store: always leads.
    Sole,
    /// Elected: runs the singletons, its writes fenced by this key.
    Leader(Fence),
    /// Another coordinator leads (named when known), or none does yet.
    Follower { leader: Option<String> },
}

impl Role {
    /// The fence of a leader; `None` on a follower.
    pub fn fence(&self) -> Option<Fence> {
        match self {
            Role::Sole => Some(Fence::Sole),
            Role::Leader(fence) => Some(fence.clone()),
            Role::Follower { .. } => None,
        }
    }

    pub fn leads(&self) -> bool {
        self.fence().is_some()
    }
}

/// A coordinator's view of the election: its name, its role now and each change.
#[derive(Debug, Clone)]
pub struct Leadership {
    name: String,
    role: watch::Receiver<Role>,
}

impl Leadership {
    /// A coordinator alone with its store.
    pub fn sole(name: String) -> Leadership {
        let (sender, role) = watch::channel(Role::Sole);
        // Never changes: the receiver keeps the last value after the sender is gone.
        drop(sender);
        Leadership { name, role }
    }

    /// This coordinator's name (what followers show as the leader).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// The role now and every change.
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Who leads, as far as this coordinator knows: itself, another, or nobody known.
    pub fn leader(&self) -> Option<String> {
        match self.role() {
            Role::Sole | Role::Leader(_) => Some(self.name.clone()),
            Role::Follower { leader } => leader,
        }
    }
}

/// Ends a campaign: a leader revokes its lease, so another coordinator takes over at once.
pub struct Resign(Option<oneshot::Sender<oneshot::Sender<()>>>);

impl Resign {
    /// A campaign that does not exist (redb).
    pub fn none() -> Resign {
        Resign(None)
    }

    /// Stops campaigning and gives up the leader key; returns once it is given up (or `within`
    /// has passed: the lease then runs out by itself).
    pub async fn resign(mut self, within: Duration) {
        let Some(stop) = self.0.take() else { return };
        let (done, given_up) = oneshot::channel();
        if stop.send(done).is_ok() {
            let _ = tokio::time::timeout(within, given_up).await;
        }
    }
}

/// Starts campaigning for `key` as `name` on `runtime` with leases of `ttl` (whole seconds, at
/// least 1).
pub(crate) fn campaign(
    runtime: &tokio::runtime::Handle,
    client: Client,
    key: String,
    name: String,
    ttl: Duration,
) -> (Leadership, Resign) {
    let (role_tx, role) = watch::channel(Role::Follower { leader: None });
    let (stop_tx, stop) = oneshot::channel();
    let election = Election {
        client,
        key,
        name: name.clone(),
        ttl_seconds: i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX),
        role: role_tx,
    };
    runtime.spawn(election.run(stop));
    (Leadership { name, role }, Resign(Some(stop_tx)))
}

struct Election {
    client: Client,
    key: String,
    name: String,
    ttl_seconds: i64,
    role: watch::Sender<Role>,
}

/// How a term ended.
enum Ended {
    /// The lease could not be renewed in time, or etcd says it is gone.
    Lost(String),
    /// Asked to resign; answer on this (if anyone waits) once the key is given up.
    Resign(Option<oneshot::Sender<()>>),
}

/// The outcome of one try for the key.
enum Try {
    Won {
        lease: i64,
        revision: i64,
        renewed: Instant,
    },
    /// Someone holds it (named by its value, under `lease`), as of `revision`.
    Held {
        leader: String,
        revision: i64,
        lease: i64,
    },
}

impl Election {
    async fn run(self, mut stop: oneshot::Receiver<oneshot::Sender<()>>) {
        let mut backoff = Duration::from_millis(100);
        // The lease of a term lost while etcd could not be reached to revoke it. A new etcd
        // leader extends every lease, so the key can outlive the term by a whole TTL: found still
        // under it, it is revoked then, and the key campaigned for at once.
        let mut abandoned: Option<i64> = None;
        loop {
            let attempt = tokio::select! {
                attempt = self.try_once() => attempt,
                done = &mut stop => {
                    self.set(Role::Follower { leader: None });
                    if let Ok(done) = done { let _ = done.send(()); }
                    return;
                }
            };
            if let Ok(Try::Held { lease, .. }) = &attempt
                && abandoned == Some(*lease)
            {
                // Still under this coordinator's lost term: revoked, then campaigned for again.
                // A revocation etcd refuses (a cluster still electing its leader) is tried again
                // shortly, not after the key's whole TTL.
                if self.revoke(*lease).await {
                    tracing::info!(coordinator = %self.name, "the key was still under this coordinator's lost term: revoked");
                    abandoned = None;
                    continue;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    done = &mut stop => {
                        self.set(Role::Follower { leader: None });
                        if let Ok(done) = done { let _ = done.send(()); }
                        return;
                    }
                }
                backoff = (backoff * 2).min(CAMPAIGN_BACKOFF_MAX);
                continue;
            }
            match attempt {
                Ok(Try::Won {
                    lease,
                    revision,
                    renewed,
                }) => {
                    backoff = Duration::from_millis(100);
                    abandoned = None;
                    tracing::info!(
                        coordinator = %self.name,
                        key = %self.key,
                        revision,
                        ttl_seconds = self.ttl_seconds,
                        "leading: this coordinator runs rollouts, SLA, DNS and split-brain resolution"
                    );
                    self.set(Role::Leader(Fence::Key {
                        key: self.key.clone(),
                        revision,
                    }));
                    match self.hold(lease, renewed, &mut stop).await {
                        Ended::Lost(why) => {
                            tracing::warn!(coordinator = %self.name, "leadership lost: {why}; singletons stopped");
                            self.set(Role::Follower { leader: None });
                            if !self.revoke(lease).await {
                                abandoned = Some(lease);
                            }
                        }
                        Ended::Resign(done) => {
                            self.set(Role::Follower { leader: None });
                            self.revoke(lease).await;
                            tracing::info!(coordinator = %self.name, "leadership given up");
                            if let Some(done) = done {
                                let _ = done.send(());
                            }
                            return;
                        }
                    }
                }
                Ok(Try::Held {
                    leader, revision, ..
                }) => {
                    backoff = Duration::from_millis(100);
                    let following = Role::Follower {
                        leader: Some(leader.clone()),
                    };
                    if self.set(following) {
                        tracing::info!(coordinator = %self.name, %leader, "following: another coordinator leads");
                    }
                    tokio::select! {
                        () = self.until_deleted(revision) => {}
                        done = &mut stop => {
                            self.set(Role::Follower { leader: None });
                            if let Ok(done) = done { let _ = done.send(()); }
                            return;
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(coordinator = %self.name, "campaign: {error}; again in {backoff:?}");
                    self.set(Role::Follower { leader: None });
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        done = &mut stop => {
                            if let Ok(done) = done { let _ = done.send(()); }
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(CAMPAIGN_BACKOFF_MAX);
                }
            }
        }
    }

    /// Publishes `role`; whether it changed.
    fn set(&self, role: Role) -> bool {
        self.role.send_if_modified(|current| {
            let changed = *current != role;
            *current = role;
            changed
        })
    }

    /// Grants a lease and puts the key under it if nobody holds it; else reads who does.
    async fn try_once(&self) -> Result<Try, etcd_client::Error> {
        let asked = Instant::now();
        let granted = self
            .client
            .lease_client()
            .grant(self.ttl_seconds, None)
            .await?;
        let lease = granted.id();
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                self.key.as_str(),
                self.name.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(self.key.as_str(), None)]);
        let response = match self.client.kv_client().txn(txn).await {
            Ok(response) => response,
            Err(error) => {
                self.revoke(lease).await;
                return Err(error);
            }
        };
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        if response.succeeded() {
            return Ok(Try::Won {
                lease,
                revision,
                renewed: asked,
            });
        }
        self.revoke(lease).await;
        let (leader, held) = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease())),
                _ => None,
            })
            .unwrap_or_default();
        Ok(Try::Held {
            leader,
            revision,
            lease: held,
        })
    }

    /// Renews `lease` every third of the TTL until a renewal is late or refused, or a
    /// resignation is asked for.
    async fn hold(
        &self,
        lease: i64,
        renewed: Instant,
        stop: &mut oneshot::Receiver<oneshot::Sender<()>>,
    ) -> Ended {
        let ttl = Duration::from_secs(self.ttl_seconds.unsigned_abs());
        tokio::select! {
            why = keep_alive(&self.client, &self.name, lease, renewed, ttl) => Ended::Lost(why),
            done = &mut *stop => Ended::Resign(done.ok()),
        }
    }

    /// Returns once the key is deleted after `revision`, or a TTL has passed (then the caller
    /// tries again: a watch on a member cut off from its cluster sees nothing).
    async fn until_deleted(&self, revision: i64) {
        let ttl = Duration::from_secs(self.ttl_seconds.unsigned_abs());
        let watch = async {
            let options = WatchOptions::new().with_start_revision(revision + 1);
            let Ok(mut stream) = self
                .client
                .watch_client()
                .watch(self.key.as_str(), Some(options))
                .await
            else {
                // Not in a tight loop against a cluster that refuses watches.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            };
            while let Ok(Some(response)) = stream.message().await {
                if response.canceled()
                    || response
                        .events()
                        .iter()
                        .any(|event| event.event_type() == EventType::Delete)
                {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(ttl, watch).await;
    }

    /// Gives the lease up (best effort: unrevoked, it expires by itself).
    async fn revoke(&self, lease: i64) -> bool {
        let mut leases = self.client.lease_client();
        let revoke = leases.revoke(lease);
        match tokio::time::timeout(Duration::from_secs(1), revoke).await {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                tracing::debug!(coordinator = %self.name, "lease not revoked: {error}");
                false
            }
            Err(_) => {
                tracing::debug!(coordinator = %self.name, "lease not revoked in 1 s");
                false
            }
        }
    }
}

/// Renews `lease` (last renewed at `renewed`, counted from before that renewal was sent) every
/// third of `ttl` until a renewal is late or refused; returns why. Each try is bounded to a
/// sixth of the TTL and made again until the lease would have run out: a member that went away
/// is replaced by another endpoint of the client, and a call stuck on a member that died (a
/// connect that never completes) leaves time for tries through the others. Never returns later
/// than `ttl` after the last renewal was sent, so no later than etcd lets the lease expire.
pub(crate) async fn keep_alive(
    client: &Client,
    holder: &str,
    lease: i64,
    mut renewed: Instant,
    ttl: Duration,
) -> String {
    let seconds = ttl.as_secs();
    loop {
        let expires = renewed + ttl;
        tokio::time::sleep_until((renewed + ttl / 3).min(expires)).await;
        loop {
            let sent = Instant::now();
            let mut leases = client.lease_client();
            let try_until = (sent + ttl / RENEWAL_TRIES).min(expires);
            let renewal = tokio::time::timeout_at(try_until, leases.keep_alive(lease));
            match renewal.await {
                Ok(Ok(_)) => {
                    renewed = sent;
                    break;
                }
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(why))) => {
                    return format!("etcd refused to renew the lease: {why}");
                }
                Ok(Err(error)) => {
                    tracing::debug!(coordinator = %holder, "lease renewal failed: {error}");
                    let retry = (Instant::now() + Duration::from_millis(100)).min(expires);
                    tokio::time::sleep_until(retry).await;
                    if Instant::now() >= expires {
                        return format!("lease not renewed within {seconds}s ({error})");
                    }
                }
                Err(_) if Instant::now() < expires => {
                    tracing::debug!(coordinator = %holder, "lease renewal unanswered; trying again");
                }
                Err(_) => return format!("lease not renewed within {seconds}s"),
            }
        }
    }
}
