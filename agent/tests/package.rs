//! The `package` step against `FakeHost`: what it reads, which commands it runs (exact
//! argv), when it refreshes the package lists, and how it checks its own work; and
//! how the loader validates its keys.

mod support;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use infra_agent::catalog;
use infra_agent::facts::Facts;
use infra_agent::host::fake::Node;
use infra_agent::host::{FakeHost, Host as _};
use infra_agent::process::CmdOutput;
use infra_agent::resource::{self, ChangeKind, Ctx, Plan, Settings};
use infra_agent::state_repo::infra_toml::Version;
use infra_agent::state_repo::{self, DirSource};
use infra_agent::step::StepKind;
use infra_agent::step::package::{
    DebSource, PackageName, PackageState, PackageStep, UpdateLists, Upgrade,
};

const STATUS: &str = "/var/lib/dpkg/status";
const LISTS: &str = "/var/lib/apt/lists";
const PARTIAL: &str = "/var/lib/apt/lists/partial";
const LOG: &str = "/run/infra-agent/packages.log";
const DEB_SHA: &str = "3d076904f1c7721f184d00a17a52c8d90f04d60d4eb8da39db985229ba77c562";

/// A dpkg status file with dpkg itself (amd64) and `installed` (name, version).
fn status(installed: &[(&str, &str)]) -> String {
    let mut text =
        "Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.21.22\n"
            .to_owned();
    for (name, version) in installed {
        let _ = write!(
            text,
            "\nPackage: {name}\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: {version}\nDescription: {name}\n a package\n"
        );
    }
    text
}

fn file(content: &str) -> Node {
    Node::File {
        content: content.as_bytes().to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

fn facts(systemd: bool) -> Facts {
    let mut f = Facts::placeholder("test-host");
    f.systemd = systemd;
    f
}

/// A Debian host with `installed`, package lists refreshed `lists_age` ago, no nala,
/// no systemd.
fn host(installed: &[(&str, &str)], lists_age: Duration) -> FakeHost {
    let when = SystemTime::now() - lists_age;
    FakeHost::new()
        .with_file(STATUS, status(installed), 0o644)
        .with_dir("/var/lib/dpkg/updates", 0o755)
        .with_file(
            format!("{LISTS}/mirror.example_debian_dists_bookworm_main_binary-amd64_Packages.lz4"),
            "",
            0o644,
        )
        .with_dir(PARTIAL, 0o700)
        .with_dir("/run", 0o755)
        .with_dir("/var/cache", 0o755)
        .with_mtime(LISTS, when)
        .with_mtime(PARTIAL, when)
        .with_facts(facts(false))
}

const FRESH: Duration = Duration::from_mins(10);
const STALE: Duration = Duration::from_hours(3);

fn with_nala(host: FakeHost) -> FakeHost {
    host.with_file("/usr/bin/nala", "#!/usr/bin/python3\n", 0o755)
}

/// Every transaction program (direct or wrapped) makes the status file `after`.
fn installs(host: FakeHost, after: &[(&str, &str)]) -> FakeHost {
    let text = status(after);
    let mut host = host;
    for program in ["apt-get", "nala", "systemd-run"] {
        let text = text.clone();
        host = host.with_command_effect(program, move |h, cmd| {
            // Simulations only read.
            if !cmd.args.iter().any(|a| a == "-s") {
                h.set_node(STATUS, Some(file(&text)));
            }
            ok("")
        });
    }
    host
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

fn names(list: &[&str]) -> Vec<PackageName> {
    list.iter()
        .map(|n| PackageName::parse(n).expect("a valid package name"))
        .collect()
}

fn step(list: &[&str]) -> PackageStep {
    PackageStep {
        names: names(list),
        state: PackageState::Present,
        no_recommends: false,
        update_lists: UpdateLists::Auto,
        upgrade: Upgrade::None,
        deb: None,
        sha256: None,
        prune: false,
    }
}

const REPO_FILES: &[(&str, &[u8])] = &[("debs/infra-hello_1.0-1_all.deb", b"!<arch>\ndebian")];

fn files(path: &str) -> Result<Vec<u8>, String> {
    REPO_FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, b)| b.to_vec())
        .ok_or_else(|| format!("{path}: no such file"))
}

fn ctx<'a>(
    host: &'a FakeHost,
    dry_run: bool,
    prefer_apt: bool,
    reader: &'a dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Ctx<'a> {
    let mut ctx = Ctx::new(host, dry_run, None, reader);
    ctx.settings = Settings {
        prefer_apt,
        apt_lists_max_age: Duration::from_hours(1),
        ..Settings::default()
    };
    ctx
}

/// The command lines run, program first.
fn argvs(host: &FakeHost) -> Vec<Vec<String>> {
    host.commands()
        .iter()
        .map(|c| {
            let mut v = vec![c.program.clone()];
            v.extend(c.args.iter().cloned());
            v
        })
        .collect()
}

fn plan_of(step: &PackageStep, ctx: &Ctx<'_>) -> Plan {
    resource::plan(&StepKind::Package(step.clone()), ctx).expect("plan")
}

fn apply(step: &PackageStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), resource::Error> {
    resource::apply(&StepKind::Package(step.clone()), plan, ctx)
}

fn summary(plan: &Plan) -> Vec<String> {
    plan.changes.iter().map(ToString::to_string).collect()
}

const APT_INSTALL: &str = "apt-get install -y -q --no-remove -o APT::Get::AutomaticRemove=false";
const NALA_INSTALL: &str = "nala install -y --no-autoremove";
const OPTS: &str = "-o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";
const WRAP: &str = "systemd-run --wait --collect --quiet --service-type=exec --description=infra-agent§package§transaction --property=StandardOutput=append:/run/infra-agent/packages.log --property=StandardError=inherit --setenv=DEBIAN_FRONTEND=noninteractive --";

/// `words` of a command line where `§` stands for a space inside one argument.
fn argv(line: &str) -> Vec<String> {
    line.split_whitespace()
        .map(|w| w.replace('§', " "))
        .collect()
}

// ---------------------------------------------------------------------------------
// In sync: nothing runs

#[test]
fn in_sync_runs_no_command_and_names_the_versions() {
    let installed = [("zsh", "5.9-4+b2"), ("ripgrep", "13.0.0-4")];
    // Stale lists and nala present change nothing when nothing is missing.
    let host = with_nala(host(&installed, STALE));
    let reader = files;
    let ctx = ctx(&host, false, false, &reader);
    let plan = plan_of(&step(&["zsh", "ripgrep"]), &ctx);
    assert!(plan.is_in_sync(), "{plan:#?}");
    assert_eq!(plan.in_sync, "zsh 5.9-4+b2, ripgrep 13.0.0-4 are installed");
    let plan = plan_of(&step(&["zsh=5.9-4+b2"]), &ctx);
    assert_eq!(plan.in_sync, "zsh 5.9-4+b2 is installed");
    let mut absent = step(&["nano", "vim"]);
    absent.state = PackageState::Absent;
    assert_eq!(
        plan_of(&absent, &ctx).in_sync,
        "nano, vim are not installed"
    );
    assert!(host.commands().is_empty(), "{:?}", argvs(&host));
    assert!(host.mutations().is_empty(), "{:?}", host.mutations());
}

#[test]
fn the_database_is_read_once_per_run() {
    let host = host(&[("zsh", "5.9-4+b2")], FRESH);
    let reader = files;
    let ctx = ctx(&host, false, false, &reader);
    assert!(plan_of(&step(&["zsh"]), &ctx).is_in_sync());
    // Another actor changes the database: this run keeps what it read ...
    host.set_node(STATUS, Some(file(&status(&[]))));
    assert!(plan_of(&step(&["zsh"]), &ctx).is_in_sync());
    // ... until something forgets it (a transaction does).
    ctx.forget("dpkg");
    assert!(!plan_of(&step(&["zsh"]), &ctx).is_in_sync());
}

#[test]
fn no_dpkg_is_a_clear_error() {
    let host = FakeHost::new();
    let reader = files;
    let ctx = ctx(&host, false, false, &reader);
    let err = resource::plan(&StepKind::Package(step(&["zsh"])), &ctx).unwrap_err();
    assert!(err.to_string().contains("Debian or Ubuntu"), "{err}");
}

// ---------------------------------------------------------------------------------
// Missing packages: one transaction, exact argv

#[allow(
    clippy::struct_excessive_bools,
    reason = "a table row of independent switches"
)]
struct TxCase {
    name: &'static str,
    nala: bool,
    prefer_apt: bool,
    systemd: bool,
    no_recommends: bool,
    expect: String,
}

