//! Local users: the `user` step, and the account database (/etc/passwd and
//! /etc/group, read once per run) that the `group` and `authorized_keys` steps and the
//! lockout guard share. Changes go through `useradd`, `usermod` and `userdel`, as argv.

use std::path::Path;
use std::rc::Rc;

use super::lockout::{self, AccountAfter, Proposal};
use super::{Change, ChangeKind, Ctx, Error, Plan};
use crate::process::Cmd;
use crate::step::Presence;
use crate::step::user::UserStep;

/// Memo keys of the parsed /etc/passwd and /etc/group ([`Ctx::memo`]); forgotten by
/// [`Ctx::forget_ids`].
pub const PASSWD_MEMO: &str = "etc-passwd";
pub const GROUP_MEMO: &str = "etc-group";

/// One line of /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub comment: String,
    pub home: String,
    pub shell: String,
}

/// One line of /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The users of /etc/passwd, read once per run.
pub fn accounts(ctx: &Ctx<'_>) -> Result<Rc<Vec<Account>>, Error> {
    ctx.memo(PASSWD_MEMO, || {
        Ok(parse_passwd(&read_db(ctx, "/etc/passwd")?))
    })
}

/// The groups of /etc/group, read once per run.
pub fn group_db(ctx: &Ctx<'_>) -> Result<Rc<Vec<GroupEntry>>, Error> {
    ctx.memo(GROUP_MEMO, || Ok(parse_group(&read_db(ctx, "/etc/group")?)))
}

fn read_db(ctx: &Ctx<'_>, path: &str) -> Result<String, Error> {
    let bytes = ctx.host.read_file(Path::new(path))?;
    String::from_utf8(bytes).map_err(|_| Error::Refused(format!("{path} is not UTF-8")))
}

/// Parses /etc/passwd; lines that are not `name:x:uid:gid:comment:home:shell` (NIS
/// `+`/`-` entries, damage) are skipped.
#[must_use]
pub fn parse_passwd(text: &str) -> Vec<Account> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != 7 || f[0].is_empty() || f[0].starts_with(['+', '-']) {
                return None;
            }
            Some(Account {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                comment: f[4].to_owned(),
                home: f[5].to_owned(),
                shell: f[6].to_owned(),
            })
        })
        .collect()
}

/// Parses /etc/group (`name:x:gid:member,member`), skipping lines that are not.
#[must_use]
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != 4 || f[0].is_empty() || f[0].starts_with(['+', '-']) {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

/// The supplementary groups of `user` (groups listing it as a member), in file order.
#[must_use]
pub fn groups_of(groups: &[GroupEntry], user: &str) -> Vec<String> {
    groups
        .iter()
        .filter(|g| g.members.iter().any(|m| m == user))
        .map(|g| g.name.clone())
        .collect()
}

/// Runs an account command (`useradd`, `groupdel`, ...); a non-zero exit is an error
/// that shows the command and what it printed.
pub(crate) fn run_checked(ctx: &Ctx<'_>, cmd: &Cmd) -> Result<(), Error> {
    let out = ctx.host.run(cmd)?;
    if out.success() {
        return Ok(());
    }
    let code = out
        .code
        .map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}"));
    Err(Error::Refused(format!(
        "`{}` failed ({code}): {}",
        cmd.display(),
        out.message()
    )))
}

/// "a, b" or "(none)".
pub(crate) fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

/// What a present user step would change on an existing account.
struct Diff {
    uid: Option<u32>,
    comment: Option<String>,
    home: Option<String>,
    shell: Option<String>,
    /// Groups to join and to leave.
    join: Vec<String>,
    leave: Vec<String>,
}

fn diff(step: &UserStep, account: &Account, current_groups: &[String]) -> Diff {
    let want = |wanted: &Option<String>, have: &str| wanted.clone().filter(|w| w != have);
    let (join, leave) = match &step.groups {
        None => (Vec::new(), Vec::new()),
        Some(wanted) => (
            wanted
                .iter()
                .filter(|g| !current_groups.contains(g))
                .cloned()
                .collect(),
            if step.groups_exclusive {
                current_groups
                    .iter()
                    .filter(|g| !wanted.contains(g))
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            },
        ),
    };
    Diff {
        uid: step.uid.filter(|u| *u != account.uid),
        comment: want(&step.comment, &account.comment),
        home: want(&step.home, &account.home),
        shell: want(&step.shell, &account.shell),
        join,
        leave,
    }
}

/// Groups among `names` that do not exist.
fn missing_groups(groups: &[GroupEntry], names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| !groups.iter().any(|g| &g.name == *n))
        .cloned()
        .collect()
}

