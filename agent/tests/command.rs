//! The `command` step: a small state repository for host `h1` is compiled and run by
//! the engine against a fake host whose commands are scripted. Tables of cases check
//! what is started (argv exactly), what the guards decide, how failures read, the
//! re-plan rule (a command counts as converged once per run) and notify.

mod support;

use std::path::Path;
use std::time::Duration;

use infra_agent::catalog::Catalog;
use infra_agent::engine::{RunReport, Status, StepReport};
use infra_agent::facts::Facts;
use infra_agent::host::fake::Node;
use infra_agent::host::{self, FakeHost, Host, Meta};
use infra_agent::process::{Cmd, CmdOutput};
use infra_agent::resource::{self, ChangeKind, Ctx};
use infra_agent::step::StepKind;

/// Loads and compiles `steps` for `h1`: the catalog, or every error as text.
fn compile(steps: &str) -> Result<Catalog, String> {
    support::compile_h1(
        &[(
            "group_data/all.toml",
            "[tool]\nenv = { MODE = \"fast\" }\nbad_env = { N = 3 }\n",
        )],
        steps,
    )
}

fn catalog(steps: &str) -> Catalog {
    compile(steps).unwrap_or_else(|e| panic!("the steps compile:\n{e}\n{steps}"))
}

/// One command step with the given keys.
fn command(keys: &str) -> String {
    format!("[[step]]\nid = \"c\"\ntype = \"command\"\n{keys}\n")
}

fn run(catalog: &Catalog, host: &dyn Host, dry_run: bool) -> RunReport {
    support::run_catalog(catalog, host, dry_run)
}

fn step<'a>(report: &'a RunReport, id: &str) -> &'a StepReport {
    support::step_report(report, id)
}

fn text(report: &RunReport) -> String {
    support::text_report(report)
}

fn json(report: &RunReport) -> String {
    support::json_report(report)
}

fn exit(code: i32, stdout: &str) -> CmdOutput {
    CmdOutput {
        code: Some(code),
        stdout: stdout.as_bytes().to_vec(),
        ..CmdOutput::default()
    }
}

