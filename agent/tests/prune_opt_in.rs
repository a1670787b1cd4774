//! Rollback of packages, services and users whose step opts in with `prune = true`:
//! whole runs (engine, then rollback) against a `FakeHost` with a small model of dpkg
//! and apt-get, of systemd and of the account tools, so each test checks the machine
//! after a step goes away, not which functions ran.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use infra_agent::catalog::{self, Catalog};
use infra_agent::engine::{self, Options, RunReport, Status, StepReport};
use infra_agent::facts::Facts;
use infra_agent::host::fake::Node;
use infra_agent::host::{FakeHost, Host as _};
use infra_agent::originals::Originals;
use infra_agent::process::{Cmd, CmdOutput};
use infra_agent::prune::{self, Held, Managed, Resource};
use infra_agent::resource::{ChangeKind, Ctx};
use infra_agent::state_repo::infra_toml::Version;
use infra_agent::state_repo::{self, DirSource};

const STATE: &str = "/var/lib/infra-agent";
const STATUS: &str = "/var/lib/dpkg/status";
const LISTS: &str = "/var/lib/apt/lists";
const PARTIAL: &str = "/var/lib/apt/lists/partial";

// ---- the repository ----

/// Writes a repository whose one role holds `steps`, for host `h1`.
fn repo(steps: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let files = [
        ("infra.toml", "format = 1\n"),
        (
            "inventory/production.toml",
            "[groups.all]\nroles = [\"r\"]\n\n[groups.g]\nhosts = [\"h1\"]\n",
        ),
        ("roles/r.toml", steps),
    ];
    for (path, text) in files {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().expect("a parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
    }
    dir
}

/// The catalog of host `h1` whose one role holds `steps`.
fn catalog(steps: &str) -> Catalog {
    let dir = repo(steps);
    let repo = state_repo::load(&DirSource::new(dir.path()), Version::agent())
        .unwrap_or_else(|e| panic!("{e}"));
    let sel = repo.select("h1").unwrap_or_else(|e| panic!("{e}"));
    catalog::compile(&repo, &sel, &Facts::placeholder("h1")).unwrap_or_else(|e| panic!("{e}"))
}

/// What loading or compiling `steps` for `h1` says (it must refuse them).
fn refused(steps: &str) -> String {
    let dir = repo(steps);
    let repo = match state_repo::load(&DirSource::new(dir.path()), Version::agent()) {
        Ok(repo) => repo,
        Err(e) => return e.to_string(),
    };
    let sel = repo.select("h1").unwrap_or_else(|e| panic!("{e}"));
    match catalog::compile(&repo, &sel, &Facts::placeholder("h1")) {
        Ok(_) => panic!("the agent accepted:\n{steps}"),
        Err(e) => e.to_string(),
    }
}

/// A file step that stays in every catalog, so a catalog is never empty.
const KEEP: &str =
    "[[step]]\nid = \"keep\"\ntype = \"file\"\npath = \"/srv/keep\"\ncontent = \"kept\\n\"\n\n";

fn package(id: &str, names: &str, prune: bool) -> String {
    format!("[[step]]\nid = \"{id}\"\ntype = \"package\"\nnames = [{names}]\nprune = {prune}\n\n")
}

// ---- the machine ----

/// Shared state of the fake's package database, systemd units and accounts.
#[derive(Debug, Default)]
struct World {
    /// Installed packages: name, version.
    packages: BTreeMap<String, String>,
    /// Units: name, (enabled, active).
    units: BTreeMap<String, (bool, bool)>,
    /// Accounts: name, uid.
    users: BTreeMap<String, u32>,
}

type Shared = Arc<Mutex<World>>;

fn lock(world: &Shared) -> std::sync::MutexGuard<'_, World> {
    world.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ok(stdout: &str) -> CmdOutput {
    CmdOutput {
        code: Some(0),
        stdout: stdout.as_bytes().to_vec(),
        ..CmdOutput::default()
    }
}

fn fail(stderr: &str) -> CmdOutput {
    CmdOutput {
        code: Some(1),
        stderr: stderr.as_bytes().to_vec(),
        ..CmdOutput::default()
    }
}

fn file_node(text: &str) -> Node {
    Node::File {
        content: text.as_bytes().to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

/// The dpkg status file of the installed packages.
fn status(world: &World) -> String {
    let mut text =
        "Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.21.22\n"
            .to_owned();
    for (name, version) in &world.packages {
        let _ = write!(
            text,
            "\nPackage: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\n"
        );
    }
    text
}

fn passwd(world: &World) -> String {
    let mut text = "root:x:0:0:root:/root:/bin/bash\n".to_owned();
    for (name, uid) in &world.users {
        let _ = writeln!(text, "{name}:x:{uid}:{uid}::/home/{name}:/bin/bash");
    }
    text
}

fn group(world: &World) -> String {
    let mut text = "root:x:0:\nsudo:x:27:\n".to_owned();
    for (name, uid) in &world.users {
        let _ = writeln!(text, "{name}:x:{uid}:");
    }
    text
}

/// Writes the databases the agent reads from the model.
fn sync(host: &FakeHost, world: &World) {
    host.set_node(STATUS, Some(file_node(&status(world))));
    host.set_node("/etc/passwd", Some(file_node(&passwd(world))));
    host.set_node("/etc/group", Some(file_node(&group(world))));
}

/// The positional words of an apt-get command line: the verb, then the packages.
fn apt_words(args: &[String]) -> Vec<String> {
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-o" {
            it.next();
        } else if !a.starts_with('-') {
            words.push(a.clone());
        }
    }
    words
}

/// A package whose installation fails after the others of its transaction went in.
const BROKEN: &str = "broken";

/// apt-get, run directly (a simulation) or inside `systemd-run` (a transaction).
fn apt(host: &FakeHost, world: &Shared, cmd: &Cmd) -> CmdOutput {
    let argv: Vec<String> = if cmd.program == "systemd-run" {
        cmd.args
            .iter()
            .skip_while(|a| *a != "--")
            .skip(1)
            .cloned()
            .collect()
    } else {
        let mut v = vec![cmd.program.clone()];
        v.extend(cmd.args.iter().cloned());
        v
    };
    if argv.first().map(String::as_str) != Some("apt-get") {
        return fail("only apt-get is modelled");
    }
    let simulate = argv.iter().any(|a| a == "-s");
    let words = apt_words(&argv[1..]);
    let Some((verb, names)) = words.split_first() else {
        return fail("E: no operation");
    };
    let mut w = lock(world);
    let mut printed = String::new();
    match verb.as_str() {
        "update" => {}
        "install" => {
            for name in names.iter().filter(|n| *n != BROKEN) {
                let _ = writeln!(printed, "Inst {name} (1.0 Debian:12/stable [amd64])");
                if !simulate {
                    w.packages.insert(name.clone(), "1.0".to_owned());
                }
            }
            if names.iter().any(|n| n == BROKEN) && !simulate {
                sync(host, &w);
                return fail(&format!(
                    "{printed}E: Sub-process /usr/bin/dpkg returned an error code (1)"
                ));
            }
        }
        "remove" => {
            for name in names {
                if let Some(version) = w.packages.get(name).cloned() {
                    let _ = writeln!(printed, "Remv {name} [{version}]");
                    if !simulate {
                        w.packages.remove(name);
                    }
                }
            }
        }
        other => return fail(&format!("E: {other} is not modelled")),
    }
    sync(host, &w);
    ok(&printed)
}

/// `systemctl show|enable|disable|start|stop`.
fn systemctl(world: &Shared, cmd: &Cmd) -> CmdOutput {
    let mut w = lock(world);
    let args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
    if args.first() == Some(&"show") {
        let blocks: Vec<String> = args
            .iter()
            .skip_while(|a| **a != "--")
            .skip(1)
            .map(|name| match w.units.get(*name) {
                None => format!(
                    "Id={name}\nNeedDaemonReload=no\nLoadState=not-found\nActiveState=inactive\nSubState=dead\nUnitFileState=\n"
                ),
                Some((enabled, active)) => format!(
                    "Id={name}\nNeedDaemonReload=no\nLoadState=loaded\nActiveState={}\nSubState={}\nUnitFileState={}\n",
                    if *active { "active" } else { "inactive" },
                    if *active { "running" } else { "dead" },
                    if *enabled { "enabled" } else { "disabled" },
                ),
            })
            .collect();
        return ok(&blocks.join("\n"));
    }
    let [verb, name] = args.as_slice() else {
        return fail("only one verb and one unit are modelled");
    };
    let Some(unit) = w.units.get_mut(*name) else {
        return fail(&format!("Unit {name} not found."));
    };
    match *verb {
        "enable" => unit.0 = true,
        "disable" => unit.0 = false,
        "start" | "restart" => unit.1 = true,
        "stop" => unit.1 = false,
        _ => return fail("not modelled"),
    }
    ok("")
}

/// `useradd ... NAME` and `userdel NAME`.
fn accounts(host: &FakeHost, world: &Shared, cmd: &Cmd) -> CmdOutput {
    let mut w = lock(world);
    let Some(name) = cmd.args.last().cloned() else {
        return fail("no name");
    };
    match cmd.program.as_str() {
        "useradd" => {
            let uid = 1000 + u32::try_from(w.users.len()).expect("few users");
            w.users.insert(name, uid);
        }
        "userdel" => {
            if w.users.remove(&name).is_none() {
                return fail(&format!("userdel: user '{name}' does not exist"));
            }
        }
        _ => return fail("not modelled"),
    }
    sync(host, &w);
    ok("")
}

/// A Debian machine with systemd, fresh package lists, and the fake's model of
/// `installed` packages, `units` and `users`.
fn machine(
    installed: &[&str],
    units: &[(&str, bool, bool)],
    users: &[(&str, u32)],
) -> (FakeHost, Shared) {
    let world: Shared = Arc::new(Mutex::new(World {
        packages: installed
            .iter()
            .map(|n| ((*n).to_owned(), "0.9".to_owned()))
            .collect(),
        units: units
            .iter()
            .map(|(n, e, a)| ((*n).to_owned(), (*e, *a)))
            .collect(),
        users: users.iter().map(|(n, u)| ((*n).to_owned(), *u)).collect(),
    }));
    let mut facts = Facts::placeholder("h1");
    facts.systemd = true;
    let fresh = SystemTime::now() - Duration::from_mins(5);
    let mut host = FakeHost::new()
        .with_dir("/srv", 0o755)
        .with_dir("/etc/sudoers.d", 0o750)
        .with_dir("/var/lib/dpkg", 0o755)
        .with_dir("/run", 0o755)
        .with_file(
            format!("{LISTS}/mirror_debian_dists_bookworm_main_binary-amd64_Packages"),
            "",
            0o644,
        )
        .with_dir(PARTIAL, 0o700)
        .with_mtime(LISTS, fresh)
        .with_mtime(PARTIAL, fresh)
        .with_facts(facts);
    for program in ["apt-get", "systemd-run"] {
        let w = Arc::clone(&world);
        host = host.with_command_effect(program, move |h, cmd| apt(h, &w, cmd));
    }
    let w = Arc::clone(&world);
    host = host.with_command_effect("systemctl", move |_, cmd| systemctl(&w, cmd));
    for program in ["useradd", "userdel"] {
        let w = Arc::clone(&world);
        host = host.with_command_effect(program, move |h, cmd| accounts(h, &w, cmd));
    }
    sync(&host, &lock(&world));
    (host, world)
}

fn installed(world: &Shared, name: &str) -> bool {
    lock(world).packages.contains_key(name)
}

fn unit(world: &Shared, name: &str) -> (bool, bool) {
    lock(world).units[name]
}

fn has_user(world: &Shared, name: &str) -> bool {
    lock(world).users.contains_key(name)
}

// ---- runs ----

/// A run as `--once` does it: the engine, then rollback.
fn run_with(host: &FakeHost, catalog: &Catalog, dry_run: bool) -> RunReport {
    let files = |p: &str| -> Result<Vec<u8>, String> { Err(format!("{p}: no files here")) };
    let originals = Originals::new(Path::new(STATE));
    let mut ctx = Ctx::new(host, dry_run, (!dry_run).then_some(&originals), &files);
    ctx.settings.state_dir = PathBuf::from(STATE);
    let options = Options {
        dry_run,
        ..Options::default()
    };
    let mut report = engine::run(catalog, &ctx, &options).expect("the run starts");
    let warnings = prune::run(catalog, &ctx, &options, &mut report);
    assert!(warnings.is_empty(), "{warnings:?}");
    report
}

#[track_caller]
fn converge(host: &FakeHost, catalog: &Catalog) -> RunReport {
    let report = run_with(host, catalog, false);
    for step in &report.steps {
        assert!(
            matches!(
                step.status,
                Status::InSync | Status::Changed | Status::Skipped
            ),
            "{step:#?}"
        );
    }
    report
}

fn rollbacks(report: &RunReport) -> Vec<&StepReport> {
    report.steps.iter().filter(|s| s.id == prune::ID).collect()
}

fn names(report: &RunReport) -> Vec<String> {
    rollbacks(report).iter().map(|s| s.name()).collect()
}

fn record(host: &FakeHost) -> Managed {
    let bytes = host
        .read_file(&prune::managed_file(Path::new(STATE)))
        .expect("managed.json");
    serde_json::from_slice(&bytes).expect("a record")
}

fn held(host: &FakeHost) -> Vec<Held> {
    record(host).resources
}

fn reason(item: &StepReport) -> &str {
    item.reason.as_deref().unwrap_or_default()
}

/// The command lines run, program first, joined by spaces.
fn command_lines(host: &FakeHost) -> Vec<String> {
    host.commands()
        .iter()
        .map(|c| {
            let mut v = vec![c.program.clone()];
            v.extend(c.args.iter().cloned());
            v.join(" ")
        })
        .collect()
}

// ---- packages ----

#[test]
fn a_package_the_agent_installed_is_removed_when_its_step_goes_away() {
    let (host, world) = machine(&[], &[], &[]);
    let a = catalog(&format!("{}{KEEP}", package("tools", "\"zsh\"", true)));
    converge(&host, &a);
    assert!(installed(&world, "zsh"));
    let record = held(&host);
    assert_eq!(record.len(), 1);
    assert_eq!(
        record[0].what,
        Resource::Package {
            name: "zsh".to_owned(),
            installed_by_agent: true
        }
    );
    assert_eq!(record[0].step, "tools");
    assert_eq!(record[0].source, "roles/r.toml:1");

    // A second run in sync keeps what the first one learnt.
    converge(&host, &a);
    assert_eq!(held(&host), record);

    host.clear_log();
    let report = converge(&host, &catalog(KEEP));
    assert_eq!(names(&report), ["rollback[package zsh]"]);
    let item = rollbacks(&report)[0];
    assert_eq!(item.status, Status::Changed, "{item:#?}");
    assert_eq!(item.resource, "package zsh");
    assert_eq!(item.changes[0].kind, ChangeKind::Remove);
    assert_eq!(item.changes[0].to_string(), "remove package zsh");
    assert!(
        reason(item).contains("step `tools` (roles/r.toml:1) no longer manages it"),
        "{item:#?}"
    );
    assert!(!installed(&world, "zsh"));
    // The package step's own removal: simulated first, then one transaction in its unit.
    let lines = command_lines(&host);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("apt-get -s") && l.ends_with("remove zsh")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("systemd-run ")
            && l.contains("-- apt-get remove -y -q")
            && l.ends_with(" zsh")),
        "{lines:#?}"
    );
    assert!(held(&host).is_empty());
    assert_eq!(report.exit_code(), 2);

    // Done once: the next run has nothing to roll back.
    assert!(rollbacks(&converge(&host, &catalog(KEEP))).is_empty());
}

