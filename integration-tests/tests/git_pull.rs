//! `infra-agent` pulling its state repository over SSH from a git server container: the
//! proofs of the git-daemon issue. A host container on the same Docker network as the
//! git server ([`integration_tests::git_server`]) runs the real agent with a deploy key
//! and a pinned host key.
//!
//! Two tests, each with its own network, git server and host (a container boot costs
//! seconds, so each test walks through several situations in order):
//! - `--once`: push, apply, revert, force-push refused, a bad commit rejected and the
//!   next good one applied, the server down and back, signed commits required,
//!   disable/enable, the run lock;
//! - the daemon under systemd: converges a push within one interval, reverts a hand
//!   edit within seconds, writes status.json and the Prometheus textfile, logs to the
//!   journal with the commit, and a restart during a package transaction leaves dpkg
//!   consistent.

use std::time::{Duration, Instant};

use integration_tests::git_server::GitServer;
use integration_tests::{Network, Output, TestHost, write_tree};
use serde_json::Value;

const KEY: &str = "/etc/infra-agent/deploy_key";
const KNOWN_HOSTS: &str = "/etc/infra-agent/known_hosts";
const ALLOWED_SIGNERS: &str = "/etc/infra-agent/allowed_signers";
const STATUS: &str = "/var/lib/infra-agent/status.json";
const TEXTFILE_DIR: &str = "/var/lib/node-exporter-textfile";

#[track_caller]
fn assert_code(run: &Output, code: i32) {
    assert_eq!(run.code, code, "{run}");
}

/// The network, the git server and one host named `hostname`, booted side by side.
fn start(name: &str, hostname: &str) -> (Network, GitServer, TestHost) {
    let net = Network::create(name);
    let (git, host) = std::thread::scope(|s| {
        let git = s.spawn(|| GitServer::start(&net));
        let host = s.spawn(|| TestHost::options(hostname).network(&net).start());
        (
            git.join().expect("the git server starts"),
            host.join().expect("the host starts"),
        )
    });
    host.exec_ok(&["mkdir", "-p", "-m", "0700", "/etc/infra-agent"]);
    host.exec_ok(&["mkdir", "-p", TEXTFILE_DIR]);
    git.write_client_files(&host, KEY, KNOWN_HOSTS);
    (net, git, host)
}

/// agent.toml pulling from the git server, plus `extra` lines.
fn agent_toml(git: &GitServer, extra: &str) -> String {
    format!(
        "repository = \"{}\"\nbranch = \"main\"\ndeploy_key = \"{KEY}\"\nknown_hosts = \"{KNOWN_HOSTS}\"\ntextfile_dir = \"{TEXTFILE_DIR}\"\n{extra}",
        git.url()
    )
}

/// A state repository giving `hostname` the role `main` with `role` as its steps.
fn state_repo(hostname: &str, role: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let inventory =
        format!("[groups.all]\nroles = [\"main\"]\n\n[groups.lab]\nhosts = [\"{hostname}\"]\n");
    write_tree(
        dir.path(),
        &[
            ("infra.toml", "format = 1\n"),
            ("inventory/production.toml", &inventory),
            ("roles/main.toml", role),
            ("group_data/all.toml", "motd = \"managed by infra-agent\"\n"),
        ],
    );
    dir
}

const BASE_ROLE: &str = r#"
[[step]]
id = "marker"
type = "file"
path = "/etc/infra-marker"
content = "base\n"
"#;

/// `BASE_ROLE` plus a created file and a changed pre-existing file.
const MORE_ROLE: &str = r#"
[[step]]
id = "marker"
type = "file"
path = "/etc/infra-marker"
content = "base\n"

[[step]]
id = "created"
type = "file"
path = "/etc/infra-created.conf"
content = "created by the agent\n"
mode = "0640"

[[step]]
id = "motd"
type = "template"
path = "/etc/motd"
source = "motd.hbs"
mode = "0600"
"#;

