//! `infra-bootstrap` and `infra-stage` refuse bad command lines with exit 64 and say
//! why; `infra-stage` refuses a repository without staging hosts (exit 1). None of
//! these needs Docker or a host.

use integration_tests::{binary, process::command, write_tree};

#[test]
fn bootstrap_refuses_a_non_root_target_without_sudo() {
    let out = command(binary("infra-bootstrap"))
        .args(["alice@192.0.2.10", "-i", "/nonexistent"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pass --sudo"), "{stderr}");
}

#[test]
fn bootstrap_refuses_a_malformed_host_key_pin() {
    let out = command(binary("infra-bootstrap"))
        .args([
            "root@192.0.2.10",
            "-i",
            "/nonexistent",
            "--host-key",
            "MD5:aa",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a SHA256 fingerprint"), "{stderr}");
}

#[test]
fn bootstrap_outside_a_state_repository_fails_before_connecting() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = command(binary("infra-bootstrap"))
        .args(["root@192.0.2.10", "-i", "/nonexistent"])
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a state repository"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
}

/// A state repository with two staging hosts (and no production ones).
fn staging_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    write_tree(
        dir.path(),
        &[
            ("infra.toml", "format = 1\n"),
            (
                "inventory/staging.toml",
                "[groups.media]\nhosts = [\"stage-media-01\"]\n\n[groups.home_automation]\nhosts = [\"stage-ha-01\"]\n",
            ),
        ],
    );
    dir
}

#[test]
fn stage_refuses_a_host_that_is_not_staged_and_lists_the_staging_hosts() {
    let repo = staging_repo();
    let out = command(binary("infra-stage"))
        .args(["apply", "media-01", "--state-repo"])
        .arg(repo.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`media-01` is not a host of inventory/staging.toml")
            && stderr.contains("hint: the staging hosts are: stage-media-01, stage-ha-01"),
        "{stderr}"
    );
}

#[test]
fn stage_up_needs_an_admin_key() {
    let repo = staging_repo();
    let out = command(binary("infra-stage"))
        .env_remove("SSH_AUTH_SOCK")
        .args(["up", "--state-repo"])
        .arg(repo.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no admin key"), "{stderr}");
}

#[test]
fn stage_needs_a_staging_inventory() {
    let repo = tempfile::tempdir().expect("a temp dir");
    write_tree(
        repo.path(),
        &[
            ("infra.toml", "format = 1\n"),
            (
                "inventory/production.toml",
                "[groups.media]\nhosts = [\"media-01\"]\n",
            ),
        ],
    );
    let out = command(binary("infra-stage"))
        .args(["down", "--state-repo"])
        .arg(repo.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no inventory/staging.toml") && stderr.contains("hint:"),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_64() {
    for (bin, args) in [
        ("infra-bootstrap", vec![]),
        ("infra-stage", vec!["sideways"]),
    ] {
        let out = command(binary(bin)).args(&args).output().expect("runs");
        assert_eq!(out.status.code(), Some(64), "{bin} {args:?}");
    }
}
