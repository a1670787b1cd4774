//! The converge engine as a library: a small state repository is compiled for host
//! `h1` and run against a `FakeHost`; tests assert on the fake's state, the report's
//! statuses and the exit code.

mod support;

use std::path::{Path, PathBuf};

use infra_agent::catalog::{self, Catalog};
use infra_agent::engine::{self, Options, RunReport, Status, StepReport, Summary};
use infra_agent::facts::Facts;
use infra_agent::host::fake::Node;
use infra_agent::host::{self, FakeHost, Host, Meta};
use infra_agent::originals::Originals;
use infra_agent::process::{Cmd, CmdOutput};
use infra_agent::report;
use infra_agent::resource::{self, ChangeKind};
use infra_agent::state_repo::infra_toml::Version;
use infra_agent::state_repo::{self, DirSource, RepoSource};
use infra_agent::step::StepKind;

/// Where the agent keeps its state (and `originals/`) on the fake machine.
const STATE_DIR: &str = "/var/lib/infra-agent";

/// A state repository for host `h1` (environment `production`) whose one role `r`
/// holds the given steps, compiled into a catalog.
struct Fixture {
    dir: tempfile::TempDir,
    catalog: Catalog,
}

impl Fixture {
    fn new(steps: &str) -> Self {
        Self::with_files(steps, &[])
    }

    /// `files` are added to the repository (templates, `files/`, group data).
    fn with_files(steps: &str, files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let base: &[(&str, &str)] = &[
            ("infra.toml", "format = 1\n"),
            (
                "inventory/production.toml",
                "[groups.all]\nroles = [\"r\"]\n\n[groups.g]\nhosts = [\"h1\"]\n",
            ),
            ("roles/r.toml", steps),
        ];
        for (path, text) in base.iter().chain(files) {
            support::write(dir.path(), path, text);
        }
        let source = DirSource::new(dir.path());
        let repo = state_repo::load(&source, Version::agent())
            .unwrap_or_else(|e| panic!("the fixture loads:\n{e}"));
        let sel = repo
            .select("h1")
            .unwrap_or_else(|e| panic!("h1 is selected:\n{e}"));
        let catalog = catalog::compile(&repo, &sel, &Facts::placeholder("h1"))
            .unwrap_or_else(|e| panic!("the fixture compiles:\n{e}"));
        Self { dir, catalog }
    }

    fn run(&self, host: &dyn Host, dry_run: bool) -> RunReport {
        self.run_with(
            host,
            &Options {
                dry_run,
                only: Vec::new(),
                ..Default::default()
            },
        )
        .expect("the run starts")
    }

    /// Runs the catalog. The record of originals is handed over even in a dry run, so
    /// that the engine (not the caller) is what keeps a dry run from writing one.
    fn run_with(&self, host: &dyn Host, options: &Options) -> Result<RunReport, String> {
        let source = DirSource::new(self.dir.path());
        let files = |p: &str| {
            source
                .read_bytes(&format!("files/{p}"))
                .map_err(|e| e.to_string())
        };
        let originals = Originals::new(Path::new(STATE_DIR));
        let ctx = resource::Ctx::new(host, options.dry_run, Some(&originals), &files);
        engine::run(&self.catalog, &ctx, options)
    }

    /// The desired state of the (only) catalog step named `id`, to edit it.
    fn desired_mut(&mut self, id: &str) -> &mut StepKind {
        self.catalog
            .steps
            .iter_mut()
            .find(|s| s.id == id)
            .and_then(|s| s.desired.as_mut())
            .unwrap_or_else(|| panic!("the catalog has a rendered step `{id}`"))
    }
}

/// The report of the step named `name` (`id` or `id[instance]`); it must appear once.
fn step<'a>(report: &'a RunReport, name: &str) -> &'a StepReport {
    let found: Vec<&StepReport> = report.steps.iter().filter(|s| s.name() == name).collect();
    assert_eq!(
        found.len(),
        1,
        "step {name} appears once in the report: {:#?}",
        report.steps
    );
    found[0]
}

/// `(name, status)` of every step reported, in order.
fn statuses(report: &RunReport) -> Vec<(String, Status)> {
    report.steps.iter().map(|s| (s.name(), s.status)).collect()
}

fn expect_statuses(report: &RunReport, expected: &[(&str, Status)]) {
    let expected: Vec<(String, Status)> = expected
        .iter()
        .map(|(n, s)| ((*n).to_owned(), *s))
        .collect();
    assert_eq!(statuses(report), expected, "{:#?}", report.steps);
}

fn text(report: &RunReport) -> String {
    let mut out = Vec::new();
    report::text(&mut out, "h1", "production", report).expect("writing to a Vec succeeds");
    String::from_utf8(out).expect("the text report is UTF-8")
}

fn json(report: &RunReport) -> String {
    let mut out = Vec::new();
    report::json(&mut out, "h1", "production", report).expect("writing to a Vec succeeds");
    String::from_utf8(out).expect("the JSON report is UTF-8")
}

/// Every path on the fake outside `/var` (where the record of originals lives).
fn managed_paths(host: &FakeHost) -> Vec<PathBuf> {
    host.paths()
        .into_iter()
        .filter(|p| !p.starts_with("/var"))
        .collect()
}

