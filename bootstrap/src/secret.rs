//! `op://` references for what the bootstrap reads on the operator's machine: the
//! login password (`--password-file op://...`) and the deploy key
//! (`--deploy-key op://...`). They are read with the operator's own 1Password CLI
//! (`op read`, signed in as the operator), never written to disk, never printed.

use infra_agent::process::Cmd;
use infra_agent::secrets::Reference;

use crate::failure::Failure;

/// The `op` program: `INFRA_BOOTSTRAP_OP` when set (tests, unusual installs), else
/// `op` from PATH.
#[must_use]
pub fn op_program() -> String {
    std::env::var("INFRA_BOOTSTRAP_OP").unwrap_or_else(|_| "op".to_owned())
}

/// Whether a flag's value is a 1Password reference rather than a file.
#[must_use]
pub fn is_reference(value: &std::path::Path) -> bool {
    value.to_str().is_some_and(|v| v.starts_with("op://"))
}

/// Reads `reference` with `op read --no-newline`. Errors name the reference and what
/// `op` said, never a value.
pub fn read(op: &str, reference: &str, what: &str) -> Result<Vec<u8>, Failure> {
    Reference::parse(reference).map_err(|e| {
        Failure::new(format!("{what}: {e}"))
            .hint("write a reference as op://vault/item/field or op://vault/item/section/field")
    })?;
    let cmd = Cmd::new(op)
        .args(["read", "--no-newline", reference])
        .timeout(std::time::Duration::from_mins(2));
    let out = infra_agent::process::run(&cmd).map_err(|e| {
        Failure::new(format!(
            "{what}: cannot run `{op}` to read {reference}: {e}"
        ))
        .hint("install the 1Password CLI and sign in (`op signin`), or pass a file instead")
    })?;
    if !out.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(Failure::new(format!(
            "{what}: `op read {reference}` failed: {}",
            said.trim()
        ))
        .hint("check the reference and that `op` is signed in (`op whoami`)"));
    }
    if out.stdout.is_empty() {
        return Err(Failure::new(format!("{what}: {reference} is empty")));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// A stand-in `op`: answers one reference, fails on any other.
    fn fake_op(dir: &std::path::Path) -> String {
        let path = dir.join("op");
        std::fs::write(
            &path,
            "#!/bin/sh\n[ \"$1 $2 $3\" = 'read --no-newline op://lab/root/password' ] || { echo \"[ERROR] could not read $3\" >&2; exit 1; }\nprintf 'hunter2'\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    #[test]
    fn reads_a_reference_with_op() {
        let dir = tempfile::tempdir().unwrap();
        let op = fake_op(dir.path());
        let value = read(&op, "op://lab/root/password", "the password").unwrap();
        assert_eq!(value, b"hunter2");
        assert!(is_reference(std::path::Path::new("op://lab/root/password")));
        assert!(!is_reference(std::path::Path::new("/root/password")));
    }

    #[test]
    fn errors_name_the_reference_and_never_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let op = fake_op(dir.path());
        let e = read(&op, "op://lab/other/password", "the password").unwrap_err();
        let text = format!("{e:?}");
        assert!(text.contains("op://lab/other/password"), "{text}");
        assert!(text.contains("could not read"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let e = read(&op, "op://lab", "the password").unwrap_err();
        assert!(format!("{e:?}").contains("the password"), "{e:?}");
        let e = read("/nonexistent/op", "op://lab/root/password", "the password").unwrap_err();
        assert!(format!("{e:?}").contains("cannot run"), "{e:?}");
    }
}
