//! `infra-bootstrap` and `infra-stage` exist, parse their documented flags, and say
//! plainly that they are not implemented yet (exit 1), rather than pretending.

use integration_tests::{binary, process::command};

#[test]
fn bootstrap_says_what_is_missing() {
    let out = command(binary("infra-bootstrap"))
        .args([
            "root@192.0.2.10",
            "--port",
            "2222",
            "--hostname",
            "media-01",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`infra-bootstrap root@192.0.2.10` is not implemented yet"),
        "{stderr}"
    );
    assert!(
        stderr.contains("enable and start the agent daemon"),
        "{stderr}"
    );
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
