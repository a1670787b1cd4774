//! Checking a commit's SSH signature against an allowed signers file, with ssh-keygen
//! (as git itself does for `gpg.format = ssh`).

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::process::{self, Cmd};

use super::Error;

/// The namespace git signs commits in (`ssh-keygen -Y sign -n git`).
const NAMESPACE: &str = "git";
/// ssh-keygen reads two small files; this only bounds a broken installation.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Verifies commit `oid` and returns the principal that signed it.
pub(super) fn verify(
    repo: &git2::Repository,
    mirror: &Path,
    oid: git2::Oid,
    allowed_signers: &Path,
) -> Result<String, Error> {
    let mut short = oid.to_string();
    short.truncate(12);
    if let Err(e) = std::fs::File::open(allowed_signers) {
        return Err(Error::AllowedSigners {
            path: allowed_signers.to_owned(),
            reason: e.to_string(),
        });
    }
    let (signature, payload) = match repo.extract_signature(&oid, None) {
        Ok((signature, payload)) => (signature.to_vec(), payload.to_vec()),
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Err(Error::Unsigned { short });
        }
        Err(e) => {
            return Err(Error::Local {
                what: "reading the commit's signature".into(),
                mirror: mirror.to_owned(),
                message: e.message().to_owned(),
            });
        }
    };
    if signature.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
        return Err(Error::GpgSignature { short });
    }
    if !signature.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
        return Err(Error::UnsupportedSignature { short });
    }

    let scratch = Scratch::new(mirror).map_err(|e| Error::Local {
        what: "creating a private directory for the signature".into(),
        mirror: mirror.to_owned(),
        message: e.to_string(),
    })?;
    let sig_file = scratch.0.join("commit.sig");
    fs_err::write(&sig_file, &signature).map_err(|e| Error::Local {
        what: "writing the signature for ssh-keygen".into(),
        mirror: mirror.to_owned(),
        message: e.to_string(),
    })?;
    let sig = sig_file.to_string_lossy().into_owned();
    let signers = allowed_signers.to_string_lossy().into_owned();

    let found = ssh_keygen(
        &short,
        Cmd::new("ssh-keygen").args(["-Y", "find-principals", "-s", &sig, "-f", &signers]),
    )?;
    let principal = String::from_utf8_lossy(&found.stdout)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned);
    let Some(principal) = principal.filter(|_| found.success()) else {
        return Err(unknown_signer(&short, &sig, &payload, allowed_signers));
    };

    let mut verify = Cmd::new("ssh-keygen").args([
        "-Y", "verify", "-f", &signers, "-I", &principal, "-n", NAMESPACE, "-s", &sig,
    ]);
    verify.stdin = Some(payload);
    let verified = ssh_keygen(&short, verify)?;
    if verified.success() {
        Ok(principal)
    } else {
        Err(Error::BadSignature {
            short,
            message: verified.message(),
        })
    }
}

/// No principal in the allowed signers file holds the signing key. A signature that
/// does not even verify on its own is reported as bad, not as an unknown signer.
fn unknown_signer(short: &str, sig: &str, payload: &[u8], allowed_signers: &Path) -> Error {
    let mut check =
        Cmd::new("ssh-keygen").args(["-Y", "check-novalidate", "-n", NAMESPACE, "-s", sig]);
    check.stdin = Some(payload.to_vec());
    match ssh_keygen(short, check) {
        Ok(out) if out.success() => {
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let fingerprint = text
                .split_whitespace()
                .find(|w| w.starts_with("SHA256:"))
                .unwrap_or("its key's fingerprint is unknown")
                .to_owned();
            Error::UnknownSigner {
                short: short.to_owned(),
                fingerprint,
                allowed_signers: allowed_signers.to_owned(),
            }
        }
        Ok(out) => Error::BadSignature {
            short: short.to_owned(),
            message: out.message(),
        },
        Err(e) => e,
    }
}

fn ssh_keygen(short: &str, mut cmd: Cmd) -> Result<process::CmdOutput, Error> {
    cmd.timeout = Some(TIMEOUT);
    let out = process::run(&cmd).map_err(|e| Error::SshKeygen {
        short: short.to_owned(),
        message: format!("cannot run {}: {e}", cmd.display()),
    })?;
    if out.timed_out {
        return Err(Error::SshKeygen {
            short: short.to_owned(),
            message: format!(
                "{} did not finish within {} s",
                cmd.display(),
                TIMEOUT.as_secs()
            ),
        });
    }
    Ok(out)
}

/// A private (0700) directory inside the mirror, removed when dropped. The mirror is the
/// agent's own directory, so nothing else can race for the name or read the files.
struct Scratch(PathBuf);

impl Scratch {
    fn new(mirror: &Path) -> std::io::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "infra-verify-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = mirror.join(name);
        // A directory left behind by a crash of an earlier process with the same pid.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
