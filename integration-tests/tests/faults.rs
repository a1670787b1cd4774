//! Faults during a package transaction on a real Debian bookworm host (systemd as
//! PID 1, nala): the proof of issue 4 that the agent killed during an apt transaction
//! leaves dpkg whole, and that a dpkg killed halfway is repaired by the next run.
//!
//! The package `infra-test-slow` comes from a local signed apt repository served in the
//! container ([`apt_repo::serve`]); its `preinst` writes its pid to [`PREINST_PID`] and
//! waits (up to 120 s) for the marker [`GO`], so the test knows exactly when dpkg is
//! halfway through the transaction and decides when it may finish. The state repository
//! is an `apt_repository` step, a `package` step for `infra-test-slow`, and an unrelated
//! `file` step after them.
//!
//! The agent runs in the background (`/usr/local/bin/bg-agent`, which records its pid,
//! output and exit code under `/tmp/bg-agent.*`), so the test can kill it, or the dpkg
//! under it, while the preinst waits.

use std::time::{Duration, Instant};

use integration_tests::{DebPackage, Output, TestHost, apt_repo, write_tree};

const REPO: &str = "/srv/state";
const PORT: u16 = 8097;
const PACKAGE: &str = "infra-test-slow";
/// The marker the preinst waits for.
const GO: &str = "/run/infra-test-go";
/// Where the preinst writes its pid while it waits.
const PREINST_PID: &str = "/run/infra-test-slow.pid";
/// The file the package installs.
const SLOW_FILE: &str = "/usr/share/infra-test/slow";
/// The unrelated file step's path.
const AFTER: &str = "/etc/infra-test-after";
/// The description `infra-agent` gives its transient transaction units.
const TX_DESCRIPTION: &str = "infra-agent package transaction";

const PREINST: &str = r#"#!/bin/sh
# Test package of faults.rs: waits (up to 120 s) for /run/infra-test-go.
echo $$ >/run/infra-test-slow.pid.new && mv /run/infra-test-slow.pid.new /run/infra-test-slow.pid
i=0
while [ ! -e /run/infra-test-go ] && [ "$i" -lt 1200 ]; do
  sleep 0.1
  i=$((i + 1))
done
rm -f /run/infra-test-slow.pid
exit 0
"#;

/// Runs the agent in the background, recording its pid, its output and its exit code.
const BG_AGENT: &str = r"#!/bin/sh
NO_COLOR=1 infra-agent --once --repo /srv/state >/tmp/bg-agent.out 2>&1 &
echo $! >/tmp/bg-agent.pid
wait $!
echo $? >/tmp/bg-agent.rc
";

fn role() -> String {
    format!(
        r#"[[step]]
id = "repo"
type = "apt_repository"
name = "local"
uris = "http://127.0.0.1:{PORT}/debian"
suites = "stable"
components = ["main"]
key_source = "keys/local.asc"

[[step]]
id = "slow"
type = "package"
names = ["{PACKAGE}"]
requires = ["repo"]

[[step]]
id = "after"
type = "file"
path = "{AFTER}"
content = "written after the package step\n"
"#
    )
}