fn status(host: &TestHost) -> Value {
    serde_json::from_str(&host.read_file(STATUS)).expect("status.json is JSON")
}

fn once(host: &TestHost, flags: &[&str]) -> Output {
    let mut command = vec!["--once"];
    command.extend(flags);
    host.agent(&command)
}

#[test]
fn once_pulls_applies_reverts_and_refuses_what_it_must() {
    let (_net, git, host) = start("pull-once", "media-01");
    host.write_file("/etc/infra-agent/agent.toml", agent_toml(&git, ""));
    let work = git.work();

    // Nothing pushed yet: nothing to apply, exit 1, and the error says why.
    let run = once(&host, &[]);
    assert_code(&run, 1);
    assert!(run.stderr.contains("main"), "{run}");

    // Commit A: the base role.
    let repo = state_repo("media-01", BASE_ROLE);
    work.copy_tree_in(repo.path());
    let a = work.commit("base");
    work.push();
    let run = once(&host, &[]);
    assert_code(&run, 2);
    assert_eq!(host.read_file("/etc/infra-marker"), "base\n");
    let st = status(&host);
    assert_eq!(st["applied"]["id"], a, "{st:#}");
    assert_eq!(st["last_run"]["commit"]["id"], a);
    assert_eq!(st["last_run"]["outcome"], "changed");
    assert!(
        host.read_file(&format!("{TEXTFILE_DIR}/infra_agent.prom"))
            .contains(&format!("commit=\"{a}\""))
    );

    // Commit B: a created file and a changed /etc/motd.
    let motd_before = host.snapshot(&["/etc/motd"]);
    let original_motd = host.read_file("/etc/motd");
    work.write("roles/main.toml", MORE_ROLE);
    work.write("templates/motd.hbs", "{{data.motd}} on {{host.name}}\n");
    let b = work.commit("more");
    work.push();
    assert_code(&once(&host, &[]), 2);
    assert_eq!(
        host.read_file("/etc/motd"),
        "managed by infra-agent on media-01\n"
    );
    assert_eq!(host.sh("stat -c %a /etc/infra-created.conf"), "640\n");
    assert_eq!(status(&host)["applied"]["id"], b);
    // A second run: in sync.
    assert_code(&once(&host, &[]), 0);

    // Rollback: revert B and push -> motd is what it was, the created file is gone.
    let revert = work.revert_head();
    work.push();
    let run = once(&host, &[]);
    assert_code(&run, 2);
    assert_eq!(host.read_file("/etc/motd"), original_motd);
    let after = host.snapshot(&["/etc/motd"]);
    let strip_times = |s: &std::collections::BTreeMap<String, String>| {
        s.values()
            .map(|v| {
                let f: Vec<&str> = v.split(' ').collect();
                // kind, mode, owner, size, and the hash; not the times
                format!("{} {} {} {} {}", f[0], f[1], f[2], f[3], f.last().unwrap())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip_times(&motd_before),
        strip_times(&after),
        "mode, owner and content restored"
    );
    assert_eq!(
        host.snapshot(&["/etc/infra-created.conf"])["/etc/infra-created.conf"],
        "absent"
    );
    assert_eq!(status(&host)["applied"]["id"], revert);
    assert_code(&once(&host, &[]), 0);

    // Force-push of an older commit: refused, the host stays, status says why.
    git.work().force_push(&a);
    let run = once(&host, &[]);
    assert_code(&run, 1);
    assert!(run.stderr.contains("does not descend"), "{run}");
    let st = status(&host);
    assert_eq!(st["applied"]["id"], revert);
    assert_eq!(st["rejected"]["commit"]["id"], a, "{st:#}");
    // The operator allows it once.
    let run = once(&host, &["--allow-rewind"]);
    assert!(run.code == 0 || run.code == 2, "{run}");
    assert_eq!(status(&host)["applied"]["id"], a);
    assert!(status(&host)["rejected"].is_null());

    // A commit that does not render: not applied, status shows it; the next good one applies.
    work.reset_hard(&a);
    work.write(
        "roles/main.toml",
        &BASE_ROLE.replace("base\\n", "{{data.no_such_key}}\\n"),
    );
    let bad = work.commit("broken template");
    work.push();
    let run = once(&host, &[]);
    assert_code(&run, 1);
    assert!(run.stderr.contains("no_such_key"), "{run}");
    let st = status(&host);
    assert_eq!(st["applied"]["id"], a);
    assert_eq!(st["rejected"]["commit"]["id"], bad);
    assert!(
        st["rejected"]["error"]
            .as_str()
            .unwrap()
            .contains("no_such_key")
    );
    assert_eq!(host.read_file("/etc/infra-marker"), "base\n");
    work.write("roles/main.toml", &BASE_ROLE.replace("base\\n", "fixed\\n"));
    let good = work.commit("fix the template");
    work.push();
    assert_code(&once(&host, &[]), 2);
    assert_eq!(host.read_file("/etc/infra-marker"), "fixed\n");
    let st = status(&host);
    assert_eq!(st["applied"]["id"], good);
    assert!(st["rejected"].is_null(), "{st:#}");

    // The git server down: a fetch failure, the host is kept as the applied commit says.
    git.stop();
    host.write_file("/etc/infra-marker", "edited by hand\n");
    let run = once(&host, &[]);
    assert!(run.stderr.contains("fetch failed"), "{run}");
    assert_eq!(host.read_file("/etc/infra-marker"), "fixed\n");
    let st = status(&host);
    assert_eq!(st["fetch"]["consecutive_failures"], 1, "{st:#}");
    assert!(
        host.read_file(&format!("{TEXTFILE_DIR}/infra_agent.prom"))
            .contains("infra_agent_fetch_consecutive_failures 1")
    );
    // Back: it recovers.
    work.write(
        "roles/main.toml",
        &BASE_ROLE.replace("base\\n", "after the outage\\n"),
    );
    work.commit("after the outage");
    work.push();
    git.start_again();
    assert_code(&once(&host, &[]), 2);
    assert_eq!(host.read_file("/etc/infra-marker"), "after the outage\n");
    assert_eq!(status(&host)["fetch"]["consecutive_failures"], 0);

    // A changed host key is refused, never accepted.
    git.regenerate_host_key();
    let run = once(&host, &[]);
    assert!(run.stderr.contains("host key"), "{run}");
    git.write_client_files(&host, KEY, KNOWN_HOSTS);
    assert!(once(&host, &[]).code == 0);

    // Signed commits required: an unsigned tip is refused, a signed one applies.
    host.write_file(ALLOWED_SIGNERS, format!("{}\n", git.allowed_signers_line()));
    host.write_file(
        "/etc/infra-agent/agent.toml",
        agent_toml(&git, &format!("allowed_signers = \"{ALLOWED_SIGNERS}\"\n")),
    );
    work.write(
        "roles/main.toml",
        &BASE_ROLE.replace("base\\n", "unsigned\\n"),
    );
    let unsigned = work.commit("unsigned");
    work.push();
    let run = once(&host, &[]);
    assert_code(&run, 1);
    assert!(run.stderr.contains("signature"), "{run}");
    assert_eq!(status(&host)["rejected"]["commit"]["id"], unsigned);
    work.write(
        "roles/main.toml",
        &BASE_ROLE.replace("base\\n", "signed by a stranger\\n"),
    );
    work.commit_signed_by_stranger("stranger");
    work.push();
    assert_code(&once(&host, &[]), 1);
    work.write(
        "roles/main.toml",
        &BASE_ROLE.replace("base\\n", "signed\\n"),
    );
    let signed = work.commit_signed("signed");
    work.push();
    assert_code(&once(&host, &[]), 2);
    assert_eq!(host.read_file("/etc/infra-marker"), "signed\n");
    assert_eq!(status(&host)["applied"]["id"], signed);

    // disable / enable.
    let run = host.agent(&["disable", "--reason", "maintenance window"]);
    assert_code(&run, 0);
    let run = once(&host, &[]);
    assert_code(&run, 1);
    assert!(run.stderr.contains("maintenance window"), "{run}");
    let shown = host.agent(&["status"]);
    assert!(shown.stdout.contains("maintenance window"), "{shown}");
    assert_code(&host.agent(&["enable"]), 0);
    assert_code(&once(&host, &[]), 0);

    // The run lock: a run holding it makes a second one wait, then give up with 1.
    host.write_file(
        "/etc/infra-agent/agent.toml",
        agent_toml(
            &git,
            &format!("allowed_signers = \"{ALLOWED_SIGNERS}\"\nlock_timeout = 1\n"),
        ),
    );
    host.sh("(flock /var/lib/infra-agent/lock sleep 8 &) ; sleep 0.5");
    let started = Instant::now();
    let run = once(&host, &[]);
    assert_code(&run, 1);
    assert!(run.stderr.contains("lock"), "{run}");
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "it waited the bounded time only"
    );

    // status in JSON carries the history.
    let shown = host.agent(&["status", "--format", "json"]);
    assert_code(&shown, 0);
    let doc: Value = serde_json::from_str(&shown.stdout).expect("status --format json is JSON");
    assert_eq!(doc["schema"], "infra-agent/status/v1");
    assert!(
        doc["history"].as_array().is_some_and(|h| h.len() > 5),
        "{doc:#}"
    );
}

/// Polls `done` every 200 ms until it holds or `limit` passes; panics with `what`.
#[track_caller]
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    started.elapsed()
}

