//! Resources against `FakeHost`, case by case: what `plan` says for each starting state
//! of the machine (changes with their before/after and diff or note, the in-sync
//! reason, or the refusal), then plan → apply → plan for a few of them, checking that
//! the fake ends in the desired state and that the second plan is in sync.

use std::path::Path;

use infra_agent::host::{FakeHost, Host as _};
use infra_agent::originals::Originals;
use infra_agent::process::CmdOutput;
use infra_agent::resource::{self, ChangeKind, Ctx, Plan};
use infra_agent::step::directory::DirectoryStep;
use infra_agent::step::file::{FileContent, FileStep};
use infra_agent::step::symlink::SymlinkStep;
use infra_agent::step::template::TemplateStep;
use infra_agent::step::{Attrs, Mode, Presence, StepKind};

/// Where the originals record lives on the fake.
const STATE_DIR: &str = "/var/lib/infra-agent";

/// Files of the repository's `files/` that the reader closure knows.
const FILES: &[(&str, &[u8])] = &[
    ("motd", b"welcome to the lab\n"),
    ("bin/blob", b"\x00\x01binary"),
];

fn files(path: &str) -> Result<Vec<u8>, String> {
    FILES
        .iter()
        .find(|(name, _)| *name == path)
        .map(|(_, bytes)| bytes.to_vec())
        .ok_or_else(|| format!("{path}: no such file"))
}

/// One expected change: kind, exact `before`, exact `after`, and a substring of the
/// diff or the note (`""`: the change has neither a diff nor a note).
type Want = (
    ChangeKind,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
);

