//! Arbitrary edits of a valid config never panic the loader, and whatever it accepts survives
//! the canonical round trip.

use hav_proto::config::parse_node_config;
use proptest::prelude::*;

const REFERENCE: &str = include_str!("../../deploy/examples/reference.toml");

/// Fragments that turn into likely mistakes when spliced into a config.
const FRAGMENTS: &[&str] = &[
    "=",
    "\"",
    "[",
    "]",
    "[[instance]]",
    "{",
    "}",
    ",",
    "\n",
    "0",
    "-1",
    "256",
    "\"1s\"",
    "true",
    "vrid = 51\n",
    "version = 2\n",
    "x = 1\n",
    "2001:db8::1",
    "/",
    "ms",
    "#",
];

#[derive(Debug, Clone)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, fragment: &'static str },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), prop::sample::select(FRAGMENTS))
            .prop_map(|(at, fragment)| Edit::Insert { at, fragment }),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut text = text.to_owned();
    for edit in edits {
        // Edits land on character boundaries (the reference is ASCII, and so are the fragments).
        match edit {
            Edit::Delete { at, len } => {
                let start = at % text.len().max(1);
                let end = (start + len).min(text.len());
                text.replace_range(start..end, "");
            }
            Edit::Insert { at, fragment } => {
                let position = at % (text.len() + 1);
                text.insert_str(position, fragment);
            }
        }
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn edited_configs_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        let text = apply(REFERENCE, &edits);
        match parse_node_config(&text, "edited") {
            Ok(config) => {
                let again = parse_node_config(&config.to_toml(), "canonical");
                prop_assert_eq!(again.as_ref(), Ok(&config));
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                for line in errors.lines() {
                    prop_assert!(line.starts_with("edited: "), "{}", line);
                    prop_assert!(!line.contains('\n'), "{}", line);
                }
            }
        }
    }
}

#[test]
fn keys_are_case_sensitive_and_sections_have_one_shape() {
    let errors = parse_node_config("[node]\nNAME = \"x\"\n", "case").expect_err("NAME is not name");
    assert_eq!(
        errors.lines(),
        [
            "case: node.NAME: unknown key `NAME`; expected one of `name`, `state_dir`, `status_socket`, `handover_port`, `strict`, `notify_fifo`, `notify_fifo_script`, `max_auto_priority`, `smtp`",
            "case: node.name: missing; expected a node name",
        ]
    );
    let errors =
        parse_node_config("[[node]]\nname = \"x\"\n", "shape").expect_err("node is a table");
    assert_eq!(
        errors.lines(),
        ["shape: node: invalid type: array; expected a table"]
    );
}
