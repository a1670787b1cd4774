//! The `apt_repository` step against `FakeHost`: the exact deb822 entry, keys from
//! `files/` and from a URL (checked against `key_sha256`), removal, in-sync runs that
//! do nothing, and the package lists refreshed by a later `package` step after a
//! change; and how the loader validates its keys.

mod support;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use infra_agent::catalog::{self, Catalog};
use infra_agent::engine::{self, Options, Status};
use infra_agent::facts::Facts;
use infra_agent::host::FakeHost;
use infra_agent::originals::Originals;
use infra_agent::process::{Cmd, CmdOutput};
use infra_agent::resource::{self, ChangeKind, Ctx, Plan};
use infra_agent::state_repo::infra_toml::Version;
use infra_agent::state_repo::{self, DirSource, RepoSource};
use infra_agent::step::apt_repository::{AptRepositoryStep, KeySource};
use infra_agent::step::{Presence, StepKind};

const SOURCES: &str = "/etc/apt/sources.list.d/local.sources";
const ASC: &str = "/etc/apt/keyrings/local.asc";
const GPG: &str = "/etc/apt/keyrings/local.gpg";
const ARMORED: &str =
    "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZtest\n-----END PGP PUBLIC KEY BLOCK-----\n";
const BINARY: &[u8] = &[0x98, 0x33, 0x04, 0x66, 0x00, 0x01];
const KEY_URL: &str = "http://apt.example.org/key.gpg";
const KEY_SHA: &str = "6b1f5bd3fe1c4b1c0a6d4e1b8a7c2d0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";

const REPO_FILES: &[(&str, &[u8])] = &[
    ("keys/local.asc", ARMORED.as_bytes()),
    ("keys/local.gpg", BINARY),
    ("keys/not-a-key", b"<html>404</html>"),
];

fn files(path: &str) -> Result<Vec<u8>, String> {
    REPO_FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, b)| b.to_vec())
        .ok_or_else(|| format!("{path}: no such file"))
}

fn ok(stdout: &str) -> CmdOutput {
    CmdOutput {
        code: Some(0),
        stdout: stdout.as_bytes().to_vec(),
        ..CmdOutput::default()
    }
}

fn fail(code: i32, stderr: &str) -> CmdOutput {
    CmdOutput {
        code: Some(code),
        stderr: stderr.as_bytes().to_vec(),
        ..CmdOutput::default()
    }
}

/// A Debian host with /etc/apt/keyrings and sources.list.d, no systemd.
fn host() -> FakeHost {
    let mut facts = Facts::placeholder("test-host");
    facts.systemd = false;
    FakeHost::new()
        .with_dir("/etc/apt/sources.list.d", 0o755)
        .with_dir("/etc/apt/keyrings", 0o755)
        .with_dir("/var/cache", 0o755)
        .with_facts(facts)
}