#[derive(Debug)]
enum Expect {
    /// In sync, and the reason contains this.
    InSync(&'static str),
    /// Exactly these changes, in this order.
    Changes(Vec<Want>),
    /// `plan` refuses, with a message containing this.
    Error(&'static str),
}

fn path_of(step: &StepKind) -> &str {
    match step {
        StepKind::File(s) => &s.path,
        StepKind::Template(s) => &s.path,
        StepKind::Directory(s) => &s.path,
        StepKind::Symlink(s) => &s.path,
        other => panic!("not a path resource: {other:?}"),
    }
}

/// Plans `step` on `host` and compares with `expect`. Planning must never mutate.
/// Returns the host for further use.
#[track_caller]
fn check(step: &StepKind, host: FakeHost, dry_run: bool, expect: &Expect) -> FakeHost {
    let reader = files;
    let originals = Originals::new(Path::new(STATE_DIR));
    let ctx = Ctx::new(&host, dry_run, (!dry_run).then_some(&originals), &reader);
    let what = resource::describe(step);
    let result = resource::plan(step, &ctx);
    assert_eq!(
        host.mutations(),
        Vec::<String>::new(),
        "{what}: plan mutated the host"
    );
    match (expect, result) {
        (Expect::Error(wanted), Err(e)) => {
            let message = e.to_string();
            assert!(
                message.contains(wanted),
                "{what}: error {message:?} lacks {wanted:?}"
            );
        }
        (Expect::Error(wanted), Ok(plan)) => {
            panic!("{what}: expected an error containing {wanted:?}, got {plan:#?}")
        }
        (_, Err(e)) => panic!("{what}: expected {expect:?}, got the error {e}"),
        (Expect::InSync(wanted), Ok(plan)) => {
            assert!(
                plan.is_in_sync(),
                "{what}: expected in sync, got {:#?}",
                plan.changes
            );
            assert!(
                plan.in_sync.contains(wanted),
                "{what}: in-sync reason {:?} lacks {wanted:?}",
                plan.in_sync
            );
        }
        (Expect::Changes(wanted), Ok(plan)) => {
            let path = path_of(step);
            assert_eq!(
                plan.changes.len(),
                wanted.len(),
                "{what}: {:#?}",
                plan.changes
            );
            for (change, (kind, before, after, text)) in plan.changes.iter().zip(wanted) {
                assert_eq!(change.kind, *kind, "{what}: {change:#?}");
                assert_eq!(change.path, path, "{what}: {change:#?}");
                assert_eq!(change.before.as_deref(), *before, "{what}: {change:#?}");
                assert_eq!(change.after.as_deref(), *after, "{what}: {change:#?}");
                if text.is_empty() {
                    assert_eq!(
                        (&change.diff, &change.note),
                        (&None, &None),
                        "{what}: unexpected diff or note"
                    );
                } else {
                    let shown = format!(
                        "{}{}",
                        change.diff.as_deref().unwrap_or_default(),
                        change.note.as_deref().unwrap_or_default()
                    );
                    assert!(
                        shown.contains(text),
                        "{what}: diff and note {shown:?} lack {text:?}"
                    );
                }
            }
            assert!(plan.in_sync.is_empty(), "{what}: {:?}", plan.in_sync);
        }
    }
    host
}

/// Plans, applies and plans again (a real run, recording originals): the second plan
/// must be in sync. Returns the host and the first plan.
#[track_caller]
fn converge(step: &StepKind, host: FakeHost) -> (FakeHost, Plan) {
    let reader = files;
    let originals = Originals::new(Path::new(STATE_DIR));
    let first = {
        let ctx = Ctx::new(&host, false, Some(&originals), &reader);
        let first = resource::plan(step, &ctx).expect("the first plan");
        assert!(!first.is_in_sync(), "nothing to converge: {first:#?}");
        resource::apply(step, &first, &ctx).expect("apply");
        ctx.forget_ids();
        let again = resource::plan(step, &ctx).expect("the second plan");
        assert!(
            again.is_in_sync(),
            "{}: still pending after apply: {:#?}\nmutations: {:#?}",
            resource::describe(step),
            again.changes,
            host.mutations()
        );
        // Applying an in-sync plan changes nothing.
        let done = host.mutations().len();
        resource::apply(step, &again, &ctx).expect("apply in sync");
        assert_eq!(host.mutations().len(), done, "{:#?}", host.mutations());
        // The original state of the path was recorded before the change.
        let record = originals
            .get(&host, Path::new(path_of(step)))
            .expect("the record reads")
            .expect("the original was recorded");
        assert_eq!(record.path, path_of(step));
        first
    };
    (host, first)
}

// ---- step builders ----

fn attrs(mode: Option<u32>, owner: Option<&str>, group: Option<&str>) -> Attrs {
    Attrs {
        owner: owner.map(str::to_owned),
        group: group.map(str::to_owned),
        mode: mode.map(Mode),
    }
}

fn file_step(path: &str, content: &str, attrs: Attrs) -> FileStep {
    FileStep {
        path: path.to_owned(),
        state: Presence::Present,
        content: Some(FileContent::Inline(content.to_owned())),
        attrs,
        validate: None,
        sensitive: false,
    }
}

fn file(path: &str, content: &str, attrs: Attrs) -> StepKind {
    StepKind::File(file_step(path, content, attrs))
}

fn source_file(path: &str, source: &str, attrs: Attrs) -> StepKind {
    StepKind::File(FileStep {
        content: Some(FileContent::Source(source.to_owned())),
        ..file_step(path, "", attrs)
    })
}

fn absent_file(path: &str) -> StepKind {
    StepKind::File(FileStep {
        path: path.to_owned(),
        state: Presence::Absent,
        content: None,
        attrs: Attrs::default(),
        validate: None,
        sensitive: false,
    })
}

fn template(path: &str, content: &str, attrs: Attrs, validate: Option<&[&str]>) -> StepKind {
    StepKind::Template(TemplateStep {
        path: path.to_owned(),
        source: "app.conf.hbs".to_owned(),
        content: content.to_owned(),
        attrs,
        validate: validate.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
        sensitive: false,
    })
}

fn directory(path: &str, attrs: Attrs) -> StepKind {
    StepKind::Directory(DirectoryStep {
        path: path.to_owned(),
        state: Presence::Present,
        attrs,
    })
}

fn absent_directory(path: &str) -> StepKind {
    StepKind::Directory(DirectoryStep {
        path: path.to_owned(),
        state: Presence::Absent,
        attrs: Attrs::default(),
    })
}

fn symlink(path: &str, target: Option<&str>) -> StepKind {
    StepKind::Symlink(SymlinkStep {
        path: path.to_owned(),
        state: if target.is_some() {
            Presence::Present
        } else {
            Presence::Absent
        },
        target: target.map(str::to_owned),
    })
}

fn none() -> Attrs {
    Attrs::default()
}

/// A machine with `/etc` and the users and groups the cases use.
fn machine() -> FakeHost {
    FakeHost::new()
        .with_dir("/etc", 0o755)
        .with_user("alice", 1000)
        .with_group("alice", 1000)
        .with_group("staff", 50)
}

const CONF: &str = "/etc/app.conf";

// ---- file ----

#[test]
fn file_create_diffs_against_dev_null_with_default_mode_and_owner() {
    check(
        &file(CONF, "port = 80\nhost = a\n", none()),
        machine(),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Create,
            None,
            Some("19 bytes, mode 0644, owner root:root"),
            "--- /dev/null\n+++ /etc/app.conf\n@@ -0,0 +1,2 @@\n+port = 80\n+host = a\n",
        )]),
    );
    // The same plan outside a dry run.
    check(
        &file(
            CONF,
            "x\n",
            attrs(Some(0o600), Some("alice"), Some("staff")),
        ),
        machine(),
        false,
        &Expect::Changes(vec![(
            ChangeKind::Create,
            None,
            Some("2 bytes, mode 0600, owner alice:staff"),
            "+++ /etc/app.conf\n@@ -0,0 +1 @@\n+x\n",
        )]),
    );
}

