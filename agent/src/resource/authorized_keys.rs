//! A user's SSH public keys: the `authorized_keys` step. The file (0600) and, at the
//! default path, `~/.ssh` (0700) are owned by the user; the file is written atomically
//! and its original recorded first. Removing keys passes the lockout guard first.

use std::path::{Path, PathBuf};

use super::lockout::{self, Proposal};
use super::user::{Account, accounts, group_db};
use super::{Change, ChangeKind, Ctx, Error, Plan, kind_name, mode_str};
use crate::diff;
use crate::host::{Kind, Meta};
use crate::step::authorized_keys::{AuthorizedKeysStep, PublicKey, parse_key};

const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// The content the file should have, given its current content. A key is identified by
/// its type and key data; a key already in the file keeps its line (options and
/// comment) when the step's line has neither, otherwise the step's line replaces it.
/// Exclusive: exactly the step's keys, in its order. Otherwise: the file's lines as
/// they are (other keys, comments), with the step's missing keys appended.
#[must_use]
pub fn desired_content(current: Option<&str>, keys: &[PublicKey], exclusive: bool) -> String {
    let existing: Vec<(&str, Option<PublicKey>)> = current
        .unwrap_or_default()
        .lines()
        .map(|l| (l, parse_key(l).ok()))
        .collect();
    let line_for = |key: &PublicKey, found: Option<&PublicKey>| -> String {
        match found {
            Some(old) if key.options.is_none() && key.comment.is_none() => old.line.clone(),
            _ => key.line.clone(),
        }
    };
    let find = |key: &PublicKey| {
        existing
            .iter()
            .filter_map(|(_, k)| k.as_ref())
            .find(|k| k.identity() == key.identity())
    };
    let lines: Vec<String> = if exclusive {
        keys.iter().map(|k| line_for(k, find(k))).collect()
    } else {
        let mut lines: Vec<String> = existing
            .iter()
            .map(|(line, parsed)| {
                match parsed
                    .as_ref()
                    .and_then(|p| keys.iter().find(|k| k.identity() == p.identity()))
                {
                    Some(key) => line_for(key, parsed.as_ref()),
                    None => (*line).to_owned(),
                }
            })
            .collect();
        lines.extend(
            keys.iter()
                .filter(|k| find(k).is_none())
                .map(|k| k.line.clone()),
        );
        let unchanged = lines.len() == existing.len()
            && lines
                .iter()
                .zip(&existing)
                .all(|(new, (old, _))| new == old);
        if unchanged && let Some(current) = current {
            // Nothing to add or replace: leave the file byte for byte.
            return current.to_owned();
        }
        lines
    };
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// The keys of a file's content (lines that parse as keys).
fn keys_in(content: &str) -> Vec<PublicKey> {
    content.lines().filter_map(|l| parse_key(l).ok()).collect()
}

/// "adds ssh-ed25519 …abc alice@phone; removes ssh-rsa …xyz old".
fn summary(before: &str, after: &str) -> String {
    let (old, new) = (keys_in(before), keys_in(after));
    let added: Vec<String> = new
        .iter()
        .filter(|k| !old.iter().any(|o| o.identity() == k.identity()))
        .map(PublicKey::short)
        .collect();
    let removed: Vec<String> = old
        .iter()
        .filter(|k| !new.iter().any(|n| n.identity() == k.identity()))
        .map(PublicKey::short)
        .collect();
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("adds {}", added.join(", ")));
    }
    if !removed.is_empty() {
        parts.push(format!("removes {}", removed.join(", ")));
    }
    if parts.is_empty() {
        parts.push("same keys, lines rewritten".to_owned());
    }
    format!("{} ({})", parts.join("; "), n_keys(new.len()))
}

/// "1 key", "2 keys".
fn n_keys(n: usize) -> String {
    if n == 1 {
        "1 key".to_owned()
    } else {
        format!("{n} keys")
    }
}

/// Where the file is, and the directory to manage with it (the default `~/.ssh`).
fn location(step: &AuthorizedKeysStep, home: &str) -> (PathBuf, Option<PathBuf>) {
    if let Some(p) = &step.path {
        (PathBuf::from(p), None)
    } else {
        let dir = Path::new(home).join(".ssh");
        (dir.join("authorized_keys"), Some(dir))
    }
}