fn status_or_null(host: &TestHost) -> Value {
    let out = host.exec(&["cat", STATUS]);
    if out.success() {
        serde_json::from_str(&out.stdout).unwrap_or(Value::Null)
    } else {
        Value::Null
    }
}

fn applied(host: &TestHost) -> Value {
    status_or_null(host)["applied"]["id"].clone()
}

/// The value the fake `op` returns; searched for everywhere it must not be.
const SECRET: &str = "s3cr3t-Value-91f2";
const SECRET_STEP: &str = r#"
[[step]]
id = "secret-file"
type = "file"
path = "/etc/infra-secret.conf"
content = "password={{secret \"op://lab/db/password\"}}\n"
"#;

const SLOW_PACKAGE: &str = "infra-test-slow";
/// The slow package's preinst writes its pid here and waits for [`GO`].
const PREINST_PID: &str = "/run/infra-test-slow.pid";
const GO: &str = "/run/infra-test-go";
const PREINST: &str = r#"#!/bin/sh
echo $$ >/run/infra-test-slow.pid.new && mv /run/infra-test-slow.pid.new /run/infra-test-slow.pid
i=0
while [ ! -e /run/infra-test-go ] && [ "$i" -lt 1200 ]; do
  sleep 0.1
  i=$((i + 1))
