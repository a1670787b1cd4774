//! `infra-agent --once` end to end with the real binary on this machine: a state
//! repository whose steps manage paths inside a temporary directory (`ROOT`), applied
//! as root, with owners, modes, `validate`, the originals record, drift repair, dry
//! runs that change nothing and stale candidates left by a killed run.

mod support;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use support::{AgentTest, Run, write};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests write files as root: run the test suite as root (CI does)"
    );
}

const ROLE: &str = r#"
[[step]]
id = "etc"
type = "directory"
path = "{{data.root}}/etc"
mode = "0755"

[[step]]
id = "secret"
type = "file"
path = "{{data.root}}/etc/secret.conf"
content = "token = {{data.app.token}}\n"
mode = "0640"
owner = "nobody"
group = "nogroup"
requires = ["etc"]

[[step]]
id = "app-conf"
type = "template"
path = "{{data.root}}/etc/app.conf"
source = "app.conf.hbs"
mode = "0644"
validate = ["sh", "-c", "grep -q port {path}"]
requires = ["etc"]

[[step]]
id = "data-dir"
type = "directory"
path = "{{data.root}}/srv"
mode = "0750"

[[step]]
id = "app-link"
type = "symlink"
path = "{{data.root}}/etc/app.link"
target = "{{data.root}}/etc/app.conf"
requires = ["etc"]

[[step]]
id = "banner"
type = "file"
path = "{{data.root}}/etc/banner"
source = "banner"
requires = ["etc"]

[[step]]
id = "legacy"
type = "file"
path = "{{data.root}}/legacy.conf"
state = "absent"
"#;

const STEPS: usize = 7;

/// A state repository, the tree it manages (`ROOT`) and the agent's own directory
/// (agent.toml and the state directory).
struct Fixture {
    repo: tempfile::TempDir,
    root: tempfile::TempDir,
    agent: tempfile::TempDir,
}

impl Fixture {
    /// The repository with `app.line` as the line the template writes. `ROOT` holds
    /// `legacy.conf`, which the repository says must be absent.
    fn new(line: &str) -> Self {
        require_root();
        let fixture = Self {
            repo: tempfile::tempdir().expect("a temporary directory"),
            root: tempfile::tempdir().expect("a temporary directory"),
            agent: tempfile::tempdir().expect("a temporary directory"),
        };
        let repo = fixture.repo.path();
        write(repo, "infra.toml", "format = 1\n");
        write(
            repo,
            "inventory/production.toml",
            "[groups.all]\nroles = [\"app\"]\n\n[groups.apps]\nhosts = [\"h1\"]\n",
        );
        write(repo, "roles/app.toml", ROLE);
        write(
            repo,
            "templates/app.conf.hbs",
            "# managed by infra-agent\n{{data.app.line}}\n",
        );
        write(repo, "files/banner", "welcome to h1\n");
        fixture.set_line(line);
        write(fixture.root.path(), "legacy.conf", "legacy settings\n");
        write(
            fixture.agent.path(),
            "agent.toml",
            &format!("state_dir = \"{}\"\n", fixture.state_dir().display()),
        );
        fixture
    }

