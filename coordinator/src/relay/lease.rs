//! The membership lease: what makes a coordinator's announcements (the sessions it holds, the
//! commands it sends, the events it publishes) live in etcd only as long as it does.
//!
//! Guarantees: `lease` names a lease only while it is believed alive: it turns `None` no later
//! than a TTL after the last renewal was sent (so no later than etcd expires it and deletes
//! everything under it), and a new lease is granted as soon as etcd answers again. A stop
//! revokes the lease, so the other coordinators see every announcement end at once.

use std::time::Duration;

use etcd_client::Client;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// Holds a membership lease of `ttl` for `name` until `stop` (answered once revoked).
pub(crate) async fn hold(
    client: Client,
    name: String,
    ttl: Duration,
    lease: watch::Sender<Option<i64>>,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let ttl = Duration::from_secs(seconds.unsigned_abs());
    let mut backoff = Duration::from_millis(100);
    loop {
        let asked = Instant::now();
        let mut leases = client.lease_client();
        let granted = tokio::select! {
            granted = leases.grant(seconds, None) => granted,
            done = &mut stop => {
                if let Ok(done) = done { let _ = done.send(()); }
                return;
            }
        };
        let id = match granted {
            Ok(granted) => granted.id(),
            Err(e) => {
                tracing::debug!(coordinator = %name, "membership lease not granted: {e}; again in {backoff:?}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    done = &mut stop => {
                        if let Ok(done) = done { let _ = done.send(()); }
                        return;
                    }
                }
                backoff = (backoff * 2).min(crate::leader::CAMPAIGN_BACKOFF_MAX);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        lease.send_replace(Some(id));
        tracing::info!(coordinator = %name, ttl_seconds = seconds, "membership lease held: serving agents");
        tokio::select! {
            why = crate::leader::keep_alive(&client, &name, id, asked, ttl) => {
                lease.send_replace(None);
                tracing::warn!(coordinator = %name, "membership lease lost: {why}; the agent sessions here end");
                revoke(&client, id).await;
            }
            done = &mut stop => {
                lease.send_replace(None);
                revoke(&client, id).await;
                if let Ok(done) = done { let _ = done.send(()); }
                return;
            }
        }
    }
}

/// Gives the lease up (best effort: unrevoked, it expires by itself).
async fn revoke(client: &Client, id: i64) {
    let mut leases = client.lease_client();
    match tokio::time::timeout(Duration::from_secs(1), leases.revoke(id)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!("membership lease not revoked: {e}"),
        Err(_) => tracing::debug!("membership lease not revoked in 1 s"),
    }
}