#[test]
fn file_content_change_is_a_unified_diff() {
    check(
        &file(CONF, "a\nB\nc\n", none()),
        machine().with_file(CONF, "a\nb\nc\n", 0o644),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Content,
            None,
            None,
            "--- /etc/app.conf\n+++ /etc/app.conf\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n",
        )]),
    );
}

#[test]
fn file_mode_change_shows_before_and_after() {
    check(
        &file(CONF, "same\n", attrs(Some(0o640), None, None)),
        machine().with_file(CONF, "same\n", 0o666),
        true,
        &Expect::Changes(vec![(ChangeKind::Mode, Some("0666"), Some("0640"), "")]),
    );
    // Special bits are part of the mode.
    check(
        &file(CONF, "same\n", attrs(Some(0o755), None, None)),
        machine().with_file(CONF, "same\n", 0o4755),
        false,
        &Expect::Changes(vec![(ChangeKind::Mode, Some("4755"), Some("0755"), "")]),
    );
}

#[test]
fn file_owner_and_group_changes_name_users_and_groups() {
    check(
        &file(CONF, "same\n", attrs(None, Some("alice"), Some("staff"))),
        machine().with_file(CONF, "same\n", 0o644),
        false,
        &Expect::Changes(vec![
            (ChangeKind::Owner, Some("root"), Some("alice"), ""),
            (ChangeKind::Group, Some("root"), Some("staff"), ""),
        ]),
    );
    // An id without a name is shown as the number.
    check(
        &file(CONF, "same\n", attrs(None, Some("root"), None)),
        machine()
            .with_file(CONF, "same\n", 0o644)
            .with_owner(CONF, 4242, 0),
        false,
        &Expect::Changes(vec![(ChangeKind::Owner, Some("4242"), Some("root"), "")]),
    );
}

#[test]
fn file_content_mode_and_owner_together_in_that_order() {
    check(
        &file(
            CONF,
            "new\n",
            attrs(Some(0o600), Some("alice"), Some("alice")),
        ),
        machine().with_file(CONF, "old\n", 0o644),
        true,
        &Expect::Changes(vec![
            (ChangeKind::Content, None, None, "-old\n+new\n"),
            (ChangeKind::Mode, Some("0644"), Some("0600"), ""),
            (ChangeKind::Owner, Some("root"), Some("alice"), ""),
            (ChangeKind::Group, Some("root"), Some("alice"), ""),
        ]),
    );
}

#[test]
fn file_in_sync_names_content_mode_and_owner() {
    let host = machine()
        .with_file(CONF, "port = 80\n", 0o640)
        .with_owner(CONF, 1000, 50);
    let host = check(
        &file(
            CONF,
            "port = 80\n",
            attrs(Some(0o640), Some("alice"), Some("staff")),
        ),
        host,
        true,
        &Expect::InSync(
            "/etc/app.conf has the desired content (10 bytes), mode 0640 and owner alice:staff",
        ),
    );
    // Unmanaged attributes are left as they are and still reported.
    check(
        &file(CONF, "port = 80\n", none()),
        host,
        false,
        &Expect::InSync("mode 0640 and owner alice:staff"),
    );
}

#[test]
fn file_refuses_a_path_of_another_kind() {
    check(
        &file(CONF, "x\n", none()),
        machine().with_dir(CONF, 0o755),
        true,
        &Expect::Error(
            "/etc/app.conf is a directory, not a regular file: remove it by hand or change `path`",
        ),
    );
    check(
        &file(CONF, "x\n", none()),
        machine()
            .with_file("/etc/real.conf", "x\n", 0o644)
            .with_symlink(CONF, "real.conf"),
        true,
        &Expect::Error("is a symbolic link, not a regular file"),
    );
}