/// Regression: docker.io's postinst created the group `docker`, but a later `user`
/// step of the same run (the example's `admin-docker-group`) still saw /etc/group as
/// it was before the transaction and failed with "group docker does not exist".
#[test]
fn users_and_groups_are_read_again_after_a_transaction() {
    // No systemd and no nala: the transaction is apt-get's.
    let host = host(&[], FRESH)
        .with_file("/etc/group", "root:x:0:\n", 0o644)
        .with_command_effect("apt-get", |h, cmd| {
            if !cmd.args.iter().any(|a| a == "-s") {
                h.set_node(STATUS, Some(file(&status(&[("docker.io", "20.10")]))));
                h.set_node("/etc/group", Some(file("root:x:0:\ndocker:x:998:\n")));
            }
            ok("")
        });
    let ctx = ctx(&host, false, false, &files);
    let groups = |ctx: &Ctx<'_>| -> Vec<String> {
        resource::user::group_db(ctx)
            .expect("/etc/group reads")
            .iter()
            .map(|g| g.name.clone())
            .collect()
    };
    assert_eq!(groups(&ctx), ["root"]);
    let docker = step(&["docker.io"]);
    let plan = plan_of(&docker, &ctx);
    apply(&docker, &plan, &ctx).expect("the transaction applies");
    assert_eq!(groups(&ctx), ["root", "docker"]);
}