/// apt-helper "serves" `body` (writing it to its destination argument), and
/// `sha256sum` says a file has [`KEY_SHA`] when its content is `body`.
fn serves(host: FakeHost, body: &'static [u8]) -> FakeHost {
    host.with_command_effect("/usr/lib/apt/apt-helper", move |h, cmd| {
        h.set_node(
            &cmd.args[2],
            Some(infra_agent::host::fake::Node::File {
                content: body.to_vec(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            }),
        );
        ok("")
    })
    .with_command_effect("sha256sum", move |h, cmd| {
        let path = cmd.args.last().expect("a path");
        match h.file(path) {
            Some((content, ..)) if content == body => ok(&format!("{KEY_SHA}  {path}\n")),
            Some(_) => ok(&format!("{}  {path}\n", "0".repeat(64))),
            None => fail(1, "No such file or directory"),
        }
    })
}

fn step(key: KeySource) -> AptRepositoryStep {
    AptRepositoryStep {
        name: "local".into(),
        state: Presence::Present,
        uris: vec!["http://127.0.0.1:8080/debian".into()],
        suites: vec!["stable".into()],
        components: vec!["main".into()],
        architectures: Vec::new(),
        key: Some(key),
    }
}

fn url_key() -> KeySource {
    KeySource::Url {
        url: KEY_URL.into(),
        sha256: KEY_SHA.into(),
    }
}

fn plan_of(step: &AptRepositoryStep, ctx: &Ctx<'_>) -> Result<Plan, resource::Error> {
    resource::plan(&StepKind::AptRepository(step.clone()), ctx)
}

fn converge(step: &AptRepositoryStep, ctx: &Ctx<'_>) -> Result<Plan, resource::Error> {
    let plan = plan_of(step, ctx)?;
    resource::apply(&StepKind::AptRepository(step.clone()), &plan, ctx)?;
    Ok(plan)
}

fn summary(plan: &Plan) -> Vec<String> {
    plan.changes.iter().map(ToString::to_string).collect()
}

fn text(host: &FakeHost, path: &str) -> Option<String> {
    host.file(path)
        .map(|(c, ..)| String::from_utf8(c).expect("UTF-8"))
}

fn argvs(host: &FakeHost) -> Vec<String> {
    host.commands().iter().map(Cmd::display).collect()
}

/// Mutations other than running commands.
fn writes(host: &FakeHost) -> Vec<String> {
    host.mutations()
        .into_iter()
        .filter(|m| !m.starts_with("run "))
        .collect()
}

const ENTRY_ASC: &str =
    "# Managed by infra-agent (apt_repository local): local changes are overwritten.
Types: deb
URIs: http://127.0.0.1:8080/debian
Suites: stable
Components: main
Signed-By: /etc/apt/keyrings/local.asc
";

// ---------------------------------------------------------------------------------
// The entry and a key from files/

#[test]
fn an_armored_key_from_files_gives_an_asc_keyring_and_the_exact_entry() {
    let host = host();
    let reader = files;
    let ctx = Ctx::new(&host, false, None, &reader);
    let s = step(KeySource::File("keys/local.asc".into()));
    let plan = converge(&s, &ctx).unwrap();
    assert_eq!(
        summary(&plan),
        [
            format!(
                "create {ASC}: {} bytes, mode 0644, owner root:root",
                ARMORED.len()
            ),
            format!(
                "create {SOURCES}: {} bytes, mode 0644, owner root:root",
                ENTRY_ASC.len()
            ),
        ]
    );
    assert!(
        plan.changes[1]
            .diff
            .as_deref()
            .unwrap()
            .contains("+Signed-By: /etc/apt/keyrings/local.asc")
    );
    assert_eq!(text(&host, SOURCES).as_deref(), Some(ENTRY_ASC));
    assert_eq!(host.file(SOURCES).unwrap().1, 0o644);
    assert_eq!(
        host.file(ASC),
        Some((ARMORED.as_bytes().to_vec(), 0o644, 0, 0))
    );
    assert!(host.commands().is_empty(), "{:?}", argvs(&host));
    // The keyring is written (staged, renamed) before the entry that names it.
    let w = writes(&host);
    let key_at = w.iter().position(|m| m == &format!("write {ASC}")).unwrap();
    let entry_at = w
        .iter()
        .position(|m| m == &format!("write {SOURCES}"))
        .unwrap();
    assert!(key_at < entry_at, "{w:?}");

    // In sync: nothing runs, nothing is written.
    host.clear_log();
    let again = plan_of(&s, &ctx).unwrap();
    assert!(again.is_in_sync(), "{again:#?}");
    assert_eq!(again.in_sync, format!("{SOURCES} and {ASC} are as desired"));
    assert!(host.mutations().is_empty(), "{:?}", host.mutations());
}

#[test]
fn several_values_architectures_and_a_binary_key() {
    let host = host().with_file(ASC, ARMORED, 0o644);
    let reader = files;
    let ctx = Ctx::new(&host, false, None, &reader);
    let mut s = step(KeySource::File("keys/local.gpg".into()));
    s.uris.push("http://mirror.example/debian".into());
    s.suites = vec!["stable".into(), "stable-updates".into()];
    s.components = vec!["main".into(), "contrib".into()];
    s.architectures = vec!["amd64".into(), "i386".into()];
    let plan = converge(&s, &ctx).unwrap();
    assert!(
        plan.changes
            .iter()
            .any(|c| c.kind == ChangeKind::Remove && c.path == ASC),
        "the keyring of the other format goes: {:?}",
        summary(&plan)
    );
    assert_eq!(
        text(&host, SOURCES).unwrap(),
        "# Managed by infra-agent (apt_repository local): local changes are overwritten.
Types: deb
URIs: http://127.0.0.1:8080/debian http://mirror.example/debian
Suites: stable stable-updates
Components: main contrib
Architectures: amd64 i386
Signed-By: /etc/apt/keyrings/local.gpg
"
    );
    assert_eq!(host.file(GPG).unwrap().0, BINARY);
    assert!(host.file(ASC).is_none());
    assert!(plan_of(&s, &ctx).unwrap().is_in_sync());
}

#[test]
fn an_exact_path_suite_has_no_components_line() {
    let host = host();
    let reader = files;
    let ctx = Ctx::new(&host, false, None, &reader);
    let mut s = step(KeySource::File("keys/local.asc".into()));
    s.suites = vec!["./".into()];
    s.components.clear();
    converge(&s, &ctx).unwrap();
    let entry = text(&host, SOURCES).unwrap();
    assert!(entry.contains("\nSuites: ./\nSigned-By:"), "{entry}");
}

#[test]
fn a_trusted_local_repository_has_no_keyring_and_says_trusted() {
    // A keyring of the name, left from when the repository had a key, goes.
    let host = host().with_file(ASC, ARMORED, 0o644);
    let reader = files;
    let ctx = Ctx::new(&host, false, None, &reader);
    let mut s = step(KeySource::Trusted);
    s.uris = vec!["file:/srv/infra-stage/apt".into()];
    s.suites = vec!["./".into()];
    s.components.clear();
    let plan = converge(&s, &ctx).unwrap();
    assert_eq!(
        text(&host, SOURCES).unwrap(),
        "# Managed by infra-agent (apt_repository local): local changes are overwritten.
Types: deb
URIs: file:/srv/infra-stage/apt
Suites: ./
Trusted: yes
"
    );
    assert!(
        plan.changes
            .iter()
            .any(|c| c.kind == ChangeKind::Remove && c.path == ASC),
        "{:?}",
        summary(&plan)
    );
    assert!(host.file(ASC).is_none());
    assert!(host.commands().is_empty(), "{:?}", argvs(&host));
    host.clear_log();
    let again = plan_of(&s, &ctx).unwrap();
    assert!(again.is_in_sync(), "{again:#?}");
    assert_eq!(
        again.in_sync,
        format!("{SOURCES} is as desired (trusted, no keyring)")
    );
    assert!(host.mutations().is_empty(), "{:?}", host.mutations());
}

#[test]
fn a_file_that_is_not_a_key_fails_and_writes_nothing() {
    let host = host();
    let reader = files;
    let ctx = Ctx::new(&host, false, None, &reader);
    let err = plan_of(&step(KeySource::File("keys/not-a-key".into())), &ctx).unwrap_err();
    assert!(
        err.to_string()
            .contains("files/keys/not-a-key is not an OpenPGP public key"),
        "{err}"
    );
    assert!(host.mutations().is_empty());
}

#[test]
fn a_changed_entry_is_a_content_diff_and_keeps_the_original() {
    let host = host()
        .with_file(ASC, ARMORED, 0o644)
        .with_file(SOURCES, ENTRY_ASC.replace("stable", "oldstable"), 0o644)
        .with_dir("/var/lib/infra-agent", 0o700);
    let reader = files;
    let originals = Originals::new(Path::new("/var/lib/infra-agent"));
    let ctx = Ctx::new(&host, false, Some(&originals), &reader);
    let s = step(KeySource::File("keys/local.asc".into()));
    let plan = converge(&s, &ctx).unwrap();
    assert_eq!(summary(&plan), [format!("content {SOURCES}")]);
    let diff = plan.changes[0].diff.as_deref().unwrap();
    assert!(
        diff.contains("-Suites: oldstable\n+Suites: stable"),
        "{diff}"
    );
    assert_eq!(text(&host, SOURCES).as_deref(), Some(ENTRY_ASC));
    assert!(
        host.paths()
            .iter()
            .any(|p| p.starts_with("/var/lib/infra-agent/originals")),
        "{:?}",
        host.paths()
    );
}

#[test]
fn a_missing_keyrings_directory_is_created() {
    let host = host();
    host.set_node("/etc/apt/keyrings", None);
    let reader = files;
    let ctx = Ctx::new(&host, false, None, &reader);
    let s = step(KeySource::File("keys/local.asc".into()));
    let plan = converge(&s, &ctx).unwrap();
    assert_eq!(
        summary(&plan)[0],
        "create /etc/apt/keyrings: directory, mode 0755, owner root:root"
    );
    assert!(host.file(ASC).is_some());
    assert!(plan_of(&s, &ctx).unwrap().is_in_sync());
}

// ---------------------------------------------------------------------------------
// A key from a URL

#[test]
fn a_key_from_a_url_is_downloaded_checked_and_installed_once() {
    let host = serves(host(), BINARY);
    let reader = files;
    let ctx = Ctx::new(&host, false, None, &reader);
    let s = step(url_key());
    let plan = converge(&s, &ctx).unwrap();
    assert_eq!(
        summary(&plan)[0],
        format!("create {GPG}: downloaded from {KEY_URL}, sha256 {KEY_SHA}")
    );
    assert_eq!(
        argvs(&host),
        [format!(
            "/usr/lib/apt/apt-helper download-file {KEY_URL} /var/cache/infra-agent/local.key.download SHA256:{KEY_SHA}"
        )]
    );
    assert_eq!(host.file(GPG).unwrap().0, BINARY);
    assert!(
        text(&host, SOURCES)
            .unwrap()
            .contains("Signed-By: /etc/apt/keyrings/local.gpg\n")
    );
    assert!(
        host.node("/var/cache/infra-agent/local.key.download")
            .is_none(),
        "the download is deleted"
    );

    // Converged: the keyring's hash is checked, nothing is downloaded.
    host.clear_log();
    let again = plan_of(&s, &ctx).unwrap();
    assert!(again.is_in_sync(), "{again:#?}");
    assert_eq!(argvs(&host), [format!("sha256sum -- {GPG}")]);
}

#[test]
fn an_armored_download_from_a_url_without_asc_becomes_an_asc_keyring() {
    let host = serves(host(), ARMORED.as_bytes());
    let reader = files;
    let ctx = Ctx::new(&host, false, None, &reader);
    let s = step(url_key());
    converge(&s, &ctx).unwrap();
    assert_eq!(host.file(ASC).unwrap().0, ARMORED.as_bytes());
    assert!(host.file(GPG).is_none());
    assert_eq!(text(&host, SOURCES).as_deref(), Some(ENTRY_ASC));
    assert!(plan_of(&s, &ctx).unwrap().is_in_sync());
}

#[test]
fn a_wrong_key_sha256_fails_clearly_and_writes_nothing() {
    let host = host()
        .with_dir("/var/cache/infra-agent", 0o755)
        .with_command(
            "/usr/lib/apt/apt-helper",
            fail(
                100,
                "E: Failed to fetch http://apt.example.org/key.gpg  Hash Sum mismatch\n   Hashes of expected file:\n    - SHA256:6b1f",
            ),
        );
    let reader = files;
    let ctx = Ctx::new(&host, false, None, &reader);
    let s = step(url_key());
    let plan = plan_of(&s, &ctx).unwrap();
    let err = resource::apply(&StepKind::AptRepository(s.clone()), &plan, &ctx).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "downloading the key {KEY_URL} failed: what it serves does not have key_sha256 {KEY_SHA}; nothing was written"
        )),
        "{msg}"
    );
    assert!(writes(&host).is_empty(), "{:?}", writes(&host));
    assert!(host.file(SOURCES).is_none());
}