/// The user's account, or (in a dry run only) `None` with the reason.
fn account(step: &AuthorizedKeysStep, ctx: &Ctx<'_>) -> Result<Option<Account>, Error> {
    match accounts(ctx)?.iter().find(|a| a.name == step.user) {
        Some(a) => Ok(Some(a.clone())),
        None if ctx.dry_run => Ok(None),
        None => Err(Error::Refused(format!(
            "user {} does not exist on this machine; create it in an earlier step (a `user` step)",
            step.user
        ))),
    }
}

fn group_label(ctx: &Ctx<'_>, gid: u32) -> Result<String, Error> {
    Ok(group_db(ctx)?
        .iter()
        .find(|g| g.gid == gid)
        .map_or_else(|| gid.to_string(), |g| g.name.clone()))
}

/// Mode and ownership differences of an existing path.
fn attr_changes(
    ctx: &Ctx<'_>,
    path: &Path,
    meta: &Meta,
    mode: u32,
    a: &Account,
) -> Result<Vec<Change>, Error> {
    let mut changes = Vec::new();
    if meta.mode != mode {
        changes.push(
            Change::new(ChangeKind::Mode, path).before_after(mode_str(meta.mode), mode_str(mode)),
        );
    }
    if meta.uid != a.uid {
        changes.push(
            Change::new(ChangeKind::Owner, path).before_after(ctx.user_label(meta.uid), &a.name),
        );
    }
    if meta.gid != a.gid {
        changes.push(
            Change::new(ChangeKind::Group, path)
                .before_after(group_label(ctx, meta.gid)?, group_label(ctx, a.gid)?),
        );
    }
    Ok(changes)
}

/// The current metadata of `path`, which must be of kind `kind` if it exists.
fn observe(ctx: &Ctx<'_>, path: &Path, kind: Kind) -> Result<Option<Meta>, Error> {
    let meta = ctx.host.lstat(path)?;
    if let Some(m) = &meta
        && m.kind != kind
    {
        let wanted = if kind == Kind::Dir {
            "a directory"
        } else {
            "a regular file"
        };
        return Err(Error::Refused(format!(
            "{} is {}, not {wanted}: the agent does not write through it; remove it by hand",
            path.display(),
            kind_name(m)
        )));
    }
    Ok(meta)
}

fn current_content(
    ctx: &Ctx<'_>,
    path: &Path,
    meta: Option<&Meta>,
) -> Result<Option<String>, Error> {
    if meta.is_none() {
        return Ok(None);
    }
    let bytes = ctx.host.read_file(path)?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| Error::Refused(format!("{} is not UTF-8 text", path.display())))
}

