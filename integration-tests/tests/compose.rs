//! The `compose` step on a real Debian bookworm host: Docker runs inside the test
//! container (docker.io from Debian's mirror, dockerd under the container's systemd,
//! vfs storage), with bookworm's docker-compose 1.29 (v1). No registry is contacted:
//! the image `local/busybox` is a busybox-static root filesystem `docker import`ed
//! inside the container, and the compose file says `pull_policy: never` while the
//! step says `pull_policy = "never"`.
//!
//! Proof of issue 4: the project comes up (exit 2), a second run changes nothing
//! (exit 0), a template change recreates the container (its id changes), and a
//! container stopped by hand is brought back by the next run.

use std::time::{Duration, Instant};

use integration_tests::{Output, TestHost, write_tree};

const REPO: &str = "/srv/state";

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

const ROLE: &str = r#"
[[step]]
id = "web-dir"
type = "directory"
path = "/srv/web"
mode = "0755"

[[step]]
id = "web-compose"
type = "template"
path = "/srv/web/compose.yml"
source = "compose.yml.hbs"
requires = ["web-dir"]
notify = ["web"]

[[step]]
id = "web"
type = "compose"
project = "web"
directory = "/srv/web"
pull_policy = "never"
requires = ["web-compose"]
"#;

const COMPOSE_TEMPLATE: &str = r#"version: "3.7"
services:
  web:
    image: local/busybox
    pull_policy: never
    command: ["busybox", "httpd", "-f", "-p", "{{data.web.port}}"]
"#;

/// Puts a state repository whose `web.port` is `port` at [`REPO`].
fn install_repo(host: &TestHost, port: u16) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = format!("[web]\nport = \"{port}\"\n");
    write_tree(
        dir.path(),
        &[
            ("infra.toml", "format = 1\n"),
            (
                "inventory/production.toml",
                "[groups.all]\nroles = [\"main\"]\n\n[groups.lab]\nhosts = [\"docker-01\"]\n",
            ),
            ("roles/main.toml", ROLE),
            ("group_data/all.toml", &data),
            ("templates/compose.yml.hbs", COMPOSE_TEMPLATE),
        ],
    );
    host.exec_ok(&["rm", "-rf", REPO]);
    host.copy_dir_in(dir.path(), REPO);
}

fn once(host: &TestHost, flags: &[&str]) -> Output {
    let mut argv = vec!["--once", "--repo", REPO];
    argv.extend(flags);
    let start = Instant::now();
    let run = host.agent(&argv);
    eprintln!(
        "infra-agent {} -> exit {} in {:.1?}\n{}",
        argv.join(" "),
        run.code,
        start.elapsed(),
        run.stdout
    );
    run
}

/// Docker engine, docker-compose (v1) and busybox-static from Debian's mirror; waits
/// (bounded) until dockerd answers; imports `local/busybox`.
fn prepare_docker(host: &TestHost) {
    host.sh(
        "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io docker-compose busybox-static >/dev/null",
    );
    let deadline = Instant::now() + Duration::from_mins(1);
    while !host.exec(&["docker", "info"]).success() {
        assert!(
            Instant::now() < deadline,
            "dockerd did not answer within 60 s: {}",
            host.exec(&["systemctl", "status", "docker"])
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    host.sh(
        "set -e; r=$(mktemp -d); mkdir -p $r/bin $r/www; cp /bin/busybox $r/bin/busybox; \
         for a in sh httpd; do ln -s busybox $r/bin/$a; done; \
         tar -C $r -c . | docker import - local/busybox >/dev/null; rm -rf $r",
    );
}

/// Ids of the project's running containers.
fn running(host: &TestHost) -> Vec<String> {
    host.exec_ok(&[
        "docker",
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        "label=com.docker.compose.project=web",
        "--filter",
        "status=running",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

/// The httpd's command line as Docker recorded it.
fn command_of(host: &TestHost, id: &str) -> String {
    host.exec_ok(&["docker", "inspect", "-f", "{{join .Config.Cmd \" \"}}", id])
        .trim()
        .to_owned()
}

#[test]
fn compose_project_comes_up_is_recreated_on_change_and_brought_back_when_stopped() {
    let host = TestHost::start("docker-01");
    prepare_docker(&host);
    // No `docker compose` (v2) on bookworm: the step must use docker-compose v1.
    assert!(!host.exec(&["docker", "compose", "version"]).success());

    install_repo(&host, 8080);
    let dry = once(&host, &["--dry-run"]);
    assert_code(&dry, 2);
    assert!(running(&host).is_empty(), "a dry run started nothing");

    let first = once(&host, &[]);
    assert_code(&first, 2);
    assert_contains(&first, "up web");
    let ids = running(&host);
    assert_eq!(ids.len(), 1, "one container runs: {ids:?}\n{first}");
    assert_eq!(command_of(&host, &ids[0]), "busybox httpd -f -p 8080");

    let second = once(&host, &[]);
    assert_code(&second, 0);
    assert_eq!(running(&host), ids, "a run in sync recreates nothing");

    // A template change: the notified project is recreated once.
    install_repo(&host, 8081);
    let changed = once(&host, &[]);
    assert_code(&changed, 2);
    assert_contains(&changed, "recreated project web");
    let recreated = running(&host);
    assert_eq!(recreated.len(), 1, "{recreated:?}\n{changed}");
    assert_ne!(recreated, ids, "the container was recreated");
    assert_eq!(command_of(&host, &recreated[0]), "busybox httpd -f -p 8081");
    assert_code(&once(&host, &[]), 0);

    // Stopped by hand: the next run brings it back, though nothing changed.
    host.exec_ok(&["docker", "stop", "-t", "1", &recreated[0]]);
    assert!(running(&host).is_empty());
    let back = once(&host, &[]);
    assert_code(&back, 2);
    assert_contains(&back, "up web: down: web -> running");
    assert_eq!(running(&host).len(), 1, "{back}");
    assert_code(&once(&host, &[]), 0);
}
