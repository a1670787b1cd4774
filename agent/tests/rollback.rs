//! Rollback end to end with the real binary, as root: version A of a repository
//! creates one file and changes another; version B (the revert) drops both steps; a
//! run of B removes the created file and gives the changed one its original content,
//! mode and owner back, forgets their originals, and the run after that is in sync.

mod support;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use support::{AgentTest, Run, write};

const KEEP: &str = r#"
[[step]]
id = "keep"
type = "file"
path = "{{data.root}}/keep"
content = "kept\n"
"#;

const REVERTED: &str = r#"
[[step]]
id = "new"
type = "file"
path = "{{data.root}}/new"
content = "created by the agent\n"
mode = "0640"

[[step]]
id = "existing"
type = "file"
path = "{{data.root}}/existing"
content = "managed by the agent\n"
mode = "0644"
owner = "root"
group = "root"
"#;

/// A repository, the tree it manages (`ROOT`) and the agent's directory (agent.toml
/// and the state directory).
struct Fixture {
    repo: tempfile::TempDir,
    root: tempfile::TempDir,
    agent: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests change owners: run the test suite as root (CI does)"
        );
        let f = Self {
            repo: tempfile::tempdir().expect("a temporary directory"),
            root: tempfile::tempdir().expect("a temporary directory"),
            agent: tempfile::tempdir().expect("a temporary directory"),
        };
        let repo = f.repo.path();
        write(repo, "infra.toml", "format = 1\n");
        write(
            repo,
            "inventory/production.toml",
            "[groups.all]\nroles = [\"app\"]\n\n[groups.apps]\nhosts = [\"h1\"]\n",
        );
        write(
            repo,
            "group_data/all.toml",
            &format!("root = \"{}\"\n", f.root.path().display()),
        );
        write(
            f.agent.path(),
            "agent.toml",
            &format!("state_dir = \"{}\"\n", f.state_dir().display()),
        );
        f
    }

    /// Version A (`with_reverted`) or B of the role.
    fn version(&self, with_reverted: bool) {
        let role = if with_reverted {
            format!("{REVERTED}{KEEP}")
        } else {
            KEEP.to_owned()
        };
        write(self.repo.path(), "roles/app.toml", &role);
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn state_dir(&self) -> PathBuf {
        self.agent.path().join("state")
    }

    fn record(&self, rel: &str) -> PathBuf {
        let name = self
            .path(rel)
            .to_str()
            .expect("UTF-8 path")
            .replace('%', "%25")
            .replace('/', "%2F");
        self.state_dir()
            .join("originals")
            .join(format!("{name}.json"))
    }

    fn run(&self, extra: &[&str]) -> Run {
        let config = self.agent.path().join("agent.toml");
        AgentTest::new()
            .args(["--once", "--repo"])
            .arg(self.repo.path().to_str().expect("UTF-8 path"))
            .args(["--hostname", "h1", "--config"])
            .arg(config.to_str().expect("UTF-8 path"))
            .args(extra)
            .run()
    }

    fn managed(&self) -> serde_json::Value {
        let bytes = std::fs::read(self.state_dir().join("managed.json")).expect("managed.json");
        serde_json::from_slice(&bytes).expect("managed.json is JSON")
    }
}

