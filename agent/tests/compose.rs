//! The `compose` step: a small state repository for host `h1` is compiled and run by
//! the engine against a fake host whose `docker` / `docker-compose` answer like the
//! real ones (a scripted project: its services and which of them run). Checks which
//! compose is used (v2 or v1), the argv of every command started, the plan, the pull
//! policies, refresh on notify (once), dry runs and failures.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use infra_agent::catalog::Catalog;
use infra_agent::engine::{RunReport, Status, StepReport};
use infra_agent::host::FakeHost;
use infra_agent::host::fake::Op;
use infra_agent::process::{Cmd, CmdOutput};
use infra_agent::resource::ChangeKind;

const V1: &str = "/usr/bin/docker-compose";
const FILE: &str = "/srv/web/compose.yml";
/// What every compose command starts with after the program.
const PROJECT_ARGS: &str = "-p web -f /srv/web/compose.yml --project-directory /srv/web";

fn compile(steps: &str) -> Result<Catalog, String> {
    support::compile_h1(
        &[
            ("group_data/all.toml", "[web]\nport = \"8080\"\n"),
            ("templates/compose.yml.hbs", "services: {{data.web.port}}\n"),
        ],
        steps,
    )
}

fn catalog(steps: &str) -> Catalog {
    compile(steps).unwrap_or_else(|e| panic!("the steps compile:\n{e}\n{steps}"))
}

/// One compose step `web` with the given extra keys.
fn compose(keys: &str) -> String {
    format!(
        "[[step]]\nid = \"web\"\ntype = \"compose\"\nproject = \"web\"\ndirectory = \"/srv/web\"\n{keys}\n"
    )
}

/// A template step writing the compose file and notifying `web`, then `web`.
fn template_and_compose(keys: &str) -> String {
    format!(
        "[[step]]\nid = \"web-compose\"\ntype = \"template\"\npath = \"{FILE}\"\nsource = \"compose.yml.hbs\"\nnotify = [\"web\"]\n\n{}",
        compose(keys)
    )
}

fn run(catalog: &Catalog, host: &FakeHost, dry_run: bool) -> RunReport {
    support::run_catalog(catalog, host, dry_run)
}

fn step<'a>(report: &'a RunReport, id: &str) -> &'a StepReport {
    support::step_report(report, id)
}

/// Every command started, as `program arg arg`, with the project arguments shown as `…`.
fn started(host: &FakeHost) -> Vec<String> {
    host.commands()
        .iter()
        .map(|c| {
            std::iter::once(c.program.as_str())
                .chain(c.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ")
                .replace(PROJECT_ARGS, "…")
        })
        .collect()
}

/// Commands that change something (everything but version, config and ps).
fn mutating(host: &FakeHost) -> Vec<String> {
    started(host)
        .into_iter()
        .filter(|c| !(c.ends_with(" version") || c.contains(" config ") || c.contains(" ps ")))
        .collect()
}

fn out(code: i32, stdout: &str, stderr: &str) -> CmdOutput {
    CmdOutput {
        code: Some(code),
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
        ..CmdOutput::default()
    }
}

/// Which compose the fake machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Installed {
    V2,
    V1,
    /// docker-compose v1 but no `docker` program at all.
    V1NoDocker,
    Neither,
}

/// A scripted Docker: the project's services and the set that runs. `up` starts them
/// all (unless `up_fails_for` names one: it stays down), `stop` stops them.
#[derive(Debug, Clone)]
struct Project {
    services: Vec<&'static str>,
    running: Arc<Mutex<BTreeSet<String>>>,
    stays_down: Option<&'static str>,
}