    fn set_line(&self, line: &str) {
        write(
            self.repo.path(),
            "group_data/all.toml",
            &format!(
                "root = \"{}\"\n\n[app]\nline = \"{line}\"\ntoken = \"t0k3n\"\n",
                self.root().display()
            ),
        );
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    fn state_dir(&self) -> PathBuf {
        self.agent.path().join("state")
    }

    fn run(&self, extra: &[&str]) -> Run {
        let repo = self.repo.path().to_str().expect("UTF-8 path");
        let config = self.agent.path().join("agent.toml");
        AgentTest::new()
            .args(["--once", "--repo", repo, "--hostname", "h1", "--config"])
            .arg(config.to_str().expect("UTF-8 path"))
            .args(extra)
            .run()
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn meta(&self, rel: &str) -> std::fs::Metadata {
        std::fs::symlink_metadata(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn mode(&self, rel: &str) -> u32 {
        self.meta(rel).mode() & 0o7777
    }

    /// Names in `ROOT/etc`, sorted.
    fn etc_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("etc"))
            .expect("ROOT/etc lists")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .into_string()
                    .expect("UTF-8")
            })
            .collect();
        names.sort();
        names
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

/// The file name the originals record uses for `path`.
fn record_name(path: &Path) -> String {
    path.to_str()
        .expect("UTF-8 path")
        .replace('%', "%25")
        .replace('/', "%2F")
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

// ---- snapshots: everything a run could change, to compare before and after ----

// ---- tests ----

#[test]
fn a_run_converges_and_records_originals_then_the_next_is_in_sync() {
    let f = Fixture::new("port = 8080");
    let run = f.run(&[]);
    assert_code(&run, 2);
    assert!(
        run.stdout
            .contains(&format!("{STEPS} changed, 0 in sync, 0 failed, 0 skipped")),
        "{}",
        run.stdout
    );

    let (nobody_uid, nogroup_gid) = nobody();
    let secret = f.meta("etc/secret.conf");
    assert_eq!(f.read("etc/secret.conf"), "token = t0k3n\n");
    assert_eq!(secret.mode() & 0o7777, 0o640);
    assert_eq!((secret.uid(), secret.gid()), (nobody_uid, nogroup_gid));

    assert_eq!(
        f.read("etc/app.conf"),
        "# managed by infra-agent\nport = 8080\n"
    );
    assert_eq!(f.mode("etc/app.conf"), 0o644);
    assert_eq!(
        (f.meta("etc/app.conf").uid(), f.meta("etc/app.conf").gid()),
        (0, 0)
    );

    assert!(f.meta("etc").is_dir());
    assert_eq!(f.mode("etc"), 0o755);
    assert!(f.meta("srv").is_dir());
    assert_eq!(f.mode("srv"), 0o750);
    assert_eq!((f.meta("srv").uid(), f.meta("srv").gid()), (0, 0));

    assert!(f.meta("etc/app.link").file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(f.path("etc/app.link")).unwrap(),
        f.path("etc/app.conf")
    );

    assert_eq!(f.read("etc/banner"), "welcome to h1\n");
    assert_eq!(f.mode("etc/banner"), 0o644);

    assert!(!f.path("legacy.conf").exists());
    // Nothing else was left in the managed directory.
    assert_eq!(
        f.etc_names(),
        ["app.conf", "app.link", "banner", "secret.conf"]
    );

    // One record per changed path, plus the original content of the one file that existed.
    let originals = f.state_dir().join("originals");
    let mut names: Vec<String> = std::fs::read_dir(&originals)
        .expect("state/originals exists")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let legacy = f.path("legacy.conf");
    let mut expected: Vec<String> = [
        "etc",
        "etc/secret.conf",
        "etc/app.conf",
        "srv",
        "etc/app.link",
        "etc/banner",
        "legacy.conf",
    ]
    .iter()
    .map(|rel| format!("{}.json", record_name(&f.path(rel))))
    .collect();
    expected.push(format!("{}.content", record_name(&legacy)));
    expected.sort();
    assert_eq!(names, expected);
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(originals.join(format!("{}.json", record_name(&legacy)))).unwrap(),
    )
    .expect("a record is JSON");
    assert_eq!(record["existed"], true);
    assert_eq!(record["kind"], "file");
    assert_eq!(
        std::fs::read_to_string(originals.join(format!("{}.content", record_name(&legacy))))
            .unwrap(),
        "legacy settings\n"
    );
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(originals.join(format!("{}.json", record_name(&f.path("srv"))))).unwrap(),
    )
    .unwrap();
    assert_eq!(record["existed"], false);

    let run = f.run(&[]);
    assert_code(&run, 0);
    assert!(
        run.stdout
            .contains(&format!("0 changed, {STEPS} in sync, 0 failed, 0 skipped")),
        "{}",
        run.stdout
    );
}

#[test]
fn hand_edits_are_repaired_by_the_next_run() {
    let f = Fixture::new("port = 8080");
    assert_code(&f.run(&[]), 2);

    std::fs::write(f.path("etc/app.conf"), "edited by hand\n").unwrap();
    std::fs::set_permissions(
        f.path("etc/app.conf"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    std::fs::set_permissions(
        f.path("etc/secret.conf"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::os::unix::fs::lchown(f.path("etc/secret.conf"), Some(0), Some(0)).unwrap();

    let run = f.run(&[]);
    assert_code(&run, 2);
    assert!(
        run.stdout.contains("2 changed, 5 in sync, 0 failed"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("-edited by hand"), "{}", run.stdout);
    assert_eq!(
        f.read("etc/app.conf"),
        "# managed by infra-agent\nport = 8080\n"
    );
    assert_eq!(f.mode("etc/app.conf"), 0o644);
    let (nobody_uid, nogroup_gid) = nobody();
    let secret = f.meta("etc/secret.conf");
    assert_eq!(secret.mode() & 0o7777, 0o640);
    assert_eq!((secret.uid(), secret.gid()), (nobody_uid, nogroup_gid));
    assert_eq!(
        f.etc_names(),
        ["app.conf", "app.link", "banner", "secret.conf"]
    );

    assert_code(&f.run(&[]), 0);
}

#[test]
fn a_rejected_candidate_leaves_the_live_file_and_no_candidate() {
    let f = Fixture::new("port = 8080");
    assert_code(&f.run(&[]), 2);
    let before = std::fs::read(f.path("etc/app.conf")).unwrap();

    f.set_line("listen = 8080");
    let run = f.run(&[]);
    assert_code(&run, 4);
    assert!(
        run.stdout
            .contains("app-conf (template ") && run.stdout.contains("FAILED: `sh -c grep -q port {path}` rejected the new content (exit 1); the file was left unchanged"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("0 changed, 6 in sync, 1 failed"),
        "{}",
        run.stdout
    );
    assert_eq!(std::fs::read(f.path("etc/app.conf")).unwrap(), before);
    assert_eq!(f.mode("etc/app.conf"), 0o644);
    assert_eq!(
        f.etc_names(),
        ["app.conf", "app.link", "banner", "secret.conf"]
    );

    // Fixing the data converges again.
    f.set_line("port = 9090");
    assert_code(&f.run(&[]), 2);
    assert_eq!(
        f.read("etc/app.conf"),
        "# managed by infra-agent\nport = 9090\n"
    );
    assert_code(&f.run(&[]), 0);
}

#[test]
fn a_dry_run_with_pending_changes_changes_nothing() {
    let f = Fixture::new("port = 8080");
    // Pending before anything exists, and again after a converge with drift.
    for converged in [false, true] {
        if converged {
            assert_code(&f.run(&[]), 2);
            f.set_line("port = 9090");
            std::fs::set_permissions(f.path("srv"), std::fs::Permissions::from_mode(0o777))
                .unwrap();
            std::fs::remove_file(f.path("etc/app.link")).unwrap();
            write(f.root(), "legacy.conf", "came back\n");
        }
        let root_before = support::tree(f.root());
        let state_before = support::tree(&f.state_dir());
        let run = f.run(&["--dry-run"]);
        assert_code(&run, 2);
        assert!(run.stdout.contains("would change"), "{}", run.stdout);
        assert!(run.stdout.contains(" to change, "), "{}", run.stdout);
        if converged {
            assert!(
                run.stdout.contains("-port = 8080\n    +port = 9090\n"),
                "{}",
                run.stdout
            );
            assert!(
                run.stdout.contains("4 to change, 3 in sync, 0 failed"),
                "{}",
                run.stdout
            );
        } else {
            assert!(
                !f.state_dir().exists(),
                "a dry run created the state directory"
            );
        }
        assert_eq!(support::tree(f.root()), root_before, "{}", run.stdout);
        assert_eq!(support::tree(&f.state_dir()), state_before);
    }
}

#[test]
fn json_output_has_the_run_schema() {
    let f = Fixture::new("port = 8080");
    let run = f.run(&["--dry-run", "--format", "json"]);
    assert_code(&run, 2);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("the output is JSON");
    assert_eq!(doc["schema"], "infra-agent/run/v1");
    assert_eq!(doc["host"], "h1");
    assert_eq!(doc["env"], "production");
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["exit_code"], 2);
    assert_eq!(doc["summary"]["changed"], STEPS);
    let steps = doc["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), STEPS);
    let app = steps
        .iter()
        .find(|s| s["id"] == "app-conf")
        .expect("the template step");
    assert_eq!(app["status"], "pending");
    assert_eq!(
        app["resource"],
        format!("template {}", f.path("etc/app.conf").display())
    );
    assert_eq!(app["changes"][0]["kind"], "create");
    assert_eq!(
        app["changes"][0]["path"],
        f.path("etc/app.conf").display().to_string()
    );

    let run = f.run(&["--format", "json"]);
    assert_code(&run, 2);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("the output is JSON");
    assert_eq!(doc["schema"], "infra-agent/run/v1");
    assert_eq!(doc["dry_run"], false);
    assert!(
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "changed"),
        "{}",
        run.stdout
    );

    let run = f.run(&["--format", "json"]);
    assert_code(&run, 0);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("the output is JSON");
    assert_eq!(doc["summary"]["in_sync"], STEPS);
    assert_eq!(doc["exit_code"], 0);
}

#[test]
fn a_stale_candidate_from_a_killed_run_is_removed_and_the_file_converges() {
    let f = Fixture::new("port = 8080");
    assert_code(&f.run(&[]), 2);
    // A new commit, and a run killed between writing the candidate and renaming it:
    // the live file is the old one and a half-written candidate sits beside it.
    f.set_line("port = 9090");
    let stale = f.path("etc/.app.conf.infra-tmp.123456");
    std::fs::write(&stale, "# managed by infra-agent\nport = 90").unwrap();
    let run = f.run(&[]);
    assert_code(&run, 2);
    assert!(!stale.exists(), "the stale candidate is still there");
    assert_eq!(
        f.etc_names(),
        ["app.conf", "app.link", "banner", "secret.conf"]
    );
    assert_eq!(
        f.read("etc/app.conf"),
        "# managed by infra-agent\nport = 9090\n"
    );
    assert_code(&f.run(&[]), 0);
}
