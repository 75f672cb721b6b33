//! `load_node_config` reads `HAV_NODE__*` overrides from the process environment.
//!
//! The environment is global to the process, so this binary holds this one test only (cargo
//! test runs the tests of one binary on threads; nextest runs each in its own process anyway).

use std::path::PathBuf;

use hav_proto::config::load_node_config;

/// Removes the config file and the variables this test set, also when it fails.
struct Cleanup {
    file: PathBuf,
    vars: Vec<&'static str>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        for var in &self.vars {
            // SAFETY: this test binary runs a single test on a single thread; nothing else reads
            // or writes the environment concurrently.
            unsafe { std::env::remove_var(var) };
        }
    }
}

fn set(var: &str, value: &str) {
    // SAFETY: as in `Cleanup::drop`.
    unsafe { std::env::set_var(var, value) };
}

#[test]
fn environment_overrides_node_keys() {
    let file = std::env::temp_dir().join(format!("hav-config-env-{}.toml", std::process::id()));
    let cleanup = Cleanup {
        file: file.clone(),
        vars: vec![
            "HAV_NODE__NAME",
            "HAV_NODE__STATE_DIR",
            "HAV_INSTANCE__0__PRIORITY",
            "HAV_CONFIG_TEST_UNRELATED",
        ],
    };
    std::fs::write(
        &file,
        "[node]\nname = \"from-file\"\n\n[[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 7\nvips = [\"198.51.100.7/24\"]\n",
    )
    .expect("the temporary directory is writable");
    let origin = file.display().to_string();

    let loaded = load_node_config(&file).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(loaded.node.name, "from-file");
    assert_eq!(loaded.node.state_dir, PathBuf::from("/var/lib/hav"));

    // A variable without the `__` separator is someone else's and is left alone.
    set("HAV_CONFIG_TEST_UNRELATED", "1");
    set("HAV_NODE__NAME", "from-env");
    set("HAV_NODE__STATE_DIR", "/srv/hav");
    let loaded = load_node_config(&file).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(loaded.node.name, "from-env");
    assert_eq!(loaded.node.state_dir, PathBuf::from("/srv/hav"));
    assert_eq!(loaded.instances[0].vrid.get(), 7);

    // A bad value from the environment says where it came from.
    set("HAV_NODE__NAME", "bad name");
    let errors = load_node_config(&file).expect_err("a name with a space is refused");
    assert_eq!(
        errors.lines(),
        [format!(
            "{origin}: node.name: \"bad name\" is not a name; expected 1 to 64 of A-Z a-z 0-9 _ - . (value from environment variable HAV_NODE__NAME)"
        )]
    );

    // Only [node] can be overridden.
    set("HAV_NODE__NAME", "from-env");
    set("HAV_INSTANCE__0__PRIORITY", "200");
    let errors =
        load_node_config(&file).expect_err("instance keys cannot be set from the environment");
    assert_eq!(
        errors.lines(),
        [format!(
            "{origin}: instance.0.priority: only keys of [node] can be set from the environment (value from environment variable HAV_INSTANCE__0__PRIORITY)"
        )]
    );
    drop(cleanup);
    assert!(std::env::var_os("HAV_NODE__NAME").is_none());
}