impl Project {
    fn new(services: &[&'static str], running: &[&str]) -> Self {
        Self {
            services: services.to_vec(),
            running: Arc::new(Mutex::new(
                running.iter().map(|s| (*s).to_owned()).collect(),
            )),
            stays_down: None,
        }
    }

    fn running(&self) -> Vec<String> {
        self.running
            .lock()
            .expect("the lock is not poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// Answers a compose command whose arguments follow the program (`compose` removed).
    fn answer(&self, args: &[String]) -> CmdOutput {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let rest = match args.as_slice() {
            ["version"] => return out(0, "Docker Compose version v2.x\n", ""),
            [
                "-p",
                "web",
                "-f",
                FILE,
                "--project-directory",
                "/srv/web",
                rest @ ..,
            ] => rest,
            _ => return out(1, "", &format!("unexpected compose arguments {args:?}")),
        };
        let lines =
            |names: Vec<String>| names.iter().fold(String::new(), |text, s| text + s + "\n");
        match rest.first().copied() {
            Some("config") => out(
                0,
                &lines(self.services.iter().map(|s| (*s).to_owned()).collect()),
                "",
            ),
            Some("ps") => out(0, &lines(self.running()), ""),
            Some("up") => {
                let mut running = self.running.lock().expect("the lock is not poisoned");
                for s in &self.services {
                    if Some(*s) != self.stays_down {
                        running.insert((*s).to_owned());
                    }
                }
                out(0, "", "Creating web_web_1 ... done\n")
            }
            Some("stop") => {
                self.running
                    .lock()
                    .expect("the lock is not poisoned")
                    .clear();
                out(0, "", "")
            }
            Some("pull") => out(0, "", ""),
            _ => out(1, "", "unknown subcommand"),
        }
    }
}

fn fake(installed: Installed, project: &Project, with_file: bool) -> FakeHost {
    let mut host = FakeHost::new().with_dir("/srv/web", 0o755);
    if with_file {
        host = host.with_file(FILE, "services: old\n", 0o644);
    }
    if matches!(installed, Installed::V1 | Installed::V1NoDocker) {
        host = host.with_file(V1, "#!/usr/bin/python3\n", 0o755);
    }
    let v2 = installed == Installed::V2;
    let p = project.clone();
    host = host.with_command_effect("docker", move |_, cmd: &Cmd| match cmd.args.first() {
        Some(c) if c == "compose" && v2 => p.answer(&cmd.args[1..]),
        Some(c) if c == "compose" => out(1, "", "docker: 'compose' is not a docker command.\n"),
        _ => out(1, "", "unexpected docker command"),
    });
    let p = project.clone();
    host = host.with_command_effect(V1, move |_, cmd: &Cmd| p.answer(&cmd.args));
    if matches!(installed, Installed::V1NoDocker | Installed::Neither) {
        host = host.fail_on(Op::Run, "docker");
    }
    host
}

#[test]
fn v2_is_used_when_docker_compose_version_works() {
    let project = Project::new(&["web"], &[]);
    let host = fake(Installed::V2, &project, true);
    let report = run(&catalog(&compose("")), &host, false);
    let web = step(&report, "web");
    assert_eq!(web.status, Status::Changed, "{web:#?}");
    assert_eq!(
        started(&host),
        [
            "docker compose version",
            "docker compose … config --services",
            "docker compose … ps --services --filter status=running",
            "docker compose … up -d --remove-orphans --pull missing",
            "docker compose … config --services",
            "docker compose … ps --services --filter status=running",
        ],
        "one detection per run; plan, up, re-plan"
    );
    assert_eq!(report.exit_code(), 2);
    assert_eq!(web.changes[0].to_string(), "up web: down: web -> running");
}

#[test]
fn v1_is_used_when_v2_is_missing_or_docker_is_not_installed() {
    for installed in [Installed::V1, Installed::V1NoDocker] {
        let project = Project::new(&["web"], &[]);
        let host = fake(installed, &project, true);
        let report = run(&catalog(&compose("")), &host, false);
        assert_eq!(
            step(&report, "web").status,
            Status::Changed,
            "{installed:?}"
        );
        // Without docker, `docker compose version` cannot start (the fake does not
        // record it); that means "no v2", not a failure.
        let started = started(&host);
        let rest = match installed {
            Installed::V1 => {
                assert_eq!(started[0], "docker compose version");
                &started[1..]
            }
            _ => &started[..],
        };
        assert_eq!(
            rest,
            [
                "/usr/bin/docker-compose … config --services",
                "/usr/bin/docker-compose … ps --services --filter status=running",
                "/usr/bin/docker-compose … up -d --remove-orphans",
                "/usr/bin/docker-compose … config --services",
                "/usr/bin/docker-compose … ps --services --filter status=running",
            ],
            "{installed:?}"
        );
        assert_eq!(project.running(), ["web"]);
    }
}

#[test]
fn every_service_running_is_in_sync_and_starts_nothing() {
    for installed in [Installed::V2, Installed::V1] {
        let project = Project::new(&["db", "web"], &["db", "web"]);
        let host = fake(installed, &project, true);
        let report = run(&catalog(&compose("")), &host, false);
        let web = step(&report, "web");
        assert_eq!(web.status, Status::InSync, "{installed:?}: {web:#?}");
        assert_eq!(
            web.reason.as_deref(),
            Some("project web: every service runs (db, web)")
        );
        assert!(mutating(&host).is_empty(), "{:?}", started(&host));
        assert_eq!(report.exit_code(), 0);
    }
}

#[test]
fn a_service_down_brings_the_project_up_though_nothing_changed() {
    let project = Project::new(&["db", "web"], &["db"]);
    let host = fake(Installed::V1, &project, true);
    let report = run(&catalog(&compose("")), &host, false);
    let web = step(&report, "web");
    assert_eq!(web.status, Status::Changed, "{web:#?}");
    assert_eq!(web.changes.len(), 1);
    assert_eq!(web.changes[0].kind, ChangeKind::Up);
    assert_eq!(web.changes[0].to_string(), "up web: down: web -> running");
    assert_eq!(
        mutating(&host),
        ["/usr/bin/docker-compose … up -d --remove-orphans"]
    );
    assert_eq!(project.running(), ["db", "web"]);
}

#[test]
fn pull_policies() {
    let cases: &[(Installed, &str, &[&str])] = &[
        (
            Installed::V2,
            "",
            &["docker compose … up -d --remove-orphans --pull missing"],
        ),
        (
            Installed::V2,
            "pull_policy = \"missing\"",
            &["docker compose … up -d --remove-orphans --pull missing"],
        ),
        (
            Installed::V2,
            "pull_policy = \"always\"",
            &["docker compose … up -d --remove-orphans --pull always"],
        ),
        (
            Installed::V2,
            "pull_policy = \"never\"",
            &["docker compose … up -d --remove-orphans --pull never"],
        ),
        (
            Installed::V1,
            "",
            &["/usr/bin/docker-compose … up -d --remove-orphans"],
        ),
        (
            Installed::V1,
            "pull_policy = \"always\"",
            &[
                "/usr/bin/docker-compose … pull",
                "/usr/bin/docker-compose … up -d --remove-orphans",
            ],
        ),
        (
            Installed::V1,
            "pull_policy = \"never\"",
            &["/usr/bin/docker-compose … up -d --remove-orphans --no-build"],
        ),
    ];
    for (installed, keys, want) in cases {
        let project = Project::new(&["web"], &[]);
        let host = fake(*installed, &project, true);
        let report = run(&catalog(&compose(keys)), &host, false);
        assert_eq!(
            step(&report, "web").status,
            Status::Changed,
            "{installed:?} {keys}"
        );
        assert_eq!(mutating(&host), *want, "{installed:?} {keys}");
    }
}

#[test]
fn a_notification_recreates_once_but_not_after_bringing_it_up() {
    // Running project, changed compose file: recreated once.
    let project = Project::new(&["web"], &["web"]);
    let host = fake(Installed::V1, &project, false);
    let report = run(
        &catalog(&template_and_compose("pull_policy = \"never\"")),
        &host,
        false,
    );
    let web = step(&report, "web");
    assert_eq!(web.status, Status::InSync, "{web:#?}");
    assert_eq!(web.notified_by, ["web-compose"]);
    assert_eq!(web.refreshed.as_deref(), Some("recreated project web"));
    assert_eq!(
        mutating(&host),
        ["/usr/bin/docker-compose … up -d --remove-orphans --force-recreate --no-build"]
    );
    assert_eq!(report.exit_code(), 2);

    // Down and notified: brought up once, not recreated again.
    let project = Project::new(&["web"], &[]);
    let host = fake(Installed::V2, &project, false);
    let report = run(&catalog(&template_and_compose("")), &host, false);
    let web = step(&report, "web");
    assert_eq!(web.status, Status::Changed, "{web:#?}");
    assert_eq!(
        web.refreshed.as_deref(),
        Some("already brought up in this run")
    );
    assert_eq!(
        mutating(&host),
        ["docker compose … up -d --remove-orphans --pull missing"]
    );

    // Nothing changed: no notification, nothing run.
    host.clear_log();
    let report = run(&catalog(&template_and_compose("")), &host, false);
    assert_eq!(step(&report, "web").refreshed, None);
    assert!(mutating(&host).is_empty(), "{:?}", started(&host));
    assert_eq!(report.exit_code(), 0);
}

#[test]
fn dry_run_reads_only() {
    // Down: pending, only reads.
    let project = Project::new(&["web"], &[]);
    let host = fake(Installed::V1, &project, true);
    let report = run(&catalog(&compose("")), &host, true);
    let web = step(&report, "web");
    assert_eq!(web.status, Status::Pending, "{web:#?}");
    assert!(mutating(&host).is_empty(), "{:?}", started(&host));
    assert!(project.running().is_empty());
    assert_eq!(report.exit_code(), 2);

    // Notified while running: says what it would do.
    let project = Project::new(&["web"], &["web"]);
    let host = fake(Installed::V2, &project, true);
    let report = run(&catalog(&template_and_compose("")), &host, true);
    let web = step(&report, "web");
    assert_eq!(
        web.refreshed.as_deref(),
        Some("would recreate project web"),
        "{web:#?}"
    );
    assert!(mutating(&host).is_empty(), "{:?}", started(&host));
    assert!(
        host.mutations().iter().all(|m| m.starts_with("run ")),
        "{:?}",
        host.mutations()
    );

    // Compose not installed yet, and the file not written yet: pending with notes.
    let project = Project::new(&["web"], &[]);
    let host = fake(Installed::Neither, &project, true);
    let report = run(&catalog(&compose("")), &host, true);
    let web = step(&report, "web");
    assert_eq!(web.status, Status::Pending, "{web:#?}");
    let note = web.changes[0].note.as_deref().unwrap_or_default();
    assert!(note.contains("Docker Compose is not installed"), "{note}");
    let host2 = fake(Installed::V2, &project, false);
    let report = run(&catalog(&compose("")), &host2, true);
    let web = step(&report, "web");
    assert_eq!(web.status, Status::Pending, "{web:#?}");
    let note = web.changes[0].note.as_deref().unwrap_or_default();
    assert!(
        note.contains("compose file /srv/web/compose.yml does not exist yet"),
        "{note}"
    );
    assert!(started(&host2).is_empty(), "{:?}", started(&host2));
}

#[test]
fn failures_say_why() {
    // Neither compose installed.
    let project = Project::new(&["web"], &[]);
    let host = fake(Installed::Neither, &project, true);
    let report = run(&catalog(&compose("")), &host, false);
    let web = step(&report, "web");
    assert_eq!(web.status, Status::Failed);
    let error = web.error.as_deref().unwrap_or_default();
    assert!(error.contains("Docker Compose is not installed"), "{error}");
    assert!(error.contains("package step"), "{error}");
    assert_eq!(report.exit_code(), 4);

    // No compose file.
    let host = fake(Installed::V2, &project, false);
    let report = run(&catalog(&compose("")), &host, false);
    let error = step(&report, "web").error.clone().unwrap_or_default();
    assert!(
        error.contains("/srv/web/compose.yml does not exist"),
        "{error}"
    );

    // A service that does not stay up fails the step after `up`.
    let mut project = Project::new(&["db", "web"], &[]);
    project.stays_down = Some("web");
    let host = fake(Installed::V1, &project, true);
    let report = run(&catalog(&compose("")), &host, false);
    let web = step(&report, "web");
    assert_eq!(web.status, Status::Failed, "{web:#?}");
    assert!(web.modified);

    // `config` fails (a broken compose file): the step fails with compose's message.
    let host = FakeHost::new()
        .with_file(FILE, "services: [\n", 0o644)
        .with_command("docker", out(0, "v2\n", ""))
        .with_command_fn(
            "config",
            |c| c.args.iter().any(|a| a == "config"),
            out(15, "", "yaml: line 1: did not find expected node content\n"),
        );
    let report = run(&catalog(&compose("")), &host, false);
    let error = step(&report, "web").error.clone().unwrap_or_default();
    assert!(
        error.contains("config --services` failed: exit code 15: yaml: line 1"),
        "{error}"
    );
}

#[test]
fn stopped_state_stops_a_running_project() {
    let project = Project::new(&["web"], &["web"]);
    let host = fake(Installed::V2, &project, true);
    let report = run(&catalog(&compose("state = \"stopped\"")), &host, false);
    let web = step(&report, "web");
    assert_eq!(web.status, Status::Changed, "{web:#?}");
    assert_eq!(
        web.changes[0].to_string(),
        "stop web: running: web -> stopped"
    );
    assert_eq!(mutating(&host), ["docker compose … stop"]);
    host.clear_log();
    let report = run(&catalog(&compose("state = \"stopped\"")), &host, false);
    assert_eq!(step(&report, "web").status, Status::InSync);
}

#[test]
fn keys_are_checked_when_compiling() {
    let c = catalog(&compose("file = \"docker-compose.yml\""));
    let json = serde_json::to_value(&c.steps[0].desired).expect("a step serializes");
    assert_eq!(json["file"], "/srv/web/docker-compose.yml");
    assert_eq!(json["pull_policy"], "missing");
    assert_eq!(json["state"], "running");
    let c = catalog(&compose("file = \"/etc/other/compose.yaml\""));
    let json = serde_json::to_value(&c.steps[0].desired).expect("a step serializes");
    assert_eq!(json["file"], "/etc/other/compose.yaml");

    for (keys, want) in [
        ("file = \"../x.yml\"", "is not a file name"),
        ("pull_policy = \"sometimes\"", "pull_policy"),
    ] {
        let err = compile(&compose(keys)).expect_err(keys);
        assert!(err.contains(want), "{keys}: {err}");
    }
    let bad = "[[step]]\nid = \"web\"\ntype = \"compose\"\nproject = \"Web App\"\ndirectory = \"/srv/web\"\n";
    let err = compile(bad).expect_err("a bad project name");
    assert!(err.contains("`project`"), "{err}");
    let relative =
        "[[step]]\nid = \"web\"\ntype = \"compose\"\nproject = \"web\"\ndirectory = \"srv/web\"\n";
    let err = compile(relative).expect_err("a relative directory");
    assert!(err.contains("absolute"), "{err}");
}