/// Every command started on the fake, as `program arg arg`.
fn started(host: &FakeHost) -> Vec<String> {
    host.commands()
        .iter()
        .map(|c| {
            std::iter::once(c.program.as_str())
                .chain(c.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// What a command does to the machine, decided when it is started.
type Effect = Box<dyn Fn(&Cmd, &FakeHost) -> Option<CmdOutput>>;

/// A fake host whose commands can also act: `effect` sees every command after the
/// fake recorded it, may change the fake's files and may replace the scripted output.
struct Acting {
    fake: FakeHost,
    effect: Effect,
}

impl Acting {
    fn new(
        fake: FakeHost,
        effect: impl Fn(&Cmd, &FakeHost) -> Option<CmdOutput> + 'static,
    ) -> Self {
        Self {
            fake,
            effect: Box::new(effect),
        }
    }
}

impl Host for Acting {
    fn facts(&self) -> Result<Facts, host::Error> {
        self.fake.facts()
    }
    fn lstat(&self, path: &Path) -> Result<Option<Meta>, host::Error> {
        self.fake.lstat(path)
    }
    fn read_file(&self, path: &Path) -> Result<Vec<u8>, host::Error> {
        self.fake.read_file(path)
    }
    fn read_link(&self, path: &Path) -> Result<std::path::PathBuf, host::Error> {
        self.fake.read_link(path)
    }
    fn read_dir(&self, path: &Path) -> Result<Vec<String>, host::Error> {
        self.fake.read_dir(path)
    }
    fn uid_of(&self, user: &str) -> Result<Option<u32>, host::Error> {
        self.fake.uid_of(user)
    }
    fn gid_of(&self, group: &str) -> Result<Option<u32>, host::Error> {
        self.fake.gid_of(group)
    }
    fn user_name(&self, uid: u32) -> Result<Option<String>, host::Error> {
        self.fake.user_name(uid)
    }
    fn group_name(&self, gid: u32) -> Result<Option<String>, host::Error> {
        self.fake.group_name(gid)
    }
    fn stage_file(
        &self,
        path: &Path,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<std::path::PathBuf, host::Error> {
        self.fake.stage_file(path, content, mode, uid, gid)
    }
    fn commit_file(&self, staged: &Path, path: &Path) -> Result<(), host::Error> {
        self.fake.commit_file(staged, path)
    }
    fn discard_staged(&self, staged: &Path) -> Result<(), host::Error> {
        self.fake.discard_staged(staged)
    }
    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), host::Error> {
        self.fake.set_mode(path, mode)
    }
    fn set_owner(
        &self,
        path: &Path,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), host::Error> {
        self.fake.set_owner(path, uid, gid)
    }
    fn create_dir(&self, path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), host::Error> {
        self.fake.create_dir(path, mode, uid, gid)
    }
    fn remove_file(&self, path: &Path) -> Result<(), host::Error> {
        self.fake.remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> Result<(), host::Error> {
        self.fake.remove_dir(path)
    }
    fn symlink(&self, target: &Path, path: &Path) -> Result<(), host::Error> {
        self.fake.symlink(target, path)
    }
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, host::Error> {
        let scripted = self.fake.run(cmd)?;
        Ok((self.effect)(cmd, &self.fake).unwrap_or(scripted))
    }
}

fn file_node(content: &str) -> Node {
    Node::File {
        content: content.as_bytes().to_vec(),
        mode: 0o755,
        uid: 0,
        gid: 0,
    }
}

// ---------------------------------------------------------------------------------
// What is started

#[test]
fn the_command_is_started_exactly_as_written() {
    // (keys, what is started, the change line and resource as shown)
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"argv = ["apt-get", "install", "-y", "two words"]"#,
            "apt-get install -y two words",
            "apt-get install -y 'two words'",
        ),
        (
            r#"shell = "echo a | tee /tmp/x && true""#,
            "/bin/sh -c echo a | tee /tmp/x && true",
            "/bin/sh -c 'echo a | tee /tmp/x && true'",
        ),
        (
            "argv = [\"make\"]\ncwd = \"/srv/src\"",
            "env -C /srv/src -- make",
            "make",
        ),
        (
            "argv = [\"whoami\"]\nuser = \"alice\"",
            "runuser -u alice -- whoami",
            "whoami",
        ),
        (
            "shell = \"make install\"\nuser = \"alice\"\ncwd = \"/srv/src\"",
            "runuser -u alice -- env -C /srv/src -- /bin/sh -c make install",
            "/bin/sh -c 'make install'",
        ),
        ("argv = [\"echo\", \"{{host.name}}\"]", "echo h1", "echo h1"),
    ];
    for (keys, argv, shown) in cases {
        let cat = catalog(&command(keys));
        let host = FakeHost::new()
            .with_user("alice", 1000)
            .with_dir("/srv/src", 0o755);
        let report = run(&cat, &host, false);
        let c = step(&report, "c");
        assert_eq!(c.status, Status::Changed, "{keys}: {c:#?}");
        assert_eq!(started(&host), [*argv], "{keys}");
        assert_eq!(c.resource, format!("command {shown}"), "{keys}");
        assert_eq!(c.changes.len(), 1, "{keys}");
        assert_eq!(c.changes[0].kind, ChangeKind::Run, "{keys}");
        assert_eq!(c.changes[0].to_string(), format!("run {shown}"), "{keys}");
    }
}

#[test]
fn environment_is_passed_and_its_values_never_shown() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "environment = { TOKEN = \"s3cret-{{host.name}}\", DEBIAN_FRONTEND = \"noninteractive\" }",
            &[
                ("DEBIAN_FRONTEND", "noninteractive"),
                ("TOKEN", "s3cret-h1"),
            ],
        ),
        ("environment = { data = \"tool.env\" }", &[("MODE", "fast")]),
        (
            "[step.environment]\nTOKEN = \"s3cret\"",
            &[("TOKEN", "s3cret")],
        ),
    ];
    for (keys, env) in cases {
        // The table form must come last in the step: put argv before it.
        let cat = catalog(&command(&format!(
            "argv = [\"tool\", \"sync\"]\nunless = [\"tool\", \"check\"]\n{keys}"
        )));
        let host =
            FakeHost::new().with_command_fn("tool check", |c| c.args == ["check"], exit(1, ""));
        let report = run(&cat, &host, false);
        let want: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        // The guard and the command both get the environment.
        let cmds = host.commands();
        assert_eq!(cmds.len(), 3, "{keys}: guard, command, guard again");
        for cmd in &cmds {
            assert_eq!(cmd.env, want, "{keys}");
        }
        let names: Vec<String> = env.iter().map(|(k, _)| format!("{k}=…")).collect();
        let c = step(&report, "c");
        assert_eq!(
            c.resource,
            format!("command {} tool sync", names.join(" ")),
            "{keys}"
        );
        let shown = format!(
            "{}{}{}",
            text(&report),
            json(&report),
            host.mutations().join("\n")
        );
        for (_, value) in *env {
            assert!(!shown.contains(value), "{keys}: {value} shown in\n{shown}");
        }
    }
}