fn content(host: &FakeHost, path: &str) -> Option<String> {
    host.file(path)
        .map(|(bytes, ..)| String::from_utf8(bytes).expect("test files are UTF-8"))
}

fn output(code: i32, stderr: &str) -> CmdOutput {
    CmdOutput {
        code: Some(code),
        stderr: stderr.as_bytes().to_vec(),
        ..CmdOutput::default()
    }
}

// ---------------------------------------------------------------------------------
// Failures and requires

#[test]
fn a_stop_file_skips_the_steps_not_yet_run_and_says_why() {
    let fx = Fixture::new(
        "[[step]]\nid = \"A\"\ntype = \"file\"\npath = \"/etc/a\"\ncontent = \"a\\n\"\n\n[[step]]\nid = \"B\"\ntype = \"file\"\npath = \"/etc/b\"\ncontent = \"b\\n\"\n",
    );
    let host = FakeHost::new().with_dir("/etc", 0o755);
    let stop = fx.dir.path().join("stop");
    let options = Options {
        stop_file: Some(stop.clone()),
        ..Default::default()
    };
    // No stop file: everything runs.
    let report = fx.run_with(&host, &options).expect("the run starts");
    assert!(!report.stopped);
    expect_statuses(&report, &[("A", Status::Changed), ("B", Status::Changed)]);
    // The daemon asked to stop: nothing more is started, and the report says so.
    std::fs::write(&stop, "").unwrap();
    let host = FakeHost::new().with_dir("/etc", 0o755);
    let report = fx.run_with(&host, &options).expect("the run starts");
    assert!(report.stopped);
    expect_statuses(&report, &[("A", Status::Skipped), ("B", Status::Skipped)]);
    assert!(
        step(&report, "B")
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("stopping")),
        "{report:?}"
    );
    assert_eq!(content(&host, "/etc/a"), None);
}

#[test]
fn a_failed_step_skips_its_dependents_transitively_and_nothing_else() {
    let fx = Fixture::new(
        r#"
[[step]]
id = "A"
type = "file"
path = "/etc/a"
content = "a\n"

[[step]]
id = "B"
type = "file"
path = "/etc/b"
content = "b\n"

[[step]]
id = "C"
type = "file"
path = "/etc/c"
content = "c\n"
requires = ["A"]

[[step]]
id = "D"
type = "file"
path = "/etc/d"
content = "d\n"
requires = ["C"]
"#,
    );
    let host = FakeHost::new()
        .with_dir("/etc", 0o755)
        .fail_writes_to("/etc/a");
    let report = fx.run(&host, false);

    expect_statuses(
        &report,
        &[
            ("A", Status::Failed),
            ("B", Status::Changed),
            ("C", Status::Skipped),
            ("D", Status::Skipped),
        ],
    );
    assert!(
        step(&report, "A")
            .error
            .as_deref()
            .is_some_and(|e| e.contains("injected failure")),
        "{:?}",
        step(&report, "A")
    );
    assert_eq!(
        step(&report, "C").reason.as_deref(),
        Some("requires `A`, which failed")
    );
    assert_eq!(
        step(&report, "D").reason.as_deref(),
        Some("requires `C`, which was skipped")
    );
    assert_eq!(content(&host, "/etc/b").as_deref(), Some("b\n"));
    for absent in ["/etc/a", "/etc/c", "/etc/d"] {
        assert_eq!(host.node(absent), None, "{absent}");
    }
    assert_eq!(
        report.summary(),
        Summary {
            changed: 1,
            in_sync: 0,
            failed: 1,
            skipped: 2
        }
    );
    assert_eq!(report.exit_code(), 6);
}

#[test]
fn a_step_skipped_by_a_compile_time_when_skips_its_dependents_unrendered() {
    // `data.backup` exists only when the feature is on: rendering `extra` or `uses`
    // would fail, so compiling proves they were not rendered.
    let fx = Fixture::with_files(
        r#"
[[step]]
id = "extra"
type = "file"
path = "/etc/backup"
content = "{{data.backup.target}}\n"
when = "data.feature"

[[step]]
id = "uses"
type = "file"
path = "/etc/backup-{{data.backup.name}}"
content = "x\n"
requires = ["extra"]

[[step]]
id = "then"
type = "file"
path = "/etc/then"
content = "y\n"
requires = ["uses"]

[[step]]
id = "other"
type = "file"
path = "/etc/other"
content = "z\n"
"#,
        &[("group_data/all.toml", "feature = false\n")],
    );
    let rendered: Vec<(&str, bool)> = fx
        .catalog
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.desired.is_some()))
        .collect();
    assert_eq!(
        rendered,
        [
            ("extra", false),
            ("uses", false),
            ("then", false),
            ("other", true)
        ]
    );

    let host = FakeHost::new().with_dir("/etc", 0o755);
    let report = fx.run(&host, false);
    expect_statuses(
        &report,
        &[
            ("extra", Status::Skipped),
            ("uses", Status::Skipped),
            ("then", Status::Skipped),
            ("other", Status::Changed),
        ],
    );
    assert_eq!(
        step(&report, "extra").reason.as_deref(),
        Some("when `data.feature` is false")
    );
    assert_eq!(
        step(&report, "uses").reason.as_deref(),
        Some("requires `extra`, which is skipped")
    );
    assert_eq!(
        step(&report, "then").reason.as_deref(),
        Some("requires `uses`, which is skipped")
    );
    for s in ["extra", "uses", "then"] {
        assert_eq!(step(&report, s).resource, "", "{s} was never rendered");
    }
    assert_eq!(
        managed_paths(&host),
        [PathBuf::from("/"), "/etc".into(), "/etc/other".into()]
    );
    assert_eq!(report.exit_code(), 2);
}