/// Fails a real run over groups that do not exist; in a dry run, returns the note.
fn check_groups_exist(
    ctx: &Ctx<'_>,
    groups: &[GroupEntry],
    names: &[String],
) -> Result<Option<String>, Error> {
    let missing = missing_groups(groups, names);
    if missing.is_empty() {
        return Ok(None);
    }
    let what = format!(
        "group{} {} {} not exist on this machine",
        if missing.len() > 1 { "s" } else { "" },
        missing.join(", "),
        if missing.len() > 1 { "do" } else { "does" },
    );
    if ctx.dry_run {
        Ok(Some(format!("{what} yet")))
    } else {
        Err(Error::Refused(format!(
            "{what}; create it in an earlier step (a `group` step, or the package that adds it)"
        )))
    }
}

fn check_uid_free(accounts: &[Account], name: &str, uid: Option<u32>) -> Result<(), Error> {
    if let Some(uid) = uid
        && let Some(other) = accounts.iter().find(|a| a.uid == uid && a.name != name)
    {
        return Err(Error::Refused(format!(
            "uid {uid} already belongs to user {}",
            other.name
        )));
    }
    Ok(())
}

fn change(kind: ChangeKind, name: &str) -> Change {
    Change::new(kind, Path::new(name))
}

pub fn plan(step: &UserStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    let accounts = accounts(ctx)?;
    let groups = group_db(ctx)?;
    let current = accounts.iter().find(|a| a.name == step.name);
    if step.state == Presence::Absent {
        let Some(account) = current else {
            return Ok(Plan::in_sync(format!("user {} does not exist", step.name)));
        };
        lockout::check(
            ctx,
            &Proposal::Account {
                name: &step.name,
                after: None,
            },
        )?;
        let mut c = change(ChangeKind::Remove, &step.name);
        c.before = Some(format!("uid {}, home {}", account.uid, account.home));
        c.after = Some(if step.remove_home {
            format!("removed with its home {}", account.home)
        } else {
            format!("removed; its home {} is kept", account.home)
        });
        return Ok(Plan {
            changes: vec![c],
            in_sync: String::new(),
        });
    }
    check_uid_free(&accounts, &step.name, step.uid)?;
    let Some(account) = current else {
        let wanted = step.groups.clone().unwrap_or_default();
        let note = check_groups_exist(ctx, &groups, &wanted)?;
        let mut what = vec![];
        if step.system {
            what.push("system user".to_owned());
        }
        if let Some(uid) = step.uid {
            what.push(format!("uid {uid}"));
        }
        if let Some(shell) = &step.shell {
            what.push(format!("shell {shell}"));
        }
        let home = step
            .home
            .clone()
            .unwrap_or_else(|| format!("/home/{}", step.name));
        what.push(format!(
            "home {home}{}",
            if step.create_home {
                " (created)"
            } else {
                " (not created)"
            }
        ));
        if !wanted.is_empty() {
            what.push(format!("groups {}", wanted.join(", ")));
        }
        let mut c = change(ChangeKind::Create, &step.name);
        c.after = Some(what.join(", "));
        c.note = note;
        return Ok(Plan {
            changes: vec![c],
            in_sync: String::new(),
        });
    };
    let current_groups = groups_of(&groups, &step.name);
    let d = diff(step, account, &current_groups);
    let mut changes = Vec::new();
    if let Some(uid) = d.uid {
        changes.push(
            change(ChangeKind::Uid, &step.name)
                .before_after(account.uid.to_string(), uid.to_string()),
        );
    }
    if let Some(comment) = &d.comment {
        changes
            .push(change(ChangeKind::Comment, &step.name).before_after(&account.comment, comment));
    }
    if let Some(home) = &d.home {
        changes.push(change(ChangeKind::Home, &step.name).before_after(&account.home, home));
    }
    if let Some(shell) = &d.shell {
        changes.push(change(ChangeKind::Shell, &step.name).before_after(&account.shell, shell));
    }
    if !d.join.is_empty() || !d.leave.is_empty() {
        let after = resulting_groups(&current_groups, &d);
        let mut c = change(ChangeKind::Groups, &step.name)
            .before_after(list(&current_groups), list(&after));
        c.note = check_groups_exist(ctx, &groups, &d.join)?;
        changes.push(c);
    }
    if changes.is_empty() {
        return Ok(Plan::in_sync(format!(
            "user {} exists: uid {}, home {}, shell {}, groups {}",
            account.name,
            account.uid,
            account.home,
            account.shell,
            list(&current_groups)
        )));
    }
    if d.home.is_some() || d.shell.is_some() || !d.leave.is_empty() {
        lockout::check(
            ctx,
            &Proposal::Account {
                name: &step.name,
                after: Some(AccountAfter {
                    home: d.home.clone().unwrap_or_else(|| account.home.clone()),
                    shell: d.shell.clone().unwrap_or_else(|| account.shell.clone()),
                    groups: resulting_groups(&current_groups, &d),
                }),
            },
        )?;
    }
    Ok(Plan {
        changes,
        in_sync: String::new(),
    })
}