pub fn plan(step: &AuthorizedKeysStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    let Some(a) = account(step, ctx)? else {
        // Dry run, user not created yet: show the file as it would be written.
        let home = format!("/home/{}", step.user);
        let (path, _) = location(step, &home);
        let content = desired_content(None, &step.keys, step.exclusive);
        let mut c = Change::new(ChangeKind::Create, &path);
        c.after = Some(format!(
            "{}, mode 0600, owner {}",
            n_keys(step.keys.len()),
            step.user
        ));
        c.diff = Some(diff::created(
            &path.display().to_string(),
            content.as_bytes(),
        ));
        c.note = Some(format!(
            "user {} does not exist on this machine yet",
            step.user
        ));
        return Ok(Plan {
            changes: vec![c],
            in_sync: String::new(),
        });
    };
    let (path, dir) = location(step, &a.home);
    let group = group_label(ctx, a.gid)?;
    let mut changes = Vec::new();
    let mut dir_missing = false;
    if let Some(dir) = &dir {
        if let Some(meta) = observe(ctx, dir, Kind::Dir)? {
            changes.extend(attr_changes(ctx, dir, &meta, DIR_MODE, &a)?);
        } else {
            dir_missing = true;
            let mut c = Change::new(ChangeKind::Create, dir);
            c.after = Some(format!("mode 0700, owner {}:{group}", a.name));
            if ctx.host.lstat(Path::new(&a.home))?.is_none() {
                let what = format!(
                    "the home directory {} of user {} does not exist",
                    a.home, a.name
                );
                if !ctx.dry_run {
                    return Err(Error::Refused(format!(
                        "{what}: create it first (create_home in the user step, or a directory step)"
                    )));
                }
                c.note = Some(format!("{what} yet"));
            }
            changes.push(c);
        }
    }
    let meta = if dir_missing {
        None
    } else {
        observe(ctx, &path, Kind::File)?
    };
    let current = current_content(ctx, &path, meta.as_ref())?;
    let content = desired_content(current.as_deref(), &step.keys, step.exclusive);
    let shown = path.display().to_string();
    if let (Some(meta), Some(current)) = (&meta, &current) {
        if *current != content {
            let mut c = Change::new(ChangeKind::Content, &path);
            c.after = Some(summary(current, &content));
            c.diff = diff::unified(&shown, current.as_bytes(), content.as_bytes());
            changes.push(c);
            let kept = keys_in(&content);
            let removes = keys_in(current)
                .iter()
                .any(|k| !kept.iter().any(|n| n.identity() == k.identity()));
            if removes {
                lockout::check(
                    ctx,
                    &Proposal::KeysFile {
                        path: &path,
                        content: &content,
                    },
                )?;
            }
        }
        changes.extend(attr_changes(ctx, &path, meta, FILE_MODE, &a)?);
    } else {
        let mut c = Change::new(ChangeKind::Create, &path);
        c.after = Some(format!(
            "{}, mode 0600, owner {}:{group}",
            summary("", &content),
            a.name
        ));
        c.diff = Some(diff::created(&shown, content.as_bytes()));
        changes.push(c);
    }
    if changes.is_empty() {
        return Ok(Plan::in_sync(format!(
            "{} holds {}, mode 0600, owner {}:{group}",
            path.display(),
            n_keys(keys_in(current.as_deref().unwrap_or_default()).len()),
            a.name
        )));
    }
    Ok(Plan {
        changes,
        in_sync: String::new(),
    })
}

pub fn apply(step: &AuthorizedKeysStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    if plan.is_in_sync() {
        return Ok(());
    }
    let Some(a) = account(step, ctx)? else {
        return Ok(());
    };
    let (path, dir) = location(step, &a.home);
    if let Some(dir) = &dir {
        let meta = observe(ctx, dir, Kind::Dir)?;
        match meta {
            None => {
                ctx.capture(dir, None)?;
                ctx.host.create_dir(dir, DIR_MODE, a.uid, a.gid)?;
            }
            Some(m) if m.mode != DIR_MODE || m.uid != a.uid || m.gid != a.gid => {
                ctx.capture(dir, Some(&m))?;
                if m.uid != a.uid || m.gid != a.gid {
                    ctx.host.set_owner(dir, Some(a.uid), Some(a.gid))?;
                }
                ctx.host.set_mode(dir, DIR_MODE)?;
            }
            Some(_) => {}
        }
    }
    let meta = observe(ctx, &path, Kind::File)?;
    let current = current_content(ctx, &path, meta.as_ref())?;
    let content = desired_content(current.as_deref(), &step.keys, step.exclusive);
    if current.as_deref() != Some(content.as_str()) {
        ctx.capture(&path, meta.as_ref())?;
        let staged = ctx
            .host
            .stage_file(&path, content.as_bytes(), FILE_MODE, a.uid, a.gid)?;
        ctx.host.commit_file(&staged, &path)?;
    } else if let Some(m) = meta
        && (m.mode != FILE_MODE || m.uid != a.uid || m.gid != a.gid)
    {
        ctx.capture(&path, Some(&m))?;
        if m.uid != a.uid || m.gid != a.gid {
            ctx.host.set_owner(&path, Some(a.uid), Some(a.gid))?;
        }
        ctx.host.set_mode(&path, FILE_MODE)?;
    }
    Ok(())
}

/// What a notification does: `None` when nothing.
pub fn refresh(
    _step: &AuthorizedKeysStep,
    _plan: &Plan,
    _ctx: &Ctx<'_>,
) -> Result<Option<String>, Error> {
    Ok(None)
}

#[must_use]
pub fn describe(step: &AuthorizedKeysStep) -> String {
    match &step.path {
        Some(p) => format!("authorized_keys of {} ({p})", step.user),
        None => format!("authorized_keys of {}", step.user),
    }
}
