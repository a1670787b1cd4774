//! `infra-agent --once` converging real Debian bookworm hosts (systemd as PID 1, sshd,
//! nala) with the Debian-host step types: `package`, `service`, `user`,
//! `authorized_keys`, `command`, and the lockout guard. The proofs of issue 4.
//!
//! Each test builds its own small state repository, boots a fresh container, runs the
//! real agent in it, and checks the host with the host's own tools (`dpkg-query`,
//! `getent`, `stat`, `systemctl`). Packages come from the machine's Debian mirror (a
//! few seconds each). The dpkg lock test sets agent.toml's `apt_lock_timeout` to
//! 20 s and waits it out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use integration_tests::{Output, TestHost, write_tree};
use serde_json::Value;

/// Where the tests put the state repository in a container.
const REPO: &str = "/srv/state";

/// The admin's public keys (generated for these tests; public keys are not secret).
const KEY_LAPTOP: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL8JNSoLFdj/6/HjoafP9FDy83n/NBo9z3yDajBMF4JC admin@laptop";

#[track_caller]
fn assert_code(run: &Output, code: i32) {
    assert_eq!(run.code, code, "{run}");
}

#[track_caller]
fn assert_contains(run: &Output, needle: &str) {
    assert!(
        run.stdout.contains(needle),
        "the output does not say {needle:?}\n{run}"
    );
}

/// A state repository: `infra.toml`, an inventory giving `hostname` the role `main`,
/// the role, `group_data/all.toml`, and further files (templates, say).
fn repo(hostname: &str, role: &str, data: &str, extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let inventory =
        format!("[groups.all]\nroles = [\"main\"]\n\n[groups.lab]\nhosts = [\"{hostname}\"]\n");
    let mut files = vec![
        ("infra.toml", "format = 1\n"),
        ("inventory/production.toml", inventory.as_str()),
        ("roles/main.toml", role),
        ("group_data/all.toml", data),
    ];
    files.extend(extra);
    write_tree(dir.path(), &files);
    dir
}

/// Puts `dir` at [`REPO`] in the container, replacing what was there.
fn install_repo(host: &TestHost, dir: &tempfile::TempDir) {
    host.exec_ok(&["rm", "-rf", REPO]);
    host.copy_dir_in(dir.path(), REPO);
}

/// `infra-agent --once --repo /srv/state FLAGS`, timed.
fn once(host: &TestHost, flags: &[&str]) -> (Output, Duration) {
    let mut argv = vec!["--once", "--repo", REPO];
    argv.extend(flags);
    let start = Instant::now();
    let run = host.agent(&argv);
    let took = start.elapsed();
    eprintln!(
        "{}: infra-agent {} -> exit {} in {took:.1?}",
        host.hostname(),
        argv.join(" "),
        run.code
    );
    (run, took)
}

/// `--once --format json FLAGS`, parsed.
#[track_caller]
fn once_json(host: &TestHost, flags: &[&str]) -> (Output, Value) {
    let mut argv = vec!["--format", "json"];
    argv.extend(flags);
    let (run, _) = once(host, &argv);
    let doc = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("the report is not JSON ({e})\n{run}"));
    (run, doc)
}

/// The step with id `id` of a JSON report.
#[track_caller]
fn step<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in the report: {doc:#}"))
}

/// dpkg's status of `package` (`install ok installed`), or empty when dpkg does not
/// know it.
fn dpkg_status(host: &TestHost, package: &str) -> String {
    let out = host.exec(&["dpkg-query", "-W", "-f", "${Status}", package]);
    if out.success() {
        out.stdout.trim().to_owned()
    } else {
        String::new()
    }
}

#[track_caller]
fn assert_installed(host: &TestHost, packages: &[&str]) {
    for package in packages {
        assert_eq!(
            dpkg_status(host, package),
            "install ok installed",
            "{package} on {}",
            host.hostname()
        );
    }
}

#[track_caller]
fn stat(host: &TestHost, path: &str) -> String {
    host.exec_ok(&["stat", "-c", "%F %a %U:%G", path])
        .trim()
        .to_owned()
}