#[test]
fn file_absent() {
    check(
        &absent_file(CONF),
        machine().with_file(CONF, "x\n", 0o644),
        true,
        &Expect::Changes(vec![(ChangeKind::Remove, None, None, "")]),
    );
    check(
        &absent_file(CONF),
        machine().with_symlink(CONF, "elsewhere"),
        false,
        &Expect::Changes(vec![(ChangeKind::Remove, None, None, "")]),
    );
    check(
        &absent_file(CONF),
        machine(),
        true,
        &Expect::InSync("/etc/app.conf is absent"),
    );
    check(
        &absent_file(CONF),
        machine().with_dir(CONF, 0o755),
        false,
        &Expect::Error("is a directory; a file step removes only files and links"),
    );
}

#[test]
fn file_source_is_read_from_the_repository_files() {
    check(
        &source_file("/etc/motd", "motd", none()),
        machine(),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Create,
            None,
            Some("19 bytes, mode 0644, owner root:root"),
            "+welcome to the lab\n",
        )]),
    );
    check(
        &source_file("/etc/motd", "motd", none()),
        machine().with_file("/etc/motd", "welcome to the lab\n", 0o644),
        true,
        &Expect::InSync("desired content (19 bytes)"),
    );
    check(
        &source_file("/etc/motd", "motd", none()),
        machine().with_file("/etc/motd", "hello\n", 0o644),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Content,
            None,
            None,
            "-hello\n+welcome to the lab\n",
        )]),
    );
    // Binary content is summarised, not diffed.
    check(
        &source_file("/usr/local/bin/blob", "bin/blob", none()),
        machine().with_file("/usr/local/bin/blob", "old", 0o755),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Content,
            None,
            None,
            "binary content differs: 3 bytes -> 8 bytes",
        )]),
    );
    check(
        &source_file("/etc/motd", "nope", none()),
        machine(),
        true,
        &Expect::Error("cannot read files/nope from the repository: nope: no such file"),
    );
}

#[test]
fn file_missing_user_is_a_note_in_a_dry_run_and_an_error_otherwise() {
    let step = file(CONF, "x\n", attrs(None, Some("bob"), Some("bob")));
    check(
        &step,
        machine(),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Create,
            None,
            Some("2 bytes, mode 0644, owner bob:bob"),
            "user bob and group bob do not exist on this machine yet",
        )]),
    );
    check(
        &step,
        machine().with_file(CONF, "x\n", 0o644),
        true,
        &Expect::Changes(vec![
            (
                ChangeKind::Owner,
                Some("root"),
                Some("bob"),
                "user bob does not exist on this machine yet",
            ),
            (
                ChangeKind::Group,
                Some("root"),
                Some("bob"),
                "group bob does not exist on this machine yet",
            ),
        ]),
    );
    check(
        &step,
        machine(),
        false,
        &Expect::Error(
            "user bob and group bob does not exist on this machine; create it in an earlier step",
        ),
    );
    check(
        &file(CONF, "x\n", attrs(None, Some("alice"), Some("wheel"))),
        machine().with_file(CONF, "x\n", 0o644),
        false,
        &Expect::Error("group wheel does not exist on this machine; create it in an earlier step"),
    );
}

// ---- template ----

#[test]
fn template_create_change_mode_and_in_sync() {
    check(
        &template(CONF, "port = 8080\n", none(), None),
        machine(),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Create,
            None,
            Some("12 bytes, mode 0644, owner root:root"),
            "--- /dev/null\n+++ /etc/app.conf\n@@ -0,0 +1 @@\n+port = 8080\n",
        )]),
    );
    check(
        &template(CONF, "port = 8080\n", attrs(Some(0o640), None, None), None),
        machine().with_file(CONF, "port = 80\n", 0o644),
        false,
        &Expect::Changes(vec![
            (
                ChangeKind::Content,
                None,
                None,
                "-port = 80\n+port = 8080\n",
            ),
            (ChangeKind::Mode, Some("0644"), Some("0640"), ""),
        ]),
    );
    check(
        &template(
            CONF,
            "port = 8080\n",
            attrs(None, Some("alice"), None),
            None,
        ),
        machine().with_file(CONF, "port = 8080\n", 0o644),
        true,
        &Expect::Changes(vec![(ChangeKind::Owner, Some("root"), Some("alice"), "")]),
    );
    check(
        &template(CONF, "port = 8080\n", attrs(Some(0o644), None, None), None),
        machine().with_file(CONF, "port = 8080\n", 0o644),
        true,
        &Expect::InSync("desired content (12 bytes), mode 0644 and owner root:root"),
    );
}