// ---------------------------------------------------------------------------------
// notify and changed()

const NOTIFY_STEPS: &str = r#"
[[step]]
id = "a"
type = "file"
path = "/etc/a-{{item}}"
content = "a\n"
for_each = "data.names"
notify = ["t"]

[[step]]
id = "b"
type = "file"
path = "/etc/b"
content = "b\n"
notify = ["t"]

[[step]]
id = "quiet"
type = "file"
path = "/etc/quiet"
content = "q\n"
notify = ["t"]

[[step]]
id = "t"
type = "file"
path = "/etc/t"
content = "t\n"
"#;

#[test]
fn a_notified_step_is_reached_once_and_names_each_notifier_that_changed_once() {
    let fx = Fixture::with_files(
        NOTIFY_STEPS,
        &[("group_data/all.toml", "names = [\"one\", \"two\"]\n")],
    );
    // `quiet` is in sync already: it notifies `t` but did not change.
    let host = FakeHost::new().with_file("/etc/quiet", "q\n", 0o644);
    let first = fx.run(&host, false);
    expect_statuses(
        &first,
        &[
            ("a[0]", Status::Changed),
            ("a[1]", Status::Changed),
            ("b", Status::Changed),
            ("quiet", Status::InSync),
            ("t", Status::Changed),
        ],
    );
    assert_eq!(step(&first, "t").notified_by, ["a", "b"]);

    // Everything in sync: nobody changed, so nobody notified.
    let second = fx.run(&host, false);
    assert!(
        second.steps.iter().all(|s| s.status == Status::InSync),
        "{:#?}",
        second.steps
    );
    assert!(step(&second, "t").notified_by.is_empty());
    assert_eq!(second.exit_code(), 0);

    // In a dry run, "would change" notifies.
    let fresh = FakeHost::new().with_file("/etc/quiet", "q\n", 0o644);
    let dry = fx.run(&fresh, true);
    assert_eq!(step(&dry, "t").notified_by, ["a", "b"]);
}

#[test]
fn text_names_a_notified_step_that_is_in_sync() {
    // `t` is in sync and notified. Its "notified by" line must follow a line naming
    // `t`, not hang under the previous step's diff, where it reads as that step's.
    let fx = Fixture::new(
        r#"
[[step]]
id = "a"
type = "file"
path = "/etc/a"
content = "a\n"
notify = ["t"]

[[step]]
id = "t"
type = "file"
path = "/etc/t"
content = "t\n"
"#,
    );
    let host = FakeHost::new().with_file("/etc/t", "t\n", 0o644);
    let report = fx.run(&host, false);
    expect_statuses(&report, &[("a", Status::Changed), ("t", Status::InSync)]);
    assert_eq!(step(&report, "t").notified_by, ["a"]);
    let out = text(&report);
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start() == "notified by a")
        .unwrap_or_else(|| panic!("the notification is shown:\n{out}"));
    let owner = lines[..at]
        .iter()
        .rev()
        .find(|l| !l.starts_with(' '))
        .expect("a step line comes before it");
    assert!(
        owner.starts_with("t ") || owner.starts_with("t:"),
        "`notified by a` belongs to `t` but is printed under {owner:?}:\n{out}"
    );
}

const CHANGED_STEPS: &str = r#"
[[step]]
id = "a"
type = "file"
path = "/etc/a"
content = "a\n"

[[step]]
id = "n"
type = "file"
path = "/etc/n"
content = "n\n"
when = "changed('a')"
"#;

#[test]
fn when_changed_runs_only_after_the_step_changed() {
    let fx = Fixture::new(CHANGED_STEPS);
    let host = FakeHost::new().with_dir("/etc", 0o755);

    let first = fx.run(&host, false);
    expect_statuses(&first, &[("a", Status::Changed), ("n", Status::Changed)]);
    assert_eq!(content(&host, "/etc/n").as_deref(), Some("n\n"));

    // `a` is in sync now; `n` is skipped even though its file is gone.
    host.set_node("/etc/n", None);
    let second = fx.run(&host, false);
    expect_statuses(&second, &[("a", Status::InSync), ("n", Status::Skipped)]);
    assert_eq!(
        step(&second, "n").reason.as_deref(),
        Some("when `changed('a')` is false")
    );
    assert_eq!(host.node("/etc/n"), None);
    assert_eq!(second.exit_code(), 0);
}

