//! Malformed keepalived syntax is an error naming file and line; no input makes the importer
//! panic (a property test of random edits to the example files).

use std::path::{Path, PathBuf};

use havctl::import::{ImportError, import_keepalived, import_keepalived_text};
use proptest::prelude::*;

const NAME: &str = "/nonexistent/edited.conf";

fn syntax_error(text: &str) -> (usize, String) {
    match import_keepalived_text(text, Path::new(NAME)) {
        Err(ImportError::Syntax {
            file,
            line,
            message,
            ..
        }) => {
            assert_eq!(file, Path::new(NAME));
            (line, message)
        }
        other => panic!("{text:?}: expected a syntax error, got {other:?}"),
    }
}

#[test]
fn malformed_syntax_names_the_line() {
    let cases = [
        ("vrrp_instance VI_1 {\n interface eth0\n", 1, "never closed"),
        ("global_defs {\n}\n}\n", 3, "closes no block"),
        (
            "vrrp_script x {\n script \"/bin/true\n}\n",
            2,
            "unterminated",
        ),
        ("\n\n{\n", 3, "without a keyword"),
        ("a {\n b \"\\x\"\n}\n", 2, "without hex digits"),
        ("include a b\n", 1, "exactly one"),
    ];
    for (text, line, words) in cases {
        let (got, message) = syntax_error(text);
        assert_eq!(got, line, "{text:?}: {message}");
        assert!(message.contains(words), "{text:?}: {message}");
    }
    let deep = "a {\n".repeat(100);
    assert!(syntax_error(&deep).1.contains("nested"));
}

#[test]
fn file_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("hav-import-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let binary = dir.join("binary.conf");
    std::fs::write(&binary, b"global_defs {\n router_id \xff\xfe\n}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let looping = dir.join("loop.conf");
    std::fs::write(&looping, "include loop.conf\n").unwrap_or_else(|e| panic!("{e}"));
    match import_keepalived(std::slice::from_ref(&binary)) {
        Err(ImportError::NotUtf8 { file, line, offset }) => {
            assert_eq!((file, line, offset), (binary, 2, 25))
        }
        other => panic!("{other:?}"),
    }
    match import_keepalived(&[dir.join("absent.conf")]) {
        Err(error @ ImportError::Read { .. }) => assert!(error.to_string().contains("absent.conf")),
        other => panic!("{other:?}"),
    }
    match import_keepalived(std::slice::from_ref(&looping)) {
        Err(ImportError::Syntax {
            file,
            line,
            message,
            ..
        }) => {
            assert_eq!((file, line), (looping, 1));
            assert!(message.contains("nested"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(import_keepalived(&[]), Err(ImportError::NoFiles)));
    let _ = std::fs::remove_dir_all(&dir);
}

fn examples() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/keepalived");
    let mut texts = Vec::new();
    for setup in [
        "squid-active-passive",
        "squid-active-active",
        "nginx-sync-group",
        "haproxy-http-check",
        "lvs-dr",
        "lvs-nat-http",
        "gateway-vmac",
    ] {
        for node in ["node-a.conf", "node-b.conf"] {
            let path = root.join(setup).join(node);
            texts.push(
                std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            );
        }
    }
    texts.push(
        std::fs::read_to_string(root.join("nginx-sync-group/conf.d-a/wan.conf"))
            .unwrap_or_default(),
    );
    texts
}

/// An edit at a relative position of the text.
#[derive(Debug, Clone)]
enum Edit {
    Delete { at: f64, len: usize },
    Insert { at: f64, text: String },
    DuplicateLine { at: f64 },
}

fn edit() -> impl Strategy<Value = Edit> {
    let fragment = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("\n".to_owned()),
        Just("#".to_owned()),
        Just("!".to_owned()),
        Just("\\".to_owned()),
        Just(" weight 300".to_owned()),
        Just(" reverse".to_owned()),
        Just("\nvirtual_ipaddress {\n 2001:db8::9\n}\n".to_owned()),
        Just("\nvrrp_instance X {\n".to_owned()),
        Just("\ninclude /nonexistent/*.conf\n".to_owned()),
        Just(" 999999999999999999999".to_owned()),
        Just(" -1".to_owned()),
        Just(" ü".to_owned()),
        "[ -~]{0,12}",
    ];
    prop_oneof![
        (0.0..1.0f64, 1..40usize).prop_map(|(at, len)| Edit::Delete { at, len }),
        (0.0..1.0f64, fragment).prop_map(|(at, text)| Edit::Insert { at, text }),
        (0.0..1.0f64).prop_map(|at| Edit::DuplicateLine { at }),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let boundary = |at: f64| {
        let mut index = ((text.len() as f64) * at) as usize;
        while index > 0 && !text.is_char_boundary(index) {
            index -= 1;
        }
        index.min(text.len())
    };
    match edit {
        Edit::Delete { at, len } => {
            let start = boundary(*at);
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}{}", &text[..start], &text[end..])
        }
        Edit::Insert { at, text: inserted } => {
            let at = boundary(*at);
            format!("{}{inserted}{}", &text[..at], &text[at..])
        }
        Edit::DuplicateLine { at } => {
            let lines: Vec<&str> = text.lines().collect();
            let index = ((lines.len() as f64) * at) as usize;
            let mut out: Vec<&str> = lines.clone();
            if let Some(line) = lines.get(index) {
                out.insert(index, line);
            }
            out.join("\n")
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever the edits, the importer returns (never panics), a syntax error names a line of
    /// the edited text, and a converted config is one hav loads.
    #[test]
    fn random_edits_never_panic(example in 0..13usize, edits in proptest::collection::vec(edit(), 1..6)) {
        let texts = examples();
        let mut text = texts[example % texts.len()].clone();
        for edit in &edits {
            text = apply(&text, edit);
        }
        let lines = text.lines().count().max(1);
        match import_keepalived_text(&text, Path::new(NAME)) {
            Ok(node) => {
                prop_assert!(hav_proto::config::parse_node_config(&node.toml, "again").is_ok());
                for finding in &node.findings {
                    prop_assert!(finding.location.line >= 1 && finding.location.line <= lines);
                }
            }
            Err(ImportError::Syntax { line, .. }) => prop_assert!(line >= 1 && line <= lines, "line {line} of {lines}"),
            Err(ImportError::Rejected { errors, .. }) => prop_assert!(!errors.to_string().is_empty()),
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    /// Arbitrary text, keepalived-flavoured characters favoured: never a panic, and every error
    /// names a line of the text.
    #[test]
    fn arbitrary_text_never_panics(text in "([a-z_]{1,12}|[ \t]|\n|[{}\"'#!\\@$/.:0-9-]){0,400}") {
        let lines = text.lines().count().max(1);
        match import_keepalived_text(&text, Path::new(NAME)) {
            Ok(node) => prop_assert!(hav_proto::config::parse_node_config(&node.toml, "again").is_ok()),
            Err(ImportError::Syntax { line, .. }) => prop_assert!(line >= 1 && line <= lines),
            Err(ImportError::Rejected { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}
