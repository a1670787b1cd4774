//! `download` and `nala_fetch` on a real Debian bookworm host. Downloads come from a
//! local HTTP server: `busybox httpd` on 127.0.0.1 inside the container, serving a
//! file and a `.tar.gz` the test builds. `nala` is replaced by a stand-in script that
//! records its arguments and exits with a code the test chooses: the real `nala
//! fetch` contacts mirror lists and mirrors outside this machine and never runs here.
//! Only Debian's mirror is contacted (for busybox-static).

use integration_tests::{Output, TestHost, write_tree};

const REPO: &str = "/srv/state";
const PORT: &str = "8098";
const CALLS: &str = "/root/nala-calls";
const MARKER: &str = "/var/lib/infra-agent/nala-fetch.done";

#[track_caller]
fn assert_code(run: &Output, code: i32) {
    assert_eq!(run.code, code, "{run}");
}

#[track_caller]
fn assert_says(run: &Output, needle: &str) {
    assert!(
        run.stdout.contains(needle),
        "the output does not say {needle:?}\n{run}"
    );
}

/// Builds `/srv/www/tool` and `/srv/www/starship.tar.gz` (member `starship`), serves
/// them on 127.0.0.1, and puts the stand-in nala in place. Returns the sha256 of the
/// tool, of the archive and of the member.
fn prepare(host: &TestHost) -> (String, String, String) {
    host.sh("apt-get update -q >/dev/null && \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
           busybox-static >/dev/null");
    host.sh(&format!(
        r#"set -e
        mkdir -p /srv/www /tmp/build
        printf '#!/bin/sh\necho tool 1.0\n' > /srv/www/tool
        printf '#!/bin/sh\necho starship 1.22\n' > /tmp/build/starship
        tar -C /tmp/build -czf /srv/www/starship.tar.gz starship
        printf '#!/bin/sh\necho "$*" >> {CALLS}\necho "stand-in nala: $*"\nexit "$(cat /root/nala-exit 2>/dev/null || echo 0)"\n' > /usr/bin/nala
        chmod 0755 /usr/bin/nala
        systemd-run --unit infra-test-www --quiet busybox httpd -f -p 127.0.0.1:{PORT} -h /srv/www
        "#
    ));
    let sha = |path: &str| {
        host.exec_ok(&["sha256sum", path])
            .split_whitespace()
            .next()
            .expect("a hash")
            .to_owned()
    };
    for _ in 0..50 {
        let url = format!("http://127.0.0.1:{PORT}/tool");
        if host
            .exec(&["curl", "-sf", "-o", "/dev/null", &url])
            .success()
        {
            return (
                sha("/srv/www/tool"),
                sha("/srv/www/starship.tar.gz"),
                sha("/tmp/build/starship"),
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("busybox httpd does not answer on 127.0.0.1:{PORT}");
}

fn install_role(host: &TestHost, role: &str) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let inventory = format!(
        "[groups.all]\nroles = [\"main\"]\n\n[groups.lab]\nhosts = [\"{}\"]\n",
        host.hostname()
    );
    write_tree(
        dir.path(),
        &[
            ("infra.toml", "format = 1\n"),
            ("inventory/production.toml", inventory.as_str()),
            ("roles/main.toml", role),
        ],
    );
    host.exec_ok(&["rm", "-rf", REPO]);
    host.copy_dir_in(dir.path(), REPO);
}

fn once(host: &TestHost) -> Output {
    let run = host.agent(&["--once", "--repo", REPO]);
    eprintln!("{}: exit {}\n{}", host.hostname(), run.code, run.stdout);
    run
}

fn nala_calls(host: &TestHost) -> String {
    host.exec(&["cat", CALLS]).stdout
}

fn leftovers(host: &TestHost) -> String {
    host.sh("find /var/cache/infra-agent /usr/local/bin -name '*.part' -o -name '*.infra-tmp.*' 2>/dev/null || true")
}

#[test]
fn downloads_and_a_stand_in_nala_fetch_converge_once() {
    let host = TestHost::start("dl-01");
    let (tool, archive, member) = prepare(&host);
    let role = format!(
        r#"[[step]]
id = "mirrors"
type = "nala_fetch"

[[step]]
id = "tool"
type = "download"
url = "http://127.0.0.1:{PORT}/tool"
sha256 = "{tool}"
path = "/usr/local/bin/tool"
mode = "0755"

[[step]]
id = "starship"
type = "download"
url = "http://127.0.0.1:{PORT}/starship.tar.gz"
sha256 = "{archive}"
extract = "starship"
path = "/usr/local/bin/starship"
mode = "0755"
"#
    );
    install_role(&host, &role);

    // A dry run changes nothing and runs no nala.
    let dry = host.agent(&["--once", "--dry-run", "--repo", REPO]);
    assert_code(&dry, 2);
    assert_says(&dry, "~ run nala fetch --auto -y");
    assert_says(&dry, "download http://127.0.0.1");
    assert_eq!(nala_calls(&host), "");
    assert!(!host.exec(&["test", "-e", "/usr/local/bin/tool"]).success());

    let first = once(&host);
    assert_code(&first, 2);
    assert_eq!(host.exec_ok(&["/usr/local/bin/tool"]), "tool 1.0\n");
    assert_eq!(
        host.exec_ok(&["/usr/local/bin/starship"]),
        "starship 1.22\n"
    );
    assert_eq!(
        host.exec_ok(&[
            "stat",
            "-c",
            "%a %U",
            "/usr/local/bin/tool",
            "/usr/local/bin/starship"
        ]),
        "755 root\n755 root\n"
    );
    let got = host.exec_ok(&["sha256sum", "/usr/local/bin/starship"]);
    assert!(got.starts_with(&member), "{got}");
    assert_eq!(nala_calls(&host), "fetch --auto -y\n");
    assert_eq!(host.read_file(MARKER), "nala fetch --auto -y\n");
    assert_eq!(leftovers(&host), "");

    let second = once(&host);
    assert_code(&second, 0);
    assert_says(&second, "0 changed, 3 in sync");
    assert_eq!(
        nala_calls(&host),
        "fetch --auto -y\n",
        "nala fetch runs once"
    );

    // A failing fetch is a warning: exit 2, not 4, and tried again next run.
    host.exec_ok(&["rm", "-f", MARKER]);
    host.write_file("/root/nala-exit", "1\n");
    let failing = once(&host);
    assert_code(&failing, 2);
    assert_says(
        &failing,
        "warning: nala fetch failed: it exited with code 1; will try again next run",
    );
    assert_says(&failing, "0 failed");
    assert!(!host.exec(&["test", "-e", MARKER]).success());
    host.write_file("/root/nala-exit", "0\n");
    let retried = once(&host);
    assert_code(&retried, 2);
    assert_eq!(
        nala_calls(&host),
        "fetch --auto -y\nfetch --auto -y\nfetch --auto -y\n"
    );

    // A wrong sha256 fails clearly and writes nothing.
    let wrong = "0".repeat(64);
    install_role(
        &host,
        &format!(
            "[[step]]\nid = \"bad\"\ntype = \"download\"\nurl = \"http://127.0.0.1:{PORT}/tool\"\nsha256 = \"{wrong}\"\npath = \"/usr/local/bin/bad\"\n"
        ),
    );
    let bad = once(&host);
    // The new role replaces the old one: the downloads of the old role are rolled back
    // (changes), the bad one fails: exit 6.
    assert_code(&bad, 6);
    assert_says(
        &bad,
        &format!("has sha256 {tool}, but the step says {wrong}; nothing was written"),
    );
    assert_says(&bad, "~ remove /usr/local/bin/tool");
    assert!(!host.exec(&["test", "-e", "/usr/local/bin/tool"]).success());
    assert!(!host.exec(&["test", "-e", "/usr/local/bin/bad"]).success());
    assert_eq!(leftovers(&host), "");
}
