//! The `apt_repository` resource: a keyring in `/etc/apt/keyrings/` and a deb822
//! `.sources` entry naming it in `Signed-By`, both written like a `file` step's file
//! (atomically, originals captured, content diffed).
//!
//! An armored key is kept as `NAME.asc`, a binary one as `NAME.gpg` (apt tells them
//! apart by the extension). A key from a URL is downloaded with apt's own downloader,
//! which checks `key_sha256`; `plan` never downloads: it compares the keyring on disk
//! with `key_sha256`. A trusted repository (`trusted = true`, `file:` URIs only) has
//! no keyring: its entry says `Trusted: yes`, and a keyring of its name is removed.
//! Any change calls [`package::sources_changed`], so later `package`
//! steps of the run refresh the package lists first.

use std::path::Path;

use super::file::{self, Desired};
use super::package::{self, combined, exit_text, tail};
use super::{Change, ChangeKind, Ctx, Error, Plan, kind_name};
use crate::host::Kind;
use crate::process::Cmd;
use crate::step::apt_repository::{AptRepositoryStep, KEYRINGS_DIR, KeySource};
use crate::step::{Attrs, Mode, Presence};

const EXTS: [&str; 2] = ["asc", "gpg"];
const ARMOR: &[u8] = b"-----BEGIN PGP PUBLIC KEY BLOCK-----";
/// Where a key from a URL is downloaded before it is checked and installed.
const DOWNLOAD_DIR: &str = package::DEB_DIR;

fn attrs() -> Attrs {
    Attrs {
        owner: None,
        group: None,
        mode: Some(Mode(0o644)),
    }
}

/// `asc` for an armored `OpenPGP` key, `gpg` for a binary one; `None` when it is neither.
fn key_ext(bytes: &[u8]) -> Option<&'static str> {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    if bytes[start..].starts_with(ARMOR) {
        Some("asc")
    } else if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        // An OpenPGP packet header always has its top bit set.
        Some("gpg")
    } else {
        None
    }
}

fn not_a_key(what: &str) -> Error {
    Error::Refused(format!(
        "{what} is not an OpenPGP public key (neither armored, starting with {}, nor binary); nothing was written",
        String::from_utf8_lossy(ARMOR)
    ))
}

/// The keyring's content from `files/`, and its extension.
fn file_key(rel: &str, ctx: &Ctx<'_>) -> Result<(Vec<u8>, &'static str), Error> {
    let bytes = (ctx.files)(rel)
        .map_err(|e| Error::Refused(format!("cannot read files/{rel} from the repository: {e}")))?;
    let ext = key_ext(&bytes).ok_or_else(|| not_a_key(&format!("files/{rel}")))?;
    Ok((bytes, ext))
}

/// The SHA-256 of a file on the host (`sha256sum`, as the package step checks a .deb).
fn sha256_of(path: &Path, ctx: &Ctx<'_>) -> Result<String, Error> {
    let shown = path.display().to_string();
    let cmd = Cmd::new("sha256sum").args(["--", shown.as_str()]);
    let out = ctx.host.run(&cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let got = text.split_whitespace().next().unwrap_or_default();
    if !out.success() || got.len() != 64 {
        return Err(Error::Refused(format!(
            "cannot compute the sha256 of {shown}: {} ({})",
            tail(&combined(&out)),
            exit_text(&out)
        )));
    }
    Ok(got.to_ascii_lowercase())
}

/// The extension of the keyring on disk whose SHA-256 is `want`, if there is one.
fn url_key_on_disk(
    step: &AptRepositoryStep,
    want: &str,
    ctx: &Ctx<'_>,
) -> Result<Option<&'static str>, Error> {
    for ext in EXTS {
        let path = step.keyring_path(ext);
        if let Some(meta) = ctx.host.lstat(Path::new(&path))?
            && meta.kind == Kind::File
            && sha256_of(Path::new(&path), ctx)? == want
        {
            return Ok(Some(ext));
        }
    }
    Ok(None)
}