done
rm -f /run/infra-test-slow.pid
exit 0
"#;

#[test]
fn the_daemon_under_systemd_follows_pushes_reverts_hand_edits_and_survives_a_restart() {
    let (_net, git, host) = start("pull-daemon", "ha-01");
    let packaging = integration_tests::workspace_root().join("packaging");
    host.copy_dir_in(&packaging, "/root/packaging");
    host.exec_ok(&[
        "sh",
        "/root/packaging/install.sh",
        "/usr/local/bin/infra-agent",
    ]);
    // A stand-in for the 1Password CLI (TEST-HOSTS.md: 1Password is unreachable here):
    // it answers one reference and fails if the token did not reach it.
    host.write_file(
        "/usr/local/bin/fake-op",
        format!(
            "#!/bin/sh\necho \"$3\" >>/run/fake-op.calls\n[ \"$OP_SERVICE_ACCOUNT_TOKEN\" = tok ] || {{ echo 'no token' >&2; exit 1; }}\n[ \"$3\" = op://lab/db/password ] || {{ echo \"isn't an item\" >&2; exit 1; }}\nprintf %s {SECRET}\n"
        ),
    );
    host.exec_ok(&["chmod", "0755", "/usr/local/bin/fake-op"]);
    host.write_file("/etc/infra-agent/op-token", "tok\n");
    host.exec_ok(&["chmod", "0600", "/etc/infra-agent/op-token"]);
    // The daemon keeps what converges read for an hour: 1Password is asked once.
    let secrets = "secrets_backend = \"op\"\nop_path = \"/usr/local/bin/fake-op\"\nsecrets_cache_ttl = 3600\n";
    host.write_file(
        "/etc/infra-agent/agent.toml",
        agent_toml(&git, &format!("interval = 3\nsplay = 0\n{secrets}")),
    );
    let work = git.work();
    let repo = state_repo("ha-01", &format!("{BASE_ROLE}{SECRET_STEP}"));
    work.copy_tree_in(repo.path());
    let a = work.commit("base");
    work.push();

    // Started under systemd (Type=notify): active, and its first cycle applies A.
    host.exec_ok(&["systemctl", "start", "infra-agent"]);
    assert_eq!(host.sh("systemctl is-active infra-agent").trim(), "active");
    wait_for("the first cycle applies A", Duration::from_mins(1), || {
        applied(&host) == a
    });
    assert_eq!(host.read_file("/etc/infra-marker"), "base\n");
    // The textfile is written just after status.json.
    wait_for("the textfile names A", Duration::from_secs(10), || {
        host.exec(&["cat", &format!("{TEXTFILE_DIR}/infra_agent.prom")])
            .stdout
            .contains(&format!("commit=\"{a}\""))
    });
    // The journal has the run, with the commit as a field (the converge logs its
    // lines just after it records the run, so give them a moment to arrive).
    let journal = || {
        host.sh(&format!(
            "journalctl -u infra-agent --no-pager -o cat INFRA_COMMIT={a}"
        ))
    };
    wait_for("the run in the journal", Duration::from_secs(10), || {
        journal().contains("changed")
    });
    // The secret reached its file (0600) and nothing else: not the journal (every
    // field of every entry), not status, history, the textfile or the state directory.
    assert_eq!(
        host.read_file("/etc/infra-secret.conf"),
        format!("password={SECRET}\n")
    );
    assert_eq!(host.sh("stat -c %a /etc/infra-secret.conf"), "600\n");
    let everywhere = host.sh(&format!(
        "journalctl --no-pager -o verbose | grep -c {SECRET} || true; grep -rl {SECRET} /var/lib/infra-agent {TEXTFILE_DIR} || true"
    ));
    assert_eq!(everywhere.trim(), "0", "the secret leaked: {everywhere}");
    // Later cycles (every 3 s) take the value from the daemon's cache.
    let runs = status_or_null(&host)["runs_total"].as_u64().unwrap_or(0);
    wait_for("two more cycles", Duration::from_secs(20), || {
        status_or_null(&host)["runs_total"].as_u64().unwrap_or(0) >= runs + 2
    });
    assert_eq!(
        host.read_file("/run/fake-op.calls"),
        "op://lab/db/password\n",
        "one read of the secret over several cycles"
    );

    // A push converges within one interval (3 s) plus the cycle itself.
    work.write(
        "roles/main.toml",
        &BASE_ROLE.replace("base\\n", "pushed\\n"),
    );
    let b = work.commit("pushed");
    work.push();
    let took = wait_for("the push converges", Duration::from_secs(20), || {
        host.exec(&["cat", "/etc/infra-marker"]).stdout == "pushed\n"
    });
    eprintln!("a push converged after {took:?}");
    // The run records itself just after it applied.
    wait_for("the push is recorded", Duration::from_secs(10), || {
        applied(&host) == b
    });

    // Hand edits: with a long interval (reloaded through SIGHUP), only the drift watch
    // can repair the file within seconds.
    host.write_file(
        "/etc/infra-agent/agent.toml",
        agent_toml(&git, &format!("interval = 3600\nsplay = 0\n{secrets}")),
    );
    host.exec_ok(&["systemctl", "reload", "infra-agent"]);
    let runs = status_or_null(&host)["runs_total"].as_u64().unwrap_or(0);
    wait_for("the SIGHUP cycle", Duration::from_secs(20), || {
        status_or_null(&host)["runs_total"].as_u64().unwrap_or(0) > runs
    });
    host.write_file("/etc/infra-marker", "edited by hand\n");
    let took = wait_for("the hand edit is reverted", Duration::from_secs(15), || {
        host.exec(&["cat", "/etc/infra-marker"]).stdout == "pushed\n"
    });
    eprintln!("a hand edit was reverted after {took:?}");
    wait_for("the drift run is recorded", Duration::from_secs(10), || {
        status_or_null(&host)["last_run"]["trigger"] == "drift"
    });
    let st = status_or_null(&host);
    assert!(st["drift_events"].as_u64().unwrap_or(0) >= 1, "{st:#}");
    wait_for("the drift in the textfile", Duration::from_secs(10), || {
        let prom = host.read_file(&format!("{TEXTFILE_DIR}/infra_agent.prom"));
        prom.contains("infra_agent_drift_events_total")
            && !prom.contains("infra_agent_drift_events_total 0")
    });

    // A restart during a package transaction leaves dpkg consistent: the agent finishes
    // the step it is in (the transaction runs in its own unit), then stops.
    let slow = integration_tests::DebPackage::new(SLOW_PACKAGE, "1.0")
        .file("/usr/share/infra-test/slow", "slow\n")
        .script("preinst", PREINST);
    let key = integration_tests::apt_repo::serve(&host, 8097, &[slow]);
    work.write("files/keys/local.asc", &key);
    work.write(
        "roles/main.toml",
        &format!(
            "{}\n{}",
            BASE_ROLE.replace("base\\n", "pushed\\n"),
            r#"
[[step]]
id = "repo"
type = "apt_repository"
name = "local"
uris = "http://127.0.0.1:8097/debian"
suites = "stable"
components = ["main"]
key_source = "keys/local.asc"

[[step]]
id = "slow"
type = "package"
names = ["infra-test-slow"]
requires = ["repo"]

[[step]]
id = "after"
type = "file"
path = "/etc/infra-after"
content = "after the package\n"
"#
        ),
    );
    let c = work.commit("a slow package");
    work.push();
    host.exec_ok(&["systemctl", "reload", "infra-agent"]);
    wait_for("dpkg runs the slow preinst", Duration::from_mins(2), || {
        host.exec(&["test", "-e", PREINST_PID]).success()
    });
    host.exec_ok(&["systemctl", "restart", "--no-block", "infra-agent"]);
    std::thread::sleep(Duration::from_secs(2));
    // The old agent waits for its step: it is still stopping, dpkg still running.
    let state = host.exec(&["systemctl", "is-active", "infra-agent"]).stdout;
    assert_eq!(
        state.trim(),
        "deactivating",
        "the agent must finish its step first"
    );
    host.exec_ok(&["touch", GO]);
    wait_for("the new agent applies C", Duration::from_mins(2), || {
        applied(&host) == c && host.exec(&["test", "-e", "/etc/infra-after"]).success()
    });
    assert_eq!(host.sh("systemctl is-active infra-agent").trim(), "active");
    assert_eq!(
        host.sh(&format!("dpkg-query -W -f '${{Status}}' {SLOW_PACKAGE}")),
        "install ok installed"
    );
    assert_eq!(host.sh("dpkg --audit"), "", "dpkg is consistent");

    // Stopping an idle daemon is quick and clean.
    let started = Instant::now();
    host.exec_ok(&["systemctl", "stop", "infra-agent"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        host.sh("systemctl show -p ExecMainStatus --value infra-agent")
            .trim(),
        "0"
    );
}