fn resulting_groups(current: &[String], d: &Diff) -> Vec<String> {
    current
        .iter()
        .filter(|g| !d.leave.contains(g))
        .chain(&d.join)
        .cloned()
        .collect()
}

/// The `useradd` command that creates the user.
fn useradd(step: &UserStep, groups: &[GroupEntry]) -> Cmd {
    let mut cmd = Cmd::new("useradd");
    if step.system {
        cmd = cmd.arg("--system");
    }
    if let Some(uid) = step.uid {
        cmd = cmd.args(["--uid".to_owned(), uid.to_string()]);
    }
    // With a group of the same name already there, useradd would refuse to create the
    // user's own group: make that group the user's primary group instead.
    if groups.iter().any(|g| g.name == step.name) {
        cmd = cmd.args(["--gid", &step.name]);
    }
    if let Some(comment) = &step.comment {
        cmd = cmd.args(["--comment", comment]);
    }
    if let Some(home) = &step.home {
        cmd = cmd.args(["--home-dir", home]);
    }
    cmd = cmd.arg(if step.create_home {
        "--create-home"
    } else {
        "--no-create-home"
    });
    if let Some(shell) = &step.shell {
        cmd = cmd.args(["--shell", shell]);
    }
    if let Some(wanted) = step.groups.as_ref().filter(|g| !g.is_empty()) {
        cmd = cmd.args(["--groups".to_owned(), wanted.join(",")]);
    }
    cmd.arg(&step.name)
}

pub fn apply(step: &UserStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    if plan.is_in_sync() {
        return Ok(());
    }
    let accounts = accounts(ctx)?;
    let groups = group_db(ctx)?;
    let current = accounts.iter().find(|a| a.name == step.name);
    let cmd = match (step.state, current) {
        (Presence::Absent, None) => return Ok(()),
        (Presence::Absent, Some(_)) => {
            let mut cmd = Cmd::new("userdel");
            if step.remove_home {
                cmd = cmd.arg("--remove");
            }
            cmd.arg(&step.name)
        }
        (Presence::Present, None) => useradd(step, &groups),
        (Presence::Present, Some(account)) => {
            let current_groups = groups_of(&groups, &step.name);
            let d = diff(step, account, &current_groups);
            let mut cmd = Cmd::new("usermod");
            if let Some(uid) = d.uid {
                cmd = cmd.args(["--uid".to_owned(), uid.to_string()]);
            }
            if let Some(comment) = &d.comment {
                cmd = cmd.args(["--comment", comment]);
            }
            if let Some(home) = &d.home {
                cmd = cmd.args(["--home", home]);
            }
            if let Some(shell) = &d.shell {
                cmd = cmd.args(["--shell", shell]);
            }
            if !d.leave.is_empty() {
                let all = resulting_groups(&current_groups, &d);
                cmd = cmd.args(["--groups".to_owned(), all.join(",")]);
            } else if !d.join.is_empty() {
                cmd = cmd.args([
                    "--append".to_owned(),
                    "--groups".to_owned(),
                    d.join.join(","),
                ]);
            }
            if cmd.args.is_empty() {
                return Ok(());
            }
            cmd.arg(&step.name)
        }
    };
    let result = run_checked(ctx, &cmd);
    // Whatever happened, later steps (and the re-plan) must read the databases again.
    ctx.forget_ids();
    result
}

/// What a notification does: `None` when nothing.
pub fn refresh(_step: &UserStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<Option<String>, Error> {
    Ok(None)
}

#[must_use]
pub fn describe(step: &UserStep) -> String {
    format!("user {}", step.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_databases() {
        let users = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\n+nis\nbroken:x:a:0::/:/bin/sh\nalice:x:1000:1000:Alice A,,,:/home/alice:/usr/bin/zsh\n",
        );
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].comment, "Alice A,,,");
        assert_eq!(users[1].shell, "/usr/bin/zsh");
        let groups = parse_group("root:x:0:\nsudo:x:27:alice,bob\nadm:x:4:alice\n");
        assert_eq!(groups[1].members, ["alice", "bob"]);
        assert_eq!(groups_of(&groups, "alice"), ["sudo", "adm"]);
        assert!(groups_of(&groups, "root").is_empty());
    }
}
