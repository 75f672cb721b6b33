//! Checks of `[telemetry]`: a listen address for metrics, an OTLP collector URL, a sampling
//! ratio and resource attributes.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::error::{Collector, KeyPath};
use crate::config::node::{MetricsTls, OtlpEndpoint, SamplingRatio, Telemetry};
use crate::config::raw::{RawMetricsTls, RawTelemetry};

pub(super) fn telemetry(
    raw: &RawTelemetry,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<Telemetry> {
    let metrics_listen = match raw.metrics_listen.as_deref() {
        None => Some(None),
        Some(text) => listen_address(text, &path.key("metrics_listen"), errors).map(Some),
    };
    let metrics_tls = match &raw.metrics_tls {
        None => Some(None),
        Some(tls) => metrics_tls(
            tls,
            raw.metrics_listen.is_some(),
            &path.key("metrics_tls"),
            errors,
        )
        .map(Some),
    };
    let otlp_endpoint = match raw.otlp_endpoint.as_deref() {
        None => Some(None),
        Some(text) => endpoint(text, &path.key("otlp_endpoint"), errors).map(Some),
    };
    let sampling_ratio = match raw.sampling_ratio {
        None => Some(SamplingRatio::default()),
        Some(ratio) => {
            let valid = SamplingRatio::new(ratio);
            if valid.is_none() {
                errors.invalid(
                    path.key("sampling_ratio"),
                    format!("{ratio} is not a ratio; expected 0.0 to 1.0"),
                );
            }
            valid
        }
    };
    let mut resource_valid = true;
    for (key, value) in raw.resource.iter().flatten() {
        let key_path = path.key("resource").key(key);
        if key.is_empty() || key.len() > 255 || key.chars().any(|c| c.is_control() || c == ' ') {
            errors.invalid(
                key_path,
                format!(
                    "{key:?} is not an attribute name; expected 1 to 255 characters without spaces"
                ),
            );
            resource_valid = false;
        } else if value.chars().any(char::is_control) {
            errors.invalid(key_path, "expected a value without control characters");
            resource_valid = false;
        }
    }
    Some(Telemetry {
        metrics_listen: metrics_listen?,
        metrics_tls: metrics_tls?,
        otlp_endpoint: otlp_endpoint?,
        sampling_ratio: sampling_ratio?,
        resource: resource_valid.then(|| raw.resource.clone().unwrap_or_default())?,
    })
}

fn metrics_tls(
    raw: &RawMetricsTls,
    listening: bool,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<MetricsTls> {
    if !listening {
        errors.invalid(
            path.clone(),
            "metrics_tls without metrics_listen: there is no endpoint to protect",
        );
        return None;
    }
    let file = |key: &str, value: &Option<String>, errors: &mut Collector| match value.as_deref() {
        Some(text) if !text.is_empty() => Some(PathBuf::from(text)),
        Some(_) => {
            errors.invalid(path.key(key), "expected a path to a PEM file");
            None
        }
        None => {
            errors.missing(path.key(key), "a path to a PEM file");
            None
        }
    };
    let cert = file("cert", &raw.cert, errors);
    let key = file("key", &raw.key, errors);
    let client_ca = match &raw.client_ca {
        None => Some(None),
        some => file("client_ca", some, errors).map(Some),
    };
    Some(MetricsTls {
        cert: cert?,
        key: key?,
        client_ca: client_ca?,
    })
}

fn listen_address(text: &str, path: &KeyPath, errors: &mut Collector) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(address) if address.port() != 0 => Some(address),
        Ok(_) => {
            errors.invalid(
                path.clone(),
                format!("{text:?} has port 0; scrapers need a fixed port"),
            );
            None
        }
        Err(_) => {
            errors.invalid(
                path.clone(),
                format!("{text:?} is not an address with a port, such as \"127.0.0.1:9712\" or \"[::1]:9712\""),
            );
            None
        }
    }
}

/// `http://HOST[:PORT][/]` or `https://…`; HOST is a name, an IPv4 address or a bracketed IPv6
/// address.
fn endpoint(text: &str, path: &KeyPath, errors: &mut Collector) -> Option<OtlpEndpoint> {
    let valid = (|| {
        let rest = text
            .strip_prefix("http://")
            .or_else(|| text.strip_prefix("https://"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty()
            || authority.contains(['/', '?', '#', '@'])
            || authority
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return None;
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(bracketed) => {
                let (v6, after) = bracketed.split_once(']')?;
                v6.parse::<std::net::Ipv6Addr>().ok()?;
                match after {
                    "" => (v6, None),
                    _ => (v6, Some(after.strip_prefix(':')?)),
                }
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if let Some(port) = port {
            port.parse::<u16>().ok().filter(|port| *port != 0)?;
        }
        let host_ok = authority.starts_with('[')
            || (!host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
        host_ok.then_some(())
    })()
    .is_some();
    if !valid {
        errors.invalid(
            path.clone(),
            format!("{text:?} is not a collector URL; expected http://HOST:PORT or https://HOST:PORT, such as \"http://127.0.0.1:4317\""),
        );
    }
    valid.then(|| OtlpEndpoint(text.to_owned()))
}

/// The same check as the `otlp_endpoint` key, for a daemon flag (`--otlp-endpoint`).
impl std::str::FromStr for OtlpEndpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut errors = Collector::default();
        endpoint(text, &KeyPath::root(), &mut errors).ok_or_else(|| {
            errors
                .into_inner()
                .into_iter()
                .map(|(_, problem)| problem.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_is_parsed_like_the_key() {
        let parsed: OtlpEndpoint = "http://127.0.0.1:4317".parse().expect("valid");
        assert_eq!(parsed.as_str(), "http://127.0.0.1:4317");
        let refused = "ftp://collector"
            .parse::<OtlpEndpoint>()
            .expect_err("invalid");
        assert!(refused.contains("not a collector URL"), "{refused}");
    }

    fn check(text: &str) -> bool {
        let mut errors = Collector::default();
        endpoint(text, &KeyPath::root(), &mut errors).is_some()
    }

    #[test]
    fn endpoints() {
        for good in [
            "http://127.0.0.1:4317",
            "https://collector.example:443",
            "http://collector",
            "http://[2001:db8::1]:4317",
            "http://[2001:db8::1]",
            "http://otel-collector.monitoring.svc:4317/",
        ] {
            assert!(check(good), "{good}");
        }
        for bad in [
            "127.0.0.1:4317",
            "grpc://127.0.0.1:4317",
            "http://",
            "http://:4317",
            "http://host:0",
            "http://host:99999",
            "http://host:4317/v1/traces",
            "http://user@host:4317",
            "http://2001:db8::1:4317",
            "http://[2001:db8::zz]:4317",
            "http://ho st:4317",
        ] {
            assert!(!check(bad), "{bad}");
        }
    }
}
