//! Contexts, as kubeconfig has them: named sets of coordinator addresses and the operator's
//! certificate files, in `$HAV_CONFIG` or `~/.config/hav/havctl.toml`, one of them current.
//!
//! What havctl dials is decided once, here: a flag (or its `HAVCTL_*` variable) wins over the
//! context (`--context`, `$HAVCTL_CONTEXT`, else the file's current one), which wins over the
//! default address. Paths are stored absolute, so a context works from any directory. The file
//! is written whole to a temporary file and renamed, so a failed write never leaves half of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::{CliError, Target};

/// The coordinator address when neither a flag nor a context names one.
pub const DEFAULT_COORDINATOR: &str = "127.0.0.1:7400";

/// One context.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// The file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// Where the file is: `$HAV_CONFIG`, else `$XDG_CONFIG_HOME/hav/havctl.toml`, else
/// `~/.config/hav/havctl.toml`.
pub fn path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HAV_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("hav").join("havctl.toml"))
}

impl ContextFile {
    /// Reads the file at `path`; an absent file is an empty one.
    pub fn load(path: &Path) -> Result<ContextFile, CliError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ContextFile::default());
            }
            Err(source) => {
                return Err(CliError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        toml::from_str(&text)
            .map_err(|error| CliError::Usage(format!("{}: {}", path.display(), error.message())))
    }

    /// Writes the file whole (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let io = |source| CliError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = toml::to_string(self).map_err(|error| CliError::Usage(error.to_string()))?;
        let staged = path.with_extension("toml.new");
        std::fs::write(&staged, text).map_err(io)?;
        std::fs::rename(&staged, path).map_err(io)
    }

    /// Adds or changes context `name` with the given settings (absent ones are kept); the first
    /// context of a file becomes its current one.
    pub fn set(&mut self, name: &str, update: Context) {
        let context = self.contexts.entry(name.to_owned()).or_default();
        if update.coordinator.is_some() {
            context.coordinator = update.coordinator;
        }
        if update.ca.is_some() {
            context.ca = update.ca;
        }
        if update.cert.is_some() {
            context.cert = update.cert;
        }
        if update.key.is_some() {
            context.key = update.key;
        }
        if self.current_context.is_none() {
            self.current_context = Some(name.to_owned());
        }
    }

    /// Makes `name` the current context.
    pub fn use_context(&mut self, name: &str) -> Result<(), CliError> {
        if !self.contexts.contains_key(name) {
            return Err(self.unknown(name));
        }
        self.current_context = Some(name.to_owned());
        Ok(())
    }

    /// Removes context `name` (and makes no context current if it was).
    pub fn delete(&mut self, name: &str) -> Result<(), CliError> {
        if self.contexts.remove(name).is_none() {
            return Err(self.unknown(name));
        }
        if self.current_context.as_deref() == Some(name) {
            self.current_context = None;
        }
        Ok(())
    }

    /// The context named `name`, or the current one; `None` when there is none.
    pub fn selected(&self, name: Option<&str>) -> Result<Option<(&str, &Context)>, CliError> {
        let Some(name) = name.or(self.current_context.as_deref()) else {
            return Ok(None);
        };
        match self.contexts.get_key_value(name) {
            Some((name, context)) => Ok(Some((name.as_str(), context))),
            None => Err(self.unknown(name)),
        }
    }

    fn unknown(&self, name: &str) -> CliError {
        let known: Vec<&str> = self.contexts.keys().map(String::as_str).collect();
        CliError::Usage(format!(
            "no context {name:?} (known: {}); add it with `havctl config set-context {name} \
             --coordinator HOST:PORT --ca FILE --cert FILE --key FILE`",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    }
}

/// What the command line said about the target (flags or `HAVCTL_*` variables).
#[derive(Debug, Clone, Default)]
pub struct Given {
    pub context: Option<String>,
    pub coordinator: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The target: flags over the context over the default.
pub fn resolve(given: Given, file: &ContextFile) -> Result<Target, CliError> {
    let context = file
        .selected(given.context.as_deref())?
        .map(|(_, context)| context.clone())
        .unwrap_or_default();
    let coordinator = given
        .coordinator
        .or(context.coordinator)
        .unwrap_or_else(|| DEFAULT_COORDINATOR.to_owned());
    check_address(&coordinator)?;
    Ok(Target {
        coordinator,
        ca: given.ca.or(context.ca),
        cert: given.cert.or(context.cert),
        key: given.key.or(context.key),
    })
}

/// The coordinators of a `--coordinator` value: one address, or several separated by commas
/// (coordinators sharing one store, tried in order).
pub fn addresses(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim)
}

/// Every coordinator address of a list (see [`addresses`]) is `host:port` or
/// `https://host:port`: anything else is a usage error, not a connection failure.
pub fn check_address(list: &str) -> Result<(), CliError> {
    addresses(list).try_for_each(check_one_address)
}

fn check_one_address(address: &str) -> Result<(), CliError> {
    let bad = |why: &str| {
        CliError::Usage(format!(
            "--coordinator {address:?}: {why}; expected host:port or https://host:port"
        ))
    };
    let rest = match address.split_once("://") {
        Some(("https", rest)) => rest,
        Some((scheme, _)) => {
            return Err(bad(&format!("havctl speaks only mTLS, not {scheme}://")));
        }
        None => address,
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    if host.is_empty() || host.contains('/') {
        return Err(bad("no host"));
    }
    if port.parse::<u16>().map_or(true, |port| port == 0) {
        return Err(bad("the port must be 1 to 65535"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad(
            "an IPv6 address goes in brackets, e.g. [2001:db8::1]:7400",
        ));
    }
    // What the transport dials is exactly what passes here: no syntax error becomes a
    // connection failure.
    hav_proto::transport::check_address(address)
        .map_err(|_| bad(&format!("`{host}` is not a host name or an IP address")))
}

/// Makes `path` absolute against the current directory (a context must work from anywhere).
pub fn absolute(path: PathBuf) -> Result<PathBuf, CliError> {
    std::path::absolute(&path).map_err(|source| CliError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(coordinator: &str) -> Context {
        Context {
            coordinator: Some(coordinator.into()),
            ca: Some("/pki/ca.pem".into()),
            cert: Some("/pki/op.pem".into()),
            key: Some("/pki/op.key".into()),
        }
    }

    #[test]
    fn the_first_context_becomes_current_and_flags_win_over_it() {
        let mut file = ContextFile::default();
        file.set("lab", context("198.51.100.10:7400"));
        file.set("prod", context("203.0.113.10:7400"));
        assert_eq!(file.current_context.as_deref(), Some("lab"));
        let target = resolve(Given::default(), &file).expect("resolves");
        assert_eq!(target.coordinator, "198.51.100.10:7400");
        assert_eq!(target.cert, Some("/pki/op.pem".into()));
        let given = Given {
            context: Some("prod".into()),
            cert: Some("/other.pem".into()),
            ..Given::default()
        };
        let target = resolve(given, &file).expect("resolves");
        assert_eq!(target.coordinator, "203.0.113.10:7400");
        assert_eq!(target.cert, Some("/other.pem".into()));
        assert_eq!(target.key, Some("/pki/op.key".into()));
    }

    #[test]
    fn an_unknown_context_is_named_with_the_known_ones() {
        let mut file = ContextFile::default();
        file.set("lab", context("198.51.100.10:7400"));
        let error = file.use_context("prod").expect_err("unknown").to_string();
        assert!(
            error.contains("no context \"prod\" (known: lab)"),
            "{error}"
        );
    }

    #[test]
    fn no_context_and_no_flags_dial_the_default() {
        let target = resolve(Given::default(), &ContextFile::default()).expect("resolves");
        assert_eq!(target.coordinator, DEFAULT_COORDINATOR);
        assert_eq!(target.cert, None);
    }

    #[test]
    fn addresses_that_cannot_be_dialled_are_usage_errors() {
        for good in [
            "127.0.0.1:7400",
            "https://coord.example.net:7400",
            "[2001:db8::1]:7400",
            "198.51.100.1:7400,198.51.100.2:7400, https://coord-c.example.net:7400",
        ] {
            check_address(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for (bad, why) in [
            ("http://127.0.0.1:7400", "only mTLS"),
            ("127.0.0.1", "no port"),
            ("127.0.0.1:0", "port"),
            (":7400", "no host"),
            ("2001:db8::1:7400", "in brackets"),
            ("https://coord.example.net:7400/api", "the port"),
            ("bad host:7400", "not a host name"),
            (
                "198.51.100.1:7400,198.51.100.2",
                "\"198.51.100.2\": no port",
            ),
            ("198.51.100.1:7400,", "no port"),
        ] {
            let error = check_address(bad).expect_err(bad).to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn the_file_round_trips_and_an_absent_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested").join("havctl.toml");
        assert_eq!(
            ContextFile::load(&path).expect("absent"),
            ContextFile::default()
        );
        let mut file = ContextFile::default();
        file.set("lab", context("198.51.100.10:7400"));
        file.save(&path).expect("save");
        assert_eq!(ContextFile::load(&path).expect("load"), file);
    }
}