#[test]
fn a_package_a_failed_transaction_installed_is_removed_too() {
    let (host, world) = machine(&[], &[], &[]);
    let a = catalog(&format!(
        "{}{KEEP}",
        package("tools", &format!("\"zsh\", \"{BROKEN}\""), true)
    ));
    let report = run_with(&host, &a, false);
    assert_eq!(report.steps[0].status, Status::Failed);
    assert!(report.steps[0].modified);
    assert!(installed(&world, "zsh"));
    assert!(held(&host).iter().any(|h| h.what
        == Resource::Package {
            name: "zsh".to_owned(),
            installed_by_agent: true
        }));

    let report = converge(&host, &catalog(KEEP));
    assert_eq!(names(&report), [format!("rollback[package {BROKEN}, zsh]")]);
    assert_eq!(rollbacks(&report)[0].status, Status::Changed);
    assert!(!installed(&world, "zsh"));
}

#[test]
fn a_package_installed_before_the_agent_is_left_installed() {
    let (host, world) = machine(&["zsh"], &[], &[]);
    let a = catalog(&format!(
        "{}{KEEP}",
        package("tools", "\"zsh\", \"fzf\"", true)
    ));
    converge(&host, &a);
    assert!(installed(&world, "fzf"));
    let record = held(&host);
    assert_eq!(
        record.iter().map(|h| h.what.clone()).collect::<Vec<_>>(),
        [
            Resource::Package {
                name: "fzf".to_owned(),
                installed_by_agent: true
            },
            Resource::Package {
                name: "zsh".to_owned(),
                installed_by_agent: false
            }
        ]
    );

    let report = converge(&host, &catalog(KEEP));
    assert_eq!(names(&report), ["rollback[package fzf, zsh]"]);
    let item = rollbacks(&report)[0];
    assert_eq!(item.status, Status::Changed);
    assert_eq!(
        item.changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["remove package fzf"]
    );
    assert!(
        reason(item)
            .contains("zsh was installed before the agent ran the step, so it is left installed"),
        "{item:#?}"
    );
    assert!(!installed(&world, "fzf"));
    assert!(installed(&world, "zsh"));
    assert!(held(&host).is_empty());
}

