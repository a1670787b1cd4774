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
//! The containers start from the harness's base image (see
//! `integration_tests::stage_support`). Host names carry this process's id so that
//! parallel runs never share a container; containers of runs that died are removed
//! first (their repository path names the dead process).

use std::path::Path;
use std::time::Duration;

use integration_tests::process;
use integration_tests::stage_support::{
    Cleanup, TEMP_PREFIX, key_pair, remove_dead_runs, stage, summary_line,
};
use integration_tests::{Docker, write_tree};

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
    let repo = tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{pid}-"))
        .tempdir()
        .expect("a temp dir");
    let _cleanup = Cleanup(repo.path().to_owned());
    let keys = tempfile::tempdir().expect("a temp dir");
    let (key, public) = key_pair(keys.path(), "admin_key");
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