/// What the keyring will be: `Known` content, or a download still to do.
enum KeyPlan {
    Known(Vec<u8>, &'static str),
    /// The keyring on disk already is what the URL serves.
    OnDisk(&'static str),
    /// To download; the extension is a guess until then.
    Download(&'static str),
}

fn key_plan(step: &AptRepositoryStep, ctx: &Ctx<'_>) -> Result<KeyPlan, Error> {
    match step.key.as_ref() {
        Some(KeySource::File(rel)) => {
            let (bytes, ext) = file_key(rel, ctx)?;
            Ok(KeyPlan::Known(bytes, ext))
        }
        Some(KeySource::Url { url, sha256 }) => {
            if let Some(ext) = url_key_on_disk(step, sha256, ctx)? {
                return Ok(KeyPlan::OnDisk(ext));
            }
            // Until it is downloaded, keep the extension of a keyring already there
            // (most likely the same format), else go by the URL.
            for ext in EXTS {
                if ctx
                    .host
                    .lstat(Path::new(&step.keyring_path(ext)))?
                    .is_some()
                {
                    return Ok(KeyPlan::Download(ext));
                }
            }
            let path = url.split(['?', '#']).next().unwrap_or(url);
            Ok(KeyPlan::Download(
                if path.to_ascii_lowercase().ends_with(".asc") {
                    "asc"
                } else {
                    "gpg"
                },
            ))
        }
        Some(KeySource::Trusted) | None => Err(Error::Refused(
            "internal: a present apt_repository without a key".to_owned(),
        )),
    }
}

fn keyrings_dir_change(ctx: &Ctx<'_>) -> Result<Option<Change>, Error> {
    let dir = Path::new(KEYRINGS_DIR);
    match ctx.host.lstat(dir)? {
        None => {
            let mut c = Change::new(ChangeKind::Create, dir);
            c.after = Some("directory, mode 0755, owner root:root".to_owned());
            Ok(Some(c))
        }
        Some(meta) if meta.kind == Kind::Dir => Ok(None),
        Some(meta) => Err(Error::Refused(format!(
            "{KEYRINGS_DIR} is {}, not a directory: remove it by hand",
            kind_name(&meta)
        ))),
    }
}

/// The entry, naming the keyring of extension `ext` (`None`: a trusted repository).
fn sources_desired<'a>(
    step: &'a AptRepositoryStep,
    path: &'a Path,
    attrs: &'a Attrs,
    ext: Option<&str>,
) -> Desired<'a> {
    Desired {
        path,
        content: step
            .deb822(ext.map(|e| step.keyring_path(e)).as_deref())
            .into_bytes(),
        attrs,
        validate: None,
        sensitive: false,
    }
}

fn is_trusted(step: &AptRepositoryStep) -> bool {
    matches!(step.key, Some(KeySource::Trusted))
}

/// A trusted repository: the entry, and no keyring of its name.
fn plan_trusted(step: &AptRepositoryStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    let attrs = attrs();
    let sources = step.sources_path();
    let d = sources_desired(step, Path::new(&sources), &attrs, None);
    let mut changes = file::plan_present(&d, ctx)?.changes;
    for ext in EXTS {
        let path = step.keyring_path(ext);
        changes.extend(file::plan_absent(Path::new(&path), ctx)?.changes);
    }
    if changes.is_empty() {
        return Ok(Plan::in_sync(format!(
            "{sources} is as desired (trusted, no keyring)"
        )));
    }
    Ok(Plan {
        changes,
        in_sync: String::new(),
    })
}

fn plan_present(step: &AptRepositoryStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    if is_trusted(step) {
        return plan_trusted(step, ctx);
    }
    let attrs = attrs();
    let mut changes = Vec::new();
    changes.extend(keyrings_dir_change(ctx)?);
    let key = key_plan(step, ctx)?;
    let ext = match &key {
        KeyPlan::Known(bytes, ext) => {
            let path = step.keyring_path(ext);
            let d = Desired {
                path: Path::new(&path),
                content: bytes.clone(),
                attrs: &attrs,
                validate: None,
                sensitive: false,
            };
            changes.extend(file::plan_present(&d, ctx)?.changes);
            *ext
        }
        KeyPlan::OnDisk(ext) => *ext,
        KeyPlan::Download(ext) => {
            let path = step.keyring_path(ext);
            let exists = ctx.host.lstat(Path::new(&path))?.is_some();
            let Some(KeySource::Url { url, sha256 }) = step.key.as_ref() else {
                unreachable!("only a URL key is downloaded");
            };
            let mut c = Change::new(
                if exists {
                    ChangeKind::Content
                } else {
                    ChangeKind::Create
                },
                Path::new(&path),
            );
            c.after = Some(format!("downloaded from {url}, sha256 {sha256}"));
            if ctx.dry_run {
                c.note = Some(
                    "not downloaded in a dry run: .asc or .gpg depends on what it serves"
                        .to_owned(),
                );
            }
            changes.push(c);
            *ext
        }
    };
    for other in EXTS.iter().filter(|e| **e != ext) {
        let path = step.keyring_path(other);
        changes.extend(file::plan_absent(Path::new(&path), ctx)?.changes);
    }
    let sources = step.sources_path();
    let d = sources_desired(step, Path::new(&sources), &attrs, Some(ext));
    changes.extend(file::plan_present(&d, ctx)?.changes);
    if changes.is_empty() {
        return Ok(Plan::in_sync(format!(
            "{sources} and {} are as desired",
            step.keyring_path(ext)
        )));
    }
    Ok(Plan {
        changes,
        in_sync: String::new(),
    })
}

fn plan_absent(step: &AptRepositoryStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    let mut changes = Vec::new();
    let sources = step.sources_path();
    changes.extend(file::plan_absent(Path::new(&sources), ctx)?.changes);
    for ext in EXTS {
        let path = step.keyring_path(ext);
        changes.extend(file::plan_absent(Path::new(&path), ctx)?.changes);
    }
    if changes.is_empty() {
        return Ok(Plan::in_sync(format!(
            "{sources} and the keyring {KEYRINGS_DIR}/{}.asc|.gpg are absent",
            step.name
        )));
    }
    Ok(Plan {
        changes,
        in_sync: String::new(),
    })
}

pub fn plan(step: &AptRepositoryStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    match step.state {
        Presence::Present => plan_present(step, ctx),
        Presence::Absent => plan_absent(step, ctx),
    }
}

/// Writes `d` if it differs; whether it did.
fn converge_file(d: &Desired<'_>, ctx: &Ctx<'_>) -> Result<bool, Error> {
    let sub = file::plan_present(d, ctx)?;
    if sub.is_in_sync() {
        return Ok(false);
    }
    file::apply_present(d, &sub, ctx)?;
    Ok(true)
}

/// Removes `path` if it is there; whether it did.
fn remove_file(path: &Path, ctx: &Ctx<'_>) -> Result<bool, Error> {
    let sub = file::plan_absent(path, ctx)?;
    if sub.is_in_sync() {
        return Ok(false);
    }
    file::apply_absent(path, &sub, ctx)?;
    Ok(true)
}

/// Downloads the key with apt-helper (which checks the SHA-256) into [`DOWNLOAD_DIR`],
/// reads it and removes the download again.
fn download(
    step: &AptRepositoryStep,
    url: &str,
    want: &str,
    ctx: &Ctx<'_>,
) -> Result<Vec<u8>, Error> {
    let dir = Path::new(DOWNLOAD_DIR);
    if ctx.host.lstat(dir)?.is_none() {
        ctx.host.create_dir(dir, 0o755, 0, 0)?;
    }
    let path = dir.join(format!("{}.key.download", step.name));
    if ctx.host.lstat(&path)?.is_some() {
        ctx.host.remove_file(&path)?;
    }
    let shown = path.display().to_string();
    let cmd = Cmd::new(package::APT_HELPER).args([
        "download-file",
        url,
        shown.as_str(),
        &format!("SHA256:{want}"),
    ]);
    let result = ctx.host.run(&cmd).map_err(Error::from).and_then(|out| {
        if out.success() {
            return Ok(ctx.host.read_file(&path)?);
        }
        let printed = combined(&out);
        let why = if printed.contains("Hash Sum mismatch") {
            format!("what it serves does not have key_sha256 {want}")
        } else {
            exit_text(&out)
        };
        Err(Error::Refused(format!(
            "downloading the key {url} failed: {why}; nothing was written:\n{}",
            tail(&printed)
        )))
    });
    if ctx.host.lstat(&path)?.is_some() {
        ctx.host.remove_file(&path)?;
    }
    result
}

/// Sets `changed` as soon as something was written, even when a later part fails.
fn apply_present(step: &AptRepositoryStep, ctx: &Ctx<'_>, changed: &mut bool) -> Result<(), Error> {
    let attrs = attrs();
    if is_trusted(step) {
        let sources = step.sources_path();
        *changed |= converge_file(
            &sources_desired(step, Path::new(&sources), &attrs, None),
            ctx,
        )?;
        for ext in EXTS {
            *changed |= remove_file(Path::new(&step.keyring_path(ext)), ctx)?;
        }
        return Ok(());
    }
    // Key first: apt never sees a Signed-By naming a keyring that is not there.
    let (bytes, ext) = match key_plan(step, ctx)? {
        KeyPlan::Known(bytes, ext) => (Some(bytes), ext),
        KeyPlan::OnDisk(ext) => (None, ext),
        KeyPlan::Download(_) => {
            let Some(KeySource::Url { url, sha256 }) = step.key.as_ref() else {
                unreachable!("only a URL key is downloaded");
            };
            let bytes = download(step, url, sha256, ctx)?;
            let ext = key_ext(&bytes).ok_or_else(|| not_a_key(url))?;
            (Some(bytes), ext)
        }
    };
    if keyrings_dir_change(ctx)?.is_some() {
        ctx.host.create_dir(Path::new(KEYRINGS_DIR), 0o755, 0, 0)?;
        *changed = true;
    }
    if let Some(content) = bytes {
        let path = step.keyring_path(ext);
        let d = Desired {
            path: Path::new(&path),
            content,
            attrs: &attrs,
            validate: None,
            sensitive: false,
        };
        *changed |= converge_file(&d, ctx)?;
    }
    let sources = step.sources_path();
    *changed |= converge_file(
        &sources_desired(step, Path::new(&sources), &attrs, Some(ext)),
        ctx,
    )?;
    for other in EXTS.iter().filter(|e| **e != ext) {
        *changed |= remove_file(Path::new(&step.keyring_path(other)), ctx)?;
    }
    Ok(())
}

fn apply_absent(step: &AptRepositoryStep, ctx: &Ctx<'_>, changed: &mut bool) -> Result<(), Error> {
    // The entry first: apt never reads an entry whose keyring is gone.
    *changed |= remove_file(Path::new(&step.sources_path()), ctx)?;
    for ext in EXTS {
        *changed |= remove_file(Path::new(&step.keyring_path(ext)), ctx)?;
    }
    Ok(())
}

pub fn apply(step: &AptRepositoryStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    if plan.is_in_sync() {
        return Ok(());
    }
    // Each part is planned again right before it is written; a failure halfway still
    // tells later package steps that the sources may have changed.
    let mut changed = false;
    let result = match step.state {
        Presence::Present => apply_present(step, ctx, &mut changed),
        Presence::Absent => apply_absent(step, ctx, &mut changed),
    };
    if changed {
        package::sources_changed(ctx)?;
    }
    result
}

/// What a notification does: nothing (the step converges the same way).
pub fn refresh(
    _step: &AptRepositoryStep,
    _plan: &Plan,
    _ctx: &Ctx<'_>,
) -> Result<Option<String>, Error> {
    Ok(None)
}

/// `apt_repository docker`.
#[must_use]
pub fn describe(step: &AptRepositoryStep) -> String {
    format!("apt_repository {}", step.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formats() {
        assert_eq!(
            key_ext(b"\n-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINB..."),
            Some("asc")
        );
        assert_eq!(key_ext(&[0x99, 0x02, 0x0d, 0x04]), Some("gpg"));
        assert_eq!(key_ext(b"<html>not found</html>"), None);
        assert_eq!(key_ext(b""), None);
    }
}