#[test]
fn timeout_is_given_to_the_command_and_its_guards() {
    let cases: &[(&str, u64)] = &[
        ("", 600),
        ("timeout = \"30s\"", 30),
        ("timeout = \"5m\"", 300),
        ("timeout = \"1h\"", 3600),
        ("timeout = \"90\"", 90),
        ("timeout = \"{{host.name}}\"", 0), // renders to "h1": an error, below
    ];
    for (keys, secs) in cases {
        let steps = command(&format!("argv = [\"sleepy\"]\nonlyif = [\"true\"]\n{keys}"));
        if *secs == 0 {
            let err = compile(&steps).expect_err("h1 is not a duration");
            assert!(err.contains("`timeout`: \"h1\" is not a duration"), "{err}");
            continue;
        }
        let host = FakeHost::new();
        run(&catalog(&steps), &host, false);
        let cmds = host.commands();
        assert_eq!(cmds.len(), 2, "{keys}");
        for cmd in cmds {
            assert_eq!(cmd.timeout, Some(Duration::from_secs(*secs)), "{keys}");
        }
    }
}

#[test]
fn mistakes_in_a_command_step_are_errors_with_a_hint() {
    // (keys, what the error says, what the hint says)
    let cases: &[(&str, &str, &str)] = &[
        (
            "argv = [\"x\"]\ntimeout = 30",
            "`timeout` must be a duration string such as \"30s\", \"5m\" or \"1h\", found the integer 30",
            "write timeout = \"30s\"",
        ),
        (
            "argv = [\"x\"]\ntimeout = \"5x\"",
            "`timeout`: \"5x\" is not a duration",
            "\"30s\"",
        ),
        (
            "argv = [\"x\"]\ntimeout = \"0s\"",
            "it must be more than 0",
            "\"30s\"",
        ),
        (
            "argv = [\"x\"]\nshell = \"x\"",
            "takes `argv` or `shell`, not both",
            "shell = \"...\" for /bin/sh -c",
        ),
        (
            "cwd = \"/tmp\"",
            "needs exactly one of `argv` and `shell`",
            "argv = [\"program\", \"arg\"]",
        ),
        (
            "argv = []",
            "`argv` must name a program",
            "argv = [\"program\"",
        ),
        (
            "shell = \"  \"",
            "`shell` is empty",
            "shell = \"cmd1 && cmd2\"",
        ),
        (
            "argv = \"apt-get update\"",
            "`argv` must be an array of strings",
            "write argv as an array of strings",
        ),
        (
            "argv = [\"x\"]\nunless = \"test -e /x\"",
            "`unless` must be an array of strings",
            "an array of strings",
        ),
        (
            "argv = [\"x\"]\nonlyif = []",
            "`onlyif` must name a program",
            "[\"sh\", \"-c\", \"...\"]",
        ),
        (
            "argv = [\"x\"]\ncreates = \"bin/x\"",
            "`creates` must be an absolute path",
            "start the path with /",
        ),
        (
            "argv = [\"x\"]\ncwd = \"src\"",
            "`cwd` must be an absolute path",
            "start the path with /",
        ),
        (
            "argv = [\"x\"]\nenvironment = { N = 3 }",
            "`environment.N` must be a string, found the integer 3",
            "quote the value",
        ),
        (
            "argv = [\"x\"]\nenvironment = \"A=1\"",
            "`environment` must be a table of strings",
            "environment",
        ),
        (
            "argv = [\"x\"]\nenvironment = { data = \"tool.bad_env\" }",
            "`environment` must be a table of strings, but `N` is 3",
            "point { data = ... } at a table",
        ),
        (
            "argv = [\"x\"]\nenvironment = { \"A=B\" = \"1\" }",
            "\"A=B\" is not a variable name",
            "has no `=`",
        ),
        (
            "argv = [\"x\"]\nuser = \"two words\"",
            "`user` is \"two words\", which is not a user name",
            "user = \"alice\"",
        ),
        (
            "argv = [\"x\"]\nrun_as = \"alice\"",
            "unknown key `run_as` in a command step",
            "Keys of a command step",
        ),
    ];
    for (keys, message, hint) in cases {
        let err = compile(&command(keys)).expect_err(keys);
        assert!(err.contains(message), "{keys}: {err}");
        assert!(err.contains(hint), "{keys}: hint {hint:?} missing in {err}");
        assert!(err.contains("roles/r.toml:"), "{keys}: {err}");
    }
}

