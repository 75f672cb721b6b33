//! A node config built as a document (what the fleet expansion hands over) is judged exactly as
//! its text is: the same config when valid, the same problems, paths and wording when not.

use std::path::{Path, PathBuf};

use hav_proto::config::{node_config_from_document, parse_node_config};

const ORIGIN: &str = "fleet.toml (node lb-1)";

/// Both readings of `text`: as text, and as the document it parses to.
fn judge_both(text: &str) {
    let document: toml::Table =
        toml::from_str(text).unwrap_or_else(|error| panic!("not TOML: {error}\n{text}"));
    let from_text = parse_node_config(text, ORIGIN).map_err(|errors| errors.lines());
    let from_document =
        node_config_from_document(&document, ORIGIN).map_err(|errors| errors.lines());
    assert_eq!(from_document, from_text, "{text}");
}

/// Every `*.toml` under `dir` but the keepalived inputs.
fn toml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{dir:?}: {error}")) {
        let path = entry
            .unwrap_or_else(|error| panic!("{dir:?}: {error}"))
            .path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name != "keepalived") {
                toml_files(&path, found);
            }
        } else if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            found.push(path);
        }
    }
}

#[test]
fn every_example_is_the_same_config_as_a_document() {
    let mut files = Vec::new();
    toml_files(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples"),
        &mut files,
    );
    assert!(!files.is_empty());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        judge_both(&text);
    }
}

#[test]
fn a_broken_document_gets_the_problems_its_text_gets() {
    let base = "[node]\nname = \"lb-1\"\n[[instance]]\nname = \"web\"\ninterface = \"eth0\"\n\
                vrid = 10\nvips = [\"198.51.100.100/24\"]\n";
    judge_both(base);
    for broken in [
        // An unknown key, a wrong type and a bad value, all reported together.
        base.replace("vrid = 10", "vrid = 300\nprioritty = 1\npreempt = \"yes\""),
        base.replace("interface = \"eth0\"\n", ""),
        base.replace("name = \"web\"", "name = 5"),
        format!("{base}[[script]]\nname = \"chk\"\nprogram = \"true\"\nweight = 1.5\n"),
        format!(
            "{base}[[script]]\nname = \"chk\"\nprogram = \"/bin/true\"\ninterval = 1979-05-27T07:32:00Z\n"
        ),
        format!("{base}[telemetry]\nsampling_ratio = nan\n"),
        "[[node]]\nname = \"lb-1\"\n".to_owned(),
    ] {
        judge_both(&broken);
    }
}
