//! keepalived.conf statements: the token lines of a file and of everything it includes, built
//! into a tree of `keyword args... [{ ... }]` statements, each with the file and line it is on.
//!
//! `include FILE` (and keepalived's variants `includer`, `includem`, `includew`, `includeb`,
//! `includea`) is expanded where it stands: relative paths are relative to the including file's
//! directory, `*`, `?`, `[...]` and `{a,b}` are expanded and matches read in sorted order, as
//! glob(3) does. A block may open in one file and close in another, as in keepalived.
//!
//! Statements end where keepalived's keyword table says (see `keywords`): several statements on
//! one line, or a whole configuration on one line, read as the same statements written one per
//! line. Nothing here panics on input: a syntax problem is an [`ImportError::Syntax`] naming the
//! file, line and column.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use super::keywords::{self, Context};
use super::lexer::{self, Token};
use super::{Finding, ImportError};

/// Where something is in the keepalived configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// An argument of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub text: String,
    /// Written (at least partly) inside quotes.
    pub quoted: bool,
}

/// `keyword args... [{ statements }]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub keyword: String,
    pub args: Vec<Arg>,
    pub block: Option<Vec<Statement>>,
    pub location: Location,
}

impl Statement {
    /// The arguments' texts.
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.args.iter().map(|arg| arg.text.as_str())
    }
}

/// A parsed configuration: its top-level statements, every file read, and notes on includes that
/// matched nothing.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub statements: Vec<Statement>,
    pub files: Vec<PathBuf>,
    pub findings: Vec<Finding>,
}

/// Includes nested deeper than this are refused (a file that includes itself would loop).
const MAX_INCLUDE_DEPTH: usize = 16;
/// Blocks nested deeper than this are refused; keepalived's deepest real nesting is 4.
const MAX_BLOCK_DEPTH: usize = 32;
const INCLUDE_KEYWORDS: &[&str] = &[
    "include", "includer", "includem", "includew", "includeb", "includea",
];

/// Reads and parses the configuration at `path` with everything it includes.
pub fn parse_file(path: &Path) -> Result<Parsed, ImportError> {
    let mut loader = Loader::default();
    loader.load(path, 0, None)?;
    let mut parser = TreeBuilder {
        tokens: loader.tokens,
        position: 0,
    };
    let statements = parser.block(None, Context::Top, 0)?;
    Ok(Parsed {
        statements,
        files: loader.files,
        findings: loader.findings,
    })
}

/// Parses configuration text that includes nothing; `name` stands for the file in locations.
pub fn parse_text(text: &str, name: &Path) -> Result<Parsed, ImportError> {
    let mut loader = Loader::default();
    loader.add_text(text, name, 0)?;
    let mut parser = TreeBuilder {
        tokens: loader.tokens,
        position: 0,
    };
    let statements = parser.block(None, Context::Top, 0)?;
    Ok(Parsed {
        statements,
        files: vec![name.to_owned()],
        findings: loader.findings,
    })
}

struct Located {
    token: Token,
    location: Location,
    /// Distinguishes physical lines across files: tokens of one line share it.
    line_id: usize,
}

#[derive(Default)]
struct Loader {
    tokens: Vec<Located>,
    files: Vec<PathBuf>,
    findings: Vec<Finding>,
    next_line_id: usize,
}