#[test]
fn in_a_dry_run_changed_means_would_change() {
    let fx = Fixture::new(CHANGED_STEPS);
    let host = FakeHost::new().with_dir("/etc", 0o755);
    let dry = fx.run(&host, true);
    expect_statuses(&dry, &[("a", Status::Pending), ("n", Status::Pending)]);
    assert!(host.mutations().is_empty(), "{:?}", host.mutations());

    let in_sync = FakeHost::new().with_file("/etc/a", "a\n", 0o644);
    let dry = fx.run(&in_sync, true);
    expect_statuses(&dry, &[("a", Status::InSync), ("n", Status::Skipped)]);
}

#[test]
fn a_step_that_failed_without_changing_anything_has_not_changed() {
    // docs/state-repo.md: changed('id') is "False if the step was in sync, skipped, or
    // failed without changing anything"; notify fires only when a notifier changed.
    // Writing /etc/a fails before anything of it is touched.
    let fx = Fixture::new(
        r#"
[[step]]
id = "a"
type = "file"
path = "/etc/a"
content = "a\n"
notify = ["t"]

[[step]]
id = "n"
type = "file"
path = "/etc/n"
content = "n\n"
when = "changed('a')"

[[step]]
id = "t"
type = "file"
path = "/etc/t"
content = "t\n"
"#,
    );
    let host = FakeHost::new()
        .with_dir("/etc", 0o755)
        .fail_writes_to("/etc/a");
    let report = fx.run(&host, false);
    assert_eq!(step(&report, "a").status, Status::Failed);
    assert_eq!(host.node("/etc/a"), None, "nothing of /etc/a was written");
    assert_eq!(
        step(&report, "n").status,
        Status::Skipped,
        "changed('a') is true although `a` changed nothing: {:#?}",
        report.steps
    );
    assert!(
        step(&report, "t").notified_by.is_empty(),
        "`t` is notified by a step that changed nothing: {:?}",
        step(&report, "t").notified_by
    );
}

// ---------------------------------------------------------------------------------
// Confirmation after apply

/// A host whose `set_mode` reports success and changes nothing.
#[derive(Debug)]
struct IgnoresChmod(FakeHost);

