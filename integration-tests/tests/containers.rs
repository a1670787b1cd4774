//! The container harness and `infra-agent --once` in real Debian bookworm containers
//! with systemd as PID 1: boot, converge, dry run, refusal of an invalid repository.
//!
//! Needs a running Docker daemon (`.ci/run` installs and starts one); the first run
//! on a machine builds the base image (a few minutes).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::TcpStream;
use std::time::Duration;

use integration_tests::{Docker, Output, TestHost, write_tree};

#[track_caller]
fn assert_code(run: &Output, code: i32) {
    assert_eq!(run.code, code, "{run}");
}

/// A state repository for `hostname`: a directory, a file with owner and mode, a
/// template reading data and facts, a symbolic link.
fn repo(hostname: &str, extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let inventory =
        format!("[groups.all]\nroles = [\"base\"]\n\n[groups.lab]\nhosts = [\"{hostname}\"]\n");
    let mut files = vec![
        ("infra.toml", "format = 1\n"),
        ("inventory/production.toml", inventory.as_str()),
        (
            "group_data/all.toml",
            "[motd]\ngreeting = \"welcome\"\n\n[app]\nport = 8080\n",
        ),
        ("roles/base.toml", ROLE),
        (
            "templates/motd.hbs",
            "{{data.motd.greeting}} to {{host.name}} ({{host.env}})\nrunning {{facts.os.id}} {{facts.os.codename}}, systemd {{facts.systemd}}\n",
        ),
    ];
    files.extend(extra);
    write_tree(dir.path(), &files);
    dir
}

const ROLE: &str = r#"
[[step]]
id = "app-dir"
type = "directory"
path = "/srv/app"
owner = "www-data"
group = "www-data"
mode = "0750"

[[step]]
id = "app-conf"
type = "file"
path = "/srv/app/app.conf"
content = "port = {{data.app.port}}\n"
owner = "root"
group = "www-data"
mode = "0640"
requires = ["app-dir"]

[[step]]
id = "motd"
type = "template"
path = "/etc/motd"
source = "motd.hbs"
mode = "0644"

[[step]]
id = "app-link"
type = "symlink"
path = "/usr/local/etc/app.conf"
target = "/srv/app/app.conf"
requires = ["app-conf"]
"#;

/// The paths the role manages, and what a run may touch around them.
const PATHS: &[&str] = &[
    "/srv",
    "/srv/app",
    "/srv/app/app.conf",
    "/etc",
    "/etc/motd",
    "/usr/local/etc",
    "/usr/local/etc/app.conf",
    "/var/lib",
    "/var/lib/infra-agent",
    "/var/lib/dpkg/status",
];

#[track_caller]
fn stat(host: &TestHost, path: &str) -> String {
    host.exec_ok(&["stat", "-c", "%F %a %U:%G", path])
        .trim()
        .to_owned()
}

#[test]
fn a_fresh_container_boots_systemd_and_sshd() {
    let host = TestHost::start("boot-01");
    assert_eq!(host.exec_ok(&["cat", "/proc/1/comm"]).trim(), "systemd");
    assert_eq!(
        host.exec_ok(&["systemctl", "is-active", "ssh"]).trim(),
        "active"
    );
    assert_eq!(host.exec_ok(&["hostname"]).trim(), "boot-01");
    assert!(
        host.read_file("/etc/os-release")
            .contains("VERSION_CODENAME=bookworm")
    );
    // sshd answers on the published port with its banner.
    let mut stream = TcpStream::connect(("127.0.0.1", host.ssh_port())).expect("ssh port connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    let mut banner = [0u8; 64];
    let n = stream.read(&mut banner).expect("sshd sends its banner");
    let banner = String::from_utf8_lossy(&banner[..n]);
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner:?}");
    // What later tests rely on without downloading.
    host.exec_ok(&["nala", "--version"]);
    host.exec_ok(&["git", "--version"]);
    assert!(
        host.exec_ok(&["infra-agent", "--version"])
            .contains("infra-agent")
    );
}