#[test]
fn a_step_whose_packages_all_were_there_removes_nothing() {
    let (host, world) = machine(&["zsh"], &[], &[]);
    converge(
        &host,
        &catalog(&format!("{}{KEEP}", package("tools", "\"zsh\"", true))),
    );
    host.clear_log();
    let report = converge(&host, &catalog(KEEP));
    let item = rollbacks(&report)[0];
    assert_eq!(item.status, Status::InSync);
    assert!(reason(item).contains("left installed"), "{item:#?}");
    assert!(installed(&world, "zsh"));
    assert!(
        !command_lines(&host).iter().any(|l| l.contains("apt-get")),
        "{:#?}",
        command_lines(&host)
    );
    assert_eq!(report.exit_code(), 0);
}

#[test]
fn a_package_another_step_still_names_is_left() {
    let (host, world) = machine(&[], &[], &[]);
    let a = catalog(&format!(
        "{}{}{KEEP}",
        package("tools", "\"zsh\", \"fzf\"", true),
        package("shell", "\"zsh\"", false)
    ));
    converge(&host, &a);
    assert!(installed(&world, "zsh") && installed(&world, "fzf"));

    let b = catalog(&format!("{}{KEEP}", package("shell", "\"zsh\"", false)));
    let report = converge(&host, &b);
    assert_eq!(names(&report), ["rollback[package fzf]"]);
    assert!(installed(&world, "zsh"));
    assert!(!installed(&world, "fzf"));
    // zsh is no longer held: deleting `shell` later removes nothing.
    assert!(held(&host).is_empty());
    let report = converge(&host, &catalog(KEEP));
    assert!(rollbacks(&report).is_empty());
    assert!(installed(&world, "zsh"));
}