/// A host with the local repository served and the state repository at [`REPO`].
fn slow_host(hostname: &str) -> TestHost {
    let host = TestHost::start(hostname);
    let slow = DebPackage::new(PACKAGE, "1.0")
        .file(SLOW_FILE, "slow\n")
        .script("preinst", PREINST);
    let key = apt_repo::serve(&host, PORT, &[slow]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let inventory = format!(
        "[groups.all]\nroles = [\"main\"]\n\n[groups.lab]\nhosts = [\"{}\"]\n",
        host.hostname()
    );
    write_tree(
        dir.path(),
        &[
            ("infra.toml", "format = 1\n"),
            ("inventory/production.toml", &inventory),
            ("roles/main.toml", &role()),
            ("files/keys/local.asc", &key),
        ],
    );
    host.copy_dir_in(dir.path(), REPO);
    host.write_file("/usr/local/bin/bg-agent", BG_AGENT);
    host.exec_ok(&["chmod", "0755", "/usr/local/bin/bg-agent"]);
    host
}

#[track_caller]
fn assert_contains(run: &Output, needle: &str) {
    assert!(
        run.stdout.contains(needle),
        "the output does not say {needle:?}\n{run}"
    );
}

fn once(host: &TestHost) -> Output {
    let run = host.agent(&["--once", "--repo", REPO]);
    eprintln!(
        "{}: infra-agent --once -> exit {}\n{}{}",
        host.hostname(),
        run.code,
        run.stdout,
        run.stderr
    );
    run
}

fn exists(host: &TestHost, path: &str) -> bool {
    host.exec(&["test", "-e", path]).success()
}

/// dpkg's status of the package (`install ok installed`), or empty when dpkg does not
/// know it.
fn dpkg_status(host: &TestHost) -> String {
    let out = host.exec(&["dpkg-query", "-W", "-f", "${Status}", PACKAGE]);
    if out.success() {
        out.stdout.trim().to_owned()
    } else {
        String::new()
    }
}

/// What `dpkg --audit` says (empty when the database is consistent).
fn audit(host: &TestHost) -> String {
    let out = host.exec(&["dpkg", "--audit"]);
    format!("{}{}", out.stdout, out.stderr).trim().to_owned()
}

/// What the transactions logged (for failure messages).
fn tx_log(host: &TestHost) -> String {
    host.sh("tail -n 40 /run/infra-agent/packages.log 2>/dev/null || true")
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `bound`.
fn wait_for<T>(bound: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    for _ in 0..10_000 {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() > bound {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Starts the agent in the background; returns its pid.
fn start_agent(host: &TestHost) -> String {
    host.sh(&format!(
        "rm -f /tmp/bg-agent.* {GO} {PREINST_PID}; setsid /usr/local/bin/bg-agent </dev/null >/dev/null 2>&1 &"
    ));
    wait_for(Duration::from_secs(10), || {
        let pid = host.sh("cat /tmp/bg-agent.pid 2>/dev/null || true");
        let pid = pid.trim();
        (!pid.is_empty()).then(|| pid.to_owned())
    })
    .expect("the background agent did not start within 10 s")
}

/// The background agent's exit code and output once it has exited (bounded).
fn agent_exit(host: &TestHost, bound: Duration) -> (i32, String) {
    let code = wait_for(bound, || {
        host.sh("cat /tmp/bg-agent.rc 2>/dev/null || true")
            .trim()
            .parse::<i32>()
            .ok()
    })
    .unwrap_or_else(|| {
        panic!(
            "the background agent did not exit within {bound:?}; its output:\n{}",
            host.sh("cat /tmp/bg-agent.out")
        )
    });
    let out = host.read_file("/tmp/bg-agent.out");
    eprintln!(
        "{}: background infra-agent -> exit {code}\n{out}",
        host.hostname()
    );
    (code, out)
}

/// Waits (bounded) until the preinst runs; returns its pid.
fn preinst_running(host: &TestHost) -> String {
    wait_for(Duration::from_secs(90), || {
        let pid = host.sh(&format!("cat {PREINST_PID} 2>/dev/null || true"));
        let pid = pid.trim();
        if !pid.is_empty() {
            return Some(pid.to_owned());
        }
        assert!(
            !exists(host, "/tmp/bg-agent.rc"),
            "the agent exited before the preinst ran:\n{}\n--- transaction log:\n{}",
            host.read_file("/tmp/bg-agent.out"),
            tx_log(host)
        );
        None
    })
    .unwrap_or_else(|| {
        panic!(
            "the preinst of {PACKAGE} did not start within 90 s; agent output:\n{}\n--- transaction log:\n{}",
            host.sh("cat /tmp/bg-agent.out"),
            tx_log(host)
        )
    })
}

/// The systemd unit process `pid` belongs to (from its `name=systemd` cgroup).
fn unit_of(host: &TestHost, pid: &str) -> String {
    let cgroups = host.read_file(&format!("/proc/{pid}/cgroup"));
    cgroups
        .lines()
        .filter(|l| l.contains(":name=systemd:") || l.starts_with("0::"))
        .find_map(|l| {
            l.rsplit('/')
                .next()
                .filter(|u| u.ends_with(".service"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("process {pid} is in no service unit:\n{cgroups}"))
}

fn unit_state(host: &TestHost, unit: &str) -> String {
    host.exec(&["systemctl", "show", "-p", "ActiveState", "--value", unit])
        .stdout
        .trim()
        .to_owned()
}

fn alive(host: &TestHost, pid: &str) -> bool {
    host.exec(&["kill", "-0", pid]).success()
}

/// The parent of process `pid` and its command name.
fn parent(host: &TestHost, pid: &str) -> (String, String) {
    let status = host.read_file(&format!("/proc/{pid}/status"));
    let parent = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .expect("a PPid line")
        .trim()
        .to_owned();
    let comm = host
        .read_file(&format!("/proc/{parent}/comm"))
        .trim()
        .to_owned();
    (parent, comm)
}

#[track_caller]
fn assert_clean(host: &TestHost) {
    assert_eq!(dpkg_status(host), "install ok installed");
    assert_eq!(host.read_file(SLOW_FILE), "slow\n");
    assert_eq!(audit(host), "", "dpkg --audit is not clean");
    assert_eq!(
        host.sh("ls -A /var/lib/dpkg/updates"),
        "",
        "dpkg's journal is not empty"
    );
}

#[test]
fn the_agent_killed_during_an_apt_transaction_leaves_dpkg_running_then_converges() {
    let host = slow_host("fault-01");
    let agent = start_agent(&host);
    let preinst = preinst_running(&host);

    // The transaction runs in its own transient unit, not in the agent's process tree.
    let unit = unit_of(&host, &preinst);
    assert_eq!(
        host.exec_ok(&["systemctl", "show", "-p", "Description", "--value", &unit])
            .trim(),
        TX_DESCRIPTION,
        "{unit}"
    );
    assert_eq!(unit_state(&host, &unit), "active");

    // SIGKILL to the agent's process only.
    host.exec_ok(&["kill", "-KILL", &agent]);
    let (code, _) = agent_exit(&host, Duration::from_secs(10));
    assert_eq!(code, 128 + 9, "the agent was not killed by SIGKILL");
    assert!(!exists(&host, AFTER), "the agent got past the package step");

    // dpkg survived it: the unit still runs, the preinst still waits.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        unit_state(&host, &unit),
        "active",
        "the transaction died with the agent:\n{}",
        tx_log(&host)
    );
    assert!(alive(&host, &preinst), "the preinst died with the agent");

    // Let it finish.
    host.exec_ok(&["touch", GO]);
    wait_for(Duration::from_mins(1), || {
        (unit_state(&host, &unit) != "active").then_some(())
    })
    .unwrap_or_else(|| panic!("{unit} did not finish within 60 s:\n{}", tx_log(&host)));
    assert_clean(&host);

    // The next run finds the package installed and applies the rest.
    let run = once(&host);
    assert_eq!(run.code, 2, "{run}");
    assert_contains(&run, "after (file ");
    assert!(!run.stdout.contains("slow (package"), "{run}");
    assert_eq!(host.read_file(AFTER), "written after the package step\n");
    assert_clean(&host);

    let run = once(&host);
    assert_eq!(run.code, 0, "{run}");
}

#[test]
fn dpkg_killed_during_its_preinst_is_repaired_by_the_next_run() {
    let host = slow_host("fault-02");
    let _agent = start_agent(&host);
    let preinst = preinst_running(&host);

    // Kill dpkg itself (the preinst's parent), as a crash or a power loss would.
    let (dpkg, comm) = parent(&host, &preinst);
    assert_eq!(comm, "dpkg", "the preinst's parent {dpkg}");
    host.exec_ok(&["kill", "-KILL", &dpkg]);

    // The transaction fails; the unrelated steps are applied anyway (exit 6: changes and
    // failures).
    let (code, out) = agent_exit(&host, Duration::from_mins(1));
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("slow (package "), "{out}");
    assert!(out.contains("FAILED"), "{out}");
    assert_eq!(host.read_file(AFTER), "written after the package step\n");
    // dpkg's database is left inconsistent.
    let status = dpkg_status(&host);
    eprintln!(
        "after the kill: status {status:?}; dpkg --audit:\n{}\nupdates: {}",
        audit(&host),
        host.sh("ls -A /var/lib/dpkg/updates")
    );
    assert_ne!(status, "install ok installed");
    assert_ne!(audit(&host), "", "dpkg --audit finds nothing wrong");

    // The next run repairs dpkg and converges (the preinst no longer waits). A
    // half-installed package needs more than `dpkg --configure -a`: it must be unpacked
    // again, which neither `nala install` nor `apt-get install` do without `--reinstall`
    // (both see the package as installed and do nothing).
    host.exec_ok(&["touch", GO]);
    let run = once(&host);
    assert_eq!(
        run.code,
        2,
        "{run}\n--- transaction log:\n{}",
        tx_log(&host)
    );
    assert_contains(&run, "slow (package infra-test-slow): changed");
    assert_contains(
        &run,
        "~ content dpkg database: a dpkg run was interrupted -> repaired (dpkg --configure -a)",
    );
    assert_clean(&host);

    let run = once(&host);
    assert_eq!(run.code, 0, "{run}");
}
