//! The Debian package `infra-agent` built by packaging/build-deb.sh, on a bookworm
//! container booted with systemd: it installs with apt-get and nothing else, lays out
//! its files with their modes, starts the service only once agent.toml exists, the
//! daemon it starts converges, `dpkg -r` stops and removes the agent but leaves the
//! configuration and the managed files, and `dpkg -P` removes the configuration and
//! the records but still not the managed files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration_tests::{TestHost, process, workspace_root, write_tree};

const DEB_DIR: &str = "/root/deb";
const MANAGED: &str = "/etc/infra-managed-by-package-test";

/// Builds the package from the debug agent into `outdir`; returns its path.
fn build_deb(outdir: &Path) -> PathBuf {
    let binary = integration_tests::binary("infra-agent");
    let script = workspace_root().join("packaging/build-deb.sh");
    let out = process::run(
        process::command("sh").arg(&script).arg(&binary).arg(outdir),
        None,
        Duration::from_mins(10),
    );
    assert!(out.success(), "build-deb.sh failed: {out}");
    let deb = PathBuf::from(
        out.stdout
            .lines()
            .last()
            .expect("build-deb.sh prints the package")
            .trim(),
    );
    assert!(deb.is_file(), "{} is not there: {out}", deb.display());
    assert_eq!(deb.parent(), Some(outdir), "written to OUTDIR");
    let name = deb.file_name().expect("a file name").to_string_lossy();
    assert_eq!(
        name,
        format!("infra-agent_{}_amd64.deb", env!("CARGO_PKG_VERSION")),
        "named after the workspace's version"
    );
    deb
}

/// Polls `check` every 200 ms until it holds or `within` passed (then panics).
#[track_caller]
fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn is_active(host: &TestHost) -> String {
    host.exec(&["systemctl", "is-active", "infra-agent"])
        .stdout
        .trim()
        .to_owned()
}

fn is_enabled(host: &TestHost) -> String {
    host.exec(&["systemctl", "is-enabled", "infra-agent"])
        .stdout
        .trim()
        .to_owned()
}

fn stat(host: &TestHost, path: &str) -> String {
    host.exec_ok(&["stat", "-c", "%F %a %U:%G", path])
        .trim()
        .to_owned()
}

fn exists(host: &TestHost, path: &str) -> bool {
    host.exec(&["test", "-e", path]).success()
}

