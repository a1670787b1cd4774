//! The references cannot drift from the code: every step type's table in
//! docs/state-repo.md lists exactly the keys the loader accepts for that type, and
//! every agent.toml key has a row in docs/agent-config.md and a line in
//! packaging/agent.toml.example.

use std::collections::BTreeSet;
use std::path::PathBuf;

use infra_agent::step::KINDS;

fn reference() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/state-repo.md");
    std::fs::read_to_string(path).expect("docs/state-repo.md exists")
}

/// The keys in the first column of the tables under the heading for step type `name`.
fn documented_keys(doc: &str, name: &str) -> Option<BTreeSet<String>> {
    let heading = format!("### `{name}`\n");
    let start = doc.find(&heading)? + heading.len();
    let rest = &doc[start..];
    let end = rest.find("\n#").unwrap_or(rest.len());
    Some(
        rest[..end]
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(key, _)| key.to_owned()))
            .collect(),
    )
}

#[test]
fn every_step_type_is_documented_with_exactly_its_keys() {
    let doc = reference();
    for kind in KINDS {
        let documented = documented_keys(&doc, kind.name)
            .unwrap_or_else(|| panic!("docs/state-repo.md has no section ### `{}`", kind.name));
        let accepted: BTreeSet<String> = kind.keys.iter().map(|k| k.name.to_owned()).collect();
        assert_eq!(
            documented, accepted,
            "keys of step type `{}`: docs vs code",
            kind.name
        );
    }
}

#[test]
fn the_common_keys_are_documented() {
    let doc = reference();
    for key in infra_agent::step::COMMON_KEYS {
        assert!(
            doc.contains(&format!("`{key}`")),
            "common key `{key}` is not in docs/state-repo.md"
        );
    }
}

#[test]
fn every_agent_toml_key_is_documented() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/agent-config.md"))
        .expect("docs/agent-config.md exists");
    let example = std::fs::read_to_string(root.join("packaging/agent.toml.example"))
        .expect("packaging/agent.toml.example lists every key");
    for key in infra_agent::config::KEYS {
        assert!(
            doc.contains(&format!("| `{key}` |")),
            "agent.toml key `{key}` has no row in docs/agent-config.md"
        );
        assert!(
            example
                .lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} ="))),
            "agent.toml key `{key}` is not in packaging/agent.toml.example"
        );
    }
}