/// What `systemctl show` says of `unit`, property by property.
fn unit_show(host: &TestHost, unit: &str, props: &str) -> BTreeMap<String, String> {
    host.exec_ok(&["systemctl", "show", "-p", props, unit])
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------
// 1. The shell_env role of a media host.

const SHELL_ENV_ROLE: &str = r#"
description = "The admin's zsh and the shell tools."

[[step]]
id = "shell-tools"
type = "package"
names = ["zsh", "ripgrep", "fd-find", "fzf", "kitty-terminfo"]

[[step]]
id = "admin-user"
type = "user"
name = "{{data.admin.user}}"
shell = "/usr/bin/zsh"
groups = ["sudo"]
comment = "home-infra admin"
requires = ["shell-tools"]

[[step]]
id = "admin-authorized-keys"
type = "authorized_keys"
user = "{{data.admin.user}}"
keys = { data = "admin.keys" }
requires = ["admin-user"]

[[step]]
id = "zshrc"
type = "template"
path = "/home/{{data.admin.user}}/.zshrc"
source = "zshrc.hbs"
owner = "{{data.admin.user}}"
group = "{{data.admin.user}}"
mode = "0644"
requires = ["admin-user"]
"#;

const ZSHRC: &str = "# managed by home-infra for {{host.name}}\nexport EDITOR={{data.shell.editor}}\n{{#each data.shell.aliases}}\nalias {{@key}}='{{this}}'\n{{/each}}\n";

const SHELL_TOOLS: &[&str] = &["zsh", "ripgrep", "fd-find", "fzf", "kitty-terminfo"];

#[test]
fn shell_env_role_converges_a_media_host_through_nala_then_stays_in_sync() {
    let start = Instant::now();
    let host = TestHost::start("media-01");
    let data = format!(
        "[admin]\nuser = \"admin\"\nkeys = [\"{KEY_LAPTOP}\"]\n\n[shell]\neditor = \"vim\"\n\n[shell.aliases]\nfd = \"fdfind\"\nll = \"ls -l\"\n"
    );
    let repo = repo(
        host.hostname(),
        SHELL_ENV_ROLE,
        &data,
        &[("templates/zshrc.hbs", ZSHRC)],
    );
    install_repo(&host, &repo);
    for package in SHELL_TOOLS {
        assert_ne!(
            dpkg_status(&host, package),
            "install ok installed",
            "{package} is in the image"
        );
    }

    let (run, _) = once(&host, &[]);
    assert_code(&run, 2);
    assert_contains(&run, "4 changed, 0 in sync, 0 failed, 0 skipped");
    assert_contains(
        &run,
        "shell-tools (package zsh, ripgrep, fd-find, fzf, kitty-terminfo): changed",
    );

    // The packages, installed through nala, in one transaction that removed nothing.
    assert_installed(&host, SHELL_TOOLS);
    host.exec_ok(&["test", "-x", "/usr/bin/fdfind"]);
    host.exec_ok(&["test", "-f", "/usr/share/terminfo/x/xterm-kitty"]);
    let history: Value = serde_json::from_str(&host.read_file("/var/lib/nala/history.json"))
        .expect("nala's history is JSON");
    let transactions: Vec<&Value> = history
        .as_object()
        .expect("nala's history is a table")
        .iter()
        .filter(|(k, _)| k.as_str() != "Nala")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(transactions.len(), 1, "one nala transaction: {history:#}");
    let tx = transactions[0];
    assert_eq!(tx["Operation"], "install", "{tx:#}");
    let command: Vec<&str> = tx["Command"]
        .as_array()
        .expect("Command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(command.contains(&"--no-autoremove"), "{command:?}");
    let mut explicit: Vec<&str> = tx["Explicit"]
        .as_array()
        .expect("Explicit")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    explicit.sort_unstable();
    let mut wanted = SHELL_TOOLS.to_vec();
    wanted.sort_unstable();
    assert_eq!(explicit, wanted, "{tx:#}");
    assert_eq!(tx["Removed"], Value::Array(vec![]), "{tx:#}");
    assert_eq!(tx["Auto-Removed"], Value::Array(vec![]), "{tx:#}");
    // apt-get would have logged its command line; nala (python-apt) does not.
    let apt_history = host.sh("cat /var/log/apt/history.log 2>/dev/null || true");
    assert!(
        !apt_history.contains("Commandline:"),
        "apt-get ran:\n{apt_history}"
    );

    // The admin: zsh, sudo, one key.
    let passwd = host.exec_ok(&["getent", "passwd", "admin"]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields[4], "home-infra admin", "{passwd}");
    assert_eq!(fields[5], "/home/admin", "{passwd}");
    assert_eq!(fields[6], "/usr/bin/zsh", "{passwd}");
    let groups = host.exec_ok(&["id", "-nG", "admin"]);
    assert!(groups.split_whitespace().any(|g| g == "sudo"), "{groups}");
    assert_eq!(stat(&host, "/home/admin/.ssh"), "directory 700 admin:admin");
    assert_eq!(
        stat(&host, "/home/admin/.ssh/authorized_keys"),
        "regular file 600 admin:admin"
    );
    assert_eq!(
        host.read_file("/home/admin/.ssh/authorized_keys"),
        format!("{KEY_LAPTOP}\n")
    );
    // zsh runs for the admin and reads the rendered zshrc.
    assert_eq!(
        stat(&host, "/home/admin/.zshrc"),
        "regular file 644 admin:admin"
    );
    assert_eq!(
        host.read_file("/home/admin/.zshrc"),
        "# managed by home-infra for media-01\nexport EDITOR=vim\nalias fd='fdfind'\nalias ll='ls -l'\n"
    );
    let editor = host.exec_ok(&[
        "runuser",
        "-u",
        "admin",
        "--",
        "env",
        "HOME=/home/admin",
        "zsh",
        "-i",
        "-c",
        "print -r -- $EDITOR; alias fd",
    ]);
    assert_eq!(editor, "vim\nfd=fdfind\n");

    // Second run: in sync, nothing run, nothing touched.
    let untouched = [
        "/var/lib/dpkg/status",
        "/var/log/dpkg.log",
        "/var/log/apt/history.log",
        "/var/lib/nala/history.json",
        "/var/lib/apt/lists",
        "/var/lib/apt/lists/partial",
        "/run/infra-agent/packages.log",
        "/etc/passwd",
        "/etc/group",
        "/etc/shadow",
        "/home/admin",
        "/home/admin/.ssh",
        "/home/admin/.ssh/authorized_keys",
        "/home/admin/.zshrc",
    ];
    let before = host.snapshot(&untouched);
    let (again, doc) = once_json(&host, &[]);
    assert_code(&again, 0);
    assert_eq!(doc["summary"]["changed"], 0, "{again}");
    assert_eq!(doc["summary"]["in_sync"], 4, "{again}");
    assert_eq!(doc["summary"]["failed"], 0, "{again}");
    assert_eq!(step(&doc, "shell-tools")["status"], "in_sync", "{again}");
    assert_eq!(
        host.snapshot(&untouched),
        before,
        "a run in sync runs no apt or nala and touches nothing"
    );
    let (text, _) = once(&host, &[]);
    assert_code(&text, 0);
    assert_contains(&text, "0 changed, 4 in sync, 0 failed, 0 skipped");
    eprintln!("shell_env: {:.1?}", start.elapsed());
}

// ---------------------------------------------------------------------------------
// 2. Notify: a service restarted exactly once.

fn hello_unit(description: &str) -> String {
    // `%%` is systemd's escape for `%`.
    format!(
        "[Unit]\nDescription={description}\n\n[Service]\nExecStart=/bin/sh -c 'date +%%s%%N >> /var/log/hello.starts; exec sleep infinity'\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

fn hello_repo(hostname: &str, description: &str, greeting: &str) -> tempfile::TempDir {
    let role = format!(
        r#"
[[step]]
id = "hello-unit"
type = "file"
path = "/etc/systemd/system/hello.service"
content = """
{}"""
notify = ["hello"]

[[step]]
id = "hello-conf"
type = "template"
path = "/etc/hello.conf"
source = "hello.conf.hbs"
notify = ["hello"]

[[step]]
id = "hello"
type = "service"
name = "hello"
enabled = true
state = "running"
"#,
        hello_unit(description)
    );
    repo(
        hostname,
        &role,
        &format!("[hello]\ngreeting = \"{greeting}\"\n"),
        &[(
            "templates/hello.conf.hbs",
            "greeting = {{data.hello.greeting}}\n",
        )],
    )
}

/// How many times hello.service has started (one line per start).
fn hello_starts(host: &TestHost) -> usize {
    host.sh("cat /var/log/hello.starts 2>/dev/null || true")
        .lines()
        .count()
}

#[test]
fn a_template_change_restarts_the_notified_service_exactly_once() {
    let start = Instant::now();
    let host = TestHost::start("svc-01");

    // First run: the unit is written, enabled and started, once; the notifications of
    // this run do not restart it on top.
    install_repo(&host, &hello_repo(host.hostname(), "hello", "one"));
    let (run, doc) = once_json(&host, &[]);
    assert_code(&run, 2);
    let hello = step(&doc, "hello");
    assert_eq!(hello["status"], "changed", "{run}");
    assert_eq!(
        hello["notified_by"],
        serde_json::json!(["hello-unit", "hello-conf"]),
        "{run}"
    );
    assert_eq!(
        hello["refreshed"], "already started in this run",
        "not restarted on top: {run}"
    );
    assert_eq!(hello_starts(&host), 1, "started once");
    let show = unit_show(&host, "hello", "ActiveState,UnitFileState,MainPID");
    assert_eq!(show["ActiveState"], "active", "{show:?}");
    assert_eq!(show["UnitFileState"], "enabled", "{show:?}");
    let pid = show["MainPID"].clone();

    // The template's data changes: one restart.
    install_repo(&host, &hello_repo(host.hostname(), "hello", "two"));
    let (run, _) = once(&host, &[]);
    assert_code(&run, 2);
    assert_contains(&run, "notified by hello-conf: restarted hello.service");
    assert_contains(&run, "1 changed, 2 in sync, 0 failed, 0 skipped");
    assert_eq!(host.read_file("/etc/hello.conf"), "greeting = two\n");
    assert_eq!(hello_starts(&host), 2, "restarted once");
    let show = unit_show(&host, "hello", "ActiveState,MainPID");
    assert_eq!(show["ActiveState"], "active", "{show:?}");
    assert_ne!(show["MainPID"], pid, "a new main process");

    // Nothing changes: no restart.
    let (run, _) = once(&host, &[]);
    assert_code(&run, 0);
    assert_contains(&run, "0 changed, 3 in sync, 0 failed, 0 skipped");
    assert_eq!(hello_starts(&host), 2, "a run in sync restarts nothing");

    // The unit file and the template both change: daemon-reload, then one restart
    // although two steps notify the service.
    install_repo(&host, &hello_repo(host.hostname(), "hello again", "three"));
    let (run, doc) = once_json(&host, &[]);
    assert_code(&run, 2);
    let hello = step(&doc, "hello");
    assert_eq!(
        hello["notified_by"],
        serde_json::json!(["hello-unit", "hello-conf"]),
        "{run}"
    );
    assert_eq!(hello["refreshed"], "restarted hello.service", "{run}");
    let kinds: Vec<&Value> = hello["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| &c["kind"])
        .collect();
    assert_eq!(kinds, [&Value::from("daemon_reload")], "{run}");
    assert_eq!(hello_starts(&host), 3, "restarted exactly once");
    let show = unit_show(&host, "hello", "ActiveState,Description,NeedDaemonReload");
    assert_eq!(show["ActiveState"], "active", "{show:?}");
    assert_eq!(show["Description"], "hello again", "{show:?}");
    assert_eq!(show["NeedDaemonReload"], "no", "{show:?}");

    // Only the unit file changes: the text report shows the daemon-reload.
    install_repo(&host, &hello_repo(host.hostname(), "hello, third", "three"));
    let (run, _) = once(&host, &[]);
    assert_code(&run, 2);
    assert_contains(&run, "daemon-reload hello.service");
    assert_contains(&run, "notified by hello-unit: restarted hello.service");
    assert_eq!(hello_starts(&host), 4);
    let (run, _) = once(&host, &[]);
    assert_code(&run, 0);
    assert_eq!(hello_starts(&host), 4);
    eprintln!("notify: {:.1?}", start.elapsed());
}

// ---------------------------------------------------------------------------------
// 3. A failing step.

const BROKEN_ROLE: &str = r#"
[[step]]
id = "missing-package"
type = "package"
names = ["home-infra-no-such-package"]

[[step]]
id = "needs-package"
type = "file"
path = "/etc/needs-package"
content = "x\n"
requires = ["missing-package"]

[[step]]
id = "needs-needs-package"
type = "directory"
path = "/etc/needs-needs-package"
requires = ["needs-package"]

[[step]]
id = "unrelated"
type = "file"
path = "/etc/unrelated"
content = "fine\n"

[[step]]
id = "failing-command"
type = "command"
argv = ["sh", "-c", "echo about to fail; exit 1"]
creates = "/etc/never-created"

[[step]]
id = "after-command"
type = "file"
path = "/etc/after-command"
content = "x\n"
requires = ["failing-command"]

[[step]]
id = "also-unrelated"
type = "directory"
path = "/srv/also-unrelated"
mode = "0750"
"#;

#[test]
fn a_failing_step_skips_its_dependents_and_nothing_else() {
    let start = Instant::now();
    let host = TestHost::start("fail-01");
    install_repo(&host, &repo(host.hostname(), BROKEN_ROLE, "", &[]));

    let (run, doc) = once_json(&host, &[]);
    // Changes and failures: 6 (Puppet's 2 | 4).
    assert_code(&run, 6);
    assert_eq!(doc["summary"]["failed"], 2, "{run}");
    assert_eq!(doc["summary"]["skipped"], 3, "{run}");
    assert_eq!(doc["summary"]["changed"], 2, "{run}");
    assert_eq!(step(&doc, "missing-package")["status"], "failed", "{run}");
    assert_eq!(step(&doc, "failing-command")["status"], "failed", "{run}");
    for id in ["needs-package", "needs-needs-package", "after-command"] {
        assert_eq!(step(&doc, id)["status"], "skipped", "{id}: {run}");
    }
    for id in ["unrelated", "also-unrelated"] {
        assert_eq!(step(&doc, id)["status"], "changed", "{id}: {run}");
    }
    // Unrelated steps applied, dependents not.
    assert_eq!(host.read_file("/etc/unrelated"), "fine\n");
    assert_eq!(
        stat(&host, "/srv/also-unrelated"),
        "directory 750 root:root"
    );
    for path in [
        "/etc/needs-package",
        "/etc/needs-needs-package",
        "/etc/after-command",
    ] {
        assert_eq!(host.snapshot(&[path])[path], "absent", "{path}");
    }
    assert_eq!(dpkg_status(&host, "home-infra-no-such-package"), "");

    // The unrelated steps are in sync now: failures only, exit 4. The text report
    // names each failed step with its reason, and each skipped step with the one it
    // waited for.
    let (run, _) = once(&host, &[]);
    assert_code(&run, 4);
    assert_contains(&run, "0 changed, 2 in sync, 2 failed, 3 skipped");
    assert_contains(
        &run,
        "missing-package (package home-infra-no-such-package): FAILED:",
    );
    assert_contains(&run, "home-infra-no-such-package not found");
    assert_contains(
        &run,
        "needs-package: skipped: requires `missing-package`, which failed",
    );
    assert_contains(
        &run,
        "needs-needs-package: skipped: requires `needs-package`, which was skipped",
    );
    assert_contains(
        &run,
        "failing-command (command sh -c 'echo about to fail; exit 1'): FAILED:",
    );
    assert_contains(&run, "exited with code 1");
    assert_contains(&run, "about to fail");
    assert_contains(
        &run,
        "after-command: skipped: requires `failing-command`, which failed",
    );
    eprintln!("failing step: {:.1?}", start.elapsed());
}

// ---------------------------------------------------------------------------------
// 4. A dry run on a fresh host.

const DRY_ROLE: &str = r#"
[[step]]
id = "cron-package"
type = "package"
names = ["cron", "zsh"]

[[step]]
id = "admin-user"
type = "user"
name = "admin"
shell = "/bin/bash"
groups = ["sudo"]

[[step]]
id = "admin-authorized-keys"
type = "authorized_keys"
user = "admin"
keys = { data = "admin.keys" }
requires = ["admin-user"]

[[step]]
id = "cron-job"
type = "file"
path = "/etc/default/hello-cron"
content = "* * * * * root true\n"
notify = ["cron"]

[[step]]
id = "cron"
type = "service"
name = "cron"
enabled = true
state = "running"
requires = ["cron-package"]

[[step]]
id = "ssh"
type = "service"
name = "ssh"
enabled = true
state = "running"
"#;

/// What a dry run must not touch.
const DRY_PATHS: &[&str] = &[
    "/var/lib/dpkg",
    "/var/lib/dpkg/status",
    "/var/lib/dpkg/lock-frontend",
    "/var/log/dpkg.log",
    "/var/log/apt",
    "/var/log/apt/history.log",
    "/var/lib/nala",
    "/var/lib/apt/lists",
    "/var/lib/apt/lists/partial",
    "/var/cache/apt/archives",
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/gshadow",
    "/home",
    "/home/admin",
    "/etc/default",
    "/etc/default/hello-cron",
    "/etc/systemd/system",
    "/etc/systemd/system/multi-user.target.wants",
    "/etc/systemd/system/multi-user.target.wants/cron.service",
    "/run/infra-agent",
    "/var/lib/infra-agent",
];

#[test]
fn dry_run_with_packages_users_and_services_changes_nothing() {
    let start = Instant::now();
    let host = TestHost::start("dryd-01");
    let data = format!("[admin]\nkeys = [\"{KEY_LAPTOP}\"]\n");
    install_repo(&host, &repo(host.hostname(), DRY_ROLE, &data, &[]));

    let before = host.snapshot(DRY_PATHS);
    let packages_before = host.exec_ok(&["dpkg-query", "-W"]);
    let units_before =
        host.exec_ok(&["systemctl", "list-units", "--all", "--no-legend", "--plain"]);

    let (run, doc) = once_json(&host, &["--dry-run"]);
    assert_code(&run, 2);
    let (text, _) = once(&host, &["--dry-run"]);
    assert_code(&text, 2);

    assert_eq!(
        host.snapshot(DRY_PATHS),
        before,
        "a dry run changes nothing\n{run}"
    );
    assert_eq!(host.exec_ok(&["dpkg-query", "-W"]), packages_before);
    assert_eq!(
        host.exec_ok(&["systemctl", "list-units", "--all", "--no-legend", "--plain"]),
        units_before
    );
    for package in ["cron", "zsh"] {
        assert_ne!(
            dpkg_status(&host, package),
            "install ok installed",
            "{package}"
        );
    }
    assert!(!host.exec(&["getent", "passwd", "admin"]).success());

    // The plan says what would happen.
    assert_eq!(doc["dry_run"], true);
    let pending = |id: &str| step(&doc, id)["status"] == "pending";
    for id in [
        "cron-package",
        "admin-user",
        "admin-authorized-keys",
        "cron",
        "cron-job",
    ] {
        assert!(pending(id), "{id} is pending: {run}");
    }
    assert_eq!(step(&doc, "ssh")["status"], "in_sync", "{run}");
    assert_contains(&text, "would change");
    assert_contains(&text, "create package cron");
    assert_contains(&text, "create package zsh");
    assert_contains(&text, "apt package lists");
    eprintln!("dry run: {:.1?}", start.elapsed());
}

// ---------------------------------------------------------------------------------
// 5. The lockout guard.

const ADMIN_ROLE: &str = r#"
[[step]]
id = "admin-user"
type = "user"
name = "admin"
shell = "/bin/bash"
groups = ["sudo"]

[[step]]
id = "admin-authorized-keys"
type = "authorized_keys"
user = "admin"
keys = { data = "admin.keys" }
exclusive = true
requires = ["admin-user"]

[[step]]
id = "after-keys"
type = "file"
path = "/etc/after-keys"
content = "x\n"
requires = ["admin-authorized-keys"]
"#;

#[test]
fn lockout_guard_refuses_to_remove_the_last_key_while_password_login_is_off() {
    let start = Instant::now();
    let host = TestHost::start("guard-01");
    // The admin, in sudo, with one key: set up by the agent itself.
    let one_key = format!("[admin]\nkeys = [\"{KEY_LAPTOP}\"]\n");
    install_repo(&host, &repo(host.hostname(), ADMIN_ROLE, &one_key, &[]));
    let (run, _) = once(&host, &[]);
    assert_code(&run, 2);
    let keys = "/home/admin/.ssh/authorized_keys";
    assert_eq!(host.read_file(keys), format!("{KEY_LAPTOP}\n"));
    // No other way in: root has no key, and password login goes off.
    assert_eq!(
        host.snapshot(&["/root/.ssh/authorized_keys"])["/root/.ssh/authorized_keys"],
        "absent"
    );
    host.write_file(
        "/etc/ssh/sshd_config.d/00-no-passwords.conf",
        "PasswordAuthentication no\n",
    );
    let sshd = host.exec_ok(&["sshd", "-T"]);
    assert!(sshd.contains("passwordauthentication no"), "{sshd}");
    assert!(sshd.contains("kbdinteractiveauthentication no"), "{sshd}");

    // A role that takes the admin's only key away.
    install_repo(
        &host,
        &repo(host.hostname(), ADMIN_ROLE, "[admin]\nkeys = []\n", &[]),
    );
    let before = host.snapshot(&["/home/admin/.ssh", keys]);
    let guard = "refusing: after this step no sudo user could log in with a key while password login is off (sshd -T: passwordauthentication no); today admin can.";

    let (dry, _) = once(&host, &["--dry-run"]);
    assert_code(&dry, 4);
    assert_contains(&dry, guard);

    let (run, doc) = once_json(&host, &[]);
    assert_code(&run, 4);
    let refused = step(&doc, "admin-authorized-keys");
    assert_eq!(refused["status"], "failed", "{run}");
    assert!(
        refused["error"].as_str().is_some_and(|e| e.contains(guard)),
        "{run}"
    );
    assert_eq!(refused["modified"], false, "{run}");
    assert_eq!(step(&doc, "after-keys")["status"], "skipped", "{run}");
    let (text, _) = once(&host, &[]);
    assert_code(&text, 4);
    assert_contains(
        &text,
        &format!("admin-authorized-keys (authorized_keys of admin): FAILED: {guard}"),
    );
    assert_contains(
        &text,
        "after-keys: skipped: requires `admin-authorized-keys`, which failed",
    );
    assert_eq!(
        host.snapshot(&["/home/admin/.ssh", keys]),
        before,
        "the key file is unchanged"
    );
    assert_eq!(host.read_file(keys), format!("{KEY_LAPTOP}\n"));

    // With password login on again, there is another way in: the step may proceed.
    host.exec_ok(&["rm", "/etc/ssh/sshd_config.d/00-no-passwords.conf"]);
    let (run, _) = once(&host, &[]);
    assert_code(&run, 2);
    assert_eq!(host.read_file(keys), "");
    eprintln!("lockout guard: {:.1?}", start.elapsed());
}

// ---------------------------------------------------------------------------------
// 6. Faults: the dpkg lock held by another process.

const TREE_ROLE: &str = r#"
[[step]]
id = "tree"
type = "package"
names = ["tree"]

[[step]]
id = "after-tree"
type = "file"
path = "/etc/after-tree"
content = "x\n"
requires = ["tree"]
"#;

/// Takes dpkg's frontend lock the way apt does (an fcntl write lock; `flock(1)` would
/// not stop apt) in a process named `perl`, in its own unit, and waits until the
/// kernel lists the lock.
fn hold_dpkg_lock(host: &TestHost) {
    const HOLD: &str = r#"open(my $f, "+<", "/var/lib/dpkg/lock-frontend") or die "open: $!"; my $l = pack("s s x4 q q l x4", F_WRLCK, 0, 0, 0, 0); fcntl($f, F_SETLK, $l) or die "lock: $!"; sleep 900"#;
    host.exec_ok(&[
        "systemd-run",
        "--unit=hold-dpkg-lock",
        "--quiet",
        "perl",
        "-MFcntl",
        "-e",
        HOLD,
    ]);
    host.sh(r#"ino=$(stat -c %i /var/lib/dpkg/lock-frontend)
for i in $(seq 100); do
  grep -q "POSIX *ADVISORY *WRITE .*:$ino " /proc/locks && exit 0
  sleep 0.1
done
echo "the lock was not taken" >&2; systemctl status hold-dpkg-lock >&2; exit 1"#);
}

/// What one host showed in the lock test.
#[derive(Debug)]
struct LockRun {
    manager: &'static str,
    held: Output,
    held_took: Duration,
    installed_while_held: String,
    converged: Output,
    installed_after: String,
}

/// Holds the dpkg lock, runs the agent (package step `tree`), releases the lock, runs
/// it again. `agent_toml`: `/etc/infra-agent/agent.toml`, when given.
fn lock_run(hostname: &str, manager: &'static str, agent_toml: Option<&str>) -> LockRun {
    let host = TestHost::start(hostname);
    install_repo(&host, &repo(hostname, TREE_ROLE, "", &[]));
    if let Some(toml) = agent_toml {
        host.write_file("/etc/infra-agent/agent.toml", toml);
    }
    hold_dpkg_lock(&host);
    let (held, held_took) = once(&host, &[]);
    let installed_while_held = dpkg_status(&host, "tree");
    host.exec_ok(&["systemctl", "stop", "hold-dpkg-lock"]);
    let (converged, _) = once(&host, &[]);
    let installed_after = dpkg_status(&host, "tree");
    LockRun {
        manager,
        held,
        held_took,
        installed_while_held,
        converged,
        installed_after,
    }
}

#[track_caller]
fn assert_lock_run(r: &LockRun) {
    let m = r.manager;
    // The step fails, naming the lock and its holder; its dependent is skipped.
    assert_eq!(r.held.code, 4, "{m}: {}", r.held);
    for needle in [
        "tree (package tree): FAILED:",
        "the dpkg lock /var/lib/dpkg/lock-frontend is held by process",
        "(perl)",
        "gave up after waiting up to 20 s",
        "after-tree: skipped: requires `tree`, which failed",
    ] {
        assert!(
            r.held.stdout.contains(needle),
            "{m}: no {needle:?}\n{}",
            r.held
        );
    }
    assert_eq!(
        r.installed_while_held, "",
        "{m}: tree was installed under the lock"
    );
    // Released: the next run converges.
    assert_eq!(r.converged.code, 2, "{m}: {}", r.converged);
    assert!(
        r.converged
            .stdout
            .contains("2 changed, 0 in sync, 0 failed, 0 skipped"),
        "{m}: {}",
        r.converged
    );
    assert_eq!(r.installed_after, "install ok installed", "{m}");
    // It waited for the lock, a bounded time: agent.toml's apt_lock_timeout. (Regression:
    // nala does not wait for the lock itself and gave up after about 2 s.)
    assert!(
        r.held_took >= Duration::from_secs(18) && r.held_took <= Duration::from_mins(1),
        "{m}: the step gave up after {:.1?}, not after waiting up to 20 s for the lock as it says\n{}",
        r.held_took,
        r.held
    );
}

#[test]
fn dpkg_lock_held_by_another_process_fails_the_step_after_a_bound_then_converges() {
    let start = Instant::now();
    // Both package managers, side by side: each waits out the 20 s bound.
    let (apt, nala) = std::thread::scope(|s| {
        let apt = s.spawn(|| {
            lock_run(
                "lock-apt-01",
                "apt-get",
                Some("package_manager = \"apt\"\napt_lock_timeout = 20\n"),
            )
        });
        let nala = s.spawn(|| lock_run("lock-nala-01", "nala", Some("apt_lock_timeout = 20\n")));
        (
            apt.join().expect("the apt-get host ran"),
            nala.join().expect("the nala host ran"),
        )
    });
    eprintln!(
        "dpkg lock: apt-get gave up after {:.1?}, nala after {:.1?}; {:.1?} in all",
        apt.held_took,
        nala.held_took,
        start.elapsed()
    );
    assert!(
        apt.held.stdout.contains("apt-get install"),
        "agent.toml's package_manager = \"apt\" is used: {}",
        apt.held
    );
    assert!(nala.held.stdout.contains("nala install"), "{}", nala.held);
    assert_lock_run(&apt);
    assert_lock_run(&nala);
}