#[test]
fn once_converges_a_state_repository() {
    let host = TestHost::start("conv-01");
    let repo = repo(host.hostname(), &[]);
    host.copy_dir_in(repo.path(), "/srv/state");

    let run = host.agent(&["--once", "--repo", "/srv/state"]);
    assert_code(&run, 2);
    assert!(
        run.stdout.contains("4 changed, 0 in sync, 0 failed"),
        "{run}"
    );

    assert_eq!(stat(&host, "/srv/app"), "directory 750 www-data:www-data");
    assert_eq!(
        stat(&host, "/srv/app/app.conf"),
        "regular file 640 root:www-data"
    );
    assert_eq!(host.read_file("/srv/app/app.conf"), "port = 8080\n");
    assert_eq!(stat(&host, "/etc/motd"), "regular file 644 root:root");
    assert_eq!(
        host.read_file("/etc/motd"),
        "welcome to conv-01 (production)\nrunning debian bookworm, systemd true\n"
    );
    assert_eq!(
        stat(&host, "/usr/local/etc/app.conf"),
        "symbolic link 777 root:root"
    );
    assert_eq!(
        host.exec_ok(&["readlink", "/usr/local/etc/app.conf"])
            .trim(),
        "/srv/app/app.conf"
    );
    // The original state of what it changed is recorded.
    host.exec_ok(&["test", "-d", "/var/lib/infra-agent/originals"]);

    // A run in sync touches nothing it manages and records nothing new of the host's
    // originals; it only records itself (status.json, history/).
    let managed = &[PATHS, &["/var/lib/infra-agent/originals"]].concat();
    let managed: Vec<&str> = managed
        .iter()
        .copied()
        .filter(|p| *p != "/var/lib/infra-agent")
        .collect();
    let before = host.snapshot(&managed);
    let again = host.agent(&["--once", "--repo", "/srv/state"]);
    assert_code(&again, 0);
    assert!(again.stdout.contains("0 changed, 4 in sync"), "{again}");
    assert_eq!(
        host.snapshot(&managed),
        before,
        "a run in sync touches nothing"
    );
    let status: serde_json::Value =
        serde_json::from_str(&host.read_file("/var/lib/infra-agent/status.json"))
            .expect("status.json is JSON");
    assert_eq!(status["runs_total"], 2, "{status:#}");
    assert_eq!(status["last_run"]["outcome"], "in_sync", "{status:#}");
}

#[test]
fn dry_run_on_a_fresh_container_changes_nothing() {
    let host = TestHost::start("dry-01");
    let repo = repo(host.hostname(), &[]);
    host.copy_dir_in(repo.path(), "/srv/state");

    let before = host.snapshot(PATHS);
    let run = host.agent(&[
        "--once",
        "--dry-run",
        "--repo",
        "/srv/state",
        "--format",
        "json",
    ]);
    assert_code(&run, 2);
    let after = host.snapshot(PATHS);
    assert_eq!(after, before, "a dry run changes nothing\n{run}");
    assert_eq!(after["/var/lib/infra-agent"], "absent");

    // Every path the plan names was in the snapshot, and every step is pending.
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("the plan is JSON");
    assert_eq!(doc["schema"], "infra-agent/run/v1");
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["host"], "dry-01");
    let steps = doc["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 4, "{run}");
    let mut planned = BTreeMap::new();
    for step in steps {
        assert_eq!(step["status"], "pending", "{step}");
        for change in step["changes"].as_array().expect("changes") {
            let path = change["path"].as_str().expect("a change names its path");
            planned.insert(path.to_owned(), step["id"].clone());
        }
    }
    let expected = [
        "/etc/motd",
        "/srv/app",
        "/srv/app/app.conf",
        "/usr/local/etc/app.conf",
    ];
    assert_eq!(
        planned.keys().map(String::as_str).collect::<Vec<_>>(),
        expected
    );
    for path in planned.keys() {
        assert!(
            before.contains_key(path.as_str()),
            "{path} was not in the snapshot"
        );
    }
}

#[test]
fn an_invalid_repository_is_refused_and_nothing_changes() {
    let host = TestHost::start("bad-01");
    // A misspelt key in a step.
    let repo = repo(
        host.hostname(),
        &[(
            "roles/extra.toml",
            "[[step]]\nid = \"x\"\ntype = \"file\"\npath = \"/etc/x\"\ncontent = \"x\"\nmdoe = \"0644\"\n",
        )],
    );
    host.copy_dir_in(repo.path(), "/srv/state");
    let managed: Vec<&str> = PATHS
        .iter()
        .copied()
        .filter(|p| !p.starts_with("/var/lib"))
        .collect();
    let before = host.snapshot(&managed);
    let run = host.agent(&["--once", "--repo", "/srv/state"]);
    assert_code(&run, 1);
    assert!(run.stderr.contains("roles/extra.toml"), "{run}");
    assert!(run.stderr.contains("mdoe"), "{run}");
    assert_eq!(
        host.snapshot(&managed),
        before,
        "a refused repository changes nothing"
    );
    // Nothing was captured, since nothing was changed; the refusal itself is recorded.
    assert_eq!(
        host.snapshot(&["/var/lib/infra-agent/originals"])["/var/lib/infra-agent/originals"],
        "absent"
    );
    let status: serde_json::Value =
        serde_json::from_str(&host.read_file("/var/lib/infra-agent/status.json"))
            .expect("status.json is JSON");
    assert_eq!(status["last_run"]["outcome"], "not_applied", "{status:#}");
    assert!(
        status["last_run"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("mdoe")),
        "{status:#}"
    );
}

#[test]
fn leftovers_of_a_dead_test_process_are_removed() {
    let docker = Docker::require();
    let image = integration_tests::base_image();
    let name = format!("hit-leftover-{}", std::process::id());
    let owner = format!(
        "home-infra-test.owner=4194305:1:{}",
        std::fs::read_link("/proc/self/ns/pid")
            .expect("a pid namespace")
            .display()
    );
    docker.run_ok(&["create", "--name", &name, "--label", &owner, &image]);
    docker.remove_leftovers();
    let left = docker.run_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("name=^{name}$"),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(left.trim(), "", "the leftover container is removed");
}