#[test]
fn missing_packages_are_installed_in_one_transaction() {
    let cases = [
        TxCase {
            name: "apt-get without nala",
            nala: false,
            prefer_apt: false,
            systemd: false,
            no_recommends: false,
            expect: format!("{APT_INSTALL} {OPTS} ripgrep fzf"),
        },
        TxCase {
            name: "nala where installed",
            nala: true,
            prefer_apt: false,
            systemd: false,
            no_recommends: true,
            expect: format!("{NALA_INSTALL} --no-install-recommends {OPTS} ripgrep fzf"),
        },
        TxCase {
            name: "agent.toml prefers apt",
            nala: true,
            prefer_apt: true,
            systemd: false,
            no_recommends: true,
            expect: format!("{APT_INSTALL} --no-install-recommends {OPTS} ripgrep fzf"),
        },
        TxCase {
            name: "nala in a transient unit under systemd",
            nala: true,
            prefer_apt: false,
            systemd: true,
            no_recommends: false,
            expect: format!("{WRAP} {NALA_INSTALL} {OPTS} ripgrep fzf"),
        },
        TxCase {
            name: "apt-get in a transient unit under systemd",
            nala: false,
            prefer_apt: false,
            systemd: true,
            no_recommends: false,
            expect: format!("{WRAP} {APT_INSTALL} {OPTS} ripgrep fzf"),
        },
    ];
    let after = [
        ("zsh", "5.9-4+b2"),
        ("ripgrep", "13.0.0-4"),
        ("fzf", "0.38.0-1"),
    ];
    for case in cases {
        let mut h = host(&[("zsh", "5.9-4+b2")], FRESH).with_facts(facts(case.systemd));
        if case.nala {
            h = with_nala(h);
        }
        let h = installs(h, &after);
        let reader = files;
        let ctx = ctx(&h, false, case.prefer_apt, &reader);
        let mut s = step(&["zsh", "ripgrep", "fzf"]);
        s.no_recommends = case.no_recommends;
        let plan = plan_of(&s, &ctx);
        assert_eq!(
            summary(&plan),
            ["create package ripgrep", "create package fzf"],
            "{}",
            case.name
        );
        assert!(h.commands().is_empty(), "{}: plan ran commands", case.name);
        apply(&s, &plan, &ctx).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(argvs(&h), [argv(&case.expect)], "{}", case.name);
        let cmd = &h.commands()[0];
        if case.systemd {
            assert!(cmd.env.is_empty(), "{}: {:?}", case.name, cmd.env);
            assert_eq!(
                h.node("/run/infra-agent").map(|n| n.to_string()),
                Some("dir 0700 0:0".to_owned()),
                "{}",
                case.name
            );
        } else {
            assert_eq!(
                cmd.env,
                [("DEBIAN_FRONTEND".to_owned(), "noninteractive".to_owned())],
                "{}",
                case.name
            );
        }
        // The engine's re-plan in the same run sees the new state.
        let again = plan_of(&s, &ctx);
        assert_eq!(
            again.in_sync, "zsh 5.9-4+b2, ripgrep 13.0.0-4, fzf 0.38.0-1 are installed",
            "{}",
            case.name
        );
        assert_eq!(h.commands().len(), 1, "{}", case.name);
    }
}

#[test]
fn a_pinned_version_is_installed_with_downgrades_allowed() {
    let h = installs(host(&[("zsh", "5.9-4+b2")], FRESH), &[("zsh", "5.9-4")]);
    let reader = files;
    let ctx = ctx(&h, false, false, &reader);
    let s = step(&["zsh=5.9-4"]);
    let plan = plan_of(&s, &ctx);
    assert_eq!(summary(&plan), ["content package zsh: 5.9-4+b2 -> 5.9-4"]);
    apply(&s, &plan, &ctx).unwrap();
    assert_eq!(
        argvs(&h),
        [argv(&format!(
            "{APT_INSTALL} --allow-downgrades {OPTS} zsh=5.9-4"
        ))]
    );
    assert!(plan_of(&s, &ctx).is_in_sync());
}

#[test]
fn a_transaction_that_installs_nothing_fails_with_its_output() {
    // nala reports success whatever happened; the database says otherwise.
    let h = with_nala(host(&[], FRESH)).with_command(
        "nala",
        ok("Error: zsh-tools not found\nFinished Successfully\n"),
    );
    let reader = files;
    let ctx = ctx(&h, false, false, &reader);
    let s = step(&["zsh-tools"]);
    let plan = plan_of(&s, &ctx);
    let err = apply(&s, &plan, &ctx).unwrap_err().to_string();
    assert!(
        err.contains("nala finished, but zsh-tools is still not installed"),
        "{err}"
    );
    assert!(err.contains("Error: zsh-tools not found"), "{err}");
}

#[test]
fn a_failure_under_systemd_shows_the_end_of_the_units_output() {
    let h = host(&[], FRESH)
        .with_facts(facts(true))
        .with_file(LOG, "old transaction output\n", 0o600)
        .with_command_effect("systemd-run", |h, _| {
            let mut log = h.file(LOG).map(|f| f.0).unwrap_or_default();
            log.extend_from_slice(
                b"Reading package lists...\nE: Unable to locate package nosuch\n",
            );
            h.set_node(
                LOG,
                Some(Node::File {
                    content: log,
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                }),
            );
            fail(100, "")
        });
    let reader = files;
    let ctx = ctx(&h, false, false, &reader);
    let s = step(&["nosuch"]);
    let plan = plan_of(&s, &ctx);
    let err = apply(&s, &plan, &ctx).unwrap_err().to_string();
    assert!(err.contains("failed (exit code 100)"), "{err}");
    assert!(err.contains("E: Unable to locate package nosuch"), "{err}");
    assert!(!err.contains("old transaction output"), "{err}");
}