#[test]
fn a_dry_run_shows_the_entry_and_downloads_nothing() {
    let host = serves(host(), BINARY);
    let reader = files;
    let ctx = Ctx::new(&host, true, None, &reader);
    let plan = plan_of(&step(url_key()), &ctx).unwrap();
    assert_eq!(plan.changes.len(), 2, "{:?}", summary(&plan));
    assert!(
        plan.changes[0]
            .note
            .as_deref()
            .unwrap()
            .contains("not downloaded in a dry run")
    );
    assert!(
        plan.changes[1]
            .diff
            .as_deref()
            .unwrap()
            .contains("+URIs: http://127.0.0.1:8080/debian")
    );
    assert!(host.commands().is_empty(), "{:?}", argvs(&host));
    assert!(host.mutations().is_empty());
}

// ---------------------------------------------------------------------------------
// Absent

#[test]
fn absent_removes_the_entry_and_both_keyrings() {
    let host = host()
        .with_file(SOURCES, ENTRY_ASC, 0o644)
        .with_file(ASC, ARMORED, 0o644)
        .with_file(GPG, BINARY, 0o644);
    let reader = files;
    let ctx = Ctx::new(&host, false, None, &reader);
    let s = AptRepositoryStep {
        name: "local".into(),
        state: Presence::Absent,
        uris: Vec::new(),
        suites: Vec::new(),
        components: Vec::new(),
        architectures: Vec::new(),
        key: None,
    };
    let plan = converge(&s, &ctx).unwrap();
    assert_eq!(
        summary(&plan),
        [
            format!("remove {SOURCES}"),
            format!("remove {ASC}"),
            format!("remove {GPG}")
        ]
    );
    assert_eq!(
        writes(&host),
        [
            format!("rm {SOURCES}"),
            format!("rm {ASC}"),
            format!("rm {GPG}")
        ]
    );
    host.clear_log();
    let again = plan_of(&s, &ctx).unwrap();
    assert!(again.is_in_sync());
    assert!(host.mutations().is_empty());
}

