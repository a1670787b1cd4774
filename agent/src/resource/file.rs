//! Regular files: the `file` and `template` steps. Content is written atomically (a
//! candidate beside the file, validated, fsynced, renamed over it).

use std::path::Path;

use super::{
    Change, ChangeKind, Ctx, Error, Plan, attr_changes, kind_name, missing_names, mode_str,
    resolve_owner,
};
use crate::diff;
use crate::host::{Kind, Meta};
use crate::process::Cmd;
use crate::step::file::{FileContent, FileStep};
use crate::step::template::TemplateStep;
use crate::step::{Attrs, Presence};

/// What a file should be, whichever step type asked for it (`apt_repository` too).
pub(crate) struct Desired<'a> {
    pub(crate) path: &'a Path,
    pub(crate) content: Vec<u8>,
    pub(crate) attrs: &'a Attrs,
    pub(crate) validate: Option<&'a [String]>,
    pub(crate) sensitive: bool,
}

const NEW_FILE_MODE: u32 = 0o644;

fn file_desired<'a>(step: &'a FileStep, ctx: &Ctx<'_>) -> Result<Option<Desired<'a>>, Error> {
    let content = match &step.content {
        None => return Ok(None),
        Some(FileContent::Inline(text)) => text.clone().into_bytes(),
        Some(FileContent::Source(source)) => (ctx.files)(source).map_err(|e| {
            Error::Refused(format!(
                "cannot read files/{source} from the repository: {e}"
            ))
        })?,
    };
    Ok(Some(Desired {
        path: Path::new(&step.path),
        content,
        attrs: &step.attrs,
        validate: step.validate.as_deref(),
        sensitive: step.sensitive,
    }))
}

fn template_desired(step: &TemplateStep) -> Desired<'_> {
    Desired {
        path: Path::new(&step.path),
        content: step.content.clone().into_bytes(),
        attrs: &step.attrs,
        validate: step.validate.as_deref(),
        sensitive: step.sensitive,
    }
}

pub fn plan_file(step: &FileStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    match (step.state, file_desired(step, ctx)?) {
        (Presence::Present, Some(desired)) => plan_present(&desired, ctx),
        _ => plan_absent(Path::new(&step.path), ctx),
    }
}

pub fn apply_file(step: &FileStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    match (step.state, file_desired(step, ctx)?) {
        (Presence::Present, Some(desired)) => apply_present(&desired, plan, ctx),
        _ => apply_absent(Path::new(&step.path), plan, ctx),
    }
}

pub fn plan_template(step: &TemplateStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    plan_present(&template_desired(step), ctx)
}

pub fn apply_template(step: &TemplateStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    apply_present(&template_desired(step), plan, ctx)
}

fn content_diff(d: &Desired<'_>, old: Option<&[u8]>) -> Option<String> {
    let path = d.path.display().to_string();
    if d.sensitive {
        return Some(diff::redacted(&path));
    }
    match old {
        None => Some(diff::created(&path, &d.content)),
        Some(old) => diff::unified(&path, old, &d.content),
    }
}

fn validate_note(d: &Desired<'_>, ctx: &Ctx<'_>) -> Option<String> {
    match d.validate {
        Some(argv) if ctx.dry_run => Some(format!(
            "checked with `{}` before it is installed",
            argv.join(" ")
        )),
        _ => None,
    }
}