#[test]
fn a_held_dpkg_lock_fails_naming_the_lock_and_its_holder() {
    let lock = "Error: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr)\n\
                Error: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend)\n\
                Finished Successfully\n";
    // nala exits 0 even then.
    let h = with_nala(host(&[], FRESH)).with_command("nala", ok(lock));
    let reader = files;
    let mut ctx = ctx(&h, false, false, &reader);
    // nala does not wait for the lock (regression: it gave up at once): the agent
    // tries it again every 2 s until apt_lock_timeout (3 s: once).
    ctx.settings.apt_lock_timeout = Duration::from_secs(3);
    let s = step(&["zsh"]);
    let plan = plan_of(&s, &ctx);
    let err = apply(&s, &plan, &ctx).unwrap_err().to_string();
    assert!(
        err.contains(
            "the dpkg lock /var/lib/dpkg/lock-frontend is held by process 4242 (unattended-upgr); gave up after waiting up to 3 s"
        ),
        "{err}"
    );
    let installs = argvs(&h)
        .iter()
        .filter(|a| a.iter().any(|w| w == "install"))
        .count();
    assert_eq!(
        installs,
        2,
        "nala is tried again once within 3 s: {:?}",
        argvs(&h)
    );
}

#[test]
fn a_transaction_that_removes_an_unnamed_package_fails() {
    let h = with_nala(installs(
        host(&[("exim4", "4.96-15")], FRESH),
        &[("postfix", "3.7.10-0")],
    ));
    let reader = files;
    let ctx = ctx(&h, false, false, &reader);
    let s = step(&["postfix"]);
    let plan = plan_of(&s, &ctx);
    let err = apply(&s, &plan, &ctx).unwrap_err().to_string();
    assert!(
        err.contains("nala removed exim4, which this step did not ask for"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------
// Package lists

struct ListsCase {
    name: &'static str,
    age: Duration,
    update_lists: UpdateLists,
    /// The lists directory has no index (a fresh container).
    no_index: bool,
    /// The reason shown, when a refresh is expected.
    refresh: Option<&'static str>,
}

#[test]
fn lists_are_refreshed_by_age_and_setting() {
    let cases = [
        ListsCase {
            name: "fresh",
            age: FRESH,
            update_lists: UpdateLists::Auto,
            no_index: false,
            refresh: None,
        },
        ListsCase {
            name: "older than apt_lists_max_age",
            age: STALE,
            update_lists: UpdateLists::Auto,
            no_index: false,
            refresh: Some("last refreshed 3 h ago (apt_lists_max_age 60 min)"),
        },
        ListsCase {
            name: "never",
            age: STALE,
            update_lists: UpdateLists::Never,
            no_index: false,
            refresh: None,
        },
        ListsCase {
            name: "always",
            age: FRESH,
            update_lists: UpdateLists::Always,
            no_index: false,
            refresh: Some("update_lists = \"always\""),
        },
        ListsCase {
            name: "no index at all",
            age: FRESH,
            update_lists: UpdateLists::Auto,
            no_index: true,
            refresh: Some("there are no package lists"),
        },
    ];
    for case in cases {
        let h = host(&[], case.age);
        if case.no_index {
            h.set_node(
                format!(
                    "{LISTS}/mirror.example_debian_dists_bookworm_main_binary-amd64_Packages.lz4"
                ),
                None,
            );
        }
        let h = installs(h, &[("zsh", "5.9-4+b2")]);
        let reader = files;
        let ctx = ctx(&h, false, false, &reader);
        let mut s = step(&["zsh"]);
        s.update_lists = case.update_lists;
        let plan = plan_of(&s, &ctx);
        let mut want_plan = Vec::new();
        let mut want_argv = Vec::new();
        if let Some(reason) = case.refresh {
            want_plan.push(format!("content apt package lists: {reason} -> refreshed"));
            want_argv.push(argv("apt-get update -q -o DPkg::Lock::Timeout=120"));
        }
        want_plan.push("create package zsh".to_owned());
        want_argv.push(argv(&format!("{APT_INSTALL} {OPTS} zsh")));
        assert_eq!(summary(&plan), want_plan, "{}", case.name);
        apply(&s, &plan, &ctx).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(argvs(&h), want_argv, "{}", case.name);
        // Refreshed once per run: the re-plan does not ask again, even for "always".
        assert!(plan_of(&s, &ctx).is_in_sync(), "{}", case.name);
    }
}

#[test]
fn the_partial_directory_counts_as_the_last_refresh() {
    // An update that found nothing new leaves lists/ alone but works in lists/partial.
    let h = host(&[], STALE);
    h.set_mtime(PARTIAL, SystemTime::now() - FRESH);
    let reader = files;
    let ctx = ctx(&h, true, false, &reader);
    assert_eq!(
        summary(&plan_of(&step(&["zsh"]), &ctx)),
        ["create package zsh"]
    );
}

#[test]
fn nala_refreshes_with_nala_and_a_changed_source_forces_a_refresh() {
    let h = installs(with_nala(host(&[], FRESH)), &[("zsh", "5.9-4+b2")]);
    let reader = files;
    let ctx = ctx(&h, false, false, &reader);
    resource::package::sources_changed(&ctx).unwrap();
    let s = step(&["zsh"]);
    let plan = plan_of(&s, &ctx);
    assert_eq!(
        summary(&plan),
        [
            "content apt package lists: the apt sources changed in this run -> refreshed",
            "create package zsh"
        ]
    );
    apply(&s, &plan, &ctx).unwrap();
    assert_eq!(
        argvs(&h),
        [
            argv("nala update -o DPkg::Lock::Timeout=120"),
            argv(&format!("{NALA_INSTALL} {OPTS} zsh"))
        ]
    );
}

// ---------------------------------------------------------------------------------
// absent and latest

#[test]
fn absent_removes_only_what_it_names() {
    // Removing `foo` alone.
    let h =
        host(&[("foo", "1.0"), ("bar", "2.0")], STALE).with_command_effect("apt-get", |h, cmd| {
            if cmd.args[0] == "-s" {
                return ok("Remv foo [1.0]\n");
            }
            h.set_node(STATUS, Some(file(&status(&[("bar", "2.0")]))));
            ok("")
        });
    let reader = files;
    let ctx = ctx(&h, false, false, &reader);
    let mut s = step(&["foo", "baz"]);
    s.state = PackageState::Absent;
    let plan = plan_of(&s, &ctx);
    // No list refresh for a removal, however old the lists.
    assert_eq!(summary(&plan), ["remove package foo"]);
    assert_eq!(plan.changes[0].before.as_deref(), Some("1.0"));
    assert_eq!(plan.changes[0].kind, ChangeKind::Remove);
    apply(&s, &plan, &ctx).unwrap();
    assert_eq!(
        argvs(&h),
        [
            argv("apt-get -s -q -o Debug::NoLocking=true remove foo"),
            argv(
                "apt-get remove -y -q -o APT::Get::AutomaticRemove=false -o DPkg::Lock::Timeout=120 foo"
            ),
        ]
    );
    assert_eq!(plan_of(&s, &ctx).in_sync, "foo, baz are not installed");

    // Removing `bar` would take `baz-plugin` with it: refused, nothing removed.
    let h = host(&[("bar", "2.0"), ("bar-plugin", "2.0")], FRESH)
        .with_command("apt-get", ok("Remv bar-plugin [2.0]\nRemv bar [2.0]\n"));
    let ctx = ctx_for(&h, &reader);
    let mut s = step(&["bar"]);
    s.state = PackageState::Absent;
    let plan = plan_of(&s, &ctx);
    let err = apply(&s, &plan, &ctx).unwrap_err().to_string();
    assert!(
        err.contains("removing bar would also remove bar-plugin, which this step does not name; nothing was removed"),
        "{err}"
    );
    assert_eq!(h.commands().len(), 1, "{:?}", argvs(&h));
}

fn ctx_for<'a>(h: &'a FakeHost, reader: &'a dyn Fn(&str) -> Result<Vec<u8>, String>) -> Ctx<'a> {
    ctx(h, false, false, reader)
}

#[test]
fn nala_removes_without_autoremove() {
    let h = with_nala(host(&[("foo", "1.0")], FRESH))
        .with_command_effect("apt-get", |_, _| ok("Remv foo [1.0]\n"));
    let h = h.with_command_effect("nala", |h, _| {
        h.set_node(STATUS, Some(file(&status(&[]))));
        ok("")
    });
    let reader = files;
    let ctx = ctx_for(&h, &reader);
    let mut s = step(&["foo"]);
    s.state = PackageState::Absent;
    let plan = plan_of(&s, &ctx);
    apply(&s, &plan, &ctx).unwrap();
    assert_eq!(
        argvs(&h)[1],
        argv("nala remove -y --no-autoremove -o DPkg::Lock::Timeout=120 foo")
    );
}

const POLICY: &str = "\
zsh:
  Installed: 5.9-4
  Candidate: 5.9-4+b2
  Version table:
     5.9-4+b2 500
ripgrep:
  Installed: 13.0.0-4
  Candidate: 13.0.0-4
fzf:
  Installed: (none)
  Candidate: 0.38.0-1
";

#[test]
fn latest_upgrades_to_the_candidate() {
    let h = host(&[("zsh", "5.9-4"), ("ripgrep", "13.0.0-4")], FRESH)
        .with_command("apt-cache", ok(POLICY));
    let h = installs(
        h,
        &[
            ("zsh", "5.9-4+b2"),
            ("ripgrep", "13.0.0-4"),
            ("fzf", "0.38.0-1"),
        ],
    );
    let reader = files;
    let ctx = ctx_for(&h, &reader);
    let mut s = step(&["zsh", "ripgrep", "fzf"]);
    s.state = PackageState::Latest;
    let plan = plan_of(&s, &ctx);
    assert_eq!(
        summary(&plan),
        [
            "content package zsh: 5.9-4 -> 5.9-4+b2",
            "create package fzf: 0.38.0-1"
        ]
    );
    // apt-cache policy is the one command a plan of `latest` runs.
    assert_eq!(argvs(&h), [argv("apt-cache policy zsh ripgrep fzf")]);
    assert_eq!(h.commands()[0].env, [("LC_ALL".to_owned(), "C".to_owned())]);
    h.clear_log();
    apply(&s, &plan, &ctx).unwrap();
    assert_eq!(
        argvs(&h),
        [
            argv("apt-cache policy zsh ripgrep fzf"),
            argv(&format!("{APT_INSTALL} {OPTS} zsh fzf"))
        ]
    );
}

#[test]
fn latest_in_sync_and_with_stale_lists() {
    let policy = "zsh:\n  Installed: 5.9-4+b2\n  Candidate: 5.9-4+b2\n";
    let h = host(&[("zsh", "5.9-4+b2")], FRESH).with_command("apt-cache", ok(policy));
    let reader = files;
    let ctx = ctx_for(&h, &reader);
    let mut s = step(&["zsh"]);
    s.state = PackageState::Latest;
    let plan = plan_of(&s, &ctx);
    assert_eq!(
        plan.in_sync,
        "zsh 5.9-4+b2 is installed at its candidate version"
    );

    // Stale lists: `latest` refreshes them even though nothing looks outdated, then
    // installs only if the refreshed lists show something newer.
    let h = host(&[("zsh", "5.9-4+b2")], STALE).with_command("apt-cache", ok(policy));
    let ctx = ctx_for(&h, &reader);
    let plan = plan_of(&s, &ctx);
    assert_eq!(
        summary(&plan),
        [
            "content apt package lists: last refreshed 3 h ago (apt_lists_max_age 60 min) -> refreshed"
        ]
    );
    apply(&s, &plan, &ctx).unwrap();
    assert_eq!(
        argvs(&h),
        [
            argv("apt-cache policy zsh"),
            argv("apt-get update -q -o DPkg::Lock::Timeout=120"),
            argv("apt-cache policy zsh"),
        ]
    );
    assert!(plan_of(&s, &ctx).is_in_sync());
}

// ---------------------------------------------------------------------------------
// System upgrade

#[test]
fn upgrade_simulates_in_plan_and_upgrades_in_apply() {
    let sim = "Inst base-files [12.4+deb12u11] (12.4+deb12u15 Debian:12.15/oldstable [amd64])\n\
               Conf base-files (12.4+deb12u15 Debian:12.15/oldstable [amd64])\n";
    let h = host(&[("base-files", "12.4+deb12u11")], FRESH).with_command_effect(
        "apt-get",
        move |h, cmd| {
            if cmd.args[0] == "-s" {
                let text = String::from_utf8_lossy(&h.file(STATUS).unwrap().0).into_owned();
                return ok(if text.contains("deb12u11") { sim } else { "" });
            }
            h.set_node(
                STATUS,
                Some(file(&status(&[("base-files", "12.4+deb12u15")]))),
            );
            ok("")
        },
    );
    let reader = files;
    let ctx = ctx_for(&h, &reader);
    let mut s = step(&[]);
    s.upgrade = Upgrade::DistUpgrade;
    assert_eq!(
        resource::describe(&StepKind::Package(s.clone())),
        "package dist-upgrade"
    );
    let plan = plan_of(&s, &ctx);
    assert_eq!(
        summary(&plan),
        ["content package base-files: 12.4+deb12u11 -> 12.4+deb12u15"]
    );
    apply(&s, &plan, &ctx).unwrap();
    assert_eq!(
        argvs(&h),
        [
            argv("apt-get -s -q -o Debug::NoLocking=true dist-upgrade"),
            argv("apt-get -s -q -o Debug::NoLocking=true dist-upgrade"),
            argv(&format!(
                "apt-get dist-upgrade -y -q -o APT::Get::AutomaticRemove=false {OPTS}"
            )),
        ]
    );
    assert_eq!(plan_of(&s, &ctx).in_sync, "nothing to dist-upgrade");
}

// ---------------------------------------------------------------------------------
// .deb files

fn deb_step(source: DebSource, sha256: Option<&str>) -> PackageStep {
    PackageStep {
        deb: Some(source),
        sha256: sha256.map(str::to_owned),
        ..step(&["infra-hello"])
    }
}

const DEB_PATH: &str = "/var/cache/infra-agent/infra-hello.deb";

#[test]
fn a_deb_from_files_is_checked_installed_and_cleaned_up() {
    let h = installs(host(&[], FRESH), &[("infra-hello", "1.0-1")])
        .with_command("sha256sum", ok(&format!("{DEB_SHA}  {DEB_PATH}\n")))
        .with_command("dpkg-deb", ok("Package: infra-hello\nVersion: 1.0-1\n"));
    let reader = files;
    let ctx = ctx_for(&h, &reader);
    let s = deb_step(
        DebSource::File("debs/infra-hello_1.0-1_all.deb".into()),
        Some(DEB_SHA),
    );
    let plan = plan_of(&s, &ctx);
    assert_eq!(
        summary(&plan),
        ["create package infra-hello (from files/debs/infra-hello_1.0-1_all.deb)"]
    );
    assert!(h.commands().is_empty());
    apply(&s, &plan, &ctx).unwrap();
    assert_eq!(
        argvs(&h),
        [
            argv(&format!("sha256sum -- {DEB_PATH}")),
            argv(&format!("dpkg-deb --field {DEB_PATH} Package Version")),
            argv(&format!("{APT_INSTALL} {OPTS} {DEB_PATH}")),
        ]
    );
    assert_eq!(h.node(DEB_PATH), None, "the .deb is removed afterwards");
    assert!(plan_of(&s, &ctx).is_in_sync());
}

#[test]
fn a_deb_with_the_wrong_sha256_installs_nothing() {
    let wrong = "0".repeat(64);
    // From files/: sha256sum disagrees.
    let h = host(&[], FRESH).with_command("sha256sum", ok(&format!("{DEB_SHA}  {DEB_PATH}\n")));
    let reader = files;
    let ctx = ctx_for(&h, &reader);
    let s = deb_step(
        DebSource::File("debs/infra-hello_1.0-1_all.deb".into()),
        Some(&wrong),
    );
    let plan = plan_of(&s, &ctx);
    let err = apply(&s, &plan, &ctx).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "has sha256 {DEB_SHA}, but the step says {wrong}; nothing was installed"
        )),
        "{err}"
    );
    assert_eq!(argvs(&h), [argv(&format!("sha256sum -- {DEB_PATH}"))]);
    assert_eq!(h.node(DEB_PATH), None);

    // From a URL: apt's downloader checks the hash and fails.
    let h = host(&[], FRESH).with_command(
        "/usr/lib/apt/apt-helper",
        fail(
            100,
            "Err:1 https://example.org/infra-hello.deb\n  Hash Sum mismatch\nE: Download Failed\n",
        ),
    );
    let ctx = ctx_for(&h, &reader);
    let url = "https://example.org/infra-hello.deb";
    let s = deb_step(DebSource::Url(url.into()), Some(&wrong));
    let plan = plan_of(&s, &ctx);
    let err = apply(&s, &plan, &ctx).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "downloading {url} failed: its sha256 is not {wrong}; nothing was installed"
        )),
        "{err}"
    );
    assert_eq!(
        argvs(&h),
        [argv(&format!(
            "/usr/lib/apt/apt-helper download-file {url} {DEB_PATH} SHA256:{wrong}"
        ))]
    );
}

