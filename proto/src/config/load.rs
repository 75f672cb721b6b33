//! Reading a node config: TOML text (from a file or a caller) with environment overrides, or a
//! document a program built, then the schema and validation, collecting every problem on the way.
//!
//! Text goes through the `config` crate (a TOML `File` source, then an `Environment` source with
//! prefix `HAV_` and separator `__`) into a plain value tree; a built document is turned into the
//! same tree directly. The tree then goes into the [`raw`](super::raw) structs. A structural
//! problem (unknown key, wrong type) is recorded with its path, the offending entry is taken out
//! of the tree, and deserializing starts again, so every such problem is found; validation then
//! adds everything else.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;

use config::{Config, Environment, File, FileFormat};

use super::error::{Collector, ConfigError, ConfigErrors, KeyPath, Problem, Segment};
use super::node::NodeConfig;
use super::raw::RawNodeConfig;
use super::validate::validate;

/// Environment variables `HAV_<SECTION>__<KEY>` override `<key>` of `[<section>]`; only the
/// `[node]` section can be set this way (`HAV_NODE__NAME`, `HAV_NODE__STATE_DIR`,
/// `HAV_NODE__STATUS_SOCKET`). Other `HAV_*` variables without `__` are left for other uses.
pub const ENV_PREFIX: &str = "HAV_";

/// Sections whose keys the environment may set.
const ENV_SECTIONS: &[&str] = &["node"];

/// Safety net against a loop in taking problems out of the tree; each round removes something,
/// so a document can need at most as many rounds as it has entries.
const MAX_SCHEMA_ROUNDS: usize = 10_000;

/// Reads the node config at `path`, applying `HAV_NODE__*` environment overrides.
pub fn load_node_config(path: &Path) -> Result<NodeConfig, ConfigErrors> {
    load_node_config_with_env(path, std::env::vars_os())
}

/// [`load_node_config`] with the environment given explicitly (variables that are not valid
/// UTF-8 are ignored, as they cannot be config values).
pub fn load_node_config_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<NodeConfig, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|error| single(&origin, KeyPath::root(), Problem::Read(error.to_string())))?;
    let overrides: Vec<(String, String)> = (env.into_iter())
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(key, _)| key.starts_with(ENV_PREFIX) && key.contains("__"))
        .collect();
    parse(&text, &origin, &overrides)
}

/// Parses and validates a node config given as text; `origin` names it in errors (a file name,
/// or something like `coordinator push 42`). The environment is not consulted.
pub fn parse_node_config(text: &str, origin: &str) -> Result<NodeConfig, ConfigErrors> {
    parse(text, origin, &[])
}

/// Validates a node config that a program built as a TOML document (the fleet expansion does):
/// the same schema and checks as [`parse_node_config`], without printing the document and
/// reading it back. `origin` names it in errors.
pub fn node_config_from_document(
    document: &toml::Table,
    origin: &str,
) -> Result<NodeConfig, ConfigErrors> {
    let tree = serde_json::Value::Object(
        (document.iter())
            .map(|(key, value)| (key.clone(), tree_value(value)))
            .collect(),
    );
    validate_tree(tree, origin, &[])
}

/// A TOML value as the `config` crate hands its TOML files on, so that a document and its text
/// are judged alike: integers as `i64`, date-times as their text, a NaN float as nothing.
fn tree_value(value: &toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(text) => serde_json::Value::String(text.clone()),
        toml::Value::Integer(number) => serde_json::Value::from(*number),
        toml::Value::Float(number) => serde_json::Number::from_f64(*number)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        toml::Value::Boolean(flag) => serde_json::Value::Bool(*flag),
        toml::Value::Datetime(datetime) => serde_json::Value::String(datetime.to_string()),
        toml::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(tree_value).collect())
        }
        toml::Value::Table(table) => serde_json::Value::Object(
            (table.iter())
                .map(|(key, value)| (key.clone(), tree_value(value)))
                .collect(),
        ),
    }
}

