//! Local groups: the `group` step, through `groupadd`, `groupmod` and `groupdel`.

use std::path::Path;

use super::lockout::{self, Proposal};
use super::user::{accounts, group_db, run_checked};
use super::{Change, ChangeKind, Ctx, Error, Plan};
use crate::process::Cmd;
use crate::step::Presence;
use crate::step::group::GroupStep;

pub fn plan(step: &GroupStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    let groups = group_db(ctx)?;
    let current = groups.iter().find(|g| g.name == step.name);
    let name = Path::new(&step.name);
    if step.state == Presence::Absent {
        let Some(group) = current else {
            return Ok(Plan::in_sync(format!("group {} does not exist", step.name)));
        };
        if let Some(user) = accounts(ctx)?.iter().find(|a| a.gid == group.gid) {
            return Err(Error::Refused(format!(
                "group {} is the primary group of user {}: remove the user or change its group first",
                step.name, user.name
            )));
        }
        lockout::check(ctx, &Proposal::RemoveGroup { name: &step.name })?;
        let mut c = Change::new(ChangeKind::Remove, name);
        c.before = Some(format!(
            "gid {}, members {}",
            group.gid,
            super::user::list(&group.members)
        ));
        return Ok(Plan {
            changes: vec![c],
            in_sync: String::new(),
        });
    }
    if let Some(gid) = step.gid
        && let Some(other) = groups.iter().find(|g| g.gid == gid && g.name != step.name)
    {
        return Err(Error::Refused(format!(
            "gid {gid} already belongs to group {}",
            other.name
        )));
    }
    let Some(group) = current else {
        let mut what = Vec::new();
        if step.system {
            what.push("system group".to_owned());
        }
        if let Some(gid) = step.gid {
            what.push(format!("gid {gid}"));
        }
        let mut c = Change::new(ChangeKind::Create, name);
        c.after = (!what.is_empty()).then(|| what.join(", "));
        return Ok(Plan {
            changes: vec![c],
            in_sync: String::new(),
        });
    };
    match step.gid {
        Some(gid) if gid != group.gid => Ok(Plan {
            changes: vec![
                Change::new(ChangeKind::Gid, name)
                    .before_after(group.gid.to_string(), gid.to_string()),
            ],
            in_sync: String::new(),
        }),
        _ => Ok(Plan::in_sync(format!(
            "group {} exists with gid {}",
            group.name, group.gid
        ))),
    }
}

pub fn apply(step: &GroupStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    if plan.is_in_sync() {
        return Ok(());
    }
    let exists = group_db(ctx)?.iter().any(|g| g.name == step.name);
    let cmd = match (step.state, exists) {
        (Presence::Absent, false) => return Ok(()),
        (Presence::Absent, true) => Cmd::new("groupdel").arg(&step.name),
        (Presence::Present, false) => {
            let mut cmd = Cmd::new("groupadd");
            if step.system {
                cmd = cmd.arg("--system");
            }
            if let Some(gid) = step.gid {
                cmd = cmd.args(["--gid".to_owned(), gid.to_string()]);
            }
            cmd.arg(&step.name)
        }
        (Presence::Present, true) => match step.gid {
            Some(gid) => {
                Cmd::new("groupmod").args(["--gid".to_owned(), gid.to_string(), step.name.clone()])
            }
            None => return Ok(()),
        },
    };
    let result = run_checked(ctx, &cmd);
    ctx.forget_ids();
    result
}

/// What a notification does: `None` when nothing.
pub fn refresh(_step: &GroupStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<Option<String>, Error> {
    Ok(None)
}

#[must_use]
pub fn describe(step: &GroupStep) -> String {
    format!("group {}", step.name)
}