#[test]
fn a_deb_containing_another_package_installs_nothing() {
    let h = host(&[], FRESH).with_command("dpkg-deb", ok("Package: other\nVersion: 2\n"));
    let reader = files;
    let ctx = ctx_for(&h, &reader);
    let s = deb_step(
        DebSource::File("debs/infra-hello_1.0-1_all.deb".into()),
        None,
    );
    let plan = plan_of(&s, &ctx);
    let err = apply(&s, &plan, &ctx).unwrap_err().to_string();
    assert!(
        err.contains("the .deb contains package other 2, but `names` says infra-hello"),
        "{err}"
    );
    assert_eq!(h.commands().len(), 1);
    assert_eq!(h.node(DEB_PATH), None);
}

// ---------------------------------------------------------------------------------
// An interrupted dpkg

#[test]
fn an_interrupted_dpkg_is_read_through_dpkg_query_and_repaired_first() {
    let query = "dpkg\tamd64\tinstall ok installed\t1.21.22\n\
                 zsh\tamd64\tinstall ok half-configured\t5.9-4+b2\n";
    let h = host(&[("zsh", "5.9-4+b2")], FRESH)
        .with_file("/var/lib/dpkg/updates/0003", "Package: zsh\n", 0o644)
        .with_command("dpkg-query", ok(query))
        .with_command_effect("dpkg", |h, _| {
            h.set_node("/var/lib/dpkg/updates/0003", None);
            h.set_node(STATUS, Some(file(&status(&[("zsh", "5.9-4+b2")]))));
            ok("")
        });
    let reader = files;
    let ctx = ctx_for(&h, &reader);
    let s = step(&["zsh"]);
    let plan = plan_of(&s, &ctx);
    assert_eq!(
        argvs(&h),
        [vec![
            "dpkg-query".to_owned(),
            "-W".to_owned(),
            "-f".to_owned(),
            "${Package}\\t${Architecture}\\t${Status}\\t${Version}\\n".to_owned()
        ]]
    );
    assert_eq!(
        summary(&plan),
        [
            "content dpkg database: a dpkg run was interrupted -> repaired (dpkg --configure -a)",
            "create package zsh"
        ]
    );
    apply(&s, &plan, &ctx).unwrap();
    assert_eq!(
        argvs(&h)[1..],
        [argv("dpkg --force-confdef --force-confold --configure -a")]
    );
    assert!(plan_of(&s, &ctx).is_in_sync());
}