// ---------------------------------------------------------------------------------
// In a run: a change makes the next package step refresh the lists

const STATUS: &str = "/var/lib/dpkg/status";
const LISTS: &str = "/var/lib/apt/lists";

fn status(extra: bool) -> String {
    let mut text =
        "Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.21.22\n"
            .to_owned();
    if extra {
        let _ = write!(
            text,
            "\nPackage: infra-test-hello\nStatus: install ok installed\nArchitecture: all\nVersion: 1.0\n"
        );
    }
    text
}

struct Fixture {
    dir: tempfile::TempDir,
    catalog: Catalog,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let steps = "[[step]]\nid = \"repo\"\ntype = \"apt_repository\"\nname = \"local\"\nuris = \"http://127.0.0.1:8080/debian\"\nsuites = \"stable\"\ncomponents = \"main\"\nkey_source = \"keys/local.asc\"\n\n[[step]]\nid = \"hello\"\ntype = \"package\"\nnames = [\"infra-test-hello\"]\nrequires = [\"repo\"]\n";
        for (path, text) in [
            ("infra.toml", "format = 1\n"),
            (
                "inventory/production.toml",
                "[groups.all]\nroles = [\"r\"]\n\n[groups.g]\nhosts = [\"h1\"]\n",
            ),
            ("roles/r.toml", steps),
            ("files/keys/local.asc", ARMORED),
        ] {
            support::write(dir.path(), path, text);
        }
        let repo = state_repo::load(&DirSource::new(dir.path()), Version::agent())
            .unwrap_or_else(|e| panic!("the fixture loads:\n{e}"));
        let sel = repo.select("h1").expect("h1 is selected");
        let catalog = catalog::compile(&repo, &sel, &Facts::placeholder("h1"))
            .unwrap_or_else(|e| panic!("the fixture compiles:\n{e}"));
        Self { dir, catalog }
    }

    fn run(&self, host: &FakeHost) -> engine::RunReport {
        let source = DirSource::new(self.dir.path());
        let files = |p: &str| {
            source
                .read_bytes(&format!("files/{p}"))
                .map_err(|e| e.to_string())
        };
        let originals = Originals::new(Path::new("/var/lib/infra-agent"));
        let ctx = Ctx::new(host, false, Some(&originals), &files);
        engine::run(
            &self.catalog,
            &ctx,
            &Options {
                dry_run: false,
                only: Vec::new(),
                ..Default::default()
            },
        )
        .expect("the run starts")
    }
}