#[test]
fn a_step_without_prune_is_never_pruned() {
    let (host, world) = machine(&[], &[], &[]);
    converge(
        &host,
        &catalog(&format!("{}{KEEP}", package("tools", "\"zsh\"", false))),
    );
    assert!(installed(&world, "zsh"));
    assert!(held(&host).is_empty());
    let report = converge(&host, &catalog(KEEP));
    assert!(rollbacks(&report).is_empty());
    assert!(installed(&world, "zsh"));
}

#[test]
fn turning_prune_off_forgets_without_removing() {
    let (host, world) = machine(&[], &[], &[]);
    converge(
        &host,
        &catalog(&format!("{}{KEEP}", package("tools", "\"zsh\"", true))),
    );
    assert_eq!(held(&host).len(), 1);
    let report = converge(
        &host,
        &catalog(&format!("{}{KEEP}", package("tools", "\"zsh\"", false))),
    );
    assert!(rollbacks(&report).is_empty());
    assert!(held(&host).is_empty());
    assert!(installed(&world, "zsh"));
    // The step goes away later: the package stays.
    assert!(rollbacks(&converge(&host, &catalog(KEEP))).is_empty());
    assert!(installed(&world, "zsh"));
}

#[test]
fn a_package_taken_out_of_names_goes() {
    let (host, world) = machine(&[], &[], &[]);
    converge(
        &host,
        &catalog(&format!(
            "{}{KEEP}",
            package("tools", "\"zsh\", \"fzf\"", true)
        )),
    );
    let report = converge(
        &host,
        &catalog(&format!("{}{KEEP}", package("tools", "\"zsh\"", true))),
    );
    assert_eq!(names(&report), ["rollback[package fzf]"]);
    assert!(installed(&world, "zsh"));
    assert!(!installed(&world, "fzf"));
}