// ---------------------------------------------------------------------------------
// Dry run

#[test]
fn a_dry_run_runs_nothing_that_changes_the_host() {
    let h = with_nala(host(&[("zsh", "5.9-4+b2")], STALE)).with_facts(facts(true));
    let reader = files;
    let dry = ctx(&h, true, false, &reader);
    let plan = plan_of(&step(&["zsh", "ripgrep", "fd-find"]), &dry);
    assert_eq!(
        summary(&plan),
        [
            "content apt package lists: last refreshed 3 h ago (apt_lists_max_age 60 min) -> refreshed",
            "create package ripgrep",
            "create package fd-find"
        ]
    );
    assert!(h.commands().is_empty(), "{:?}", argvs(&h));
    assert!(h.mutations().is_empty(), "{:?}", h.mutations());
}

// ---------------------------------------------------------------------------------
// The step as written in a repository

fn role(step_text: &str) -> tempfile::TempDir {
    support::repo(&[
        ("roles/web.toml", step_text),
        ("files/debs/tool_1.0_amd64.deb", "!<arch>\n"),
    ])
}

fn build(step_text: &str) -> Result<PackageStep, String> {
    let dir = role(step_text);
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
    let step = catalog
        .steps
        .iter()
        .find(|s| s.id == "p")
        .and_then(|s| s.desired.clone());
    match step {
        Some(StepKind::Package(p)) => Ok(p),
        other => Err(format!("not a package step: {other:?}")),
    }
}

