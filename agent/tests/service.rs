//! The `service` step against a `FakeHost` whose `systemctl` is scripted: a small fake
//! systemd keeps the state of each unit, answers `systemctl show` from it and changes it
//! on `enable`, `start`, `daemon-reload`, .... Plans are checked case by case from
//! literal `systemctl show` output; apply, refresh and the engine against the fake.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use infra_agent::catalog::{self, Catalog};
use infra_agent::engine::{self, Options, RunReport, Status, StepReport};
use infra_agent::facts::Facts;
use infra_agent::host::{FakeHost, Host};
use infra_agent::originals::Originals;
use infra_agent::process::{Cmd, CmdOutput};
use infra_agent::resource::service::{PROPERTIES, UnitState, parse_show, units};
use infra_agent::resource::{self, ChangeKind, Ctx, Plan};
use infra_agent::state_repo::infra_toml::Version;
use infra_agent::state_repo::{self, DirSource};
use infra_agent::step::StepKind;
use infra_agent::step::service::{OnNotify, RunState, ServiceStep};

const STATE_DIR: &str = "/var/lib/infra-agent";

fn stdout(text: &str) -> CmdOutput {
    CmdOutput {
        code: Some(0),
        stdout: text.as_bytes().to_vec(),
        ..CmdOutput::default()
    }
}

fn is_show(cmd: &Cmd) -> bool {
    cmd.program == "systemctl" && cmd.args.first().is_some_and(|a| a == "show")
}

/// The argv (without the program) of every `systemctl` command but `show`.
fn mutating(host: &FakeHost) -> Vec<Vec<String>> {
    host.commands()
        .iter()
        .filter(|c| !is_show(c))
        .map(|c| {
            assert_eq!(c.program, "systemctl", "{c:?}");
            c.args.clone()
        })
        .collect()
}

fn shows(host: &FakeHost) -> Vec<Vec<String>> {
    host.commands()
        .iter()
        .filter(|c| is_show(c))
        .map(|c| c.args.clone())
        .collect()
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// The argv of `systemctl show` for these units.
fn show_argv(units: &[&str]) -> Vec<String> {
    let mut args = argv(&["show", &format!("--property={PROPERTIES}"), "--"]);
    args.extend(argv(units));
    args
}

// ---------------------------------------------------------------------------------
// A fake systemd

/// One unit of the fake systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "four yes-or-no facts, each read from its own systemctl property"
)]
struct Unit {
    exists: bool,
    enabled: bool,
    active: bool,
    /// Its unit file changed on disk (`NeedDaemonReload=yes`).
    reload: bool,
}

const RUNNING: Unit = Unit {
    exists: true,
    enabled: true,
    active: true,
    reload: false,
};
const STOPPED: Unit = Unit {
    exists: true,
    enabled: false,
    active: false,
    reload: false,
};

/// A block of `systemctl show` output, properties in systemd's own order.
fn block(name: &str, u: Unit) -> String {
    if !u.exists {
        return format!(
            "Id={name}\nNeedDaemonReload=no\nLoadState=not-found\nActiveState=inactive\nSubState=dead\nUnitFileState=\n"
        );
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    format!(
        "Id={name}\nNeedDaemonReload={}\nLoadState=loaded\nActiveState={}\nSubState={}\nUnitFileState={}\n",
        yes(u.reload),
        if u.active { "active" } else { "inactive" },
        if u.active { "running" } else { "dead" },
        if u.enabled { "enabled" } else { "disabled" },
    )
}

type Units = Arc<Mutex<Vec<(String, Unit)>>>;

/// What `systemctl show ARGS` prints for the fake's units; `None` for an unknown unit.
fn render(units: &[(String, Unit)], args: &[String]) -> Option<String> {
    let names = args.iter().skip_while(|a| *a != "--").skip(1);
    let mut blocks = Vec::new();
    for name in names {
        let unit = units.iter().find(|(n, _)| n == name)?.1;
        blocks.push(block(name, unit));
    }
    Some(blocks.join("\n"))
}

/// Applies a mutating `systemctl` command to the fake; false when it is not one that
/// succeeds.
fn mutate(units: &Units, cmd: &Cmd) -> bool {
    if cmd.program != "systemctl" {
        return false;
    }
    let mut units = units.lock().unwrap_or_else(PoisonError::into_inner);
    let args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["daemon-reload"] => {
            for (_, u) in units.iter_mut() {
                u.reload = false;
            }
            true
        }
        [verb, name] => {
            let Some((_, u)) = units.iter_mut().find(|(n, _)| n == name) else {
                return false;
            };
            if !u.exists {
                return false;
            }
            match *verb {
                "enable" => u.enabled = true,
                "disable" => u.enabled = false,
                "start" | "restart" | "reload-or-restart" => u.active = true,
                "stop" => u.active = false,
                "reload" => {}
                _ => return false,
            }
            true
        }
        _ => false,
    }
}

