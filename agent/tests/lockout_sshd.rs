//! The lockout guard also watches sshd configuration written by `file` and `template`
//! steps: turning password login off while no sudo user has a key is refused, and the
//! live configuration is left alone.

use std::path::Path;

use infra_agent::host::{FakeHost, Host};
use infra_agent::process::CmdOutput;
use infra_agent::resource::{self, Ctx, lockout};
use infra_agent::step::file::{FileContent, FileStep};
use infra_agent::step::{Attrs, Presence, StepKind};

const DROPIN: &str = "/etc/ssh/sshd_config.d/00-infra.conf";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhvbWUtaW5mcmEgZXhhbXBsZSBrZXk6IG5vdCByZWFs alice@laptop";

/// A machine with sshd allowing password login, and alice in group sudo; `key` gives
/// her an authorized key.
fn machine(key: bool) -> FakeHost {
    let mut host = FakeHost::new()
        .with_file("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n", 0o644)
        .with_file("/etc/group", "root:x:0:\nsudo:x:27:alice\nalice:x:1000:\n", 0o644)
        .with_user("alice", 1000)
        .with_group("alice", 1000)
        .with_dir("/home/alice", 0o755)
        .with_owner("/home/alice", 1000, 1000)
        .with_dir("/etc/ssh/sshd_config.d", 0o755)
        .with_file(lockout::SSHD, "", 0o755)
        .with_command(
            lockout::SSHD,
            CmdOutput {
                code: Some(0),
                stdout: b"passwordauthentication yes\npermitrootlogin no\npubkeyauthentication yes\nstrictmodes yes\nauthorizedkeysfile .ssh/authorized_keys\nauthorizedkeyscommand none\n".to_vec(),
                ..CmdOutput::default()
            },
        );
    if key {
        host = host
            .with_dir("/home/alice/.ssh", 0o700)
            .with_owner("/home/alice/.ssh", 1000, 1000)
            .with_file(
                "/home/alice/.ssh/authorized_keys",
                format!("{KEY}\n"),
                0o600,
            )
            .with_owner("/home/alice/.ssh/authorized_keys", 1000, 1000);
    }
    host
}

fn dropin(content: &str) -> StepKind {
    StepKind::File(FileStep {
        path: DROPIN.to_owned(),
        state: Presence::Present,
        content: Some(FileContent::Inline(content.to_owned())),
        attrs: Attrs::default(),
        validate: None,
        sensitive: false,
    })
}

fn apply(host: &FakeHost, step: &StepKind) -> Result<(), String> {
    let files = |p: &str| Err(format!("{p}: no files"));
    let ctx = Ctx::new(host, false, None, &files);
    let plan = resource::plan(step, &ctx).map_err(|e| e.to_string())?;
    resource::apply(step, &plan, &ctx).map_err(|e| e.to_string())
}

#[test]
fn an_sshd_dropin_turning_password_login_off_is_refused_without_a_sudo_key() {
    let host = machine(false);
    let err = apply(&host, &dropin("PasswordAuthentication no\n")).unwrap_err();
    assert!(
        err.starts_with(
            "refusing: this step turns password login off, but no sudo user can log in with a key"
        ),
        "{err}"
    );
    assert!(
        host.lstat(Path::new(DROPIN)).unwrap().is_none(),
        "the drop-in was written"
    );
}

#[test]
fn with_a_sudo_key_or_without_the_setting_the_dropin_is_written() {
    let host = machine(true);
    apply(&host, &dropin("passwordauthentication   NO\n")).unwrap();
    assert!(host.file(DROPIN).is_some());

    // Nothing about passwords: no guard to pass.
    let host = machine(false);
    apply(&host, &dropin("X11Forwarding no\n")).unwrap();
    assert!(host.file(DROPIN).is_some());
}