// ---- services ----

fn service(prune: bool) -> String {
    format!(
        "[[step]]\nid = \"exporter\"\ntype = \"service\"\nname = \"exporter\"\nenabled = true\nstate = \"running\"\nprune = {prune}\n\n"
    )
}

#[test]
fn a_service_gets_its_enablement_and_state_back() {
    let (host, world) = machine(&[], &[("exporter.service", false, false)], &[]);
    converge(&host, &catalog(&format!("{}{KEEP}", service(true))));
    assert_eq!(unit(&world, "exporter.service"), (true, true));
    assert_eq!(
        held(&host)[0].what,
        Resource::Service {
            name: "exporter.service".to_owned(),
            enabled_before: Some(false),
            running_before: Some(false)
        }
    );

    let report = converge(&host, &catalog(KEEP));
    assert_eq!(names(&report), ["rollback[service exporter.service]"]);
    let item = rollbacks(&report)[0];
    assert_eq!(item.status, Status::Changed, "{item:#?}");
    assert_eq!(
        item.changes.iter().map(|c| c.kind).collect::<Vec<_>>(),
        [ChangeKind::Disable, ChangeKind::Stop]
    );
    assert_eq!(unit(&world, "exporter.service"), (false, false));
    assert!(held(&host).is_empty());
}