fn parse(
    text: &str,
    origin: &str,
    overrides: &[(String, String)],
) -> Result<NodeConfig, ConfigErrors> {
    let mut env_paths = Vec::new();
    let mut found = Vec::new();
    for (var, _) in overrides {
        let path = env_key_path(var);
        let section = match path.segments().first() {
            Some(Segment::Key(section)) => section.as_str(),
            _ => "",
        };
        if !ENV_SECTIONS.contains(&section) {
            found.push(ConfigError {
                origin: origin.to_owned(),
                path: path.clone(),
                problem: Problem::Invalid(
                    "only keys of [node] can be set from the environment".into(),
                ),
                env_var: Some(var.clone()),
            });
        }
        env_paths.push((path, var.clone()));
    }
    if !found.is_empty() {
        return Err(ConfigErrors::from_vec(found).unwrap_or_else(|| unreachable_empty(origin)));
    }
    let tree = read_tree(text, origin, overrides)?;
    validate_tree(tree, origin, &env_paths)
}

/// The document as a value tree → the schema (every structural problem) → validation.
/// `env_paths` are the keys the environment set, named in the problems found under them.
fn validate_tree(
    mut tree: serde_json::Value,
    origin: &str,
    env_paths: &[(KeyPath, String)],
) -> Result<NodeConfig, ConfigErrors> {
    let mut found = Vec::new();
    let mut collector = Collector::default();
    let raw = deserialize_collecting(&mut tree, &mut collector);
    let schema_problems: Vec<KeyPath> = collector
        .into_inner()
        .into_iter()
        .map(|(path, problem)| {
            found_push(&mut found, origin, env_paths, path.clone(), problem);
            path
        })
        .collect();

    let config = raw.and_then(|raw| {
        let mut validation = Collector::default();
        let config = validate(&raw, &mut validation);
        for (path, problem) in validation.into_inner() {
            // A value already reported as malformed was taken out; what validation says about
            // its absence would only repeat that.
            let follows = schema_problems
                .iter()
                .any(|reported| path.starts_with(reported) || reported.starts_with(&path));
            if !follows {
                found_push(&mut found, origin, env_paths, path, problem);
            }
        }
        config
    });
    match (ConfigErrors::from_vec(found), config) {
        (Some(errors), _) => Err(errors),
        (None, Some(config)) => Ok(config),
        // `validate` returns `None` only after recording a problem, which either survives the
        // filter above or follows a schema problem that is itself recorded.
        (None, None) => Err(unreachable_empty(origin)),
    }
}

fn found_push(
    found: &mut Vec<ConfigError>,
    origin: &str,
    env_paths: &[(KeyPath, String)],
    path: KeyPath,
    problem: Problem,
) {
    let env_var = (env_paths.iter())
        .find(|(env_path, _)| path.starts_with(env_path))
        .map(|(_, var)| var.clone());
    found.push(ConfigError {
        origin: origin.to_owned(),
        path,
        problem,
        env_var,
    });
}

/// A fallback error for a state the code above rules out, so no caller ever gets `Ok` for a
/// config that was not validated.
fn unreachable_empty(origin: &str) -> ConfigErrors {
    single(
        origin,
        KeyPath::root(),
        Problem::Invalid("the config was refused without a reason (a bug in hav)".into()),
    )
}

fn single(origin: &str, path: KeyPath, problem: Problem) -> ConfigErrors {
    ConfigErrors::one(ConfigError {
        origin: origin.to_owned(),
        path,
        problem,
        env_var: None,
    })
}

/// `HAV_NODE__STATE_DIR` → `node.state_dir`, as the `config` crate maps it.
fn env_key_path(var: &str) -> KeyPath {
    let key = var[ENV_PREFIX.len()..].to_lowercase();
    key.split("__")
        .fold(KeyPath::root(), |path, part| path.key(part))
}

