//! Config versions larger than one etcd request (`--max-request-bytes`, 1.5 MiB by default: a
//! fleet of thousands of nodes has megabytes of configs) are stored in parts:
//!
//! ```text
//! P config-parts/<version, 20 digits>/<token>/<index, 6 digits>   one part (at most 1 MiB)
//! P config/<version, 20 digits>                                    {"parts": {version, token, count, bytes}}
//! ```
//!
//! Guarantees: the parts are written before the header, and the header is what the version's
//! compare-and-swap commits, so a version is either whole or absent. `token` is unique to one
//! write, so two coordinators racing for the same version number never overwrite each other's
//! parts; the loser's are deleted (best effort: an orphan part is never read). A read checks
//! the parts' count and total length before decoding.

use std::time::Duration;

use etcd_client::{Client, DeleteOptions};
use serde::{Deserialize, Serialize};

use super::{Keys, etcd_error, retrying};
use crate::store::StoreError;

/// The largest part, well under etcd's default request limit.
pub(super) const PART_BYTES: usize = 1 << 20;

/// What `P config/<version>` holds for a version stored in parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Header {
    pub parts: Parts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Parts {
    pub version: u64,
    pub token: String,
    pub count: usize,
    pub bytes: usize,
}

impl Parts {
    /// A fresh token for one write of `bytes` as `version`.
    pub(super) fn new(version: u64, bytes: usize) -> Parts {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        hasher.write_u32(std::process::id());
        Parts {
            version,
            token: format!("{:016x}", hasher.finish()),
            count: bytes.div_ceil(PART_BYTES),
            bytes,
        }
    }
}

/// The parts header in a `config/` value, if it is one (a whole record is not).
pub(super) fn header(value: &[u8]) -> Option<Parts> {
    serde_json::from_slice::<Header>(value)
        .ok()
        .map(|header| header.parts)
}

/// Writes `bytes` as the parts `parts` describes.
pub(super) async fn write(
    client: &Client,
    keys: &Keys,
    parts: &Parts,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), StoreError> {
    for (index, part) in bytes.chunks(PART_BYTES).enumerate() {
        let key = keys.config_part(parts.version, &parts.token, index);
        retrying("write a config part", timeout, || {
            let mut kv = client.kv_client();
            let (key, part) = (key.clone(), part.to_vec());
            async move { kv.put(key, part, None).await }
        })
        .await?;
    }
    Ok(())
}

/// Reads the parts back into the record's bytes.
pub(super) async fn read(
    client: &Client,
    keys: &Keys,
    parts: &Parts,
    timeout: Duration,
) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::with_capacity(parts.bytes);
    for index in 0..parts.count {
        let key = keys.config_part(parts.version, &parts.token, index);
        let mut response = retrying("read a config part", timeout, || {
            let mut kv = client.kv_client();
            let key = key.clone();
            async move { kv.get(key, None).await }
        })
        .await?;
        let kvs = response.take_kvs();
        let part = kvs.first().ok_or_else(|| {
            StoreError::Corrupt(format!(
                "config version {}: part {index} of {} is missing",
                parts.version, parts.count
            ))
        })?;
        bytes.extend_from_slice(part.value());
    }
    if bytes.len() != parts.bytes {
        return Err(StoreError::Corrupt(format!(
            "config version {}: {} bytes in its parts, {} expected",
            parts.version,
            bytes.len(),
            parts.bytes
        )));
    }
    Ok(bytes)
}

/// Deletes the parts of a write that did not commit (best effort).
pub(super) async fn remove(client: &Client, keys: &Keys, parts: &Parts) {
    let prefix = keys.config_parts(parts.version, &parts.token);
    let options = DeleteOptions::new().with_prefix();
    if let Err(e) = client.kv_client().delete(prefix, Some(options)).await {
        tracing::debug!(
            "parts of config version {} not removed: {}",
            parts.version,
            etcd_error("delete parts", &e)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_told_from_a_whole_record_and_sizes_round_up_to_parts() {
        let parts = Parts::new(7, 2 * PART_BYTES + 1);
        assert_eq!(parts.count, 3);
        let value = serde_json::to_vec(&Header {
            parts: parts.clone(),
        })
        .unwrap_or_default();
        assert_eq!(header(&value), Some(parts.clone()));
        assert_eq!(header(br#"{"version": 7, "nodes": {}}"#), None);
        assert_ne!(Parts::new(7, 1).token, Parts::new(7, 1).token);
    }
}
