//! The `download` resource: a file from an http(s) URL, checked against its sha256,
//! written atomically with a mode and owner; or one member of a `.tar.gz` so fetched.
//!
//! `plan` hashes the file at `path` (in-process, no program started) and never
//! downloads. A plain download is in sync when that hash is the step's `sha256`. An
//! extracted member has no hash in the step (the step's hash is the archive's), so
//! `apply` records, in `state_dir/downloads/<path>.json`, the archive's hash, the
//! member and the hash of what it wrote; the step is in sync while that record names
//! the same archive and member and the live file still has the recorded hash.
//!
//! `apply` fetches into `/var/cache/infra-agent/download-*.part` with curl where
//! `/usr/bin/curl` exists, else with apt's own downloader (`apt-helper
//! download-file`, which checks the hash itself), checks the sha256, extracts the
//! member (`tar -xzf ARCHIVE -O MEMBER`), and only then stages the content beside
//! `path` and renames it over. The partial download is removed whatever happens: a
//! wrong hash, a failed download or a missing member writes nothing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::nala_fetch::{ensure_dir, tail};
use super::{
    Change, ChangeKind, Ctx, Error, Plan, attr_changes, kind_name, missing_names, mode_str,
    resolve_owner,
};
use crate::host::Kind;
use crate::process::{Cmd, CmdOutput};
use crate::step::download::DownloadStep;

/// curl, used when it is installed.
pub const CURL: &str = "/usr/bin/curl";
/// apt's downloader, used otherwise (every Debian and Ubuntu system has it).
pub const APT_HELPER: &str = super::package::APT_HELPER;
/// Where a download is put while it is checked (removed afterwards).
pub const CACHE_DIR: &str = super::package::DEB_DIR;
/// The records of extracted members, under the state directory.
pub const RECORDS: &str = "downloads";
const NEW_FILE_MODE: u32 = 0o644;

/// What an extraction wrote, kept beside the state so `plan` can check the live file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub url: String,
    /// The archive's sha256 (the step's `sha256`).
    pub archive_sha256: String,
    pub member: String,
    /// The sha256 of the member as written to the path.
    pub sha256: String,
}

/// Where the record of an extraction to `path` is kept.
#[must_use]
pub fn record_path(state_dir: &Path, path: &Path) -> PathBuf {
    let mut key = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => key.push_str("%25"),
            '/' => key.push_str("%2F"),
            c => key.push(c),
        }
    }
    state_dir.join(RECORDS).join(format!("{key}.json"))
}

fn read_record(ctx: &Ctx<'_>, path: &Path) -> Result<Option<Record>, Error> {
    let file = record_path(&ctx.settings.state_dir, path);
    if ctx.host.lstat(&file)?.is_none() {
        return Ok(None);
    }
    let bytes = ctx.host.read_file(&file)?;
    // A damaged record means only that the file must be fetched again.
    Ok(serde_json::from_slice(&bytes).ok())
}

fn short(hash: &str) -> String {
    format!("{}…", &hash[..hash.len().min(12)])
}

fn source(step: &DownloadStep) -> String {
    match &step.extract {
        None => format!("download {} (sha256 {})", step.url, short(&step.sha256)),
        Some(member) => format!(
            "{member} from {} (archive sha256 {})",
            step.url,
            short(&step.sha256)
        ),
    }
}

