//! `infra-stage up|apply|down` against real containers: the staging proof of the
//! example issue, on a small state repository written here (two hosts, one in
//! `media`, one in `home_automation`; a first_boot-like role and a few file and
//! template steps) so it runs in well under two minutes.
//!
//! `up` bootstraps both hosts over SSH and they converge; an uncommitted template edit
//! arrives with `apply`; a second `apply` changes nothing; a template that no longer
//! renders fails both hosts (exit 1) and changes nothing; `down` removes the
//! containers.
//!
//! The containers start from the harness's base image (`--image`), which the other
//! container tests share, rather than from infra-stage's own recipe
//! (packaging/stage/bookworm.sh), which would cost a second debootstrap in CI.
//! Host names carry this process's id so that parallel runs never share a container;
//! containers of runs that died are removed first (their repository path names the
//! dead process).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration_tests::process::{self, Output};
use integration_tests::{Docker, base_image, binary, docker, write_tree};

const RUN_TIMEOUT: Duration = Duration::from_mins(10);
const TEMP_PREFIX: &str = "home-infra-stage-";

/// Removes this test's containers when it ends, however it ends.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let docker = Docker::require();
        for name in &self.0 {
            let _ = docker.run(&["rm", "-f", "-v", name]);
        }
    }
}

/// Removes the staging containers of earlier runs of this test whose process is gone.
fn remove_dead_runs(docker: Docker) {
    let format = "{{.Names}}\t{{.Label \"home-infra.stage.repo\"}}";
    let list = docker.run_ok(&[
        "ps",
        "-a",
        "--filter",
        "label=home-infra.stage.repo",
        "--format",
        format,
    ]);
    for line in list.lines() {
        let Some((name, repo)) = line.split_once('\t') else {
            continue;
        };
        let pid = repo
            .split('/')
            .find_map(|part| part.strip_prefix(TEMP_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!("removing {name}, left by a dead test run");
            let _ = docker.run(&["rm", "-f", "-v", name]);
        }
    }
}

fn key_pair(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("admin_key");
    let out = process::run(
        process::command("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "alice@stage", "-f"])
            .arg(&key),
        None,
        Duration::from_secs(30),
    );
    assert!(out.success(), "ssh-keygen: {out}");
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("the public key");
    (key, public.trim().to_owned())
}

/// The first_boot-like role (admin, key, sudo, sshd lockdown) and a `site` role with
/// a file and a template whose content depends on the host.
fn state_repo(dir: &Path, media: &str, ha: &str, admin_key: &str) {
    let first_boot = integration_tests::first_boot_role("{ data = \"admin.keys\" }");
    let site = r#"
[[step]]
id = "site-dir"
type = "directory"
path = "/etc/stage"
mode = "0755"

[[step]]
id = "site-conf"
type = "template"
path = "/etc/stage/site.conf"
source = "site.conf.hbs"
mode = "0644"
requires = ["site-dir"]

[[step]]
id = "motd"
type = "file"
path = "/etc/motd"
content = "{{host.name}} ({{host.env}}) is managed by infra-agent\n"
mode = "0644"
"#;
    write_tree(
        dir,
        &[
            ("infra.toml", "format = 1\n"),
            (
                "inventory/staging.toml",
                &format!(
                    "[groups.all]\nroles = [\"first_boot\", \"site\"]\n\n[groups.media]\nhosts = [\"{media}\"]\n\n[groups.home_automation]\nhosts = [\"{ha}\"]\n"
                ),
            ),
            (
                "group_data/all.toml",
                &format!("[admin]\nuser = \"alice\"\nkeys = [\"{admin_key}\"]\n"),
            ),
            ("group_data/media.toml", "purpose = \"media\"\n"),
            (
                "group_data/home_automation.toml",
                "purpose = \"home automation\"\n",
            ),
            ("roles/first_boot.toml", &first_boot),
            ("roles/site.toml", site),
            (
                "templates/site.conf.hbs",
                "host = {{host.name}}\npurpose = {{data.purpose}}\n",
            ),
        ],
    );
}

fn git(dir: &Path, args: &[&str]) {
    let out = process::run(
        process::command("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=Stage Test", "-c", "user.email=stage@test"])
            .args(args),
        None,
        Duration::from_secs(30),
    );
    assert!(out.success(), "git {args:?}: {out}");
}

fn stage(repo: &Path, key: &Path, args: &[&str]) -> Output {
    let started = Instant::now();
    let mut cmd = process::command(binary("infra-stage"));
    cmd.current_dir(repo)
        .env("DOCKER_API_VERSION", docker::api_version())
        .env_remove("SSH_AUTH_SOCK")
        .args(args)
        .arg("-i")
        .arg(key)
        .args(["--image", &base_image()]);
    let out = process::run(&mut cmd, None, RUN_TIMEOUT);
    eprintln!(
        "--- infra-stage {args:?} ({:.1?})\n{out}",
        started.elapsed()
    );
    out
}

/// The summary line of `host` (the last line starting with a status and the host).
fn summary_line<'a>(out: &'a Output, host: &str) -> &'a str {
    out.stdout
        .lines()
        .rev()
        .find(|l| {
            let mut words = l.split_whitespace();
            matches!(words.next(), Some("ok" | "FAILED")) && words.next() == Some(host)
        })
        .unwrap_or_else(|| panic!("no summary line for {host}:\n{out}"))
}