impl Loader {
    fn load(
        &mut self,
        path: &Path,
        depth: usize,
        included_from: Option<&Location>,
    ) -> Result<(), ImportError> {
        if depth > MAX_INCLUDE_DEPTH {
            let at = included_from.cloned().unwrap_or(Location {
                file: path.to_owned(),
                line: 0,
                column: 0,
            });
            return Err(ImportError::Syntax {
                file: at.file,
                line: at.line,
                column: at.column,
                message: format!(
                    "includes nested more than {MAX_INCLUDE_DEPTH} deep (does a file include itself?)"
                ),
            });
        }
        let bytes = std::fs::read(path).map_err(|source| ImportError::Read {
            file: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|error| {
            let offset = error.utf8_error().valid_up_to();
            let line = 1 + error.as_bytes()[..offset]
                .iter()
                .filter(|&&byte| byte == b'\n')
                .count();
            ImportError::NotUtf8 {
                file: path.to_owned(),
                line,
                offset,
            }
        })?;
        self.add_text(&text, path, depth)
    }

    fn add_text(&mut self, text: &str, path: &Path, depth: usize) -> Result<(), ImportError> {
        self.files.push(path.to_owned());
        let lines = lexer::tokenize(text).map_err(|error| ImportError::Syntax {
            file: path.to_owned(),
            line: error.line,
            column: error.column,
            message: error.message,
        })?;
        for line in lines {
            let location = |column| Location {
                file: path.to_owned(),
                line: line.number,
                column,
            };
            if let Some(lexer::Spanned {
                token:
                    Token::Word {
                        text: keyword,
                        quoted: false,
                    },
                column,
            }) = line.tokens.first()
                && INCLUDE_KEYWORDS.contains(&keyword.as_str())
            {
                self.include(
                    keyword,
                    &line.words_with_braces[1..],
                    &location(*column),
                    depth,
                )?;
                continue;
            }
            self.next_line_id += 1;
            for spanned in &line.tokens {
                self.tokens.push(Located {
                    token: spanned.token.clone(),
                    location: location(spanned.column),
                    line_id: self.next_line_id,
                });
            }
        }
        Ok(())
    }

    fn include(
        &mut self,
        keyword: &str,
        args: &[String],
        at: &Location,
        depth: usize,
    ) -> Result<(), ImportError> {
        let pattern = match args {
            [pattern] => pattern,
            _ => {
                return Err(ImportError::Syntax {
                    file: at.file.clone(),
                    line: at.line,
                    column: at.column,
                    message: format!("`{keyword}` takes exactly one file name or pattern"),
                });
            }
        };
        let base = at.file.parent().unwrap_or(Path::new("."));
        let matches = expand_pattern(base, pattern);
        if matches.is_empty() {
            self.findings.push(Finding::note(
                at.clone(),
                format!("{keyword} {pattern}"),
                "matched no readable file, so nothing was included (keepalived's plain `include` \
                 also ignores this)",
            ));
        }
        for file in matches {
            self.load(&file, depth + 1, Some(at))?;
        }
        Ok(())
    }
}

struct TreeBuilder {
    tokens: Vec<Located>,
    position: usize,
}

impl TreeBuilder {
    /// Statements of a block of kind `context` up to the `}` closing it (opened at `opened`), or
    /// to the end of input for the top level.
    fn block(
        &mut self,
        opened: Option<&Location>,
        context: Context,
        depth: usize,
    ) -> Result<Vec<Statement>, ImportError> {
        let mut statements = Vec::new();
        loop {
            let Some(current) = self.tokens.get(self.position) else {
                return match opened {
                    None => Ok(statements),
                    Some(at) => Err(syntax(at, "this block is never closed (a `}` is missing)")),
                };
            };
            match &current.token {
                Token::Close => {
                    let at = current.location.clone();
                    self.position += 1;
                    return match opened {
                        Some(_) => Ok(statements),
                        None => Err(syntax(&at, "`}` closes no block")),
                    };
                }
                Token::Open => {
                    return Err(syntax(&current.location, "`{` without a keyword before it"));
                }
                Token::Word { text, .. } => {
                    let keyword = text.clone();
                    let location = current.location.clone();
                    let line_id = current.line_id;
                    self.position += 1;
                    // The words after the keyword up to a brace or the end of its line; the
                    // keyword table says how many are its arguments.
                    let following: Vec<&str> = (self.tokens[self.position..].iter())
                        .map_while(|located| match &located.token {
                            Token::Word { text, .. } if located.line_id == line_id => {
                                Some(text.as_str())
                            }
                            _ => None,
                        })
                        .collect();
                    let count = keywords::argument_count(context, &keyword, &following);
                    let args = (self.tokens[self.position..].iter())
                        .take(count)
                        .filter_map(|located| match &located.token {
                            Token::Word { text, quoted } => Some(Arg {
                                text: text.clone(),
                                quoted: *quoted,
                            }),
                            Token::Open | Token::Close => None,
                        })
                        .collect();
                    self.position += count;
                    let block = match self.tokens.get(self.position) {
                        Some(Located {
                            token: Token::Open,
                            location: open_at,
                            ..
                        }) => {
                            if depth >= MAX_BLOCK_DEPTH {
                                return Err(syntax(
                                    open_at,
                                    &format!("blocks nested more than {MAX_BLOCK_DEPTH} deep"),
                                ));
                            }
                            let open_at = open_at.clone();
                            self.position += 1;
                            let inner = keywords::block_context(context, &keyword);
                            Some(self.block(Some(&open_at), inner, depth + 1)?)
                        }
                        _ => None,
                    };
                    statements.push(Statement {
                        keyword,
                        args,
                        block,
                        location,
                    });
                }
            }
        }
    }
}

fn syntax(at: &Location, message: &str) -> ImportError {
    ImportError::Syntax {
        file: at.file.clone(),
        line: at.line,
        column: at.column,
        message: message.to_owned(),
    }
}

/// Patterns with more braces or stars than this are taken literally, which bounds the work a
/// hostile pattern can cause (alternatives grow exponentially with braces, matching with stars).
const MAX_PATTERN_SPECIALS: usize = 8;

/// The files an include pattern names, sorted; only regular files are returned.
fn expand_pattern(base: &Path, pattern: &str) -> Vec<PathBuf> {
    let braces = pattern.matches('{').count();
    let stars = pattern.matches('*').count();
    if braces > MAX_PATTERN_SPECIALS || stars > MAX_PATTERN_SPECIALS {
        let path = base.join(pattern);
        return if path.is_file() {
            vec![path]
        } else {
            Vec::new()
        };
    }
    let mut found = Vec::new();
    for alternative in expand_braces(pattern) {
        let path = Path::new(&alternative);
        let start = if path.is_absolute() {
            PathBuf::from("/")
        } else {
            base.to_owned()
        };
        let components: Vec<String> = path
            .components()
            .filter_map(|component| match component {
                Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
                Component::ParentDir => Some("..".to_owned()),
                _ => None,
            })
            .collect();
        let mut matched = Vec::new();
        walk(&start, &components, &mut matched);
        matched.sort();
        found.extend(matched);
    }
    found.retain(|file| file.is_file());
    found.dedup();
    found
}

fn walk(dir: &Path, components: &[String], found: &mut Vec<PathBuf>) {
    let Some((first, rest)) = components.split_first() else {
        found.push(dir.to_owned());
        return;
    };
    if !first.contains(['*', '?', '[']) {
        let next = dir.join(first);
        if rest.is_empty() || next.is_dir() {
            walk(&next, rest, found);
        }
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.') || first.starts_with('.'))
        .filter(|name| wildcard_match(first.as_bytes(), name.as_bytes()))
        .collect();
    names.sort();
    for name in names {
        walk(&dir.join(name), rest, found);
    }
}

/// `{a,b}c` → `ac`, `bc` (nested braces allowed); text without braces is returned as it is.
fn expand_braces(pattern: &str) -> Vec<String> {
    let bytes = pattern.as_bytes();
    let Some(open) = pattern.find('{') else {
        return vec![pattern.to_owned()];
    };
    let mut depth = 0;
    let mut commas = Vec::new();
    let mut close = None;
    for (index, &byte) in bytes.iter().enumerate().skip(open) {
        match byte {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(index);
                    break;
                }
            }
            b',' if depth == 1 => commas.push(index),
            _ => {}
        }
    }
    let Some(close) = close else {
        return vec![pattern.to_owned()];
    };
    let (prefix, suffix) = (&pattern[..open], &pattern[close + 1..]);
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    let mut expanded = Vec::new();
    for pair in bounds.windows(2) {
        let middle = &pattern[pair[0] + 1..pair[1]];
        expanded.extend(expand_braces(&format!("{prefix}{middle}{suffix}")));
    }
    expanded
}