// ---------------------------------------------------------------------------------
// Guards

#[test]
fn guards_decide_whether_the_command_runs() {
    // (keys, scripted exit codes of the guard programs, status, in-sync reason or
    // change line, commands started)
    type Case = (
        &'static str,
        &'static [(&'static str, i32)],
        Status,
        &'static str,
        &'static [&'static str],
    );
    let cases: &[Case] = &[
        (
            "creates = \"/usr/local/bin/starship\"",
            &[],
            Status::InSync,
            "/usr/local/bin/starship exists",
            &[],
        ),
        (
            "unless = [\"starship\", \"--version\"]",
            &[("starship", 0)],
            Status::InSync,
            "unless `starship --version` exited 0",
            &["starship --version"],
        ),
        (
            "onlyif = [\"test\", \"-d\", \"/srv\"]",
            &[("test", 1)],
            Status::InSync,
            "onlyif `test -d /srv` exited 1: not needed",
            &["test -d /srv"],
        ),
        (
            // unless is asked before onlyif; a done command needs no onlyif
            "unless = [\"starship\", \"--version\"]\nonlyif = [\"test\", \"-d\", \"/srv\"]",
            &[("starship", 0), ("test", 1)],
            Status::InSync,
            "unless `starship --version` exited 0",
            &["starship --version"],
        ),
        (
            // creates wins without running any guard
            "creates = \"/usr/local/bin/starship\"\nunless = [\"starship\", \"--version\"]",
            &[("starship", 1)],
            Status::InSync,
            "/usr/local/bin/starship exists",
            &[],
        ),
        (
            // onlyif passes: runs; the re-plan does not run onlyif again
            "onlyif = [\"test\", \"-d\", \"/srv\"]",
            &[("test", 0)],
            Status::Changed,
            "run install-it",
            &["test -d /srv", "install-it"],
        ),
    ];
    for (keys, scripts, status, said, cmds) in cases {
        let cat = catalog(&command(&format!("argv = [\"install-it\"]\n{keys}")));
        let mut host = FakeHost::new().with_file("/usr/local/bin/starship", "bin", 0o755);
        for (program, code) in *scripts {
            host = host.with_command(program, exit(*code, ""));
        }
        let report = run(&cat, &host, false);
        let c = step(&report, "c");
        assert_eq!(c.status, *status, "{keys}: {c:#?}");
        if *status == Status::InSync {
            assert_eq!(c.reason.as_deref(), Some(*said), "{keys}");
        } else {
            assert_eq!(c.changes[0].to_string(), *said, "{keys}");
        }
        assert_eq!(started(&host), *cmds, "{keys}");
    }
}

#[test]
fn a_guard_that_cannot_run_fails_the_step() {
    let cases: &[(&str, CmdOutput, &str)] = &[
        (
            "unless = [\"probe\"]",
            CmdOutput {
                timed_out: true,
                ..CmdOutput::default()
            },
            "the `unless` guard `probe` did not finish within 10m and was killed",
        ),
        (
            "onlyif = [\"probe\"]",
            CmdOutput::default(),
            "the `onlyif` guard `probe` was killed by a signal",
        ),
    ];
    for (keys, out, error) in cases {
        let cat = catalog(&command(&format!("argv = [\"x\"]\n{keys}")));
        let host = FakeHost::new().with_command("probe", out.clone());
        let report = run(&cat, &host, false);
        let c = step(&report, "c");
        assert_eq!(c.status, Status::Failed);
        assert_eq!(c.error.as_deref(), Some(*error));
        assert_eq!(started(&host), ["probe"], "the command itself never ran");
    }
    let cat = catalog(&command("argv = [\"x\"]\nunless = [\"probe\"]"));
    let host = FakeHost::new().fail_on(infra_agent::host::fake::Op::Run, "probe");
    let report = run(&cat, &host, false);
    let error = step(&report, "c").error.clone().unwrap_or_default();
    assert!(
        error.starts_with("cannot run the `unless` guard"),
        "{error}"
    );
}