#[test]
fn template_refusals_and_missing_users() {
    check(
        &template(CONF, "x\n", none(), None),
        machine().with_dir(CONF, 0o700),
        false,
        &Expect::Error("is a directory, not a regular file"),
    );
    check(
        &template(CONF, "x\n", attrs(None, Some("bob"), None), None),
        machine(),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Create,
            None,
            Some("2 bytes, mode 0644, owner bob:root"),
            "user bob does not exist on this machine yet",
        )]),
    );
    check(
        &template(CONF, "x\n", attrs(None, Some("bob"), None), None),
        machine(),
        false,
        &Expect::Error("user bob does not exist on this machine; create it in an earlier step"),
    );
}

#[test]
fn template_validate_is_a_note_in_a_dry_run() {
    let validate: &[&str] = &["sh", "-c", "grep -q port {path}"];
    check(
        &template(CONF, "port = 1\n", none(), Some(validate)),
        machine().with_file(CONF, "port = 2\n", 0o644),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Content,
            None,
            None,
            "checked with `sh -c grep -q port {path}` before it is installed",
        )]),
    );
    // Both notes on a create: the missing user and the validator.
    check(
        &template(
            CONF,
            "port = 1\n",
            attrs(None, Some("bob"), None),
            Some(validate),
        ),
        machine(),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Create,
            None,
            Some("9 bytes, mode 0644, owner bob:root"),
            "user bob does not exist on this machine yet; checked with `sh -c grep -q port {path}`",
        )]),
    );
    // Outside a dry run the validator runs instead of being announced.
    check(
        &template(CONF, "port = 1\n", none(), Some(validate)),
        machine().with_file(CONF, "port = 2\n", 0o644),
        false,
        &Expect::Changes(vec![(
            ChangeKind::Content,
            None,
            None,
            "-port = 2\n+port = 1\n",
        )]),
    );
}

#[test]
fn template_validate_runs_on_the_candidate_and_a_rejection_leaves_the_file() {
    let validate: &[&str] = &["sh", "-c", "grep -q port {path}"];
    let step = template(CONF, "port = 1\n", none(), Some(validate));
    let (host, _) = converge(&step, machine().with_file(CONF, "port = 2\n", 0o644));
    let commands = host.commands();
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert_eq!(commands[0].program, "sh");
    assert_eq!(commands[0].args.len(), 2, "{commands:?}");
    assert_eq!(commands[0].args[0], "-c");
    // `{path}` is the candidate beside the live file, not the live file.
    let candidate = commands[0].args[1]
        .strip_prefix("grep -q port /etc/.app.conf.infra-tmp.")
        .unwrap_or_else(|| panic!("{commands:?}"));
    assert!(!candidate.is_empty(), "{commands:?}");

    let rejected = CmdOutput {
        code: Some(1),
        stderr: b"no port in it".to_vec(),
        ..CmdOutput::default()
    };
    let host = machine()
        .with_file(CONF, "port = 2\n", 0o644)
        .with_command("sh", rejected);
    let reader = files;
    let originals = Originals::new(Path::new(STATE_DIR));
    let ctx = Ctx::new(&host, false, Some(&originals), &reader);
    let plan = resource::plan(&step, &ctx).unwrap();
    let err = resource::apply(&step, &plan, &ctx).unwrap_err().to_string();
    assert!(
        err.contains("`sh -c grep -q port {path}` rejected the new content (exit 1); the file was left unchanged"),
        "{err}"
    );
    assert!(err.contains("no port in it"), "{err}");
    assert_eq!(host.file(CONF), Some((b"port = 2\n".to_vec(), 0o644, 0, 0)));
    assert_eq!(host.read_dir(Path::new("/etc")).unwrap(), ["app.conf"]);
}