/// Shell-style matching of one path component: `*`, `?` and `[...]` (with `!` or `^` negation
/// and ranges).
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| wildcard_match(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && wildcard_match(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some((&first, name_rest)) = name.split_first() else {
                return false;
            };
            let negated = matches!(rest.first(), Some(b'!' | b'^'));
            let set = if negated { &rest[1..] } else { rest };
            // A `]` right after the `[` is part of the set.
            let Some(end) = set.iter().skip(1).position(|&b| b == b']').map(|p| p + 1) else {
                return first == b'[' && wildcard_match(rest, name_rest);
            };
            let (class, after) = (&set[..end], &set[end + 1..]);
            let mut inside = false;
            let mut index = 0;
            while index < class.len() {
                if index + 2 < class.len() && class[index + 1] == b'-' {
                    inside |= (class[index]..=class[index + 2]).contains(&first);
                    index += 3;
                } else {
                    inside |= class[index] == first;
                    index += 1;
                }
            }
            inside != negated && wildcard_match(after, name_rest)
        }
        Some((&literal, rest)) => {
            name.first() == Some(&literal) && wildcard_match(rest, &name[1..])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*.conf", b"a.conf"));
        assert!(!wildcard_match(b"*.conf", b"a.conf~"));
        assert!(wildcard_match(b"vi_?[0-9].conf", b"vi_a7.conf"));
        assert!(!wildcard_match(b"[!a]x", b"ax"));
        assert!(wildcard_match(b"[!a]x", b"bx"));
    }

    #[test]
    fn braces() {
        assert_eq!(expand_braces("a{b,c{d,e}}f"), ["abf", "acdf", "acef"]);
        assert_eq!(expand_braces("plain"), ["plain"]);
        assert_eq!(expand_braces("open{"), ["open{"]);
    }

    #[test]
    fn tree_with_blocks_on_one_line_and_brace_on_next_line() {
        let text = "vrrp_sync_group G {\n group { VI_1 VI_2 }\n}\nvrrp_instance VI_1\n{\n priority 100\n}\n";
        let parsed = parse_text(text, Path::new("k.conf")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.statements.len(), 2);
        let group = &parsed.statements[0].block.as_ref().map(|b| b[0].clone());
        let group = group
            .as_ref()
            .and_then(|g| g.block.clone())
            .unwrap_or_default();
        let members: Vec<&str> = group.iter().map(|m| m.keyword.as_str()).collect();
        assert_eq!(members, ["VI_1", "VI_2"]);
        assert_eq!(parsed.statements[1].location.line, 4);
        assert!(parsed.statements[1].block.is_some());
    }

    #[test]
    fn unbalanced_braces_name_the_line() {
        for (text, line) in [("a {\n b 1\n", 1), ("a 1\n}\n", 2), ("{\n", 1)] {
            match parse_text(text, Path::new("k.conf")) {
                Err(ImportError::Syntax { line: got, .. }) => assert_eq!(got, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    /// Keywords and arguments of a tree, without locations.
    fn shape(statements: &[Statement]) -> Vec<(String, Vec<String>, Option<Vec<String>>)> {
        statements
            .iter()
            .map(|statement| {
                let block = statement.block.as_deref().map(|block| {
                    shape(block)
                        .into_iter()
                        .map(|(keyword, args, inner)| format!("{keyword} {args:?} {inner:?}"))
                        .collect()
                });
                (
                    statement.keyword.clone(),
                    statement.words().map(str::to_owned).collect(),
                    block,
                )
            })
            .collect()
    }

    fn parsed(text: &str) -> Parsed {
        parse_text(text, Path::new("k.conf")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_configuration_on_one_line_reads_as_the_same_statements() {
        let multi = "vrrp_instance VI_1 {\n state MASTER\n interface eth0\n virtual_router_id 51\n \
                     priority 150\n nopreempt\n authentication {\n auth_type PASS\n auth_pass s3cret\n }\n \
                     virtual_ipaddress {\n 10.0.0.10/24 dev eth0\n 10.0.0.11/24\n }\n \
                     track_script {\n chk weight -20\n chk2\n }\n \
                     notify_master \"/bin/m master\"\n notify_backup /bin/b\n}\n\
                     virtual_server 10.0.0.10 80 {\n delay_loop 6\n lb_algo rr\n \
                     real_server 10.0.0.21 80 {\n weight 1\n TCP_CHECK {\n connect_timeout 3\n }\n }\n}\n";
        let one = multi.replace('\n', " ");
        assert_eq!(
            shape(&parsed(&one).statements),
            shape(&parsed(multi).statements)
        );
        // Every statement is located at its own keyword.
        let instance = &parsed(&one).statements[0];
        let interface = block(instance).iter().find(|s| s.keyword == "interface");
        assert_eq!(
            interface.map(|s| (s.location.line, s.location.column)),
            Some((1, 37))
        );
    }

    #[test]
    fn an_include_inside_a_line_is_a_statement_not_an_expansion() {
        let tree = parsed("global_defs { router_id a } include other.conf\n");
        let keywords: Vec<(&str, usize)> = (tree.statements.iter())
            .map(|s| (s.keyword.as_str(), s.location.column))
            .collect();
        assert_eq!(keywords, [("global_defs", 1), ("include", 29)]);
        assert!(tree.findings.is_empty());
    }

    #[test]
    fn words_no_keyword_takes_become_statements_of_their_own() {
        let tree = parsed("vrrp_instance V {\n priority 100 extra\n}\n");
        let block = block(&tree.statements[0]);
        assert_eq!(block.len(), 2);
        assert_eq!(block[1].keyword, "extra");
        assert_eq!((block[1].location.line, block[1].location.column), (2, 15));
    }

    fn block(statement: &Statement) -> &[Statement] {
        statement.block.as_deref().unwrap_or(&[])
    }
}