#[test]
fn the_package_installs_starts_with_a_config_and_removes_cleanly() {
    let outdir = tempfile::tempdir().expect("a temporary directory");
    // The harness's image and the package build run side by side.
    let (deb, host) = std::thread::scope(|s| {
        let host = s.spawn(|| TestHost::options("pkg-01").without_agent().start());
        let deb = build_deb(outdir.path());
        (deb, host.join().expect("the host starts"))
    });
    let name = deb
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    let in_host = format!("{DEB_DIR}/{name}");
    host.copy_dir_in(outdir.path(), DEB_DIR);
    assert!(
        !exists(&host, "/usr/bin/infra-agent"),
        "the host starts without the agent"
    );

    // First install, without agent.toml: files in place, the service neither enabled
    // nor started, and the output says what to do. No network: every dependency is
    // already in the image, which is what makes this a check of Depends too (apt
    // would have to download a missing one, and there are no package lists).
    let install = host.exec_with(
        &["DEBIAN_FRONTEND=noninteractive"],
        &[
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            &in_host,
        ],
        None,
    );
    assert!(install.success(), "apt-get install: {install}");
    assert!(
        install
            .stdout
            .contains("/etc/infra-agent/agent.toml does not exist yet"),
        "{install}"
    );
    assert_eq!(
        stat(&host, "/usr/bin/infra-agent"),
        "regular file 755 root:root"
    );
    // The fetch helper the agent runs to pull from a URL, beside it.
    assert_eq!(
        stat(&host, "/usr/bin/infra-agent-fetch"),
        "regular file 755 root:root"
    );
    assert_eq!(
        stat(&host, "/lib/systemd/system/infra-agent.service"),
        "regular file 644 root:root"
    );
    assert_eq!(stat(&host, "/etc/infra-agent"), "directory 700 root:root");
    assert_eq!(
        stat(&host, "/var/lib/infra-agent"),
        "directory 700 root:root"
    );
    for doc in ["agent.toml.example", "copyright", "changelog.gz"] {
        assert!(
            exists(&host, &format!("/usr/share/doc/infra-agent/{doc}")),
            "{doc}"
        );
    }
    assert!(
        !exists(&host, "/etc/infra-agent/agent.toml"),
        "no configuration is made up"
    );
    assert_eq!(
        host.exec_ok(&["infra-agent", "--version"]).trim(),
        format!("infra-agent {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(is_enabled(&host), "disabled");
    assert_eq!(is_active(&host), "inactive");
    // The unit is the project's, as systemd sees it.
    assert_eq!(
        host.exec_ok(&["systemctl", "show", "-p", "Type", "--value", "infra-agent"])
            .trim(),
        "notify"
    );
    let status = host.exec_ok(&[
        "dpkg-query",
        "-W",
        "-f",
        "${db:Status-Abbrev}",
        "infra-agent",
    ]);
    assert_eq!(status.trim(), "ii");

    // A configuration and a state repository (a plain directory) with one file step.
    let repo = tempfile::tempdir().expect("a temporary directory");
    write_tree(
        repo.path(),
        &[
            ("infra.toml", "format = 1\n"),
            (
                "inventory/production.toml",
                "[groups.all]\nroles = [\"main\"]\n\n[groups.lab]\nhosts = [\"pkg-01\"]\n",
            ),
            (
                "roles/main.toml",
                &format!(
                    "[[step]]\nid = \"managed\"\ntype = \"file\"\npath = \"{MANAGED}\"\ncontent = \"from the daemon\\n\"\n"
                ),
            ),
        ],
    );
    host.copy_dir_in(repo.path(), "/srv/state");
    host.write_file(
        "/etc/infra-agent/agent.toml",
        "repository = \"/srv/state\"\ninterval = 3\nsplay = 0\ntextfile_dir = \"\"\n",
    );
    host.exec_ok(&["chmod", "0600", "/etc/infra-agent/agent.toml"]);

    // The upgrade path (the same package again): with agent.toml there, the postinst
    // enables and starts the service, and the daemon converges.
    let again = host.exec_with(
        &["DEBIAN_FRONTEND=noninteractive"],
        &["apt-get", "install", "-y", "--reinstall", &in_host],
        None,
    );
    assert!(again.success(), "apt-get install --reinstall: {again}");
    assert_eq!(is_enabled(&host), "enabled");
    wait_for("the service is active", Duration::from_secs(30), || {
        is_active(&host) == "active"
    });
    wait_for(
        "the daemon writes the managed file",
        Duration::from_mins(1),
        || host.exec(&["cat", MANAGED]).stdout == "from the daemon\n",
    );
    assert!(exists(&host, "/var/lib/infra-agent/status.json"));
    let pid_before = host.exec_ok(&[
        "systemctl",
        "show",
        "-p",
        "MainPID",
        "--value",
        "infra-agent",
    ]);

    // A reinstall while it runs restarts it on the (new) binary, without hanging.
    let third = host.exec_with(
        &["DEBIAN_FRONTEND=noninteractive"],
        &["apt-get", "install", "-y", "--reinstall", &in_host],
        None,
    );
    assert!(third.success(), "{third}");
    wait_for("the daemon is restarted", Duration::from_secs(30), || {
        is_active(&host) == "active"
            && host.exec_ok(&[
                "systemctl",
                "show",
                "-p",
                "MainPID",
                "--value",
                "infra-agent",
            ]) != pid_before
    });

    // dpkg -r: the service is stopped and gone, the binary too; the configuration,
    // the records and the managed file stay.
    let remove = host.exec(&["dpkg", "-r", "infra-agent"]);
    assert!(remove.success(), "dpkg -r: {remove}");
    assert!(
        !remove.stderr.contains("not empty"),
        "dpkg owns no directory the host keeps: {remove}"
    );
    wait_for("the service stops", Duration::from_secs(30), || {
        matches!(is_active(&host).as_str(), "inactive" | "unknown")
    });
    assert!(!exists(&host, "/usr/bin/infra-agent"));
    assert!(!exists(&host, "/usr/bin/infra-agent-fetch"));
    assert!(!exists(&host, "/lib/systemd/system/infra-agent.service"));
    assert!(!exists(
        &host,
        "/etc/systemd/system/multi-user.target.wants/infra-agent.service"
    ));
    let load = host.exec_ok(&[
        "systemctl",
        "show",
        "-p",
        "LoadState",
        "--value",
        "infra-agent",
    ]);
    assert_eq!(load.trim(), "not-found", "systemd forgot the unit");
    assert!(exists(&host, "/etc/infra-agent/agent.toml"));
    assert!(exists(&host, "/var/lib/infra-agent/status.json"));
    assert_eq!(host.read_file(MANAGED), "from the daemon\n");
    let audit = host.exec_ok(&["dpkg", "--audit"]);
    assert_eq!(audit, "", "dpkg --audit after remove");

    // dpkg -P: the configuration and the records go; the managed file stays.
    let purge = host.exec(&["dpkg", "-P", "infra-agent"]);
    assert!(purge.success(), "dpkg -P: {purge}");
    assert!(!exists(&host, "/etc/infra-agent"));
    assert!(!exists(&host, "/var/lib/infra-agent"));
    assert_eq!(host.read_file(MANAGED), "from the daemon\n");
    let audit = host.exec_ok(&["dpkg", "--audit"]);
    assert_eq!(audit, "", "dpkg --audit after purge");
    let gone = host.exec(&[
        "dpkg-query",
        "-W",
        "-f",
        "${db:Status-Abbrev}",
        "infra-agent",
    ]);
    assert!(
        !gone.success() || gone.stdout.trim().is_empty() || gone.stdout.starts_with("un"),
        "the package is gone from dpkg's database: {gone}"
    );
}