/// A fake systemd on `host` with these units. `FakeHost` scripts have fixed outputs, so
/// every output `systemctl show` can give is scripted, each answering only while the
/// fake's state renders to it: for all units asked together, and for each alone.
fn systemd_on(host: FakeHost, initial: &[(&str, Unit)]) -> (FakeHost, Units) {
    let state: Units = Arc::new(Mutex::new(
        initial.iter().map(|(n, u)| ((*n).to_owned(), *u)).collect(),
    ));
    let mut queries: Vec<Vec<usize>> = vec![(0..initial.len()).collect()];
    if initial.len() > 1 {
        queries.extend((0..initial.len()).map(|i| vec![i]));
    }
    let mut host = host;
    for query in queries {
        for combo in 0..(1usize << (3 * query.len())) {
            let units: Vec<(String, Unit)> = query
                .iter()
                .enumerate()
                .map(|(k, &i)| {
                    let bits = combo >> (3 * k);
                    let (name, first) = initial[i];
                    let unit = Unit {
                        exists: first.exists,
                        enabled: bits & 1 != 0,
                        active: bits & 2 != 0,
                        reload: bits & 4 != 0,
                    };
                    (name.to_owned(), unit)
                })
                .collect();
            let names: Vec<&str> = query.iter().map(|&i| initial[i].0).collect();
            let text = render(&units, &show_argv(&names)).expect("all units are known");
            let st = Arc::clone(&state);
            let wanted = text.clone();
            host = host.with_command_fn(
                "systemctl show",
                move |cmd| {
                    is_show(cmd)
                        && render(
                            &st.lock().unwrap_or_else(PoisonError::into_inner),
                            &cmd.args,
                        )
                        .is_some_and(|t| t == wanted)
                },
                stdout(&text),
            );
        }
    }
    let st = Arc::clone(&state);
    host = host.with_command_fn(
        "systemctl (changes)",
        move |cmd| mutate(&st, cmd),
        stdout(""),
    );
    (host, state)
}

fn systemd(initial: &[(&str, Unit)]) -> (FakeHost, Units) {
    systemd_on(FakeHost::new(), initial)
}

fn unit_of(units: &Units, name: &str) -> Unit {
    units
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, u)| *u)
        .expect("a unit of the fake")
}

fn set_unit(units: &Units, name: &str, unit: Unit) {
    let mut units = units.lock().unwrap_or_else(PoisonError::into_inner);
    let entry = units.iter_mut().find(|(n, _)| n == name).expect("a unit");
    entry.1 = unit;
}

// ---------------------------------------------------------------------------------
// Resource-level helpers

fn no_files(path: &str) -> Result<Vec<u8>, String> {
    Err(format!("{path}: no files in these tests"))
}

/// Runs `f` with a context for `host` whose settings name `services`.
fn with_ctx<R>(host: &FakeHost, dry_run: bool, services: &[&str], f: impl FnOnce(&Ctx) -> R) -> R {
    let reader = no_files;
    let originals = Originals::new(Path::new(STATE_DIR));
    let mut ctx = Ctx::new(host, dry_run, (!dry_run).then_some(&originals), &reader);
    ctx.settings.services = argv(services);
    f(&ctx)
}

fn svc(unit: &str, enabled: Option<bool>, state: Option<RunState>) -> ServiceStep {
    ServiceStep {
        unit: unit.to_owned(),
        enabled,
        state,
        on_notify: OnNotify::Restart,
        prune: false,
    }
}

// ---------------------------------------------------------------------------------
// Parsing `systemctl show`

#[test]
fn parses_blocks_of_systemctl_show() {
    // An alias (sshd.service names ssh.service), a unit that does not exist, a failed
    // unit whose unit file changed, an unknown key, and extra blank lines.
    let text = "Id=ssh.service\nNeedDaemonReload=no\nLoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\n\n\
                Id=ghost.service\nNeedDaemonReload=no\nLoadState=not-found\nActiveState=inactive\nSubState=dead\nUnitFileState=\n\n\n\
                Id=app.service\nNeedDaemonReload=yes\nLoadState=loaded\nActiveState=failed\nSubState=failed\nUnitFileState=disabled\nFragmentPath=/etc/systemd/system/app.service\n\n";
    let units = parse_show(text);
    let want = [
        UnitState {
            id: "ssh.service".to_owned(),
            load_state: "loaded".to_owned(),
            active_state: "active".to_owned(),
            sub_state: "running".to_owned(),
            unit_file_state: "enabled".to_owned(),
            need_daemon_reload: false,
        },
        UnitState {
            id: "ghost.service".to_owned(),
            load_state: "not-found".to_owned(),
            active_state: "inactive".to_owned(),
            sub_state: "dead".to_owned(),
            unit_file_state: String::new(),
            need_daemon_reload: false,
        },
        UnitState {
            id: "app.service".to_owned(),
            load_state: "loaded".to_owned(),
            active_state: "failed".to_owned(),
            sub_state: "failed".to_owned(),
            unit_file_state: "disabled".to_owned(),
            need_daemon_reload: true,
        },
    ];
    assert_eq!(units, want);
    assert!(units[0].exists() && units[0].is_running());
    assert!(!units[1].exists());
    assert!(!units[2].is_running());
    assert_eq!(units[2].activity(), "failed (failed)");

    // A key systemd left out (an empty value) leaves the field empty.
    let units = parse_show("Id=x.service\nLoadState=loaded\nActiveState=inactive\n");
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].unit_file_state, "");
    assert!(parse_show("").is_empty());
    assert!(parse_show("\n\n").is_empty());
}