/// Fresh package lists; apt-get installs the package.
fn debian_host() -> FakeHost {
    let fresh = SystemTime::now() - Duration::from_mins(1);
    host()
        .with_file(STATUS, status(false), 0o644)
        .with_dir("/var/lib/dpkg/updates", 0o755)
        .with_file(
            format!("{LISTS}/deb.example_debian_dists_bookworm_main_binary-amd64_Packages"),
            "",
            0o644,
        )
        .with_dir(format!("{LISTS}/partial"), 0o700)
        .with_mtime(LISTS, fresh)
        .with_mtime(format!("{LISTS}/partial"), fresh)
        .with_command_effect("apt-get", |h, cmd| {
            if cmd.args.first().is_some_and(|a| a == "install") {
                h.set_node(
                    STATUS,
                    Some(infra_agent::host::fake::Node::File {
                        content: status(true).into_bytes(),
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                    }),
                );
            }
            ok("")
        })
}

fn programs(host: &FakeHost) -> Vec<String> {
    host.commands()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c.program,
                c.args.first().cloned().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn a_new_repository_makes_the_next_package_step_refresh_the_lists_first() {
    let fx = Fixture::new();
    let host = debian_host();
    let report = fx.run(&host);
    let statuses: Vec<(String, Status)> =
        report.steps.iter().map(|s| (s.name(), s.status)).collect();
    assert_eq!(
        statuses,
        [
            ("repo".to_owned(), Status::Changed),
            ("hello".to_owned(), Status::Changed)
        ],
        "{report:#?}"
    );
    // The lists are fresh, yet the new repository makes the package step update first.
    assert_eq!(programs(&host), ["apt-get update", "apt-get install"]);
    assert_eq!(text(&host, SOURCES).as_deref(), Some(ENTRY_ASC));

    // Second run: all in sync, no program at all.
    host.clear_log();
    let report = fx.run(&host);
    assert!(
        report.steps.iter().all(|s| s.status == Status::InSync),
        "{report:#?}"
    );
    assert!(host.commands().is_empty(), "{:?}", argvs(&host));
}

#[test]
fn an_unchanged_repository_does_not_refresh_fresh_lists() {
    let fx = Fixture::new();
    let host = debian_host()
        .with_file(ASC, ARMORED, 0o644)
        .with_file(SOURCES, ENTRY_ASC, 0o644);
    let report = fx.run(&host);
    assert_eq!(report.steps[0].status, Status::InSync, "{report:#?}");
    assert_eq!(programs(&host), ["apt-get install"]);
}

// ---------------------------------------------------------------------------------
// The step as written in a repository

fn build(keys: &str) -> Result<AptRepositoryStep, String> {
    let dir = support::repo(&[
        (
            "roles/web.toml",
            &format!("[[step]]\nid = \"a\"\ntype = \"apt_repository\"\n{keys}"),
        ),
        ("files/keys/local.asc", ARMORED),
        (
            "group_data/web.toml",
            "[repo]\nuris = [\"http://a.example/debian\", \"http://b.example/debian\"]\nsuite = \"stable\"\n",
        ),
    ]);
    let repo = state_repo::load(&DirSource::new(dir.path()), Version::agent())
        .map_err(|e| format!("{e:?}"))?;
    let sel = repo.select("web-01").map_err(|e| e.message)?;
    let catalog = catalog::compile(&repo, &sel, &Facts::placeholder("web-01")).map_err(|e| {
        e.0.iter()
            .map(|d| {
                format!(
                    "{} (hint: {})",
                    d.message,
                    d.hint.clone().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    match catalog
        .steps
        .iter()
        .find(|s| s.id == "a")
        .and_then(|s| s.desired.clone())
    {
        Some(StepKind::AptRepository(s)) => Ok(s),
        other => Err(format!("not an apt_repository step: {other:?}")),
    }
}

#[test]
fn keys_as_written() {
    let s = build("name = \"local\"\nuris = \"http://127.0.0.1:8080/debian\"\nsuites = \"{{facts.os.codename}}\"\ncomponents = [\"main\", \"contrib\"]\nkey_source = \"keys/local.asc\"\n").unwrap();
    assert_eq!(s.uris, ["http://127.0.0.1:8080/debian"]);
    assert_eq!(s.suites, ["bookworm"]);
    assert_eq!(s.components, ["main", "contrib"]);
    assert_eq!(s.key, Some(KeySource::File("keys/local.asc".into())));
    assert_eq!(
        resource::describe(&StepKind::AptRepository(s)),
        "apt_repository local"
    );

    let s = build(&format!(
        "name = \"vendor\"\nuris = {{ data = \"repo.uris\" }}\nsuites = {{ data = \"repo.suite\" }}\ncomponents = \"main\"\narchitectures = \"amd64\"\nkey_url = \"https://apt.example.org/key\"\nkey_sha256 = \"{}\"\n",
        KEY_SHA.to_uppercase()
    ))
    .unwrap();
    assert_eq!(s.uris.len(), 2);
    assert_eq!(s.suites, ["stable"]);
    assert_eq!(s.architectures, ["amd64"]);
    assert_eq!(
        s.key,
        Some(KeySource::Url {
            url: "https://apt.example.org/key".into(),
            sha256: KEY_SHA.into()
        })
    );

    let s = build("name = \"old\"\nstate = \"absent\"\n").unwrap();
    assert_eq!((s.state, s.key), (Presence::Absent, None));

    let s = build("name = \"stand-ins\"\nuris = \"file:/srv/infra-stage/apt\"\nsuites = \"./\"\ntrusted = true\n").unwrap();
    assert_eq!(s.uris, ["file:/srv/infra-stage/apt"]);
    assert_eq!(s.key, Some(KeySource::Trusted));
}

#[test]
fn bad_combinations_are_refused_with_a_hint() {
    let base = "uris = \"http://x.example/debian\"\nsuites = \"stable\"\ncomponents = \"main\"\n";
    let cases: Vec<(String, &str)> = vec![
        (format!("name = \"../x\"\n{base}key_source = \"keys/local.asc\"\n"), "apt would not read as a file name"),
        (format!("name = \".x\"\n{base}key_source = \"keys/local.asc\"\n"), "apt would not read as a file name"),
        (format!("name = \"x\"\n{base}"), "needs its signing key"),
        (
            format!("name = \"x\"\n{base}key_source = \"keys/local.asc\"\nkey_url = \"https://k.example/key\"\n"),
            "not both",
        ),
        (format!("name = \"x\"\n{base}key_url = \"https://k.example/key\"\n"), "needs `key_sha256`"),
        (format!("name = \"x\"\n{base}key_url = \"ftp://k.example/key\"\nkey_sha256 = \"{KEY_SHA}\"\n"), "only http:// and https://"),
        (format!("name = \"x\"\n{base}key_source = \"keys/local.asc\"\nkey_sha256 = \"{KEY_SHA}\"\n"), "only allowed with `key_url`"),
        (format!("name = \"x\"\n{base}key_url = \"https://k.example/key\"\nkey_sha256 = \"abc\"\n"), "not 64 hexadecimal digits"),
        (format!("name = \"x\"\n{base}key_source = \"keys/missing.asc\"\n"), "files/keys/missing.asc does not exist"),
        ("name = \"x\"\nsuites = \"stable\"\ncomponents = \"main\"\nkey_source = \"keys/local.asc\"\n".to_owned(), "needs `uris`"),
        ("name = \"x\"\nuris = \"http://x.example/debian\"\ncomponents = \"main\"\nkey_source = \"keys/local.asc\"\n".to_owned(), "needs `suites`"),
        ("name = \"x\"\nuris = \"http://x.example/debian\"\nsuites = \"stable\"\nkey_source = \"keys/local.asc\"\n".to_owned(), "needs `components`"),
        ("name = \"x\"\nuris = \"http://x.example/debian\"\nsuites = \"./\"\ncomponents = \"main\"\nkey_source = \"keys/local.asc\"\n".to_owned(), "not allowed when the suite is an exact path"),
        ("name = \"x\"\nuris = \"x.example\"\nsuites = \"stable\"\ncomponents = \"main\"\nkey_source = \"keys/local.asc\"\n".to_owned(), "is not a URI"),
        ("name = \"x\"\nuris = \"http://x.example/debian\"\nsuites = \"stable main\"\ncomponents = \"main\"\nkey_source = \"keys/local.asc\"\n".to_owned(), "contains white space"),
        (format!("name = \"x\"\n{base}architectures = [\"AMD64\"]\nkey_source = \"keys/local.asc\"\n"), "is not an architecture"),
        ("name = \"x\"\nstate = \"absent\"\nkey_source = \"keys/local.asc\"\n".to_owned(), "`key_source` is not allowed with state = \"absent\""),
        ("name = \"x\"\nuris = 3\n".to_owned(), "a string or an array of strings"),
        (format!("name = \"x\"\n{base}trusted = true\n"), "only allowed for file: URIs"),
        ("name = \"x\"\nuris = [\"file:/srv/apt\", \"http://x.example/debian\"]\nsuites = \"./\"\ntrusted = true\n".to_owned(), "\"http://x.example/debian\" is not one"),
        ("name = \"x\"\nuris = \"file:/srv/apt\"\nsuites = \"./\"\ntrusted = true\nkey_source = \"keys/local.asc\"\n".to_owned(), "`key_source` is not allowed with trusted = true"),
        ("name = \"x\"\nuris = \"file:/srv/apt\"\nsuites = \"./\"\ntrusted = false\n".to_owned(), "needs its signing key"),
        ("name = \"x\"\nstate = \"absent\"\ntrusted = true\n".to_owned(), "`trusted` is not allowed with state = \"absent\""),
        ("name = \"x\"\nuris = \"file:/srv/apt\"\nsuites = \"./\"\ntrusted = \"yes\"\n".to_owned(), "true or false"),
    ];
    for (keys, wanted) in &cases {
        match build(keys) {
            Ok(s) => panic!("{keys:?}: accepted as {s:?}"),
            Err(e) => {
                assert!(e.contains(wanted), "{keys:?}: {e:?} lacks {wanted:?}");
                assert!(e.contains("hint"), "{keys:?}: {e}");
            }
        }
    }
}