pub(crate) fn plan_present(d: &Desired<'_>, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    let own = resolve_owner(ctx, d.attrs.owner.as_deref(), d.attrs.group.as_deref())?;
    let missing_note = (!own.missing.is_empty()).then(|| missing_names(&own.missing));
    let Some(meta) = ctx.host.lstat(d.path)? else {
        let mode = d.attrs.mode.map_or(NEW_FILE_MODE, |m| m.0);
        let owner = d.attrs.owner.as_deref().unwrap_or("root");
        let group = d.attrs.group.as_deref().unwrap_or("root");
        let mut change = Change::new(ChangeKind::Create, d.path);
        change.after = Some(format!(
            "{} bytes, mode {}, owner {owner}:{group}",
            d.content.len(),
            mode_str(mode)
        ));
        change.diff = content_diff(d, None);
        change.note = [missing_note, validate_note(d, ctx)]
            .into_iter()
            .flatten()
            .reduce(|a, b| format!("{a}; {b}"));
        return Ok(Plan {
            changes: vec![change],
            in_sync: String::new(),
        });
    };
    if meta.kind != Kind::File {
        return Err(Error::Refused(format!(
            "{} is {}, not a regular file: remove it by hand or change `path`",
            d.path.display(),
            kind_name(&meta)
        )));
    }
    let mut changes = Vec::new();
    if !content_vouched(d, &meta, ctx) {
        let current = ctx.host.read_file(d.path)?;
        if current != d.content {
            let mut change = Change::new(ChangeKind::Content, d.path);
            change.diff = content_diff(d, Some(&current));
            change.note = validate_note(d, ctx);
            changes.push(change);
        }
    }
    changes.extend(attr_changes(ctx, d.path, &meta, d.attrs, &own));
    if changes.is_empty() {
        return Ok(Plan::in_sync(format!(
            "{} has the desired content ({} bytes), mode {} and owner {}:{}",
            d.path.display(),
            d.content.len(),
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

/// Whether the file at `d.path` is known to hold the desired content without reading
/// it: the last full run recorded its sum under a stamp (inode, size, times) that
/// still holds, and that sum is the desired content's. A stamp only vouches when the
/// file had been left alone for `prune::STAMP_MARGIN`, so a write in the same clock
/// tick cannot hide behind it; any other change moves the change time.
fn content_vouched(d: &Desired<'_>, meta: &Meta, ctx: &Ctx<'_>) -> bool {
    let vouched = crate::prune::vouched_files(ctx);
    let Some(known) = vouched.get(d.path) else {
        return false;
    };
    let in_place = meta.stamp == Some(known.stamp)
        && crate::resource::download::sha256_hex(&d.content) == known.sha256;
    if in_place {
        ctx.note_vouched(d.path);
    }
    in_place
}

pub(crate) fn apply_present(d: &Desired<'_>, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    if plan.is_in_sync() {
        return Ok(());
    }
    let own = resolve_owner(ctx, d.attrs.owner.as_deref(), d.attrs.group.as_deref())?;
    let content_changes = plan.has(ChangeKind::Create) || plan.has(ChangeKind::Content);
    if content_changes && turns_password_login_off(d) {
        super::lockout::check(ctx, &super::lockout::Proposal::PasswordLoginOff)?;
    }
    let meta = ctx.host.lstat(d.path)?;
    ctx.capture(d.path, meta.as_ref())?;
    if content_changes {
        let mode = d
            .attrs
            .mode
            .map(|m| m.0)
            .or(meta.map(|m| m.mode))
            .unwrap_or(NEW_FILE_MODE);
        let uid = own.uid.or(meta.map(|m| m.uid)).unwrap_or(0);
        let gid = own.gid.or(meta.map(|m| m.gid)).unwrap_or(0);
        let staged = ctx.host.stage_file(d.path, &d.content, mode, uid, gid)?;
        if let Some(argv) = d.validate
            && let Err(e) = validate(argv, &staged, ctx)
        {
            let _ = ctx.host.discard_staged(&staged);
            return Err(e);
        }
        ctx.host.commit_file(&staged, d.path)?;
        return Ok(());
    }
    if own.uid.is_some_and(|u| meta.is_some_and(|m| m.uid != u))
        || own.gid.is_some_and(|g| meta.is_some_and(|m| m.gid != g))
    {
        ctx.host.set_owner(d.path, own.uid, own.gid)?;
    }
    // After chown, which clears setuid and setgid bits.
    if plan.has(ChangeKind::Mode) || plan.has(ChangeKind::Owner) || plan.has(ChangeKind::Group) {
        let mode = d
            .attrs
            .mode
            .map(|m| m.0)
            .or(meta.map(|m| m.mode))
            .unwrap_or(NEW_FILE_MODE);
        ctx.host.set_mode(d.path, mode)?;
    }
    Ok(())
}

/// Whether the new content is sshd configuration that switches password login off:
/// the lockout guard then checks that a sudo user can still log in with a key.
fn turns_password_login_off(d: &Desired<'_>) -> bool {
    let sshd_config = d.path == std::path::Path::new("/etc/ssh/sshd_config")
        || d.path.starts_with("/etc/ssh/sshd_config.d");
    sshd_config
        && String::from_utf8_lossy(&d.content).lines().any(|line| {
            let mut words = line.split_whitespace();
            words
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("PasswordAuthentication"))
                && words.next().is_some_and(|v| v.eq_ignore_ascii_case("no"))
        })
}

/// Runs a `validate` argv on a candidate; `{path}` in any argument is the candidate.
fn validate(argv: &[String], candidate: &Path, ctx: &Ctx<'_>) -> Result<(), Error> {
    let candidate = candidate.display().to_string();
    let expanded: Vec<String> = argv
        .iter()
        .map(|a| a.replace("{path}", &candidate))
        .collect();
    let Some((program, rest)) = expanded.split_first() else {
        return Err(Error::Refused(
            "`validate` is empty: give a command".to_owned(),
        ));
    };
    let cmd = Cmd::new(program.clone()).args(rest.iter().cloned());
    let out = ctx.host.run(&cmd).map_err(|e| match e {
        crate::host::Error::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::Refused(format!("validate command `{program}` is not installed on this machine; the file was left unchanged"))
        }
        other => Error::Host(other),
    })?;
    if out.success() {
        return Ok(());
    }
    let output: String = out
        .message()
        .lines()
        .take(20)
        .collect::<Vec<_>>()
        .join("\n");
    Err(Error::Refused(format!(
        "`{}` rejected the new content (exit {}); the file was left unchanged:\n{output}",
        argv.join(" "),
        out.code
            .map_or_else(|| "by signal".to_owned(), |c| c.to_string())
    )))
}

pub(crate) fn plan_absent(path: &Path, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    match ctx.host.lstat(path)? {
        None => Ok(Plan::in_sync(format!("{} is absent", path.display()))),
        Some(meta) if matches!(meta.kind, Kind::File | Kind::Symlink) => Ok(Plan {
            changes: vec![Change::new(ChangeKind::Remove, path)],
            in_sync: String::new(),
        }),
        Some(meta) => Err(Error::Refused(format!(
            "{} is {}; a file step removes only files and links",
            path.display(),
            kind_name(&meta)
        ))),
    }
}

pub(crate) fn apply_absent(path: &Path, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    if plan.has(ChangeKind::Remove) {
        let meta = ctx.host.lstat(path)?;
        ctx.capture(path, meta.as_ref())?;
        ctx.host.remove_file(path)?;
    }
    Ok(())
}