#[track_caller]
fn assert_code(run: &Run, code: i32) {
    assert_eq!(
        run.code, code,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

fn nobody() -> (u32, u32) {
    let user = nix::unistd::User::from_name("nobody")
        .expect("the user database reads")
        .expect("user nobody exists");
    let group = nix::unistd::Group::from_name("nogroup")
        .expect("the group database reads")
        .expect("group nogroup exists");
    (user.uid.as_raw(), group.gid.as_raw())
}

fn state(path: &Path) -> (String, u32, u32, u32) {
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (
        std::fs::read_to_string(path).expect("a text file"),
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid(),
    )
}

#[test]
fn a_revert_removes_what_the_agent_created_and_restores_what_it_changed() {
    let f = Fixture::new();
    let (nobody_uid, nogroup_gid) = nobody();
    let existing = f.path("existing");
    std::fs::write(&existing, "original content\n").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&existing, Some(nobody_uid), Some(nogroup_gid)).unwrap();

    // Version A.
    f.version(true);
    let run = f.run(&[]);
    assert_code(&run, 2);
    assert_eq!(
        state(&f.path("new")),
        ("created by the agent\n".to_owned(), 0o640, 0, 0)
    );
    assert_eq!(
        state(&existing),
        ("managed by the agent\n".to_owned(), 0o644, 0, 0)
    );
    assert!(f.record("new").exists() && f.record("existing").exists());
    let managed = f.managed();
    assert_eq!(managed["schema"], "infra-agent/managed/v1");
    let new_key = f.path("new").display().to_string();
    assert_eq!(managed["paths"][&new_key]["kind"], "file");
    assert_eq!(managed["paths"][&new_key]["step"], "new");

    // Version B, the revert. A dry run first: it says what would happen, does nothing.
    f.version(false);
    let root_before = support::tree(f.root.path());
    let state_before = support::tree(&f.state_dir());
    let run = f.run(&["--dry-run"]);
    assert_code(&run, 2);
    assert!(
        run.stdout.contains(&format!(
            "rollback[{new_key}] (file {new_key}): would change"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("-managed by the agent\n    +original content\n"),
        "{}",
        run.stdout
    );
    assert_eq!(support::tree(f.root.path()), root_before);
    assert_eq!(support::tree(&f.state_dir()), state_before);

    let run = f.run(&[]);
    assert_code(&run, 2);
    assert!(
        run.stdout.contains(&format!(
            "rollback[{new_key}] (file {new_key}): changed\n  ~ remove {new_key}\n"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("  ~ mode {}: 0644 -> 0600\n", existing.display())),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("2 changed, 1 in sync, 0 failed, 0 skipped"),
        "{}",
        run.stdout
    );
    assert!(!f.path("new").exists(), "the created file is gone");
    assert_eq!(
        state(&existing),
        (
            "original content\n".to_owned(),
            0o600,
            nobody_uid,
            nogroup_gid
        )
    );
    assert!(
        !f.record("new").exists(),
        "the record of the new file is gone"
    );
    assert!(
        !f.record("existing").exists(),
        "the record of the changed file is gone"
    );
    let content_copy = f.record("existing").with_extension("content");
    assert!(!content_copy.exists(), "{}", content_copy.display());
    assert!(f.record("keep").exists());
    let paths: Vec<String> = f.managed()["paths"]
        .as_object()
        .expect("paths is a table")
        .keys()
        .cloned()
        .collect();
    assert_eq!(paths, [f.path("keep").display().to_string()]);
    // Nothing but what B manages, and what was there before, is left.
    let mut names: Vec<String> = std::fs::read_dir(f.root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["existing", "keep"]);

    // And then the host is in sync.
    let run = f.run(&[]);
    assert_code(&run, 0);
    assert!(
        run.stdout
            .contains("0 changed, 1 in sync, 0 failed, 0 skipped"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("rollback"), "{}", run.stdout);
}

#[test]
fn a_file_edited_by_hand_after_the_agent_wrote_it_is_left_in_place() {
    let f = Fixture::new();
    f.version(true);
    assert_code(&f.run(&[]), 2);
    std::fs::write(f.path("new"), "my own edit\n").unwrap();

    f.version(false);
    let run = f.run(&["--format", "json"]);
    // The other file the agent created is removed (a change); the edited one is a
    // note, not a failure.
    assert_code(&run, 2);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let new_key = f.path("new").display().to_string();
    let item = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "rollback" && s["instance"] == new_key.as_str())
        .unwrap_or_else(|| panic!("a rollback of {new_key}: {}", run.stdout));
    assert_eq!(item["status"], "skipped");
    assert!(
        item["reason"]
            .as_str()
            .unwrap()
            .starts_with("changed since the agent last wrote it; left as it is"),
        "{item}"
    );
    assert_eq!(doc["summary"]["failed"], 0);
    assert_eq!(
        std::fs::read_to_string(f.path("new")).unwrap(),
        "my own edit\n"
    );
    assert!(!f.record("new").exists());
    assert_code(&f.run(&[]), 0);
}