#[test]
fn a_dry_run_runs_the_guards_and_never_the_command() {
    let cases: &[(&str, Status, &[&str])] = &[
        ("", Status::Pending, &[]),
        ("unless = [\"probe\"]", Status::Pending, &["probe"]),
        ("onlyif = [\"probe\"]", Status::Pending, &["probe"]),
        ("creates = \"/opt/x\"", Status::Pending, &[]),
    ];
    for (keys, status, cmds) in cases {
        let cat = catalog(&command(&format!("argv = [\"install-it\"]\n{keys}")));
        let host =
            FakeHost::new().with_command("probe", exit(i32::from(keys.starts_with("unless")), ""));
        let report = run(&cat, &host, true);
        let c = step(&report, "c");
        assert_eq!(c.status, *status, "{keys}");
        assert_eq!(c.changes[0].to_string(), "run install-it", "{keys}");
        assert_eq!(started(&host), *cmds, "{keys}");
        assert_eq!(report.exit_code(), 2, "{keys}");
    }
}

#[test]
fn a_missing_user_or_cwd_fails_the_step_or_is_a_note_in_a_dry_run() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "user = \"deploy\"",
            "user deploy does not exist on this machine; create it in an earlier step",
            "run x (user deploy does not exist on this machine yet; its guards are not run)",
        ),
        (
            "cwd = \"/srv/app\"",
            "cwd /srv/app does not exist on this machine; create it in an earlier step",
            "run x (cwd /srv/app does not exist on this machine yet; its guards are not run)",
        ),
    ];
    for (keys, error, note) in cases {
        let cat = catalog(&command(&format!(
            "argv = [\"x\"]\nunless = [\"probe\"]\n{keys}"
        )));
        let host = FakeHost::new();
        let report = run(&cat, &host, false);
        assert_eq!(step(&report, "c").error.as_deref(), Some(*error), "{keys}");
        let dry = run(&cat, &host, true);
        assert_eq!(step(&dry, "c").changes[0].to_string(), *note, "{keys}");
        assert!(host.commands().is_empty(), "{keys}: nothing ran");
    }
}

// ---------------------------------------------------------------------------------
// Failures

#[test]
fn a_failing_command_reports_its_exit_code_and_the_end_of_its_output() {
    let long = (1..=30)
        .map(|i| format!("line {i}\n"))
        .collect::<Vec<_>>()
        .concat();
    let cases: &[(CmdOutput, &str)] = &[
        (
            CmdOutput {
                code: Some(3),
                stdout: long.clone().into_bytes(),
                ..CmdOutput::default()
            },
            "`fetch --all` exited with code 3; its output ends with:\n… (10 earlier lines not shown)\nline 11\n",
        ),
        (
            CmdOutput {
                code: Some(1),
                stdout: b"out\n".to_vec(),
                stderr: b"E: boom\n".to_vec(),
                ..CmdOutput::default()
            },
            "`fetch --all` exited with code 1; its output ends with:\nout\nE: boom",
        ),
        (exit(2, ""), "`fetch --all` exited with code 2 (no output)"),
        (
            CmdOutput {
                timed_out: true,
                ..CmdOutput::default()
            },
            "`fetch --all` did not finish within 30s and was killed (no output)",
        ),
        (
            CmdOutput::default(),
            "`fetch --all` was killed by a signal (no output)",
        ),
    ];
    for (out, error) in cases {
        let cat = catalog(&format!(
            "{}\n[[step]]\nid = \"after\"\ntype = \"command\"\nargv = [\"y\"]\nrequires = [\"c\"]\n",
            command("argv = [\"fetch\", \"--all\"]\ntimeout = \"30s\"")
        ));
        let host = FakeHost::new().with_command("fetch", out.clone());
        let report = run(&cat, &host, false);
        let c = step(&report, "c");
        assert_eq!(c.status, Status::Failed);
        let got = c.error.clone().unwrap_or_default();
        assert!(got.starts_with(error), "{got}\n---\n{error}");
        assert!(!c.modified, "a failed command counts as not changed");
        assert_eq!(step(&report, "after").status, Status::Skipped);
        assert_eq!(report.exit_code(), 4);
        if error.contains("line 11") {
            assert!(
                got.ends_with("line 30") && !got.contains("line 10\n"),
                "{got}"
            );
            assert!(text(&report).contains("    line 30\n"), "{}", text(&report));
        }
    }
}

