//! Symbolic links: the `symlink` step.

use std::path::Path;

use super::{Change, ChangeKind, Ctx, Error, Plan, kind_name};
use crate::host::Kind;
use crate::step::symlink::SymlinkStep;

pub fn plan(step: &SymlinkStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    let path = Path::new(&step.path);
    let meta = ctx.host.lstat(path)?;
    let Some(target) = &step.target else {
        return match meta {
            None => Ok(Plan::in_sync(format!("{} is absent", path.display()))),
            Some(m) if m.kind == Kind::Symlink => Ok(Plan {
                changes: vec![Change::new(ChangeKind::Remove, path)],
                in_sync: String::new(),
            }),
            Some(m) => Err(Error::Refused(format!(
                "{} is {}, not a symbolic link; a symlink step removes only links",
                path.display(),
                kind_name(&m)
            ))),
        };
    };
    match meta {
        None => {
            let mut change = Change::new(ChangeKind::Create, path);
            change.after = Some(format!("-> {target}"));
            Ok(Plan {
                changes: vec![change],
                in_sync: String::new(),
            })
        }
        Some(m) if m.kind == Kind::Symlink => {
            let current = ctx.host.read_link(path)?;
            if current == Path::new(target) {
                Ok(Plan::in_sync(format!(
                    "{} points at {target}",
                    path.display()
                )))
            } else {
                Ok(Plan {
                    changes: vec![
                        Change::new(ChangeKind::Target, path)
                            .before_after(current.display().to_string(), target.clone()),
                    ],
                    in_sync: String::new(),
                })
            }
        }
        Some(m) => Err(Error::Refused(format!(
            "{} is {}, not a symbolic link: remove it by hand or change `path`",
            path.display(),
            kind_name(&m)
        ))),
    }
}

pub fn apply(step: &SymlinkStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    if plan.is_in_sync() {
        return Ok(());
    }
    let path = Path::new(&step.path);
    let meta = ctx.host.lstat(path)?;
    ctx.capture(path, meta.as_ref())?;
    match &step.target {
        Some(target) => ctx.host.symlink(Path::new(target), path)?,
        None => ctx.host.remove_file(path)?,
    }
    Ok(())
}