impl Host for IgnoresChmod {
    fn facts(&self) -> Result<Facts, host::Error> {
        self.0.facts()
    }
    fn lstat(&self, path: &Path) -> Result<Option<Meta>, host::Error> {
        self.0.lstat(path)
    }
    fn read_file(&self, path: &Path) -> Result<Vec<u8>, host::Error> {
        self.0.read_file(path)
    }
    fn read_link(&self, path: &Path) -> Result<PathBuf, host::Error> {
        self.0.read_link(path)
    }
    fn read_dir(&self, path: &Path) -> Result<Vec<String>, host::Error> {
        self.0.read_dir(path)
    }
    fn uid_of(&self, user: &str) -> Result<Option<u32>, host::Error> {
        self.0.uid_of(user)
    }
    fn gid_of(&self, group: &str) -> Result<Option<u32>, host::Error> {
        self.0.gid_of(group)
    }
    fn user_name(&self, uid: u32) -> Result<Option<String>, host::Error> {
        self.0.user_name(uid)
    }
    fn group_name(&self, gid: u32) -> Result<Option<String>, host::Error> {
        self.0.group_name(gid)
    }
    fn stage_file(
        &self,
        path: &Path,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<PathBuf, host::Error> {
        self.0.stage_file(path, content, mode, uid, gid)
    }
    fn commit_file(&self, staged: &Path, path: &Path) -> Result<(), host::Error> {
        self.0.commit_file(staged, path)
    }
    fn discard_staged(&self, staged: &Path) -> Result<(), host::Error> {
        self.0.discard_staged(staged)
    }
    fn set_mode(&self, _path: &Path, _mode: u32) -> Result<(), host::Error> {
        Ok(())
    }
    fn set_owner(
        &self,
        path: &Path,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), host::Error> {
        self.0.set_owner(path, uid, gid)
    }
    fn create_dir(&self, path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), host::Error> {
        self.0.create_dir(path, mode, uid, gid)
    }
    fn remove_file(&self, path: &Path) -> Result<(), host::Error> {
        self.0.remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> Result<(), host::Error> {
        self.0.remove_dir(path)
    }
    fn symlink(&self, target: &Path, path: &Path) -> Result<(), host::Error> {
        self.0.symlink(target, path)
    }
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, host::Error> {
        self.0.run(cmd)
    }
}

#[test]
fn a_change_that_did_not_take_fails_the_step() {
    let fx = Fixture::new(
        r#"
[[step]]
id = "conf"
type = "file"
path = "/etc/conf"
content = "same\n"
mode = "0640"

[[step]]
id = "next"
type = "file"
path = "/etc/next"
content = "n\n"
requires = ["conf"]
"#,
    );
    let host = IgnoresChmod(FakeHost::new().with_file("/etc/conf", "same\n", 0o644));
    let report = fx.run(&host, false);
    expect_statuses(
        &report,
        &[("conf", Status::Failed), ("next", Status::Skipped)],
    );
    let conf = step(&report, "conf");
    assert_eq!(
        conf.error.as_deref(),
        Some("still differs after it was applied: mode /etc/conf: 0644 -> 0640")
    );
    assert_eq!(
        conf.changes.iter().map(|c| c.kind).collect::<Vec<_>>(),
        [ChangeKind::Mode]
    );
    assert_eq!(report.exit_code(), 4);
}

// ---------------------------------------------------------------------------------
// --only

#[test]
fn only_runs_the_named_steps_and_what_they_require() {
    let fx = Fixture::new(
        r#"
[[step]]
id = "A"
type = "directory"
path = "/srv/a"

[[step]]
id = "unrelated"
type = "file"
path = "/etc/unrelated"
content = "u\n"

[[step]]
id = "B"
type = "file"
path = "/srv/a/b"
content = "b\n"
requires = ["A"]

[[step]]
id = "C"
type = "symlink"
path = "/srv/c"
target = "/srv/a/b"
requires = ["B"]

[[step]]
id = "after"
type = "file"
path = "/srv/after"
content = "x\n"
requires = ["C"]
"#,
    );
    let host = FakeHost::new()
        .with_dir("/etc", 0o755)
        .with_dir("/srv", 0o755);
    let report = fx
        .run_with(
            &host,
            &Options {
                dry_run: false,
                only: vec!["C".to_owned()],
                ..Default::default()
            },
        )
        .expect("C is a step of h1");
    expect_statuses(
        &report,
        &[
            ("A", Status::Changed),
            ("B", Status::Changed),
            ("C", Status::Changed),
        ],
    );
    assert_eq!(
        managed_paths(&host),
        [
            PathBuf::from("/"),
            "/etc".into(),
            "/srv".into(),
            "/srv/a".into(),
            "/srv/a/b".into(),
            "/srv/c".into()
        ]
    );

    let err = fx
        .run_with(
            &host,
            &Options {
                dry_run: false,
                only: vec!["C".to_owned(), "nope".to_owned()],
                ..Default::default()
            },
        )
        .expect_err("an unknown id stops the run before it starts");
    assert!(err.contains("nope"), "{err}");
}

// ---------------------------------------------------------------------------------
// Dry run and originals

#[test]
fn a_dry_run_changes_nothing_and_records_nothing() {
    let fx = Fixture::new(
        r#"
[[step]]
id = "dir"
type = "directory"
path = "/srv/app"
mode = "0750"

[[step]]
id = "conf"
type = "file"
path = "/srv/app/app.conf"
content = "port = 1\n"
requires = ["dir"]

[[step]]
id = "motd"
type = "file"
path = "/etc/motd"
content = "new\n"
mode = "0600"

[[step]]
id = "link"
type = "symlink"
path = "/etc/link"
target = "/etc/motd"

[[step]]
id = "gone"
type = "file"
path = "/etc/gone"
state = "absent"
"#,
    );
    let host = FakeHost::new()
        .with_file("/etc/motd", "old\n", 0o644)
        .with_file("/etc/gone", "bye\n", 0o644)
        .with_dir("/srv", 0o755);
    let before = host.paths();
    let report = fx.run(&host, true);
    expect_statuses(
        &report,
        &[
            ("dir", Status::Pending),
            ("conf", Status::Pending),
            ("motd", Status::Pending),
            ("link", Status::Pending),
            ("gone", Status::Pending),
        ],
    );
    assert!(report.dry_run);
    assert_eq!(report.exit_code(), 2);
    assert!(host.mutations().is_empty(), "{:?}", host.mutations());
    assert_eq!(host.paths(), before);
    assert_eq!(content(&host, "/etc/motd").as_deref(), Some("old\n"));
    assert_eq!(host.node(STATE_DIR), None);
    assert_eq!(host.node("/var"), None);
    assert!(text(&report).contains("motd (file /etc/motd): would change\n"));
}

#[test]
fn the_first_change_of_a_file_records_its_original_and_later_changes_keep_it() {
    let steps = |text: &str| {
        format!(
            "[[step]]\nid = \"motd\"\ntype = \"file\"\npath = \"/etc/motd\"\ncontent = \"{text}\\n\"\nmode = \"0640\"\n\n[[step]]\nid = \"new\"\ntype = \"file\"\npath = \"/etc/new\"\ncontent = \"{text}\\n\"\n"
        )
    };
    let host = FakeHost::new()
        .with_file("/etc/motd", "original\n", 0o644)
        .with_owner("/etc/motd", 7, 8);
    let originals = Originals::new(Path::new(STATE_DIR));
    let motd = Path::new("/etc/motd");
    assert_eq!(originals.get(&host, motd).unwrap(), None);

    let first = Fixture::new(&steps("one")).run(&host, false);
    expect_statuses(
        &first,
        &[("motd", Status::Changed), ("new", Status::Changed)],
    );
    assert_eq!(content(&host, "/etc/motd").as_deref(), Some("one\n"));

    let check = |host: &FakeHost| {
        let record = originals
            .get(host, motd)
            .unwrap()
            .expect("the original of /etc/motd is recorded");
        assert!(record.existed);
        assert_eq!(record.kind.as_deref(), Some("file"));
        assert_eq!(
            (record.mode, record.uid, record.gid),
            (Some(0o644), Some(7), Some(8))
        );
        let saved = originals
            .dir()
            .join(record.content.expect("a file's content is kept"));
        assert_eq!(host.read_file(&saved).unwrap(), b"original\n");
    };
    check(&host);
    let created = originals
        .get(&host, Path::new("/etc/new"))
        .unwrap()
        .expect("a created file is recorded as absent");
    assert!(!created.existed);

    let second = Fixture::new(&steps("two")).run(&host, false);
    expect_statuses(
        &second,
        &[("motd", Status::Changed), ("new", Status::Changed)],
    );
    assert_eq!(content(&host, "/etc/motd").as_deref(), Some("two\n"));
    check(&host);
    assert!(
        !originals
            .get(&host, Path::new("/etc/new"))
            .unwrap()
            .unwrap()
            .existed
    );
}

// ---------------------------------------------------------------------------------
// Owners that do not exist

#[test]
fn a_missing_owner_is_pending_in_a_dry_run_and_fails_a_real_run() {
    let fx = Fixture::new(
        r#"
[[step]]
id = "home"
type = "file"
path = "/etc/bob.conf"
content = "hi\n"
owner = "bob"
"#,
    );
    let host = FakeHost::new().with_dir("/etc", 0o755);
    let dry = fx.run(&host, true);
    expect_statuses(&dry, &[("home", Status::Pending)]);
    let change = &step(&dry, "home").changes[0];
    assert_eq!(change.kind, ChangeKind::Create);
    assert_eq!(
        change.note.as_deref(),
        Some("user bob does not exist on this machine yet")
    );
    assert_eq!(dry.exit_code(), 2);

    let real = fx.run(&host, false);
    expect_statuses(&real, &[("home", Status::Failed)]);
    assert_eq!(
        step(&real, "home").error.as_deref(),
        Some("user bob does not exist on this machine; create it in an earlier step")
    );
    assert_eq!(host.node("/etc/bob.conf"), None);
    assert_eq!(real.exit_code(), 4);
}

// ---------------------------------------------------------------------------------
// validate

const SUDOERS_STEPS: &str = r#"
[[step]]
id = "sudoers"
type = "template"
path = "/etc/sudoers.d/admin"
source = "sudoers.hbs"
mode = "0440"
validate = ["visudo", "-cf", "{path}"]
"#;

fn sudoers() -> Fixture {
    Fixture::with_files(
        SUDOERS_STEPS,
        &[("templates/sudoers.hbs", "admin ALL=(ALL) ALL\n")],
    )
}

fn sudoers_host() -> FakeHost {
    FakeHost::new().with_file("/etc/sudoers.d/admin", "old\n", 0o440)
}

#[test]
fn a_rejected_candidate_fails_the_step_and_leaves_the_live_file() {
    let host = sudoers_host().with_command("visudo", output(1, ">>> line 1: syntax error"));
    let report = sudoers().run(&host, false);
    expect_statuses(&report, &[("sudoers", Status::Failed)]);
    let error = step(&report, "sudoers").error.clone().unwrap_or_default();
    assert!(error.contains(">>> line 1: syntax error"), "{error}");
    assert!(error.contains("visudo -cf {path}"), "{error}");
    assert_eq!(
        host.file("/etc/sudoers.d/admin"),
        Some((b"old\n".to_vec(), 0o440, 0, 0))
    );
    assert_eq!(
        host.read_dir(Path::new("/etc/sudoers.d")).unwrap(),
        ["admin"]
    );
    assert_eq!(host.commands().len(), 1);
    assert_eq!(report.exit_code(), 4);
}

#[test]
fn an_accepted_candidate_is_checked_at_its_own_path_then_installed() {
    let host = sudoers_host().with_command("visudo", output(0, ""));
    let report = sudoers().run(&host, false);
    expect_statuses(&report, &[("sudoers", Status::Changed)]);
    assert_eq!(
        host.file("/etc/sudoers.d/admin"),
        Some((b"admin ALL=(ALL) ALL\n".to_vec(), 0o440, 0, 0))
    );
    let commands = host.commands();
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert_eq!(commands[0].program, "visudo");
    assert_eq!(commands[0].args.len(), 2);
    assert_eq!(commands[0].args[0], "-cf");
    let checked = &commands[0].args[1];
    assert!(
        checked.starts_with("/etc/sudoers.d/.admin.infra-tmp."),
        "the candidate is checked, not the live file: {checked}"
    );
    // The live file was replaced only after the check ran.
    let log = host.mutations();
    let ran = log
        .iter()
        .position(|m| m.starts_with("run visudo"))
        .unwrap();
    let wrote = log
        .iter()
        .position(|m| m == "write /etc/sudoers.d/admin")
        .unwrap();
    assert!(ran < wrote, "{log:?}");
    assert_eq!(
        host.read_dir(Path::new("/etc/sudoers.d")).unwrap(),
        ["admin"]
    );
}

#[test]
fn a_dry_run_does_not_run_the_validator_and_says_so() {
    let host = sudoers_host().with_command("visudo", output(1, "would fail"));
    let report = sudoers().run(&host, true);
    expect_statuses(&report, &[("sudoers", Status::Pending)]);
    assert!(host.commands().is_empty(), "{:?}", host.commands());
    assert!(host.mutations().is_empty(), "{:?}", host.mutations());
    let change = &step(&report, "sudoers").changes[0];
    assert_eq!(change.kind, ChangeKind::Content);
    assert_eq!(
        change.note.as_deref(),
        Some("checked with `visudo -cf {path}` before it is installed")
    );
}

// ---------------------------------------------------------------------------------
// Sensitive content

#[test]
fn sensitive_content_is_never_shown() {
    let mut fx = Fixture::with_files(
        r#"
[[step]]
id = "created"
type = "template"
path = "/etc/created.env"
source = "secret.hbs"

[[step]]
id = "edited"
type = "template"
path = "/etc/edited.env"
source = "secret.hbs"
"#,
        &[
            ("templates/secret.hbs", "PASSWORD={{data.password}}\n"),
            ("group_data/all.toml", "password = \"hunter2-new\"\n"),
        ],
    );
    for id in ["created", "edited"] {
        match fx.desired_mut(id) {
            StepKind::Template(t) => t.sensitive = true,
            other => panic!("{id} is a template: {other:?}"),
        }
    }
    for dry_run in [true, false] {
        let host = FakeHost::new().with_file("/etc/edited.env", "PASSWORD=hunter2-old\n", 0o600);
        let report = fx.run(&host, dry_run);
        let changed = if dry_run {
            Status::Pending
        } else {
            Status::Changed
        };
        expect_statuses(&report, &[("created", changed), ("edited", changed)]);
        for out in [text(&report), json(&report)] {
            for secret in ["hunter2", "PASSWORD"] {
                assert!(!out.contains(secret), "{secret} is shown:\n{out}");
            }
            for path in ["/etc/created.env", "/etc/edited.env"] {
                assert!(
                    out.contains(&format!("content of {path} changed (secret, not shown)")),
                    "no redaction line for {path}:\n{out}"
                );
            }
        }
        if !dry_run {
            assert_eq!(
                content(&host, "/etc/edited.env").as_deref(),
                Some("PASSWORD=hunter2-new\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Output

const SNAPSHOT_STEPS: &str = r#"
[[step]]
id = "created"
type = "file"
path = "/etc/created"
content = "new file\n"

[[step]]
id = "edited"
type = "template"
path = "/etc/edited.conf"
source = "edited.conf.hbs"

[[step]]
id = "perms"
type = "file"
path = "/etc/perms"
content = "same\n"
mode = "0600"

[[step]]
id = "steady"
type = "directory"
path = "/etc/steady"
mode = "0755"

[[step]]
id = "broken"
type = "file"
path = "/etc/broken"
content = "x\n"

[[step]]
id = "after-broken"
type = "symlink"
path = "/etc/after-broken"
target = "/etc/broken"
requires = ["broken"]
"#;

fn snapshot() -> (Fixture, FakeHost) {
    let fx = Fixture::with_files(
        SNAPSHOT_STEPS,
        &[
            (
                "templates/edited.conf.hbs",
                "port = {{data.port}}\nuser = admin\nlog = info\n",
            ),
            ("group_data/all.toml", "port = 8080\n"),
        ],
    );
    let host = FakeHost::new()
        .with_file(
            "/etc/edited.conf",
            "port = 80\nuser = admin\nlog = info\n",
            0o644,
        )
        .with_file("/etc/perms", "same\n", 0o644)
        .with_dir("/etc/steady", 0o755)
        .fail_writes_to("/etc/broken");
    (fx, host)
}

#[test]
fn text_output_of_a_run() {
    let (fx, host) = snapshot();
    let report = fx.run(&host, false);
    assert_eq!(text(&report), TEXT_SNAPSHOT, "actual:\n{}", text(&report));
}

const TEXT_SNAPSHOT: &str = r"converging h1 (production)
created (file /etc/created): changed
  ~ create /etc/created: 9 bytes, mode 0644, owner root:root
    --- /dev/null
    +++ /etc/created
    @@ -0,0 +1 @@
    +new file
edited (template /etc/edited.conf): changed
  ~ content /etc/edited.conf
    --- /etc/edited.conf
    +++ /etc/edited.conf
    @@ -1,3 +1,3 @@
    -port = 80
    +port = 8080
     user = admin
     log = info
perms (file /etc/perms): changed
  ~ mode /etc/perms: 0644 -> 0600
broken (file /etc/broken): FAILED: injected failure
  ~ create /etc/broken: 2 bytes, mode 0644, owner root:root (attempted)
after-broken: skipped: requires `broken`, which failed
3 changed, 1 in sync, 1 failed, 1 skipped
";

#[test]
fn text_output_of_a_dry_run() {
    let (fx, host) = snapshot();
    let report = fx.run(&host, true);
    assert_eq!(
        text(&report),
        DRY_TEXT_SNAPSHOT,
        "actual:\n{}",
        text(&report)
    );
}

const DRY_TEXT_SNAPSHOT: &str = r"dry run on h1 (production): nothing is changed; later steps are planned against the host as it is now, so they may differ once earlier steps apply
created (file /etc/created): would change
  ~ create /etc/created: 9 bytes, mode 0644, owner root:root
    --- /dev/null
    +++ /etc/created
    @@ -0,0 +1 @@
    +new file
edited (template /etc/edited.conf): would change
  ~ content /etc/edited.conf
    --- /etc/edited.conf
    +++ /etc/edited.conf
    @@ -1,3 +1,3 @@
    -port = 80
    +port = 8080
     user = admin
     log = info
perms (file /etc/perms): would change
  ~ mode /etc/perms: 0644 -> 0600
broken (file /etc/broken): would change
  ~ create /etc/broken: 2 bytes, mode 0644, owner root:root
    --- /dev/null
    +++ /etc/broken
    @@ -0,0 +1 @@
    +x
after-broken (symlink /etc/after-broken): would change
  ~ create /etc/after-broken: -> /etc/broken
5 to change, 1 in sync, 0 failed, 0 skipped
";

#[test]
fn json_output_of_a_run() {
    let (fx, host) = snapshot();
    let report = fx.run(&host, false);
    let out = json(&report);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("the output is JSON");
    assert_eq!(doc["schema"], "infra-agent/run/v1");
    assert_eq!(doc["host"], "h1");
    assert_eq!(doc["env"], "production");
    assert_eq!(doc["dry_run"], false);
    assert_eq!(
        doc["summary"],
        serde_json::json!({"changed": 3, "in_sync": 1, "failed": 1, "skipped": 1})
    );
    assert_eq!(doc["exit_code"], 6);
    assert_eq!(out, JSON_SNAPSHOT, "actual:\n{out}");
}

const JSON_SNAPSHOT: &str = r#"{
  "schema": "infra-agent/run/v1",
  "host": "h1",
  "env": "production",
  "dry_run": false,
  "summary": {
    "changed": 3,
    "in_sync": 1,
    "failed": 1,
    "skipped": 1
  },
  "exit_code": 6,
  "steps": [
    {
      "id": "created",
      "role": "r",
      "source": "roles/r.toml:2",
      "resource": "file /etc/created",
      "status": "changed",
      "changes": [
        {
          "kind": "create",
          "path": "/etc/created",
          "after": "9 bytes, mode 0644, owner root:root",
          "diff": "--- /dev/null\n+++ /etc/created\n@@ -0,0 +1 @@\n+new file\n"
        }
      ],
      "modified": true
    },
    {
      "id": "edited",
      "role": "r",
      "source": "roles/r.toml:8",
      "resource": "template /etc/edited.conf",
      "status": "changed",
      "changes": [
        {
          "kind": "content",
          "path": "/etc/edited.conf",
          "diff": "--- /etc/edited.conf\n+++ /etc/edited.conf\n@@ -1,3 +1,3 @@\n-port = 80\n+port = 8080\n user = admin\n log = info\n"
        }
      ],
      "modified": true
    },
    {
      "id": "perms",
      "role": "r",
      "source": "roles/r.toml:14",
      "resource": "file /etc/perms",
      "status": "changed",
      "changes": [
        {
          "kind": "mode",
          "path": "/etc/perms",
          "before": "0644",
          "after": "0600"
        }
      ],
      "modified": true
    },
    {
      "id": "steady",
      "role": "r",
      "source": "roles/r.toml:21",
      "resource": "directory /etc/steady",
      "status": "in_sync",
      "reason": "/etc/steady is a directory with mode 0755 and owner root:root",
      "changes": [],
      "modified": false
    },
    {
      "id": "broken",
      "role": "r",
      "source": "roles/r.toml:27",
      "resource": "file /etc/broken",
      "status": "failed",
      "changes": [
        {
          "kind": "create",
          "path": "/etc/broken",
          "after": "2 bytes, mode 0644, owner root:root",
          "diff": "--- /dev/null\n+++ /etc/broken\n@@ -0,0 +1 @@\n+x\n"
        }
      ],
      "error": "injected failure",
      "modified": false
    },
    {
      "id": "after-broken",
      "role": "r",
      "source": "roles/r.toml:33",
      "resource": "symlink /etc/after-broken",
      "status": "skipped",
      "reason": "requires `broken`, which failed",
      "changes": [],
      "modified": false
    }
  ]
}
"#;

// ---------------------------------------------------------------------------------
// Drift

#[test]
fn drift_between_runs_is_repaired_and_counts_as_a_change() {
    let fx = Fixture::new(CHANGED_STEPS);
    let host = FakeHost::new().with_dir("/etc", 0o755);
    fx.run(&host, false);
    host.set_node(
        "/etc/a",
        Some(Node::File {
            content: b"edited by hand\n".to_vec(),
            mode: 0o600,
            uid: 0,
            gid: 0,
        }),
    );
    let report = fx.run(&host, false);
    // `n` runs because `a` changed, and is in sync since the first run created it.
    expect_statuses(&report, &[("a", Status::Changed), ("n", Status::InSync)]);
    assert_eq!(
        host.file("/etc/a"),
        Some((b"a\n".to_vec(), 0o600, 0, 0)),
        "content is repaired; mode is not managed, so it stays"
    );
}