// ---------------------------------------------------------------------------------
// The re-plan rule

#[test]
fn a_command_without_a_done_guard_runs_once_per_run_and_reports_changed() {
    for keys in ["", "onlyif = [\"true\"]"] {
        let cat = catalog(&command(&format!("shell = \"date >> /var/log/x\"\n{keys}")));
        let host = FakeHost::new();
        for _ in 0..2 {
            host.clear_log();
            let report = run(&cat, &host, false);
            let c = step(&report, "c");
            assert_eq!(c.status, Status::Changed, "{keys}: {c:#?}");
            assert_eq!(report.exit_code(), 2);
            let runs = started(&host)
                .iter()
                .filter(|c| c.starts_with("/bin/sh"))
                .count();
            assert_eq!(runs, 1, "{keys}: {:?}", started(&host));
        }
    }
}

#[test]
fn a_command_must_satisfy_its_done_guard_or_fail() {
    // (keys, whether the command does what the guard checks, status, error)
    let cases: &[(&str, bool, Status, Option<&str>)] = &[
        (
            "creates = \"/usr/local/bin/starship\"",
            true,
            Status::Changed,
            None,
        ),
        (
            "creates = \"/usr/local/bin/starship\"",
            false,
            Status::Failed,
            Some(
                "still differs after it was applied: run install-starship (it ran, but /usr/local/bin/starship still does not exist)",
            ),
        ),
        (
            "unless = [\"test\", \"-e\", \"/usr/local/bin/starship\"]",
            true,
            Status::Changed,
            None,
        ),
        (
            "unless = [\"test\", \"-e\", \"/usr/local/bin/starship\"]",
            false,
            Status::Failed,
            Some(
                "still differs after it was applied: run install-starship (it ran, but unless `test -e /usr/local/bin/starship` still fails)",
            ),
        ),
    ];
    for (keys, works, status, error) in cases {
        let cat = catalog(&command(&format!("argv = [\"install-starship\"]\n{keys}")));
        let works = *works;
        let host = Acting::new(
            FakeHost::new().with_dir("/usr/local/bin", 0o755),
            move |cmd, fake| match cmd.program.as_str() {
                "install-starship" if works => {
                    fake.set_node("/usr/local/bin/starship", Some(file_node("bin")));
                    None
                }
                "test" => Some(exit(
                    i32::from(fake.node("/usr/local/bin/starship").is_none()),
                    "",
                )),
                _ => None,
            },
        );
        let report = run(&cat, &host, false);
        let c = step(&report, "c");
        assert_eq!(c.status, *status, "{keys} works={works}: {c:#?}");
        assert_eq!(c.error.as_deref(), *error, "{keys}");
        // Converged: the next run does nothing.
        if works {
            let again = run(&cat, &host, false);
            assert_eq!(step(&again, "c").status, Status::InSync, "{keys}");
        }
    }
}

#[test]
fn the_log_shows_what_the_command_printed() {
    let steps = command("argv = [\"migrate\"]");
    let cat = catalog(&steps);
    let host = FakeHost::new().with_command("migrate", exit(0, "\n  applied 3 migrations\nok\n\n"));
    let desired = cat.steps[0].desired.as_ref().expect("rendered");
    let StepKind::Command(cmd) = desired else {
        panic!("a command step: {desired:?}")
    };
    let files = |p: &str| Err(format!("{p}: none"));
    let ctx = Ctx::new(&host, false, None, &files);
    let plan = resource::plan(desired, &ctx).expect("plans");
    resource::apply(desired, &plan, &ctx).expect("applies");
    assert!(
        resource::plan(desired, &ctx)
            .expect("re-plans")
            .is_in_sync()
    );
    assert_eq!(
        resource::command::take_output(&ctx).as_deref(),
        Some("  applied 3 migrations\nok"),
        "blank lines around it are dropped, indentation is kept"
    );
    assert_eq!(resource::command::take_output(&ctx), None, "taken once");
    assert_eq!(resource::command::describe(cmd), "command migrate");

    // A run attaches the output to the change; text prints it under the change and
    // JSON carries it.
    let report = run(&cat, &host, false);
    assert_eq!(
        report.steps[0].changes[0].output.as_deref(),
        Some("  applied 3 migrations\nok")
    );
    let out = text(&report);
    assert!(
        out.contains("  ~ run migrate\n    |   applied 3 migrations\n    | ok\n"),
        "{out}"
    );
    assert!(json(&report).contains("\"output\": \"  applied 3 migrations\\nok\""));
}

