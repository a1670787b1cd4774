//! Directories: the `directory` step.

use std::path::Path;

use super::{
    Change, ChangeKind, Ctx, Error, Plan, attr_changes, kind_name, missing_names, mode_str,
    resolve_owner,
};
use crate::host::Kind;
use crate::step::Presence;
use crate::step::directory::DirectoryStep;

const NEW_DIR_MODE: u32 = 0o755;

pub fn plan(step: &DirectoryStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    let path = Path::new(&step.path);
    let meta = ctx.host.lstat(path)?;
    if step.state == Presence::Absent {
        return match meta {
            None => Ok(Plan::in_sync(format!("{} is absent", path.display()))),
            Some(m) if m.kind == Kind::Dir => {
                let entries = ctx.host.read_dir(path)?;
                if entries.is_empty() {
                    Ok(Plan {
                        changes: vec![Change::new(ChangeKind::Remove, path)],
                        in_sync: String::new(),
                    })
                } else {
                    Err(Error::Refused(format!(
                        "{} is not empty ({} entries, e.g. {}); a directory step removes only empty directories",
                        path.display(),
                        entries.len(),
                        entries[0]
                    )))
                }
            }
            Some(m) => Err(Error::Refused(format!(
                "{} is {}, not a directory",
                path.display(),
                kind_name(&m)
            ))),
        };
    }
    let own = resolve_owner(
        ctx,
        step.attrs.owner.as_deref(),
        step.attrs.group.as_deref(),
    )?;
    let Some(meta) = meta else {
        let mode = step.attrs.mode.map_or(NEW_DIR_MODE, |m| m.0);
        let mut change = Change::new(ChangeKind::Create, path);
        change.after = Some(format!(
            "mode {}, owner {}:{}",
            mode_str(mode),
            step.attrs.owner.as_deref().unwrap_or("root"),
            step.attrs.group.as_deref().unwrap_or("root")
        ));
        if !own.missing.is_empty() {
            change.note = Some(missing_names(&own.missing));
        }
        return Ok(Plan {
            changes: vec![change],
            in_sync: String::new(),
        });
    };
    if meta.kind != Kind::Dir {
        return Err(Error::Refused(format!(
            "{} is {}, not a directory: remove it by hand or change `path`",
            path.display(),
            kind_name(&meta)
        )));
    }
    let changes = attr_changes(ctx, path, &meta, &step.attrs, &own);
    if changes.is_empty() {
        return Ok(Plan::in_sync(format!(
            "{} is a directory with mode {} and owner {}:{}",
            path.display(),
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

pub fn apply(step: &DirectoryStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    if plan.is_in_sync() {
        return Ok(());
    }
    let path = Path::new(&step.path);
    let meta = ctx.host.lstat(path)?;
    ctx.capture(path, meta.as_ref())?;
    if plan.has(ChangeKind::Remove) {
        ctx.host.remove_dir(path)?;
        return Ok(());
    }
    let own = resolve_owner(
        ctx,
        step.attrs.owner.as_deref(),
        step.attrs.group.as_deref(),
    )?;
    match meta {
        None => {
            let mode = step.attrs.mode.map_or(NEW_DIR_MODE, |m| m.0);
            ctx.host
                .create_dir(path, mode, own.uid.unwrap_or(0), own.gid.unwrap_or(0))?;
        }
        Some(meta) => {
            if own.uid.is_some_and(|u| u != meta.uid) || own.gid.is_some_and(|g| g != meta.gid) {
                ctx.host.set_owner(path, own.uid, own.gid)?;
            }
            ctx.host
                .set_mode(path, step.attrs.mode.map_or(meta.mode, |m| m.0))?;
        }
    }
    Ok(())
}