fn cat(docker: Docker, container: &str, path: &str) -> String {
    docker.run_ok(&["exec", container, "cat", path])
}

#[test]
fn stage_up_apply_down_converges_the_working_tree() {
    let docker = Docker::require();
    remove_dead_runs(docker);
    let pid = std::process::id();
    let media = format!("media-{pid}");
    let ha = format!("ha-{pid}");
    let containers = [format!("infra-stage-{media}"), format!("infra-stage-{ha}")];
    let _cleanup = Cleanup(containers.to_vec());
    let repo = tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{pid}-"))
        .tempdir()
        .expect("a temp dir");
    let keys = tempfile::tempdir().expect("a temp dir");
    let (key, public) = key_pair(keys.path());
    state_repo(repo.path(), &media, &ha, &public);
    git(repo.path(), &["init", "-q", "-b", "main"]);
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "staging"]);

    // up: both hosts start, are bootstrapped and converge.
    let up = stage(repo.path(), &key, &["up"]);
    assert_eq!(up.code, 0, "{up}");
    for host in [&media, &ha] {
        let line = summary_line(&up, host);
        assert!(line.starts_with("ok "), "{line}");
        assert!(
            line.contains(" failed,") && !line.contains(" 0 changed"),
            "{line}"
        );
    }
    let [media_c, ha_c] = &containers;
    assert_eq!(
        cat(docker, media_c, "/etc/stage/site.conf"),
        format!("host = {media}\npurpose = media\n")
    );
    assert_eq!(
        cat(docker, ha_c, "/etc/stage/site.conf"),
        format!("host = {ha}\npurpose = home automation\n")
    );
    assert_eq!(
        cat(docker, ha_c, "/etc/motd"),
        format!("{ha} (staging) is managed by infra-agent\n")
    );
    // The bootstrap ran for real: the agent reads the copied tree, the daemon runs,
    // and the admin's sudoers drop-in is in place.
    assert!(
        cat(docker, media_c, "/etc/infra-agent/agent.toml").contains("repository = \"/srv/state\"")
    );
    let active = docker.run(&["exec", media_c, "systemctl", "is-active", "infra-agent"]);
    assert_eq!(active.stdout.trim(), "active", "{active}");
    assert!(repo.path().join(".infra-stage/known_hosts").is_file());
    let status = process::run(
        process::command("git")
            .arg("-C")
            .arg(repo.path())
            .args(["status", "--porcelain"]),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(
        status.stdout, "",
        "infra-stage's own files must be git-ignored"
    );

    // An uncommitted edit arrives with `apply`.
    std::fs::write(
        repo.path().join("templates/site.conf.hbs"),
        "host = {{host.name}}\npurpose = {{data.purpose}}\nedited = yes\n",
    )
    .expect("edit the template");
    let apply = stage(repo.path(), &key, &["apply"]);
    assert_eq!(apply.code, 0, "{apply}");
    for host in [&media, &ha] {
        let line = summary_line(&apply, host);
        assert!(
            line.starts_with("ok ") && line.contains(" 1 changed, 0 failed,"),
            "{line}"
        );
    }
    assert_eq!(
        cat(docker, media_c, "/etc/stage/site.conf"),
        format!("host = {media}\npurpose = media\nedited = yes\n")
    );
    assert_eq!(
        cat(docker, ha_c, "/etc/stage/site.conf"),
        format!("host = {ha}\npurpose = home automation\nedited = yes\n")
    );

    // A second apply changes nothing.
    let again = stage(repo.path(), &key, &["apply"]);
    assert_eq!(again.code, 0, "{again}");
    for host in [&media, &ha] {
        let line = summary_line(&again, host);
        assert!(
            line.starts_with("ok ") && line.contains(" 0 changed, 0 failed,"),
            "{line}"
        );
    }

    // A template that does not render: both hosts fail, nothing changes, exit 1.
    std::fs::write(
        repo.path().join("templates/site.conf.hbs"),
        "host = {{host.name}}\nmissing = {{data.nope}}\n",
    )
    .expect("break the template");
    let broken = stage(repo.path(), &key, &["apply", &media]);
    assert_eq!(broken.code, 1, "{broken}");
    assert!(
        summary_line(&broken, &media).starts_with("FAILED "),
        "{broken}"
    );
    assert!(
        !broken
            .stdout
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(ha.as_str())),
        "only the named host is applied:\n{broken}"
    );
    assert_eq!(
        cat(docker, media_c, "/etc/stage/site.conf"),
        format!("host = {media}\npurpose = media\nedited = yes\n")
    );

    // An unknown host is a usage error naming the staging hosts.
    let unknown = stage(repo.path(), &key, &["apply", "media-01"]);
    assert_eq!(unknown.code, 64, "{unknown}");
    assert!(
        unknown.stderr.contains(&media) && unknown.stderr.contains(&ha),
        "{unknown}"
    );

    // down removes both containers.
    let down = stage(repo.path(), &key, &["down"]);
    assert_eq!(down.code, 0, "{down}");
    for name in &containers {
        let left = docker.run(&["inspect", "--type", "container", name]);
        assert!(!left.success(), "{name} is still there after down");
    }
    let again = stage(repo.path(), &key, &["down"]);
    assert_eq!(again.code, 0, "{again}");
    assert!(again.stdout.contains("no staging container"), "{again}");
}