#[test]
fn keys_as_written() {
    let p = build(
        "[[step]]\nid = \"p\"\ntype = \"package\"\nnames = [\"zsh\", \"libc6:i386\", \"fzf=0.38.0-1\"]\nno_recommends = true\nupdate_lists = \"never\"\n",
    )
    .unwrap();
    assert_eq!(
        p.names.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["zsh", "libc6:i386", "fzf=0.38.0-1"]
    );
    assert!(p.no_recommends);
    assert_eq!(p.update_lists, UpdateLists::Never);
    assert_eq!(
        resource::describe(&StepKind::Package(p)),
        "package zsh, libc6:i386, fzf"
    );

    let p = build(
        "[[step]]\nid = \"p\"\ntype = \"package\"\nnames = { data = \"admin.keys\" }\nstate = \"absent\"\n",
    );
    assert!(p.is_err(), "an SSH key is not a package name: {p:?}");
    let p = build("[[step]]\nid = \"p\"\ntype = \"package\"\nnames = { data = \"site.names\" }\n")
        .unwrap();
    assert_eq!(p.names.len(), 2, "{p:?}");

    let p =
        build("[[step]]\nid = \"p\"\ntype = \"package\"\nupgrade = \"dist-upgrade\"\n").unwrap();
    assert_eq!(p.upgrade, Upgrade::DistUpgrade);
    assert!(p.names.is_empty());

    let p = build(&format!(
        "[[step]]\nid = \"p\"\ntype = \"package\"\nnames = [\"tool\"]\ndeb = \"debs/tool_1.0_amd64.deb\"\nsha256 = \"{}\"\n",
        DEB_SHA.to_uppercase()
    ))
    .unwrap();
    assert_eq!(
        p.deb,
        Some(DebSource::File("debs/tool_1.0_amd64.deb".into()))
    );
    assert_eq!(p.sha256.as_deref(), Some(DEB_SHA));
}