#[test]
fn template_validate_runs_only_for_new_content_and_a_validator_that_cannot_run_fails() {
    let validate: &[&str] = &["sh", "-c", "grep -q port {path}"];
    // A mode change alone does not run the validator.
    let step = template(
        CONF,
        "port = 1\n",
        attrs(Some(0o600), None, None),
        Some(validate),
    );
    let (host, _) = converge(&step, machine().with_file(CONF, "port = 1\n", 0o644));
    assert!(host.commands().is_empty(), "{:?}", host.commands());

    let host = machine()
        .with_file(CONF, "port = 2\n", 0o644)
        .fail_on(infra_agent::host::fake::Op::Run, "sh");
    let reader = files;
    let ctx = Ctx::new(&host, false, None, &reader);
    let plan = resource::plan(&step, &ctx).unwrap();
    assert!(resource::apply(&step, &plan, &ctx).is_err());
    assert_eq!(host.file(CONF), Some((b"port = 2\n".to_vec(), 0o644, 0, 0)));
    assert_eq!(host.read_dir(Path::new("/etc")).unwrap(), ["app.conf"]);
}

#[test]
fn sensitive_content_is_never_shown() {
    let secret = |content: &str| {
        StepKind::File(FileStep {
            sensitive: true,
            ..file_step(CONF, content, none())
        })
    };
    check(
        &secret("password = hunter2\n"),
        machine(),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Create,
            None,
            Some("19 bytes, mode 0644, owner root:root"),
            "content of /etc/app.conf changed (secret, not shown)\n",
        )]),
    );
    let host = check(
        &secret("password = hunter2\n"),
        machine().with_file(CONF, "password = old\n", 0o600),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Content,
            None,
            None,
            "content of /etc/app.conf changed (secret, not shown)\n",
        )]),
    );
    let reader = files;
    let ctx = Ctx::new(&host, true, None, &reader);
    let plan = resource::plan(&secret("password = hunter2\n"), &ctx).unwrap();
    let shown = format!("{plan:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("password = old"),
        "{shown}"
    );
}

// ---- directory ----

const DIR: &str = "/srv/app";

#[test]
fn directory_create_defaults_to_0755_root() {
    check(
        &directory(DIR, none()),
        machine(),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Create,
            None,
            Some("mode 0755, owner root:root"),
            "",
        )]),
    );
    check(
        &directory(DIR, attrs(Some(0o2750), Some("alice"), Some("staff"))),
        machine(),
        false,
        &Expect::Changes(vec![(
            ChangeKind::Create,
            None,
            Some("mode 2750, owner alice:staff"),
            "",
        )]),
    );
}

#[test]
fn directory_mode_and_owner_changes() {
    check(
        &directory(DIR, attrs(Some(0o750), None, None)),
        machine().with_dir(DIR, 0o755),
        true,
        &Expect::Changes(vec![(ChangeKind::Mode, Some("0755"), Some("0750"), "")]),
    );
    check(
        &directory(DIR, attrs(None, Some("alice"), Some("staff"))),
        machine().with_dir(DIR, 0o755),
        true,
        &Expect::Changes(vec![
            (ChangeKind::Owner, Some("root"), Some("alice"), ""),
            (ChangeKind::Group, Some("root"), Some("staff"), ""),
        ]),
    );
    check(
        &directory(DIR, attrs(Some(0o750), Some("alice"), Some("staff"))),
        machine().with_dir(DIR, 0o750).with_owner(DIR, 1000, 50),
        true,
        &Expect::InSync("/srv/app is a directory with mode 0750 and owner alice:staff"),
    );
}

#[test]
fn directory_missing_user_is_a_note_in_a_dry_run_and_an_error_otherwise() {
    let step = directory(DIR, attrs(None, Some("bob"), None));
    check(
        &step,
        machine(),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Create,
            None,
            Some("mode 0755, owner bob:root"),
            "user bob does not exist on this machine yet",
        )]),
    );
    check(
        &step,
        machine().with_dir(DIR, 0o755),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Owner,
            Some("root"),
            Some("bob"),
            "user bob does not exist on this machine yet",
        )]),
    );
    check(
        &step,
        machine(),
        false,
        &Expect::Error("user bob does not exist on this machine; create it in an earlier step"),
    );
}

#[test]
fn directory_absent() {
    check(
        &absent_directory(DIR),
        machine().with_dir(DIR, 0o755),
        true,
        &Expect::Changes(vec![(ChangeKind::Remove, None, None, "")]),
    );
    check(
        &absent_directory(DIR),
        machine(),
        true,
        &Expect::InSync("/srv/app is absent"),
    );
    check(
        &absent_directory(DIR),
        machine()
            .with_file("/srv/app/data.db", "x", 0o600)
            .with_file("/srv/app/cache", "y", 0o600),
        false,
        &Expect::Error(
            "/srv/app is not empty (2 entries, e.g. cache); a directory step removes only empty directories",
        ),
    );
    check(
        &absent_directory(DIR),
        machine().with_file(DIR, "x", 0o644),
        false,
        &Expect::Error("/srv/app is a regular file, not a directory"),
    );
}