// ---------------------------------------------------------------------------------
// Plans, case by case

fn show(load: &str, active: &str, sub: &str, file: &str, reload: bool) -> String {
    format!(
        "Id=nginx.service\nNeedDaemonReload={}\nLoadState={load}\nActiveState={active}\nSubState={sub}\nUnitFileState={file}\n",
        if reload { "yes" } else { "no" }
    )
}

/// One expected change: kind, before, after, and a substring of its note (`""`: none).
type Want = (
    ChangeKind,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
);

#[derive(Debug)]
enum Expect {
    InSync(&'static str),
    Changes(Vec<Want>),
    Error(&'static str),
}

struct Case {
    what: &'static str,
    /// What `systemctl show` prints (`None`: it fails).
    show: Option<String>,
    enabled: Option<bool>,
    state: Option<RunState>,
    dry_run: bool,
    systemd: bool,
    expect: Expect,
}

fn case(
    what: &'static str,
    show: String,
    enabled: Option<bool>,
    state: Option<RunState>,
    expect: Expect,
) -> Case {
    Case {
        what,
        show: Some(show),
        enabled,
        state,
        dry_run: false,
        systemd: true,
        expect,
    }
}

#[test]
fn plans() {
    use ChangeKind::{DaemonReload, Disable, Enable, Start, Stop};
    use Expect::{Changes, Error, InSync};
    use RunState::{Running, Stopped};
    let enabled_running = show("loaded", "active", "running", "enabled", false);
    let disabled_dead = show("loaded", "inactive", "dead", "disabled", false);
    let missing = show("not-found", "inactive", "dead", "", false);
    let cases = vec![
        case(
            "a stopped, disabled unit is enabled and started",
            disabled_dead.clone(),
            Some(true),
            Some(Running),
            Changes(vec![
                (Enable, Some("disabled"), Some("enabled"), ""),
                (Start, Some("inactive (dead)"), Some("active"), ""),
            ]),
        ),
        case(
            "in sync",
            enabled_running.clone(),
            Some(true),
            Some(Running),
            InSync("nginx.service is enabled, active (running)"),
        ),
        case(
            "disabled and stopped",
            enabled_running.clone(),
            Some(false),
            Some(Stopped),
            Changes(vec![
                (Disable, Some("enabled"), Some("disabled"), ""),
                (Stop, Some("active (running)"), Some("inactive"), ""),
            ]),
        ),
        case(
            "absent keys change nothing",
            disabled_dead.clone(),
            None,
            None,
            InSync("disabled, inactive (dead)"),
        ),
        case(
            "a failed unit is started",
            show("loaded", "failed", "failed", "enabled", false),
            None,
            Some(Running),
            Changes(vec![(Start, Some("failed (failed)"), Some("active"), "")]),
        ),
        case(
            "a stopped unit that is meant to be stopped",
            show("loaded", "failed", "failed", "disabled", false),
            Some(false),
            Some(Stopped),
            InSync("disabled, failed (failed)"),
        ),
        case(
            "activating counts as running",
            show("loaded", "activating", "start", "enabled", false),
            None,
            Some(Running),
            InSync("activating (start)"),
        ),
        case(
            "enabled only until reboot is not enabled",
            show("loaded", "active", "running", "enabled-runtime", false),
            Some(true),
            None,
            Changes(vec![(Enable, Some("enabled-runtime"), Some("enabled"), "")]),
        ),
        case(
            "a static unit needs no enabling",
            show("loaded", "active", "running", "static", false),
            Some(true),
            Some(Running),
            InSync("static"),
        ),
        case(
            "a static unit cannot be disabled",
            show("loaded", "active", "running", "static", false),
            Some(false),
            None,
            Error("nginx.service is static: it has no [Install] section to disable"),
        ),
        case(
            "a masked unit cannot be started",
            show("masked", "inactive", "dead", "masked", false),
            None,
            Some(Running),
            Error("unit nginx.service is masked"),
        ),
        case(
            "a masked unit is disabled enough",
            show("masked", "inactive", "dead", "masked", false),
            Some(false),
            Some(Stopped),
            InSync("masked"),
        ),
        case(
            "a changed unit file is reloaded",
            show("loaded", "active", "running", "enabled", true),
            Some(true),
            Some(Running),
            Changes(vec![(DaemonReload, None, None, "")]),
        ),
        case(
            "daemon-reload comes before start",
            show("loaded", "inactive", "dead", "enabled", true),
            None,
            Some(Running),
            Changes(vec![
                (DaemonReload, None, None, ""),
                (Start, Some("inactive (dead)"), Some("active"), ""),
            ]),
        ),
        case(
            "a unit that did not load",
            show("bad-setting", "inactive", "dead", "disabled", false),
            None,
            Some(Running),
            Error("unit nginx.service did not load (LoadState=bad-setting)"),
        ),
        case(
            "a unit that did not load, with a reload pending, is judged after it",
            show("bad-setting", "inactive", "dead", "disabled", true),
            None,
            Some(Running),
            Changes(vec![(DaemonReload, None, None, "")]),
        ),
        case(
            "a unit that does not exist",
            missing.clone(),
            Some(true),
            Some(Running),
            Error("unit nginx.service does not exist: install its package in an earlier step"),
        ),
        case(
            "a unit that does not exist, even with nothing to change",
            missing.clone(),
            None,
            None,
            Error("unit nginx.service does not exist"),
        ),
        Case {
            dry_run: true,
            ..case(
                "dry run: a unit that does not exist yet is pending",
                missing.clone(),
                Some(true),
                Some(Running),
                Changes(vec![
                    (
                        Enable,
                        Some("not-found"),
                        Some("enabled"),
                        "a package step before this one may install it",
                    ),
                    (
                        Start,
                        Some("not-found"),
                        Some("active"),
                        "does not exist yet",
                    ),
                ]),
            )
        },
        Case {
            dry_run: true,
            ..case(
                "dry run: a unit that does not exist yet, nothing to change",
                missing,
                None,
                None,
                InSync("unit nginx.service does not exist yet"),
            )
        },
        Case {
            systemd: false,
            ..case(
                "no systemd",
                enabled_running.clone(),
                None,
                Some(Running),
                Error("systemd is not running on this machine"),
            )
        },
        Case {
            systemd: false,
            dry_run: true,
            ..case(
                "dry run without systemd: pending, with a note that a real run fails here",
                enabled_running,
                Some(true),
                Some(Running),
                Changes(vec![
                    (
                        Enable,
                        Some("unknown"),
                        Some("enabled"),
                        "a real run of this step fails here",
                    ),
                    (
                        Start,
                        Some("unknown"),
                        Some("active"),
                        "systemd is not running on this machine",
                    ),
                ]),
            )
        },
        Case {
            show: None,
            ..case(
                "systemctl show fails",
                String::new(),
                None,
                Some(Running),
                Error("systemctl show failed: Failed to connect to bus"),
            )
        },
    ];
    for c in cases {
        let output = c.show.as_deref().map_or_else(
            || CmdOutput {
                code: Some(1),
                stderr: b"Failed to connect to bus: No such file or directory\n".to_vec(),
                ..CmdOutput::default()
            },
            stdout,
        );
        let mut facts = Facts::placeholder("test-host");
        facts.systemd = c.systemd;
        let host =
            FakeHost::new()
                .with_facts(facts)
                .with_command_fn("systemctl show", is_show, output);
        let step = svc("nginx.service", c.enabled, c.state);
        let what = c.what;
        let result = with_ctx(&host, c.dry_run, &["nginx.service"], |ctx| {
            resource::plan(&StepKind::Service(step), ctx)
        });
        assert!(
            mutating(&host).is_empty(),
            "{what}: plan ran {:?}",
            host.commands()
        );
        let expected_shows = usize::from(c.systemd);
        assert_eq!(shows(&host).len(), expected_shows, "{what}");
        match (&c.expect, result) {
            (Expect::Error(wanted), Err(e)) => {
                assert!(e.to_string().contains(wanted), "{what}: {e}");
            }
            (Expect::InSync(wanted), Ok(plan)) => {
                assert!(plan.is_in_sync(), "{what}: {:#?}", plan.changes);
                assert!(plan.in_sync.contains(wanted), "{what}: {:?}", plan.in_sync);
            }
            (Expect::Changes(wanted), Ok(plan)) => {
                let got: Vec<_> = plan
                    .changes
                    .iter()
                    .map(|c| (c.kind, c.before.as_deref(), c.after.as_deref()))
                    .collect();
                let want: Vec<_> = wanted.iter().map(|(k, b, a, _)| (*k, *b, *a)).collect();
                assert_eq!(got, want, "{what}");
                for (change, (.., note)) in plan.changes.iter().zip(wanted) {
                    assert_eq!(change.path, "nginx.service", "{what}");
                    if note.is_empty() {
                        assert_eq!(change.note, None, "{what}");
                    } else {
                        let shown = change.note.as_deref().unwrap_or_default();
                        assert!(shown.contains(note), "{what}: note {shown:?}");
                    }
                }
            }
            (expect, got) => panic!("{what}: expected {expect:?}, got {got:?}"),
        }
    }
}

#[test]
fn show_output_that_does_not_match_the_units_asked_is_an_error() {
    let host = FakeHost::new().with_command_fn(
        "systemctl show",
        is_show,
        stdout(&block("a.service", RUNNING)),
    );
    let err = with_ctx(&host, false, &["a.service", "b.service"], |ctx| {
        resource::plan(&StepKind::Service(svc("a.service", None, None)), ctx)
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("systemctl show described 1 units for the 2 it was asked about"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------
// Apply: the commands run

/// What, the unit before, `enabled`, `state`, and the argv of each command expected.
type ApplyCase<'a> = (
    &'a str,
    Unit,
    Option<bool>,
    Option<RunState>,
    &'a [&'a [&'a str]],
);

#[test]
fn apply_runs_systemctl_with_these_arguments() {
    use RunState::{Running, Stopped};
    let u = "nginx.service";
    let reload = |unit: Unit| Unit {
        reload: true,
        ..unit
    };
    let cases: &[ApplyCase<'_>] = &[
        (
            "enable, then start",
            STOPPED,
            Some(true),
            Some(Running),
            &[&["enable", u], &["start", u]],
        ),
        (
            "disable, then stop",
            RUNNING,
            Some(false),
            Some(Stopped),
            &[&["disable", u], &["stop", u]],
        ),
        ("start only", STOPPED, None, Some(Running), &[&["start", u]]),
        ("enable only", STOPPED, Some(true), None, &[&["enable", u]]),
        (
            "a changed unit file: daemon-reload",
            reload(RUNNING),
            Some(true),
            Some(Running),
            &[&["daemon-reload"]],
        ),
        (
            "a changed unit file: daemon-reload before start",
            reload(STOPPED),
            None,
            Some(Running),
            &[&["daemon-reload"], &["start", u]],
        ),
    ];
    for (what, initial, enabled, state, want) in cases {
        let (host, units) = systemd(&[(u, *initial)]);
        let step = StepKind::Service(svc(u, *enabled, *state));
        with_ctx(&host, false, &[u], |ctx| {
            let first = resource::plan(&step, ctx).expect("plan");
            resource::apply(&step, &first, ctx).expect("apply");
            let again = resource::plan(&step, ctx).expect("plan again");
            assert!(again.is_in_sync(), "{what}: {:#?}", again.changes);
        });
        let want: Vec<Vec<String>> = want.iter().map(|a| argv(a)).collect();
        assert_eq!(mutating(&host), want, "{what}");
        let now = unit_of(&units, u);
        assert!(!now.reload, "{what}");
        if let Some(e) = enabled {
            assert_eq!(now.enabled, *e, "{what}");
        }
        if let Some(s) = state {
            assert_eq!(now.active, *s == Running, "{what}");
        }
    }
}

#[test]
fn a_failing_systemctl_fails_the_apply_with_its_message() {
    let u = "nginx.service";
    let (host, _) = systemd(&[(u, STOPPED)]);
    let host = host.with_command_fn(
        "systemctl start",
        |c| c.args.first().is_some_and(|a| a == "start"),
        CmdOutput {
            code: Some(1),
            stderr: b"Job for nginx.service failed because the control process exited with error code.\n".to_vec(),
            ..CmdOutput::default()
        },
    );
    let step = StepKind::Service(svc(u, None, Some(RunState::Running)));
    let err = with_ctx(&host, false, &[u], |ctx| {
        let plan = resource::plan(&step, ctx).expect("plan");
        resource::apply(&step, &plan, ctx).unwrap_err()
    });
    assert_eq!(
        err.to_string(),
        "systemctl start nginx.service failed: Job for nginx.service failed because the control process exited with error code."
    );
}

// ---------------------------------------------------------------------------------
// Refresh

fn refresh(host: &FakeHost, step: &ServiceStep, plan: &Plan, dry_run: bool) -> Option<String> {
    let services: Vec<&str> = vec![step.unit.as_str()];
    with_ctx(host, dry_run, &services, |ctx| {
        resource::refresh(&StepKind::Service(step.clone()), plan, ctx).expect("refresh")
    })
}

#[test]
fn refresh_restarts_or_reloads_a_running_service() {
    let u = "nginx.service";
    for (on_notify, verb, done) in [
        (OnNotify::Restart, "restart", "restarted nginx.service"),
        (OnNotify::Reload, "reload", "reloaded nginx.service"),
        (
            OnNotify::ReloadOrRestart,
            "reload-or-restart",
            "reloaded or restarted nginx.service",
        ),
    ] {
        let (host, _) = systemd(&[(u, RUNNING)]);
        let step = ServiceStep {
            on_notify,
            ..svc(u, None, Some(RunState::Running))
        };
        let said = refresh(&host, &step, &Plan::default(), false);
        assert_eq!(said.as_deref(), Some(done));
        assert_eq!(mutating(&host), [argv(&[verb, u])]);
    }
}

#[test]
fn refresh_leaves_alone_what_it_should() {
    let u = "nginx.service";
    let started = Plan {
        changes: vec![{
            let (host, _) = systemd(&[(u, STOPPED)]);
            with_ctx(&host, false, &[u], |ctx| {
                resource::plan(
                    &StepKind::Service(svc(u, None, Some(RunState::Running))),
                    ctx,
                )
            })
            .expect("plan")
            .changes
            .remove(0)
        }],
        in_sync: String::new(),
    };
    assert_eq!(started.changes[0].kind, ChangeKind::Start);
    let cases: &[(&str, Unit, ServiceStep, &Plan, bool, &str)] = &[
        (
            "started by this run",
            RUNNING,
            svc(u, None, Some(RunState::Running)),
            &started,
            false,
            "already started in this run",
        ),
        (
            "dry run: would start",
            STOPPED,
            svc(u, None, Some(RunState::Running)),
            &started,
            true,
            "would start nginx.service in this run, so no restart",
        ),
        (
            "meant to be stopped",
            STOPPED,
            svc(u, None, Some(RunState::Stopped)),
            &Plan::default(),
            false,
            "not restarted: nginx.service is meant to be stopped",
        ),
        (
            "not running, state not managed",
            STOPPED,
            svc(u, Some(true), None),
            &Plan::default(),
            false,
            "not restarted: nginx.service is not running (inactive (dead))",
        ),
        (
            "dry run",
            RUNNING,
            svc(u, None, Some(RunState::Running)),
            &Plan::default(),
            true,
            "would restart nginx.service",
        ),
    ];
    for (what, initial, step, plan, dry_run, said) in cases {
        let (host, _) = systemd(&[(u, *initial)]);
        let got = refresh(&host, step, plan, *dry_run);
        assert_eq!(got.as_deref(), Some(*said), "{what}");
        assert!(mutating(&host).is_empty(), "{what}: {:?}", host.commands());
    }
}

#[test]
fn refresh_reads_units_again_and_reloads_a_changed_unit_file_first() {
    // The units were read by an earlier service step; then a step rewrote nginx's
    // unit file. The refresh must see that and daemon-reload before restarting.
    let (host, units) = systemd(&[("ssh.service", RUNNING), ("nginx.service", RUNNING)]);
    let services = ["ssh.service", "nginx.service"];
    let nginx = svc("nginx.service", Some(true), Some(RunState::Running));
    let said = with_ctx(&host, false, &services, |ctx| {
        let ssh = StepKind::Service(svc("ssh.service", Some(true), None));
        assert!(resource::plan(&ssh, ctx).expect("plan ssh").is_in_sync());
        set_unit(
            &units,
            "nginx.service",
            Unit {
                reload: true,
                ..RUNNING
            },
        );
        resource::refresh(&StepKind::Service(nginx), &Plan::default(), ctx).expect("refresh")
    });
    assert_eq!(
        said.as_deref(),
        Some("restarted nginx.service after daemon-reload")
    );
    assert_eq!(shows(&host), [show_argv(&services), show_argv(&services)]);
    assert_eq!(
        mutating(&host),
        [
            argv(&["daemon-reload"]),
            argv(&["restart", "nginx.service"])
        ]
    );
}

// ---------------------------------------------------------------------------------
// The engine: a small repository compiled for host h1

struct Fixture {
    catalog: Catalog,
}

impl Fixture {
    fn new(steps: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let files: &[(&str, &str)] = &[
            ("infra.toml", "format = 1\n"),
            (
                "inventory/production.toml",
                "[groups.all]\nroles = [\"r\"]\n\n[groups.g]\nhosts = [\"h1\"]\n",
            ),
            ("roles/r.toml", steps),
            (
                "templates/nginx.conf.hbs",
                "worker_processes {{data.workers}};\n",
            ),
            ("group_data/all.toml", "workers = 2\n"),
        ];
        for (path, text) in files {
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
        Self { catalog }
    }

    /// Runs the catalog as `--once` does: the settings name every unit of the catalog.
    fn run(&self, host: &dyn Host, dry_run: bool) -> RunReport {
        let reader = no_files;
        let originals = Originals::new(Path::new(STATE_DIR));
        let mut ctx = Ctx::new(host, dry_run, Some(&originals), &reader);
        ctx.settings.services = units(&self.catalog);
        let options = Options {
            dry_run,
            only: Vec::new(),
            ..Default::default()
        };
        engine::run(&self.catalog, &ctx, &options).expect("the run starts")
    }
}

fn step<'a>(report: &'a RunReport, id: &str) -> &'a StepReport {
    report
        .steps
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("step {id} in {:#?}", report.steps))
}

fn statuses(report: &RunReport) -> Vec<(&str, Status)> {
    report
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.status))
        .collect()
}

/// Two steps that write nginx's configuration and notify it, then nginx.
fn nginx_role(service_keys: &str) -> String {
    format!(
        r#"
[[step]]
id = "conf"
type = "template"
path = "/etc/nginx/nginx.conf"
source = "nginx.conf.hbs"
notify = ["nginx"]

[[step]]
id = "site"
type = "file"
path = "/etc/nginx/sites-enabled/default"
content = "server {{ listen 80; }}\n"
notify = ["nginx"]

[[step]]
id = "nginx"
type = "service"
name = "nginx"
{service_keys}
"#
    )
}

fn nginx_host(unit: Unit) -> (FakeHost, Units) {
    systemd_on(
        FakeHost::new().with_dir("/etc/nginx/sites-enabled", 0o755),
        &[("nginx.service", unit)],
    )
}

#[test]
fn units_lists_every_service_of_the_catalog_once() {
    let fx = Fixture::new(
        r#"
[[step]]
id = "a"
type = "service"
name = "nginx"

[[step]]
id = "b"
type = "service"
name = "apt-daily.timer"

[[step]]
id = "c"
type = "service"
name = "nginx.service"
state = "running"
"#,
    );
    assert_eq!(units(&fx.catalog), ["nginx.service", "apt-daily.timer"]);
    let desired = fx.catalog.steps[0].desired.as_ref().expect("rendered");
    assert_eq!(resource::describe(desired), "service nginx.service");
}

#[test]
fn one_systemctl_show_reads_every_unit_of_the_run() {
    let fx = Fixture::new(
        r#"
[[step]]
id = "nginx"
type = "service"
name = "nginx"
enabled = true
state = "running"

[[step]]
id = "ssh"
type = "service"
name = "ssh"
state = "running"

[[step]]
id = "cron"
type = "service"
name = "cron"
enabled = true
"#,
    );
    let all = ["nginx.service", "ssh.service", "cron.service"];
    let (host, units) = systemd(&[
        ("nginx.service", RUNNING),
        ("ssh.service", RUNNING),
        ("cron.service", RUNNING),
    ]);
    let report = fx.run(&host, false);
    assert_eq!(
        statuses(&report),
        [
            ("nginx", Status::InSync),
            ("ssh", Status::InSync),
            ("cron", Status::InSync)
        ]
    );
    assert_eq!(shows(&host), [show_argv(&all)]);
    assert!(mutating(&host).is_empty());

    // A change is followed by one more read (the engine confirms it), shared by the
    // steps after it.
    host.clear_log();
    set_unit(&units, "ssh.service", STOPPED);
    let report = fx.run(&host, false);
    assert_eq!(step(&report, "ssh").status, Status::Changed);
    assert_eq!(step(&report, "cron").status, Status::InSync);
    let commands: Vec<Vec<String>> = host.commands().into_iter().map(|c| c.args).collect();
    assert_eq!(
        commands,
        [
            show_argv(&all),
            argv(&["start", "ssh.service"]),
            show_argv(&all)
        ]
    );
}

#[test]
fn two_notifiers_restart_the_service_once() {
    let fx = Fixture::new(&nginx_role("enabled = true\nstate = \"running\""));
    let (host, _) = nginx_host(RUNNING);
    let report = fx.run(&host, false);
    assert_eq!(
        statuses(&report),
        [
            ("conf", Status::Changed),
            ("site", Status::Changed),
            ("nginx", Status::InSync)
        ]
    );
    let nginx = step(&report, "nginx");
    assert_eq!(nginx.notified_by, ["conf", "site"]);
    assert_eq!(nginx.refreshed.as_deref(), Some("restarted nginx.service"));
    assert_eq!(shows(&host).len(), 1);
    assert_eq!(mutating(&host), [argv(&["restart", "nginx.service"])]);
    assert_eq!(report.exit_code(), 2);

    // Nothing changed: no restart.
    host.clear_log();
    let report = fx.run(&host, false);
    assert!(
        report.steps.iter().all(|s| s.status == Status::InSync),
        "{:#?}",
        report.steps
    );
    assert_eq!(step(&report, "nginx").refreshed, None);
    assert!(mutating(&host).is_empty());
    assert_eq!(report.exit_code(), 0);
}

#[test]
fn a_service_the_run_started_is_not_restarted() {
    let fx = Fixture::new(&nginx_role("enabled = true\nstate = \"running\""));
    let (host, units) = nginx_host(STOPPED);
    let report = fx.run(&host, false);
    let nginx = step(&report, "nginx");
    assert_eq!(nginx.status, Status::Changed);
    let kinds: Vec<ChangeKind> = nginx.changes.iter().map(|c| c.kind).collect();
    assert_eq!(kinds, [ChangeKind::Enable, ChangeKind::Start]);
    assert_eq!(
        nginx.refreshed.as_deref(),
        Some("already started in this run")
    );
    assert_eq!(
        mutating(&host),
        [
            argv(&["enable", "nginx.service"]),
            argv(&["start", "nginx.service"])
        ]
    );
    assert_eq!(unit_of(&units, "nginx.service"), RUNNING);
}

#[test]
fn on_notify_reload_reloads() {
    let fx = Fixture::new(&nginx_role("state = \"running\"\non_notify = \"reload\""));
    let (host, _) = nginx_host(RUNNING);
    let report = fx.run(&host, false);
    assert_eq!(
        step(&report, "nginx").refreshed.as_deref(),
        Some("reloaded nginx.service")
    );
    assert_eq!(mutating(&host), [argv(&["reload", "nginx.service"])]);
}

#[test]
fn a_stopped_service_is_not_restarted() {
    let fx = Fixture::new(&nginx_role("enabled = false\nstate = \"stopped\""));
    let (host, _) = nginx_host(STOPPED);
    let report = fx.run(&host, false);
    let nginx = step(&report, "nginx");
    assert_eq!(nginx.status, Status::InSync);
    assert_eq!(
        nginx.refreshed.as_deref(),
        Some("not restarted: nginx.service is meant to be stopped")
    );
    assert!(mutating(&host).is_empty());
}

#[test]
fn a_dry_run_runs_nothing_that_changes_and_says_it_would_restart() {
    let fx = Fixture::new(&nginx_role("enabled = true\nstate = \"running\""));
    let (host, _) = nginx_host(RUNNING);
    let report = fx.run(&host, true);
    assert_eq!(
        statuses(&report),
        [
            ("conf", Status::Pending),
            ("site", Status::Pending),
            ("nginx", Status::InSync)
        ]
    );
    assert_eq!(
        step(&report, "nginx").refreshed.as_deref(),
        Some("would restart nginx.service")
    );
    assert!(mutating(&host).is_empty(), "{:?}", host.commands());
    let show_line = format!(
        "run {}",
        Cmd::new("systemctl")
            .args(show_argv(&["nginx.service"]))
            .display()
    );
    assert_eq!(host.mutations(), [show_line], "a dry run only reads");
    assert_eq!(report.exit_code(), 2);

    // Not started yet: the dry run says it would start it, and no restart.
    let (host, _) = nginx_host(STOPPED);
    let report = fx.run(&host, true);
    let nginx = step(&report, "nginx");
    assert_eq!(nginx.status, Status::Pending);
    assert_eq!(
        nginx.refreshed.as_deref(),
        Some("would start nginx.service in this run, so no restart")
    );
    assert!(mutating(&host).is_empty());
}

#[test]
fn a_unit_that_does_not_exist_fails_the_step_but_is_pending_in_a_dry_run() {
    let fx = Fixture::new(
        r#"
[[step]]
id = "app"
type = "service"
name = "app"
enabled = true
state = "running"
"#,
    );
    let missing = Unit {
        exists: false,
        ..STOPPED
    };
    let (host, _) = systemd(&[("app.service", missing)]);
    let report = fx.run(&host, false);
    let app = step(&report, "app");
    assert_eq!(app.status, Status::Failed);
    assert_eq!(
        app.error.as_deref(),
        Some(
            "unit app.service does not exist: install its package in an earlier step (and `requires` it)"
        )
    );
    assert!(mutating(&host).is_empty());

    let report = fx.run(&host, true);
    let app = step(&report, "app");
    assert_eq!(app.status, Status::Pending);
    assert!(
        app.changes.iter().all(|c| c
            .note
            .as_deref()
            .is_some_and(|n| n.contains("does not exist yet"))),
        "{:#?}",
        app.changes
    );
}

#[test]
fn bad_keys_are_refused_when_the_repository_loads() {
    let load = |steps: &str| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        support::write(dir.path(), "infra.toml", "format = 1\n");
        support::write(
            dir.path(),
            "inventory/production.toml",
            "[groups.all]\nroles = [\"r\"]\n\n[groups.g]\nhosts = [\"h1\"]\n",
        );
        support::write(dir.path(), "roles/r.toml", steps);
        let source = DirSource::new(dir.path());
        let repo = state_repo::load(&source, Version::agent()).map_err(|e| e.to_string())?;
        let sel = repo.select("h1").map_err(|e| e.to_string())?;
        catalog::compile(&repo, &sel, &Facts::placeholder("h1"))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let cases = [
        (
            "name = \"a b\"",
            "`name`: \"a b\" is not a unit name: it contains ' '",
        ),
        (
            "name = \"x\"\nstate = \"started\"",
            "`state` is \"started\", which is not one of \"running\", \"stopped\"",
        ),
        (
            "name = \"x\"\non_notify = \"kill\"",
            "`on_notify` is \"kill\", which is not one of \"restart\", \"reload\", \"reload-or-restart\"",
        ),
        (
            "name = \"x\"\nenabled = \"yes\"",
            "`enabled` must be true or false",
        ),
        ("enabled = true", "step `s` has no `name`"),
    ];
    for (keys, wanted) in cases {
        let err = load(&format!(
            "[[step]]\nid = \"s\"\ntype = \"service\"\n{keys}\n"
        ))
        .expect_err(keys);
        assert!(err.contains(wanted), "{keys}: {err}");
    }
}