pub fn plan(step: &DownloadStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    let path = Path::new(&step.path);
    let attrs = &step.attrs;
    let own = resolve_owner(ctx, attrs.owner.as_deref(), attrs.group.as_deref())?;
    let missing_note = (!own.missing.is_empty()).then(|| missing_names(&own.missing));
    let Some(meta) = ctx.host.lstat(path)? else {
        let mode = attrs.mode.map_or(NEW_FILE_MODE, |m| m.0);
        let mut change = Change::new(ChangeKind::Create, path);
        change.after = Some(format!(
            "{}, mode {}, owner {}:{}",
            source(step),
            mode_str(mode),
            attrs.owner.as_deref().unwrap_or("root"),
            attrs.group.as_deref().unwrap_or("root")
        ));
        change.note = missing_note;
        return Ok(Plan {
            changes: vec![change],
            in_sync: String::new(),
        });
    };
    if meta.kind != Kind::File {
        return Err(Error::Refused(format!(
            "{} is {}, not a regular file: remove it by hand or change `path`",
            path.display(),
            kind_name(&meta)
        )));
    }
    let have = sha256_hex(&ctx.host.read_file(path)?);
    let (want, why) = match &step.extract {
        None => (Some(step.sha256.clone()), None),
        Some(member) => match read_record(ctx, path)? {
            Some(r) if r.archive_sha256 == step.sha256 && r.member == *member => {
                (Some(r.sha256), None)
            }
            _ => (
                None,
                Some(format!(
                    "nothing records it as {member} of the archive with sha256 {}",
                    short(&step.sha256)
                )),
            ),
        },
    };
    let mut changes = Vec::new();
    if want.as_deref() != Some(have.as_str()) {
        let mut change = Change::new(ChangeKind::Content, path)
            .before_after(format!("sha256 {}", short(&have)), source(step));
        change.note = why;
        changes.push(change);
    }
    changes.extend(attr_changes(ctx, path, &meta, attrs, &own));
    if changes.is_empty() {
        let from = match &step.extract {
            None => step.url.clone(),
            Some(member) => format!("{member} of {}", step.url),
        };
        return Ok(Plan::in_sync(format!(
            "{} is {from} (sha256 {}), mode {}, owner {}:{}",
            path.display(),
            short(&have),
            mode_str(meta.mode),
            ctx.user_label(meta.uid),
            ctx.group_label(meta.gid)
        )));
    }
    Ok(Plan {
        changes,
        in_sync: String::new(),
    })
}

pub fn apply(step: &DownloadStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    if plan.is_in_sync() {
        return Ok(());
    }
    let path = Path::new(&step.path);
    let attrs = &step.attrs;
    let own = resolve_owner(ctx, attrs.owner.as_deref(), attrs.group.as_deref())?;
    let meta = ctx.host.lstat(path)?;
    if plan.has(ChangeKind::Create) || plan.has(ChangeKind::Content) {
        let content = fetch(step, ctx)?;
        ctx.capture(path, meta.as_ref())?;
        let mode = attrs
            .mode
            .map(|m| m.0)
            .or(meta.map(|m| m.mode))
            .unwrap_or(NEW_FILE_MODE);
        let uid = own.uid.or(meta.map(|m| m.uid)).unwrap_or(0);
        let gid = own.gid.or(meta.map(|m| m.gid)).unwrap_or(0);
        let staged = ctx.host.stage_file(path, &content, mode, uid, gid)?;
        ctx.host.commit_file(&staged, path)?;
        if let Some(member) = &step.extract {
            let record = Record {
                url: step.url.clone(),
                archive_sha256: step.sha256.clone(),
                member: member.clone(),
                sha256: sha256_hex(&content),
            };
            let file = record_path(&ctx.settings.state_dir, path);
            if let Some(dir) = file.parent() {
                ensure_dir(ctx, dir)?;
            }
            let json = serde_json::to_vec_pretty(&record).expect("a record always serializes");
            let staged = ctx.host.stage_file(&file, &json, 0o600, 0, 0)?;
            ctx.host.commit_file(&staged, &file)?;
        }
        return Ok(());
    }
    ctx.capture(path, meta.as_ref())?;
    if own.uid.is_some_and(|u| meta.is_some_and(|m| m.uid != u))
        || own.gid.is_some_and(|g| meta.is_some_and(|m| m.gid != g))
    {
        ctx.host.set_owner(path, own.uid, own.gid)?;
    }
    // After chown, which clears setuid and setgid bits.
    if let Some(mode) = attrs.mode.map(|m| m.0).or(meta.map(|m| m.mode)) {
        ctx.host.set_mode(path, mode)?;
    }
    Ok(())
}

/// Where the archive or file is put while it is checked.
#[must_use]
pub fn partial_path(step: &DownloadStep) -> PathBuf {
    Path::new(CACHE_DIR).join(format!("download-{}.part", &step.sha256[..16]))
}

/// Downloads, checks and (with `extract`) extracts: the content for `path`. The
/// partial download never outlives this call.
fn fetch(step: &DownloadStep, ctx: &Ctx<'_>) -> Result<Vec<u8>, Error> {
    ensure_dir_0755(ctx, Path::new(CACHE_DIR))?;
    let part = partial_path(step);
    if ctx.host.lstat(&part)?.is_some() {
        ctx.host.remove_file(&part)?;
    }
    let result = fetch_into(step, ctx, &part);
    if ctx.host.lstat(&part)?.is_some() {
        ctx.host.remove_file(&part)?;
    }
    result
}