#[test]
fn directory_refuses_a_file_or_link_at_its_path() {
    check(
        &directory(DIR, none()),
        machine().with_file(DIR, "x", 0o644),
        true,
        &Expect::Error(
            "/srv/app is a regular file, not a directory: remove it by hand or change `path`",
        ),
    );
    check(
        &directory(DIR, none()),
        machine()
            .with_dir("/data", 0o755)
            .with_symlink(DIR, "/data"),
        false,
        &Expect::Error("is a symbolic link, not a directory"),
    );
}

// ---- symlink ----

const LINK: &str = "/etc/localtime";

#[test]
fn symlink_create_retarget_and_in_sync() {
    check(
        &symlink(LINK, Some("/usr/share/zoneinfo/UTC")),
        machine(),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Create,
            None,
            Some("-> /usr/share/zoneinfo/UTC"),
            "",
        )]),
    );
    check(
        &symlink(LINK, Some("/usr/share/zoneinfo/UTC")),
        machine().with_symlink(LINK, "/usr/share/zoneinfo/Europe/Berlin"),
        false,
        &Expect::Changes(vec![(
            ChangeKind::Target,
            Some("/usr/share/zoneinfo/Europe/Berlin"),
            Some("/usr/share/zoneinfo/UTC"),
            "",
        )]),
    );
    // A dangling link is still a link: only its target counts.
    check(
        &symlink(LINK, Some("/usr/share/zoneinfo/UTC")),
        machine().with_symlink(LINK, "/usr/share/zoneinfo/UTC"),
        true,
        &Expect::InSync("/etc/localtime points at /usr/share/zoneinfo/UTC"),
    );
    // Targets are compared as written: relative and absolute differ.
    check(
        &symlink("/etc/app.link", Some("app.conf")),
        machine().with_symlink("/etc/app.link", "/etc/app.conf"),
        true,
        &Expect::Changes(vec![(
            ChangeKind::Target,
            Some("/etc/app.conf"),
            Some("app.conf"),
            "",
        )]),
    );
}

#[test]
fn symlink_absent_and_refusals() {
    check(
        &symlink(LINK, None),
        machine().with_symlink(LINK, "x"),
        true,
        &Expect::Changes(vec![(ChangeKind::Remove, None, None, "")]),
    );
    check(
        &symlink(LINK, None),
        machine(),
        true,
        &Expect::InSync("/etc/localtime is absent"),
    );
    check(
        &symlink(LINK, None),
        machine().with_file(LINK, "TZif", 0o644),
        false,
        &Expect::Error("is a regular file, not a symbolic link; a symlink step removes only links"),
    );
    check(
        &symlink(LINK, Some("/usr/share/zoneinfo/UTC")),
        machine().with_file(LINK, "TZif", 0o644),
        true,
        &Expect::Error(
            "/etc/localtime is a regular file, not a symbolic link: remove it by hand or change `path`",
        ),
    );
    check(
        &symlink(LINK, Some("/usr/share/zoneinfo/UTC")),
        machine().with_dir(LINK, 0o755),
        true,
        &Expect::Error("is a directory, not a symbolic link"),
    );
}

// ---- plan → apply → plan ----

#[test]
fn converge_file_create_with_mode_and_owner() {
    let step = file(
        CONF,
        "port = 80\n",
        attrs(Some(0o640), Some("alice"), Some("staff")),
    );
    let (host, _) = converge(&step, machine());
    assert_eq!(
        host.file(CONF),
        Some((b"port = 80\n".to_vec(), 0o640, 1000, 50))
    );
    // The original was "did not exist", and no candidate is left beside the file.
    let record = Originals::new(Path::new(STATE_DIR))
        .get(&host, Path::new(CONF))
        .unwrap()
        .unwrap();
    assert!(!record.existed);
    assert_eq!(host.read_dir(Path::new("/etc")).unwrap(), ["app.conf"]);
}

#[test]
fn converge_file_default_mode_and_root_owner() {
    let (host, _) = converge(&file(CONF, "x\n", none()), machine());
    assert_eq!(host.file(CONF), Some((b"x\n".to_vec(), 0o644, 0, 0)));
}

