//! The references cannot drift from the code: every step type's table in
//! docs/state-repo.md lists exactly the keys the loader accepts for that type, and
//! every agent.toml key has a row in docs/agent-config.md and a line in
//! packaging/agent.toml.example; every infra.toml key has a row in the reference's
//! infra.toml table; every exit code of `infra-agent` has a row in an exit code table;
//! every page the guide's index links exists.

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

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first column of every table row in the section that starts at `heading`
/// (up to the next heading of the same or a higher level), backticks removed.
fn first_column(doc: &str, heading: &str) -> BTreeSet<String> {
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading:?}"))
        + heading.len()
        + 2;
    let level = heading.split(' ').next().expect("a heading has a level");
    let rest = &doc[start..];
    let end = rest
        .lines()
        .scan(0, |pos, line| {
            let here = *pos;
            *pos += line.len() + 1;
            Some((here, line))
        })
        .find(|(_, line)| {
            let hashes = line.len() - line.trim_start_matches('#').len();
            hashes > 0 && hashes <= level.len() && line[hashes..].starts_with(' ')
        })
        .map_or(rest.len(), |(pos, _)| pos);
    rest[..end]
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split_once(" |").map(|(cell, _)| cell.replace('`', "")))
        .filter(|cell| !cell.starts_with("---"))
        .collect()
}

#[test]
fn every_infra_toml_key_is_in_the_reference_table() {
    let doc = reference();
    let documented: BTreeSet<String> = first_column(&doc, "## `infra.toml`")
        .into_iter()
        .filter(|cell| cell != "Key")
        // A table is written as its header: `[bootstrap]`.
        .map(|cell| {
            cell.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        })
        .collect();
    let accepted: BTreeSet<String> = infra_agent::state_repo::infra_toml::KEYS
        .iter()
        .map(|&k| k.to_owned())
        .collect();
    assert_eq!(
        documented, accepted,
        "infra.toml keys: docs/state-repo.md's table vs the parser"
    );
}

/// `NAME = VALUE` of every constant of agent/src/cli.rs's `exit` module, read from the
/// source so that a new constant cannot be missed.
fn exit_codes() -> Vec<(String, u8)> {
    let src = std::fs::read_to_string(root().join("agent/src/cli.rs")).expect("agent/src/cli.rs");
    let start = src
        .find("pub mod exit {")
        .expect("cli.rs has `pub mod exit`");
    let body = &src[start..];
    let body = &body[..body.find("\n}").expect("the exit module ends")];
    let codes: Vec<(String, u8)> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .map(|l| {
            let (name, rest) = l.split_once(':').expect("pub const NAME: u8 = N;");
            let value = rest
                .split_once('=')
                .expect("pub const NAME: u8 = N;")
                .1
                .trim()
                .trim_end_matches(';');
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("exit code {name} is not a number: {value}"));
            (name.trim().to_owned(), value)
        })
        .collect();
    assert!(codes.len() >= 4, "too few exit codes read: {codes:?}");
    codes
}

#[test]
fn the_exit_codes_are_read_from_the_source() {
    use infra_agent::cli::exit;
    let codes = exit_codes();
    for (name, value) in [
        ("OK", exit::OK),
        ("INVALID", exit::INVALID),
        ("CHANGED", exit::CHANGED),
        ("FAILED", exit::FAILED),
        ("USAGE", exit::USAGE),
    ] {
        assert!(
            codes.contains(&(name.to_owned(), value)),
            "{name} = {value} not read from cli.rs: {codes:?}"
        );
    }
}

#[test]
fn every_exit_code_is_in_an_exit_code_table() {
    let mut documented = BTreeSet::new();
    for (page, heading) in [
        ("docs/running.md", "## Exit codes of `--once`"),
        (
            "docs/state-repo.md",
            "## Validation and `infra-agent check`",
        ),
        (
            "docs/state-repo.md",
            "## Running steps: `infra-agent --once`",
        ),
    ] {
        let doc = std::fs::read_to_string(root().join(page)).expect("the page exists");
        documented.extend(first_column(&doc, heading));
    }
    for (name, value) in exit_codes() {
        assert!(
            documented.contains(&value.to_string()),
            "exit code {name} = {value} has no row in the exit code tables of \
             docs/running.md or docs/state-repo.md (found: {documented:?})"
        );
    }
}

#[test]
fn the_guide_index_links_only_pages_that_exist() {
    let dir = root().join("docs");
    let index = std::fs::read_to_string(dir.join("README.md")).expect("docs/README.md exists");
    let mut links = 0;
    for target in index
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')'))
    {
        let file = target.0.split('#').next().expect("split yields one part");
        if file.is_empty() || file.contains("://") {
            continue;
        }
        links += 1;
        assert!(
            dir.join(file).exists(),
            "docs/README.md links {file}, which does not exist"
        );
    }
    assert!(links >= 8, "docs/README.md links only {links} pages");
}