#[test]
fn a_service_that_already_ran_is_left_running() {
    let (host, world) = machine(&[], &[("exporter.service", true, true)], &[]);
    converge(&host, &catalog(&format!("{}{KEEP}", service(true))));
    host.clear_log();
    let report = converge(&host, &catalog(KEEP));
    let item = rollbacks(&report)[0];
    assert_eq!(item.status, Status::InSync, "{item:#?}");
    assert_eq!(unit(&world, "exporter.service"), (true, true));
    assert!(
        command_lines(&host)
            .iter()
            .all(|l| l.starts_with("systemctl show")),
        "{:#?}",
        command_lines(&host)
    );
}

#[test]
fn a_service_step_without_prune_leaves_the_unit() {
    let (host, world) = machine(&[], &[("exporter.service", false, false)], &[]);
    converge(&host, &catalog(&format!("{}{KEEP}", service(false))));
    let report = converge(&host, &catalog(KEEP));
    assert!(rollbacks(&report).is_empty());
    assert_eq!(unit(&world, "exporter.service"), (true, true));
}

// ---- users ----

fn user(name: &str, prune: bool) -> String {
    format!(
        "[[step]]\nid = \"user-{name}\"\ntype = \"user\"\nname = \"{name}\"\nprune = {prune}\n\n"
    )
}

#[test]
fn a_user_the_agent_created_is_removed_and_one_that_existed_is_left() {
    let (host, world) = machine(&[], &[], &[("bob", 1000)]);
    let a = catalog(&format!("{}{}{KEEP}", user("svc", true), user("bob", true)));
    converge(&host, &a);
    assert!(has_user(&world, "svc"));
    let record: Vec<Resource> = held(&host).into_iter().map(|h| h.what).collect();
    assert_eq!(
        record,
        [
            Resource::User {
                name: "bob".to_owned(),
                created_by_agent: false
            },
            Resource::User {
                name: "svc".to_owned(),
                created_by_agent: true
            }
        ]
    );

    host.clear_log();
    let report = converge(&host, &catalog(KEEP));
    assert_eq!(names(&report), ["rollback[user bob]", "rollback[user svc]"]);
    let items = rollbacks(&report);
    assert_eq!(items[0].status, Status::InSync);
    assert!(
        reason(items[0]).contains("existed before"),
        "{:#?}",
        items[0]
    );
    assert_eq!(items[1].status, Status::Changed, "{:#?}", items[1]);
    assert_eq!(
        items[1].changes[0].after.as_deref(),
        Some("removed; its home /home/svc is kept")
    );
    assert!(!has_user(&world, "svc"));
    assert!(has_user(&world, "bob"));
    assert_eq!(
        command_lines(&host)
            .iter()
            .filter(|l| l.starts_with("userdel"))
            .collect::<Vec<_>>(),
        ["userdel svc"]
    );
    assert!(held(&host).is_empty());
}

