//! The operator's `known_hosts` file (`~/.ssh/known_hosts`, or `--known-hosts FILE`):
//! what is recorded for the target, and recording a newly accepted key.

use std::path::{Path, PathBuf};

use russh::keys::{HashAlg, PublicKey};

use crate::failure::Failure;

/// What the `known_hosts` file says about the key a server showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The key is recorded for this host and port.
    Known,
    /// Nothing is recorded for this host and port.
    Unknown,
    /// Other keys are recorded for this host and port: the server's key changed (or
    /// someone is in the middle).
    Changed(Vec<PublicKey>),
}

/// `SHA256:...`, as `ssh-keygen -l` and OpenSSH's prompts show a key.
#[must_use]
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// `~/.ssh/known_hosts`.
pub fn default_path() -> Result<PathBuf, Failure> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".ssh").join("known_hosts"))
        .ok_or_else(|| {
            Failure::new("HOME is not set, so there is no ~/.ssh/known_hosts")
                .hint("pass --known-hosts FILE")
        })
}

/// The name a host is recorded under: `host`, or `[host]:port` off port 22.
#[must_use]
pub fn entry_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The keys recorded for `host`:`port` in `path` (a missing file records nothing).
pub fn recorded(path: &Path, host: &str, port: u16) -> Result<Vec<PublicKey>, Failure> {
    let found = russh::keys::known_hosts::known_host_keys_path(host, port, path).map_err(|e| {
        Failure::new(format!(
            "cannot read the entries for {} in {}: {e}",
            entry_name(host, port),
            path.display()
        ))
        .hint("fix or remove the broken line (`ssh-keygen -R HOST -f FILE` removes a host's lines)")
    })?;
    Ok(found.into_iter().map(|(_, k)| k).collect())
}

/// What the `recorded` keys say about `key`.
#[must_use]
pub fn verdict(recorded: &[PublicKey], key: &PublicKey) -> Verdict {
    if recorded.is_empty() {
        Verdict::Unknown
    } else if recorded.iter().any(|k| k.key_data() == key.key_data()) {
        Verdict::Known
    } else {
        Verdict::Changed(recorded.to_vec())
    }
}

/// Appends `key` for `host`:`port` to `path`, creating the file (and its directory).
pub fn record(path: &Path, host: &str, port: u16, key: &PublicKey) -> Result<(), Failure> {
    let failed = |e: &dyn std::fmt::Display| {
        Failure::new(format!(
            "cannot record the host key of {} in {}: {e}",
            entry_name(host, port),
            path.display()
        ))
        .hint("check that the file and its directory are writable")
    };
    let openssh = key.to_openssh().map_err(|e| failed(&e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs_err::create_dir_all(dir).map_err(|e| failed(&e))?;
    }
    let existing = match fs_err::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(failed(&e)),
    };
    let lead = if existing.is_empty() || existing.ends_with(b"\n") {
        ""
    } else {
        "\n"
    };
    let mut file = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| failed(&e))?;
    std::io::Write::write_all(
        &mut file,
        format!("{lead}{} {openssh}\n", entry_name(host, port)).as_bytes(),
    )
    .map_err(|e| failed(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhvbWUtaW5mcmEgZXhhbXBsZSBrZXk6IG5vdCByZWFs";
    const B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFub3RoZXIgZmFrZSBrZXkgZm9yIHRoZSBleGFtcGxl";

    #[test]
    fn records_then_knows_and_sees_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        let a = PublicKey::from_openssh(A).unwrap();
        let b = PublicKey::from_openssh(B).unwrap();
        let check = |port, key| verdict(&recorded(&path, "127.0.0.1", port).unwrap(), key);
        assert_eq!(check(2222, &a), Verdict::Unknown);
        record(&path, "127.0.0.1", 2222, &a).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("[127.0.0.1]:2222 ssh-ed25519 "), "{text}");
        assert_eq!(check(2222, &a), Verdict::Known);
        assert_eq!(check(22, &a), Verdict::Unknown);
        match check(2222, &b) {
            Verdict::Changed(old) => assert_eq!(fingerprint(&old[0]), fingerprint(&a)),
            other => panic!("{other:?}"),
        }
        assert!(fingerprint(&a).starts_with("SHA256:"));
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
