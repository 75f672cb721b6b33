//! Config errors: every problem names where the config came from, where in it the problem is and
//! what was expected.
//!
//! Loading collects every problem it can find rather than stopping at the first, so an operator
//! fixes a config in one round. [`ConfigErrors`] prints one line per problem as
//! `ORIGIN: KEY.PATH: reason`.

use std::fmt;

/// Where a value sits in a config, such as `instance[1].vips[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(Vec<Segment>);

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A key of a table.
    Key(String),
    /// A position in an array, from 0.
    Index(usize),
}

impl KeyPath {
    /// The path of the whole document.
    pub const fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a table key.
    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        Self(segments)
    }

    /// This path extended by an array position.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Self(segments)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `self` is `other` or lies inside it.
    pub fn starts_with(&self, other: &KeyPath) -> bool {
        self.0.starts_with(&other.0)
    }

    pub(crate) fn from_segments(segments: Vec<Segment>) -> Self {
        Self(segments)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if position == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// What is wrong, by kind, with a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Read(String),
    /// The text is not valid TOML.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// An unknown key, or a value of the wrong TOML type.
    #[error("{0}")]
    Schema(String),
    /// A required key is absent.
    #[error("missing; {0}")]
    Missing(String),
    /// A value outside what the key allows.
    #[error("{0}")]
    Invalid(String),
    /// A name or value that must be unique appears again.
    #[error("{0}")]
    Duplicate(String),
    /// A reference to something the config does not define.
    #[error("{0}")]
    Undefined(String),
    /// Values that are each fine but do not go together.
    #[error("{0}")]
    Conflict(String),
}

/// One problem in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file path, or what the caller named the text (`parse_node_config`'s `origin`).
    pub origin: String,
    /// Where in the document; the root path for problems with the file as a whole.
    pub path: KeyPath,
    pub problem: Problem,
    /// Set when the value came from an environment variable rather than the file.
    pub env_var: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        if !self.path.is_root() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.problem)?;
        if let Some(var) = &self.env_var {
            write!(f, " (value from environment variable {var})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config, in document order where possible; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// `None` when there is nothing to report.
    pub(crate) fn from_vec(errors: Vec<ConfigError>) -> Option<Self> {
        if errors.is_empty() {
            None
        } else {
            Some(Self(errors))
        }
    }

    pub(crate) fn one(error: ConfigError) -> Self {
        Self(vec![error])
    }

    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a `ConfigErrors` holds at least one error.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The display lines, one per error.
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, error) in self.0.iter().enumerate() {
            if position > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Problems gathered while checking one document, before the origin is attached.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    found: Vec<(KeyPath, Problem)>,
}

impl Collector {
    pub(crate) fn push(&mut self, path: KeyPath, problem: Problem) {
        self.found.push((path, problem));
    }

    pub(crate) fn invalid(&mut self, path: KeyPath, reason: impl Into<String>) {
        self.push(path, Problem::Invalid(reason.into()));
    }

    pub(crate) fn missing(&mut self, path: KeyPath, expected: impl Into<String>) {
        self.push(path, Problem::Missing(expected.into()));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    pub(crate) fn into_inner(self) -> Vec<(KeyPath, Problem)> {
        self.found
    }
}