#[test]
fn converge_file_content_mode_and_owner_of_an_existing_file() {
    let host = machine()
        .with_file(CONF, "old\n", 0o666)
        .with_owner(CONF, 4242, 4242);
    let step = file(
        CONF,
        "new\n",
        attrs(Some(0o600), Some("alice"), Some("alice")),
    );
    let (host, plan) = converge(&step, host);
    assert_eq!(plan.changes.len(), 4, "{plan:#?}");
    assert_eq!(
        host.file(CONF),
        Some((b"new\n".to_vec(), 0o600, 1000, 1000))
    );
    let originals = Originals::new(Path::new(STATE_DIR));
    let record = originals.get(&host, Path::new(CONF)).unwrap().unwrap();
    assert!(record.existed);
    assert_eq!(
        (record.mode, record.uid, record.gid),
        (Some(0o666), Some(4242), Some(4242))
    );
    let saved = host
        .read_file(&originals.dir().join(record.content.unwrap()))
        .unwrap();
    assert_eq!(saved, b"old\n");
}

#[test]
fn converge_file_mode_only_and_owner_only() {
    let host = machine().with_file(CONF, "x\n", 0o644);
    let (host, _) = converge(&file(CONF, "x\n", attrs(Some(0o4750), None, None)), host);
    assert_eq!(host.file(CONF), Some((b"x\n".to_vec(), 0o4750, 0, 0)));
    // An owner change keeps the mode (chown clears setuid on a real machine; the mode is
    // set again after it).
    let (host, _) = converge(&file(CONF, "x\n", attrs(None, Some("alice"), None)), host);
    assert_eq!(host.file(CONF), Some((b"x\n".to_vec(), 0o4750, 1000, 0)));
}

#[test]
fn converge_file_source_and_absent() {
    let (host, _) = converge(&source_file("/etc/motd", "motd", none()), machine());
    assert_eq!(
        host.file("/etc/motd"),
        Some((b"welcome to the lab\n".to_vec(), 0o644, 0, 0))
    );
    let (host, _) = converge(&absent_file("/etc/motd"), host);
    assert_eq!(host.node("/etc/motd"), None);
}

#[test]
fn converge_directories() {
    let step = directory(DIR, attrs(Some(0o750), Some("alice"), Some("staff")));
    let (host, _) = converge(&step, machine().with_dir("/srv", 0o755));
    assert_eq!(
        host.node(DIR).map(|n| n.to_string()).as_deref(),
        Some("dir 0750 1000:50")
    );
    let (host, _) = converge(
        &directory(DIR, attrs(Some(0o700), Some("root"), None)),
        host,
    );
    assert_eq!(
        host.node(DIR).map(|n| n.to_string()).as_deref(),
        Some("dir 0700 0:50")
    );
    let (host, _) = converge(&absent_directory(DIR), host);
    assert_eq!(host.node(DIR), None);
    let (host, _) = converge(&directory(DIR, none()), host);
    assert_eq!(
        host.node(DIR).map(|n| n.to_string()).as_deref(),
        Some("dir 0755 0:0")
    );
}

#[test]
fn converge_symlinks() {
    let (host, _) = converge(&symlink(LINK, Some("/usr/share/zoneinfo/UTC")), machine());
    assert_eq!(
        host.read_link(Path::new(LINK)).unwrap(),
        Path::new("/usr/share/zoneinfo/UTC")
    );
    let (host, plan) = converge(
        &symlink(LINK, Some("/usr/share/zoneinfo/Europe/Berlin")),
        host,
    );
    assert_eq!(plan.changes[0].kind, ChangeKind::Target);
    assert_eq!(
        host.read_link(Path::new(LINK)).unwrap(),
        Path::new("/usr/share/zoneinfo/Europe/Berlin")
    );
    let record = Originals::new(Path::new(STATE_DIR))
        .get(&host, Path::new(LINK))
        .unwrap()
        .unwrap();
    // The first change wins: the record says the link did not exist.
    assert!(!record.existed);
    let (host, _) = converge(&symlink(LINK, None), host);
    assert_eq!(host.node(LINK), None);
}

#[test]
fn converge_template_with_mode() {
    let step = template(CONF, "port = 8080\n", attrs(Some(0o640), None, None), None);
    let (host, _) = converge(&step, machine().with_file(CONF, "port = 80\n", 0o644));
    assert_eq!(
        host.file(CONF),
        Some((b"port = 8080\n".to_vec(), 0o640, 0, 0))
    );
}