#[test]
fn a_user_the_catalog_still_uses_is_left() {
    let (host, world) = machine(&[], &[], &[]);
    let sudoers = "[[step]]\nid = \"sudo-svc\"\ntype = \"file\"\npath = \"/etc/sudoers.d/svc\"\ncontent = \"svc ALL=(ALL) NOPASSWD: ALL\\n\"\n\n";
    converge(
        &host,
        &catalog(&format!("{}{sudoers}{KEEP}", user("svc", true))),
    );
    assert!(has_user(&world, "svc"));
    host.clear_log();
    let report = converge(&host, &catalog(&format!("{sudoers}{KEEP}")));
    let item = rollbacks(&report)[0];
    assert_eq!(item.status, Status::Skipped, "{item:#?}");
    assert!(
        reason(item).contains("still used by step `sudo-svc` (roles/r.toml:1)"),
        "{item:#?}"
    );
    assert!(has_user(&world, "svc"));
    assert!(
        !command_lines(&host)
            .iter()
            .any(|l| l.starts_with("userdel")),
        "{:#?}",
        command_lines(&host)
    );
    // Reported once, then no longer managed.
    assert!(held(&host).is_empty());
    // The sudoers file goes too (a file rollback), the account stays.
    let report = converge(&host, &catalog(KEEP));
    assert_eq!(names(&report), ["rollback[/etc/sudoers.d/svc]"]);
    assert!(has_user(&world, "svc"));
}

// ---- dry run ----

#[test]
fn a_dry_run_changes_nothing_and_says_what_rollback_would_do() {
    let (host, world) = machine(&[], &[("exporter.service", false, false)], &[]);
    let a = catalog(&format!(
        "{}{}{}{KEEP}",
        package("tools", "\"zsh\"", true),
        service(true),
        user("svc", true)
    ));
    converge(&host, &a);
    let before = host
        .read_file(&prune::managed_file(Path::new(STATE)))
        .unwrap();
    host.clear_log();

    let b = catalog(KEEP);
    let report = run_with(&host, &b, true);
    assert_eq!(
        names(&report),
        [
            "rollback[service exporter.service]",
            "rollback[user svc]",
            "rollback[package zsh]"
        ]
    );
    for item in rollbacks(&report) {
        assert_eq!(item.status, Status::Pending, "{item:#?}");
        assert!(!item.changes.is_empty(), "{item:#?}");
    }
    assert_eq!(report.exit_code(), 2);
    // Only reads ran: no transaction, no systemctl verb, no userdel, no file written.
    for line in command_lines(&host) {
        assert!(
            line.starts_with("systemctl show") || line.starts_with("apt-get -s"),
            "a dry run ran {line}"
        );
    }
    assert!(
        host.mutations().iter().all(|m| m.starts_with("run ")),
        "{:#?}",
        host.mutations()
    );
    assert!(installed(&world, "zsh"));
    assert_eq!(unit(&world, "exporter.service"), (true, true));
    assert!(has_user(&world, "svc"));
    assert_eq!(
        host.read_file(&prune::managed_file(Path::new(STATE)))
            .unwrap(),
        before
    );

    // The real run does what the dry run said.
    let report = converge(&host, &b);
    assert_eq!(names(&report).len(), 3);
    for item in rollbacks(&report) {
        assert_eq!(item.status, Status::Changed, "{item:#?}");
    }
    assert!(!installed(&world, "zsh"));
    assert_eq!(unit(&world, "exporter.service"), (false, false));
    assert!(!has_user(&world, "svc"));
}

// ---- the key ----

#[test]
fn prune_is_refused_where_it_means_nothing() {
    let e = refused(
        "[[step]]\nid = \"p\"\ntype = \"package\"\nnames = [\"nano\"]\nstate = \"absent\"\nprune = true\n",
    );
    assert!(
        e.contains("`prune` is not allowed with state = \"absent\""),
        "{e}"
    );
    let e =
        refused("[[step]]\nid = \"p\"\ntype = \"package\"\nupgrade = \"upgrade\"\nprune = true\n");
    assert!(
        e.contains("`prune` is not allowed in a step with `upgrade`"),
        "{e}"
    );
    let e = refused(
        "[[step]]\nid = \"u\"\ntype = \"user\"\nname = \"bob\"\nstate = \"absent\"\nprune = true\n",
    );
    assert!(
        e.contains("`prune` is not allowed with state = \"absent\""),
        "{e}"
    );
    let e = refused("[[step]]\nid = \"s\"\ntype = \"service\"\nname = \"x\"\nprune = \"yes\"\n");
    assert!(e.contains("prune"), "{e}");
    let e = refused("[[step]]\nid = \"g\"\ntype = \"group\"\nname = \"x\"\nprune = true\n");
    assert!(e.contains("prune"), "{e}");
}