fn ensure_dir_0755(ctx: &Ctx<'_>, dir: &Path) -> Result<(), Error> {
    if ctx.host.lstat(dir)?.is_none() {
        if let Some(parent) = dir.parent() {
            ensure_dir(ctx, parent)?;
        }
        ctx.host.create_dir(dir, 0o755, 0, 0)?;
    }
    Ok(())
}

fn exit_text(out: &CmdOutput) -> String {
    if out.timed_out {
        return "it did not finish in time and was killed".to_owned();
    }
    match out.code {
        Some(c) => format!("exit code {c}"),
        None => "killed by a signal".to_owned(),
    }
}

fn with_output(message: String, out: &CmdOutput) -> String {
    let printed = tail(out);
    if printed.is_empty() {
        message
    } else {
        format!("{message}:\n{printed}")
    }
}

fn fetch_into(step: &DownloadStep, ctx: &Ctx<'_>, part: &Path) -> Result<Vec<u8>, Error> {
    let shown = part.display().to_string();
    let url = step.url.as_str();
    let secs = step.timeout.as_secs().to_string();
    let cmd = if ctx.host.lstat(Path::new(CURL))?.is_some() {
        Cmd::new(CURL)
            .args([
                "-fsSL",
                "--max-time",
                secs.as_str(),
                "-o",
                shown.as_str(),
                url,
            ])
            .timeout(step.timeout + std::time::Duration::from_secs(10))
    } else {
        Cmd::new(APT_HELPER)
            .args(["download-file", url, shown.as_str()])
            .arg(format!("SHA256:{}", step.sha256))
            .timeout(step.timeout)
    };
    let program = cmd.program.clone();
    let out = ctx
        .host
        .run(&cmd)
        .map_err(|e| Error::Refused(format!("cannot run {program}: {e}; nothing was written")))?;
    if !out.success() {
        let printed = tail(&out);
        let why = if printed.contains("Hash Sum mismatch") {
            format!("what it serves does not have sha256 {}", step.sha256)
        } else {
            format!("{program} failed ({})", exit_text(&out))
        };
        return Err(Error::Refused(with_output(
            format!("downloading {url} failed: {why}; nothing was written"),
            &out,
        )));
    }
    let bytes = ctx.host.read_file(part)?;
    let got = sha256_hex(&bytes);
    if got != step.sha256 {
        return Err(Error::Refused(format!(
            "{url} has sha256 {got}, but the step says {}; nothing was written",
            step.sha256
        )));
    }
    let Some(member) = &step.extract else {
        return Ok(bytes);
    };
    let cmd = Cmd::new("tar")
        .args(["-xzf", shown.as_str(), "-O", member.as_str()])
        .timeout(step.timeout);
    let out = ctx
        .host
        .run(&cmd)
        .map_err(|e| Error::Refused(format!("cannot run tar: {e}; nothing was written")))?;
    if !out.success() {
        let why = if String::from_utf8_lossy(&out.stderr).contains("Not found in archive") {
            format!(
                "the archive from {url} has no member {member:?} (`tar -tzf` lists its members)"
            )
        } else {
            format!(
                "extracting {member:?} from the archive from {url} failed ({})",
                exit_text(&out)
            )
        };
        return Err(Error::Refused(with_output(
            format!("{why}; nothing was written"),
            &out,
        )));
    }
    Ok(out.stdout)
}

/// What a notification does: nothing (a download converges the same way).
pub fn refresh(
    _step: &DownloadStep,
    _plan: &Plan,
    _ctx: &Ctx<'_>,
) -> Result<Option<String>, Error> {
    Ok(None)
}

#[must_use]
pub fn describe(step: &DownloadStep) -> String {
    format!("download {}", step.path)
}

/// SHA-256 of `data` as lower-case hex, computed in process (the `sha2` crate, with
/// the CPU's SHA instructions where it has them) so that planning a download starts
/// no program. Rollback's record and the catalog cache use it too.
#[must_use]
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    let mut out = String::with_capacity(64);
    for b in sha2::Sha256::digest(data) {
        write!(out, "{b:02x}").expect("writing to a String cannot fail");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_values() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            sha256_hex(&vec![b'a'; 1_000_000]),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn record_paths_are_flat() {
        assert_eq!(
            record_path(
                Path::new("/var/lib/infra-agent"),
                Path::new("/usr/local/bin/x%y")
            ),
            Path::new("/var/lib/infra-agent/downloads/%2Fusr%2Flocal%2Fbin%2Fx%25y.json")
        );
    }
}
