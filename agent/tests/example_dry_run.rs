//! The README's main command, on this machine: a dry run of the bundled example
//! repository for `media-01` shows a plan and changes nothing, neither the paths the
//! plan names (nor their directories) nor the agent's state directory.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use std::path::{Path, PathBuf};

use support::AgentTest;

/// The agent's state directory when no agent.toml says otherwise.
const STATE_DIR: &str = "/var/lib/infra-agent";

fn example() -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../state-repo-example");
    dir.to_str().expect("UTF-8 path").to_owned()
}

/// The README's command with extra flags.
fn dry_run(extra: &[&str]) -> support::Run {
    AgentTest::new()
        .args([
            "--once",
            "--dry-run",
            "--repo",
            &example(),
            "--hostname",
            "media-01",
        ])
        .args(extra)
        .run()
}

/// Every named path and its directory (not their trees: `/srv` is named, and its
/// services' data is none of this test's business), plus the whole state directory.
fn snapshot(paths: &BTreeSet<PathBuf>) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for path in paths {
        out.insert(path.clone(), support::describe(path));
        if let Some(parent) = path.parent() {
            out.insert(parent.to_owned(), support::describe(parent));
        }
    }
    support::walk(Path::new(STATE_DIR), &mut out);
    out
}

/// Every file the JSON plan names (each step's resource path and each change's path,
/// where they are paths: packages, units, users and commands are names), and the
/// databases that package, user and service steps would change.
fn named_paths(json: &str) -> BTreeSet<PathBuf> {
    let doc: serde_json::Value = serde_json::from_str(json).expect("the output is JSON");
    assert_eq!(doc["schema"], "infra-agent/run/v1");
    assert_eq!(doc["dry_run"], true);
    let mut paths = BTreeSet::new();
    for step in doc["steps"].as_array().expect("steps") {
        let resource = step["resource"].as_str().expect("a resource string");
        if let Some((_kind, path)) = resource.split_once(' ')
            && path.starts_with('/')
        {
            paths.insert(PathBuf::from(path));
        }
        for change in step["changes"].as_array().expect("changes") {
            let path = change["path"].as_str().expect("a change names its path");
            if path.starts_with('/') {
                paths.insert(PathBuf::from(path));
            }
        }
    }
    for database in [
        "/var/lib/dpkg/status",
        "/etc/passwd",
        "/etc/group",
        "/etc/shadow",
    ] {
        paths.insert(PathBuf::from(database));
    }
    paths
}

#[test]
fn the_readme_dry_run_shows_a_plan_and_changes_nothing() {
    let json = dry_run(&["--format", "json"]);
    assert_eq!(json.code, 2, "{}\n{}", json.stdout, json.stderr);
    let paths = named_paths(&json.stdout);
    // The example manages these whatever state the machine is in.
    for expected in [
        "/etc/motd",
        "/etc/timezone",
        "/srv/compose/media/compose.yml",
    ] {
        assert!(paths.contains(Path::new(expected)), "{expected}: {paths:?}");
    }

    let before = snapshot(&paths);
    let run = dry_run(&[]);
    let after = snapshot(&paths);

    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("would change"), "{}", run.stdout);
    assert!(
        run.stdout.lines().any(|l| l.starts_with("    +++ ")),
        "no diff in:\n{}",
        run.stdout
    );
    let changed: Vec<_> = before
        .iter()
        .filter(|(path, was)| after.get(*path) != Some(*was))
        .map(|(path, was)| format!("{}: {was} -> {:?}", path.display(), after.get(path)))
        .chain(
            after
                .keys()
                .filter(|p| !before.contains_key(*p))
                .map(|p| format!("{}: created", p.display())),
        )
        .collect();
    assert!(
        changed.is_empty(),
        "the dry run changed the machine:\n{}",
        changed.join("\n")
    );
}