// ---------------------------------------------------------------------------------
// notify

const NOTIFIERS: &str = r#"
[[step]]
id = "a"
type = "file"
path = "/etc/a"
content = "a\n"
notify = ["c"]

[[step]]
id = "b"
type = "file"
path = "/etc/b"
content = "b\n"
notify = ["c"]
"#;

#[test]
fn a_notified_command_runs_once_even_when_its_guard_says_done() {
    // (keys, dry run, status, refreshed, runs of the command)
    let cases: &[(&str, bool, Status, &str, usize)] = &[
        (
            "creates = \"/etc/ready\"",
            false,
            Status::InSync,
            "ran reload-it",
            1,
        ),
        (
            "unless = [\"true\"]",
            false,
            Status::InSync,
            "ran reload-it",
            1,
        ),
        (
            "creates = \"/etc/ready\"",
            true,
            Status::InSync,
            "would run reload-it",
            0,
        ),
        // no guard: it runs as a change, and the notification does not run it again
        (
            "",
            false,
            Status::Changed,
            "already ran in this run, not run again",
            1,
        ),
        (
            "",
            true,
            Status::Pending,
            "runs once (above), not again for the notification",
            0,
        ),
        // onlyif still decides whether it applies at all
        (
            "onlyif = [\"false\"]",
            false,
            Status::InSync,
            "not run: onlyif `false` exited 1",
            0,
        ),
    ];
    for (keys, dry, status, refreshed, runs) in cases {
        let steps = format!(
            "{NOTIFIERS}\n{}",
            command(&format!("argv = [\"reload-it\"]\n{keys}"))
        );
        let cat = catalog(&steps);
        let host = FakeHost::new()
            .with_file("/etc/ready", "", 0o644)
            .with_command("false", exit(1, ""));
        let report = run(&cat, &host, *dry);
        let c = step(&report, "c");
        assert_eq!(c.status, *status, "{keys} dry={dry}: {c:#?}");
        assert_eq!(c.notified_by, ["a", "b"], "{keys}");
        assert_eq!(c.refreshed.as_deref(), Some(*refreshed), "{keys} dry={dry}");
        let ran = started(&host).iter().filter(|c| *c == "reload-it").count();
        assert_eq!(ran, *runs, "{keys} dry={dry}: {:?}", started(&host));
    }
}

#[test]
fn a_notified_command_that_fails_fails_its_step() {
    let steps = format!(
        "{NOTIFIERS}\n{}",
        command("argv = [\"reload-it\"]\ncreates = \"/etc/ready\"")
    );
    let host = FakeHost::new()
        .with_file("/etc/ready", "", 0o644)
        .with_command("reload-it", exit(1, "nope"));
    let report = run(&catalog(&steps), &host, false);
    let c = step(&report, "c");
    assert_eq!(c.status, Status::Failed);
    assert_eq!(
        c.error.as_deref(),
        Some(
            "notified by a, b, but the refresh failed: `reload-it` exited with code 1; its output ends with:\nnope"
        )
    );
}

#[test]
fn a_notified_command_is_not_refreshed_when_no_notifier_changed() {
    let steps = format!(
        "{NOTIFIERS}\n{}",
        command("argv = [\"reload-it\"]\ncreates = \"/etc/ready\"")
    );
    let host = FakeHost::new()
        .with_file("/etc/ready", "", 0o644)
        .with_file("/etc/a", "a\n", 0o644)
        .with_file("/etc/b", "b\n", 0o644);
    let report = run(&catalog(&steps), &host, false);
    assert_eq!(step(&report, "c").refreshed, None);
    assert!(host.commands().is_empty());
    assert_eq!(report.exit_code(), 0);
}
