//! Alertmanager's webhook payload (version 4), so a receiver written for Alertmanager takes
//! hav's alerts unchanged.

use serde_json::{Value, json};

use super::rules::Alert;

/// The body of one POST: `alerts` grouped under their common labels.
pub fn webhook(receiver: &str, external_url: &str, alerts: &[Alert]) -> Value {
    let firing = alerts.iter().any(|a| !a.resolved);
    let common = |pick: fn(&Alert) -> &std::collections::BTreeMap<String, String>| {
        let mut common = alerts.first().map(|a| pick(a).clone()).unwrap_or_default();
        for alert in alerts.iter().skip(1) {
            common.retain(|k, v| pick(alert).get(k) == Some(v));
        }
        common
    };
    let common_labels = common(|a| &a.labels);
    let alertname = common_labels.get("alertname").cloned().unwrap_or_default();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{alertname}\"}}"),
        "truncatedAlerts": 0,
        "status": if firing { "firing" } else { "resolved" },
        "receiver": receiver,
        "groupLabels": { "alertname": alertname },
        "commonLabels": common_labels,
        "commonAnnotations": common(|a| &a.annotations),
        "externalURL": external_url,
        "alerts": alerts.iter().map(alert).collect::<Vec<_>>(),
    })
}

fn alert(alert: &Alert) -> Value {
    json!({
        "status": if alert.resolved { "resolved" } else { "firing" },
        "labels": alert.labels,
        "annotations": alert.annotations,
        "startsAt": rfc3339(alert.starts_unix_ms),
        // Alertmanager's "no end yet".
        "endsAt": alert.ends_unix_ms.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), rfc3339),
        "generatorURL": "",
        "fingerprint": fingerprint(&alert.key()),
    })
}

/// 16 hex digits identifying the label set (FNV-1a, stable across runs and builds).
fn fingerprint(key: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// `2026-12-02T22:47:52.123Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    let days = i64::try_from(unix_ms / 86_400_000).unwrap_or(i64::MAX);
    let (year, month, day) = crate::sla::civil_from_days(days);
    let ms_of_day = unix_ms % 86_400_000;
    let (h, m, s, ms) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_payload_is_alertmanagers() {
        let alert = Alert {
            labels: BTreeMap::from([
                ("alertname".into(), "HavNodeDown".into()),
                ("node".into(), "p1a".into()),
                ("severity".into(), "critical".into()),
            ]),
            annotations: BTreeMap::from([("summary".into(), "gone".into())]),
            starts_unix_ms: 1_764_715_672_123,
            ends_unix_ms: None,
            resolved: false,
        };
        let body = webhook("hav", "https://coord:7400", std::slice::from_ref(&alert));
        assert_eq!(body["version"], "4");
        assert_eq!(body["status"], "firing");
        assert_eq!(body["groupLabels"]["alertname"], "HavNodeDown");
        assert_eq!(body["commonLabels"]["node"], "p1a");
        assert_eq!(body["alerts"][0]["startsAt"], "2025-12-02T22:47:52.123Z");
        assert_eq!(body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(
            body["alerts"][0]["fingerprint"].as_str().map(str::len),
            Some(16)
        );
        let mut resolved = alert;
        resolved.resolved = true;
        resolved.ends_unix_ms = Some(1_764_715_680_000);
        let body = webhook("hav", "", &[resolved]);
        assert_eq!(body["status"], "resolved");
        assert_eq!(body["alerts"][0]["endsAt"], "2025-12-02T22:48:00.000Z");
    }
}