#[test]
fn bad_combinations_are_refused_with_a_hint() {
    let cases: &[(&str, &str)] = &[
        ("", "a package step needs `names` (or `upgrade`)"),
        ("names = []\n", "`names` is empty"),
        ("names = [\"Zsh\"]\n", "is not a Debian package name"),
        ("names = [\"zsh\", \"zsh\"]\n", "lists zsh twice"),
        (
            "names = [\"zsh=5.9\"]\nstate = \"latest\"\n",
            "names a version, which is not allowed with state = \"latest\"",
        ),
        (
            "names = [\"zsh\"]\nstate = \"absent\"\nno_recommends = true\n",
            "`no_recommends` is not allowed with state = \"absent\"",
        ),
        (
            "names = [\"zsh\"]\nupgrade = \"upgrade\"\n",
            "`names` is not allowed in a step with `upgrade`",
        ),
        (
            "names = [\"zsh\"]\nsha256 = \"abc\"\n",
            "is not 64 hexadecimal digits",
        ),
        (
            "names = [\"zsh\"]\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
            "`sha256` is only allowed with `deb`",
        ),
        (
            "names = [\"tool\"]\ndeb = \"https://example.org/tool.deb\"\n",
            "a .deb from a URL needs `sha256`",
        ),
        (
            "names = [\"tool\", \"zsh\"]\ndeb = \"debs/tool_1.0_amd64.deb\"\n",
            "`names` must be the one package the .deb contains",
        ),
        (
            "names = [\"tool\"]\ndeb = \"debs/missing.deb\"\n",
            "files/debs/missing.deb does not exist",
        ),
        (
            "names = [\"tool\"]\ndeb = \"ftp://example.org/tool.deb\"\n",
            "only http:// and https:// URLs are supported",
        ),
        (
            "names = [\"tool\"]\ndeb = \"../tool.deb\"\n",
            "which is not a path inside files/",
        ),
        (
            "names = [\"tool\"]\nstate = \"absent\"\ndeb = \"debs/tool_1.0_amd64.deb\"\n",
            "`deb` is not allowed with state = \"absent\"",
        ),
    ];
    for (keys, wanted) in cases {
        let text = format!("[[step]]\nid = \"p\"\ntype = \"package\"\n{keys}");
        match build(&text) {
            Ok(p) => panic!("{keys:?}: accepted as {p:?}"),
            Err(e) => {
                assert!(e.contains(wanted), "{keys:?}: {e:?} lacks {wanted:?}");
                assert!(e.contains("hint:"), "{keys:?}: {e}");
            }
        }
    }
}

#[test]
fn fake_host_reports_modification_times() {
    let t = SystemTime::now() - Duration::from_secs(42);
    let h = FakeHost::new().with_dir("/x", 0o755).with_mtime("/x", t);
    assert_eq!(h.modified(Path::new("/x")).unwrap(), Some(t));
    assert_eq!(h.modified(Path::new("/nope")).unwrap(), None);
    assert_eq!(
        h.modified(Path::new("/")).unwrap(),
        Some(SystemTime::UNIX_EPOCH)
    );
}