/// The merged document as a plain value tree.
fn read_tree(
    text: &str,
    origin: &str,
    overrides: &[(String, String)],
) -> Result<serde_json::Value, ConfigErrors> {
    let mut builder = Config::builder().add_source(File::from_str(text, FileFormat::Toml));
    if !overrides.is_empty() {
        let source: config::Map<String, String> = overrides.iter().cloned().collect();
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX.trim_end_matches('_'))
                .prefix_separator("_")
                .separator("__")
                .source(Some(source)),
        );
    }
    let merged = builder
        .build()
        .map_err(|error| config_error(error, text, origin))?;
    merged
        .try_deserialize::<serde_json::Value>()
        .map_err(|error| config_error(error, text, origin))
}

fn config_error(error: config::ConfigError, text: &str, origin: &str) -> ConfigErrors {
    let problem = match &error {
        config::ConfigError::FileParse { cause, .. } => {
            match cause.downcast_ref::<toml::de::Error>() {
                Some(toml_error) => {
                    let offset = toml_error.span().map(|span| span.start).unwrap_or(0);
                    let (line, column) = line_and_column(text, offset);
                    Problem::Syntax {
                        line,
                        column,
                        message: toml_error.message().trim().to_owned(),
                    }
                }
                None => Problem::Syntax {
                    line: 0,
                    column: 0,
                    message: cause.to_string(),
                },
            }
        }
        other => Problem::Schema(other.to_string()),
    };
    single(origin, KeyPath::root(), problem)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|index| index + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Deserializes the raw document, recording each structural problem and taking the offending
/// entry out of `tree` until the rest deserializes. `None` if that never happens.
fn deserialize_collecting(
    tree: &mut serde_json::Value,
    collector: &mut Collector,
) -> Option<RawNodeConfig> {
    let mut reported = HashSet::new();
    for _ in 0..MAX_SCHEMA_ROUNDS {
        let error = match serde_path_to_error::deserialize::<_, RawNodeConfig>(&*tree) {
            Ok(raw) => return Some(raw),
            Err(error) => error,
        };
        let path = key_path(error.path());
        if reported.insert(path.clone()) {
            collector.push(
                path.clone(),
                Problem::Schema(humanize(&error.inner().to_string())),
            );
        }
        if !take_out(tree, &path) {
            return None;
        }
    }
    None
}

fn key_path(path: &serde_path_to_error::Path) -> KeyPath {
    let segments = (path.iter())
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
            _ => None,
        })
        .collect();
    KeyPath::from_segments(segments)
}

/// Neutralizes the entry at `path`: a table key is removed; an array element that is not a table
/// becomes an empty table (every raw table accepts one), and if it already is one the whole array
/// goes. Positions never shift, so later paths stay true. `false` if nothing could be done.
fn take_out(tree: &mut serde_json::Value, path: &KeyPath) -> bool {
    let Some((last, parent_path)) = path.segments().split_last() else {
        return false;
    };
    let mut parent = &mut *tree;
    for segment in parent_path {
        let next = match (segment, parent) {
            (Segment::Key(key), serde_json::Value::Object(map)) => map.get_mut(key),
            (Segment::Index(index), serde_json::Value::Array(items)) => items.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => parent = next,
            None => return false,
        }
    }
    match (last, parent) {
        (Segment::Key(key), serde_json::Value::Object(map)) => map.remove(key).is_some(),
        (Segment::Index(index), serde_json::Value::Array(items)) => match items.get_mut(*index) {
            Some(item) if !item.is_object() => {
                *item = serde_json::Value::Object(serde_json::Map::new());
                true
            }
            Some(_) => take_out(tree, &KeyPath::from_segments(parent_path.to_vec())),
            None => false,
        },
        _ => false,
    }
}

/// Serde's wording in terms of TOML: keys, tables, arrays, integers.
fn humanize(message: &str) -> String {
    let mut text = message
        .replace("unknown field", "unknown key")
        .replace("invalid type: map", "invalid type: table")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("expected i64", "expected an integer")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table")
        .replace(", expected", "; expected");
    while let Some(start) = text.find("struct Raw") {
        let name_start = start + "struct ".len();
        let end = text[name_start..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map_or(text.len(), |length| name_start + length);
        text.replace_range(start..end, "a table");
    }
    text
}
