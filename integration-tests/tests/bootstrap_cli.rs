//! `infra-bootstrap` refuses bad command lines with exit 64 and says why; `infra-stage`
//! parses its documented flags and says plainly that it is not implemented yet (exit 1).

use integration_tests::{binary, process::command};

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

#[test]
fn stage_says_what_is_missing() {
    let out = command(binary("infra-stage"))
        .args(["up", "stage-media-01"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`infra-stage up` is not implemented yet"),
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
