//! The lockout guard (always on): a step must not take away the last way an
//! administrator can log in over SSH.
//!
//! The way in is password login, while sshd allows it, or else a *sudo user with a
//! key*: a member of group `sudo` (or root, where `PermitRootLogin` allows keys) whose
//! shell is not `nologin`/`false` and who has at least one public key in one of
//! sshd's `AuthorizedKeysFile`s (owned by the user or root and not writable by others,
//! as sshd's `StrictModes` demands). A step that would remove a key, a user, a sudo
//! membership, change such a user's shell or home, or turn password login off, asks
//! [`check`] first: when there was a way in before the step and there would be none
//! after it, the step fails with a message that says what to do.
//!
//! sshd's settings come from `sshd -T` (its effective configuration). A machine
//! without `/usr/sbin/sshd` cannot be locked out over SSH: the guard lets everything
//! pass. When `sshd -T` fails, the guard assumes password login is off.

use std::path::{Path, PathBuf};

use super::user::{self, Account, GroupEntry};
use super::{Ctx, Error};
use crate::process::Cmd;
use crate::step::authorized_keys::parse_key;

/// Where Debian's sshd is.
pub const SSHD: &str = "/usr/sbin/sshd";

/// A user account as a step would leave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountAfter {
    pub home: String,
    pub shell: String,
    /// Supplementary groups.
    pub groups: Vec<String>,
}

/// A change a step is about to make that could take away a way in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proposal<'a> {
    /// A user becomes `after`, or is removed (`None`).
    Account {
        name: &'a str,
        after: Option<AccountAfter>,
    },
    /// An `authorized_keys` file gets this content.
    KeysFile { path: &'a Path, content: &'a str },
    /// A group is removed.
    RemoveGroup { name: &'a str },
    /// sshd's password login is turned off (for a step that manages sshd's
    /// configuration).
    PasswordLoginOff,
}

/// What the guard needs of sshd's effective configuration.
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent yes/no settings of sshd"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sshd {
    /// `PasswordAuthentication yes`, or keyboard-interactive through PAM.
    pub password_login: bool,
    /// `PermitRootLogin` allows key login for root.
    pub root_keys: bool,
    /// `AuthorizedKeysFile` patterns (`%h`, `%u`, `%U`, `%%`; relative to the home).
    pub authorized_keys_files: Vec<String>,
    /// An `AuthorizedKeysCommand` is set: keys come from elsewhere too, and the guard
    /// cannot judge.
    pub keys_command: bool,
    pub strict_modes: bool,
    pub pubkey: bool,
}

impl Sshd {
    /// What the guard assumes when sshd cannot say: Debian's defaults with password
    /// login off.
    fn assumed() -> Self {
        Self {
            password_login: false,
            root_keys: true,
            authorized_keys_files: vec![
                ".ssh/authorized_keys".to_owned(),
                ".ssh/authorized_keys2".to_owned(),
            ],
            keys_command: false,
            strict_modes: true,
            pubkey: true,
        }
    }

    /// Parses `sshd -T` output (`keyword value...`, keywords in lower case). `None`
    /// when it is not that output.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let get = |key: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.trim().split_once(' ')?;
                (k == key).then(|| v.trim())
            })
        };
        let yes = |key: &str, default: bool| get(key).map_or(default, |v| v == "yes");
        let password = get("passwordauthentication")? == "yes";
        let kbd = yes("kbdinteractiveauthentication", false)
            || yes("challengeresponseauthentication", false);
        let mut out = Self::assumed();
        out.password_login = password || (kbd && yes("usepam", false));
        out.root_keys = matches!(
            get("permitrootlogin").unwrap_or("prohibit-password"),
            "yes" | "prohibit-password" | "without-password"
        );
        if let Some(files) = get("authorizedkeysfile") {
            out.authorized_keys_files = files.split_whitespace().map(str::to_owned).collect();
        }
        out.keys_command = get("authorizedkeyscommand").is_some_and(|v| v != "none");
        out.strict_modes = yes("strictmodes", true);
        out.pubkey = yes("pubkeyauthentication", true);
        Some(out)
    }
}

/// sshd's effective settings; `None` when this machine has no sshd.
pub fn sshd_settings(ctx: &Ctx<'_>) -> Result<Option<Sshd>, Error> {
    if ctx.host.lstat(Path::new(SSHD))?.is_none() {
        return Ok(None);
    }
    let out = ctx.host.run(&Cmd::new(SSHD).arg("-T"))?;
    if !out.success() {
        return Ok(Some(Sshd::assumed()));
    }
    Ok(Some(
        Sshd::parse(&String::from_utf8_lossy(&out.stdout)).unwrap_or_else(Sshd::assumed),
    ))
}

/// Fails when `proposal` would take away the last way in (see the module
/// documentation). Reads only.
pub fn check(ctx: &Ctx<'_>, proposal: &Proposal<'_>) -> Result<(), Error> {
    let Some(sshd) = sshd_settings(ctx)? else {
        return Ok(());
    };
    let password_off = matches!(proposal, Proposal::PasswordLoginOff);
    if (sshd.password_login && !password_off) || sshd.keys_command {
        return Ok(());
    }
    let accounts = user::accounts(ctx)?;
    let groups = user::group_db(ctx)?;
    let (after_accounts, after_groups, keys) = after(&accounts, &groups, proposal);
    if !ways_in(ctx, &sshd, &after_accounts, &after_groups, keys)?.is_empty() {
        return Ok(());
    }
    if password_off {
        return if sshd.password_login {
            Err(Error::Refused(
                "refusing: this step turns password login off, but no sudo user can log in with a key; add a key for a sudo user first (an `authorized_keys` step before this one)".to_owned(),
            ))
        } else {
            Ok(())
        };
    }
    let before = ways_in(ctx, &sshd, &accounts, &groups, None)?;
    if before.is_empty() {
        // Already no way in over SSH: this step does not make it worse.
        return Ok(());
    }
    Err(Error::Refused(format!(
        "refusing: after this step no sudo user could log in with a key while password login is off (sshd -T: passwordauthentication no); today {} can. Add a key for {} first, or another sudo user with a key, in an earlier step",
        before.join(", "),
        if before.len() == 1 {
            format!("{} that this step keeps", before[0])
        } else {
            "a user that this step keeps".to_owned()
        }
    )))
}

/// The accounts and groups as the proposal leaves them, and a keys file's new content.
fn after<'p>(
    accounts: &[Account],
    groups: &[GroupEntry],
    proposal: &Proposal<'p>,
) -> (Vec<Account>, Vec<GroupEntry>, Option<(&'p Path, &'p str)>) {
    let mut accounts = accounts.to_vec();
    let mut groups = groups.to_vec();
    let mut keys = None;
    match proposal {
        Proposal::Account { name, after } => {
            match after {
                None => accounts.retain(|a| a.name != *name),
                Some(after) => {
                    for a in accounts.iter_mut().filter(|a| a.name == *name) {
                        a.home.clone_from(&after.home);
                        a.shell.clone_from(&after.shell);
                    }
                }
            }
            for g in &mut groups {
                g.members.retain(|m| m != name);
                if after.as_ref().is_some_and(|a| a.groups.contains(&g.name)) {
                    g.members.push((*name).to_owned());
                }
            }
        }
        Proposal::KeysFile { path, content } => keys = Some((*path, *content)),
        Proposal::RemoveGroup { name } => groups.retain(|g| g.name != *name),
        Proposal::PasswordLoginOff => {}
    }
    (accounts, groups, keys)
}

/// The users who could log in with a key and use sudo, given these accounts and
/// groups (and one keys file's content replaced).
fn ways_in(
    ctx: &Ctx<'_>,
    sshd: &Sshd,
    accounts: &[Account],
    groups: &[GroupEntry],
    keys: Option<(&Path, &str)>,
) -> Result<Vec<String>, Error> {
    if !sshd.pubkey {
        return Ok(Vec::new());
    }
    let sudo = groups.iter().find(|g| g.name == "sudo");
    let mut found = Vec::new();
    for a in accounts {
        let admin = if a.uid == 0 {
            sshd.root_keys
        } else {
            sudo.is_some_and(|g| g.gid == a.gid || g.members.contains(&a.name))
        };
        if !admin || a.shell.ends_with("/nologin") || a.shell.ends_with("/false") {
            continue;
        }
        for pattern in &sshd.authorized_keys_files {
            let path = keys_path(pattern, a);
            let content = match keys {
                Some((p, content)) if p == path => content.to_owned(),
                _ => match read_keys(ctx, sshd, &path, a)? {
                    Some(content) => content,
                    None => continue,
                },
            };
            if content
                .lines()
                .any(|l| !l.trim().starts_with('#') && parse_key(l).is_ok())
            {
                found.push(a.name.clone());
                break;
            }
        }
    }
    Ok(found)
}

/// An `AuthorizedKeysFile` pattern for one user.
fn keys_path(pattern: &str, a: &Account) -> PathBuf {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(&a.home),
            Some('u') => out.push_str(&a.name),
            Some('U') => out.push_str(&a.uid.to_string()),
            Some(other) => out.push(other),
            None => {}
        }
    }
    if out.starts_with('/') {
        PathBuf::from(out)
    } else {
        Path::new(&a.home).join(out)
    }
}

/// A keys file's content, or `None` when sshd would not use it (absent, or — with
/// `StrictModes` — owned by someone else or writable by others, the file or a
/// directory above it up to the home).
fn read_keys(
    ctx: &Ctx<'_>,
    sshd: &Sshd,
    path: &Path,
    a: &Account,
) -> Result<Option<String>, Error> {
    let Some(meta) = ctx.host.lstat(path)? else {
        return Ok(None);
    };
    if sshd.strict_modes {
        let safe = |m: &crate::host::Meta| (m.uid == a.uid || m.uid == 0) && m.mode & 0o022 == 0;
        if !safe(&meta) {
            return Ok(None);
        }
        // As sshd: every directory from the file's up to the home (or up to / for a
        // file outside the home).
        let home = Path::new(&a.home);
        let under_home = path.starts_with(home);
        for dir in path.ancestors().skip(1) {
            if let Some(m) = ctx.host.lstat(dir)?
                && !safe(&m)
            {
                return Ok(None);
            }
            if under_home && dir == home {
                break;
            }
        }
    }
    match ctx.host.read_file(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sshd_t() {
        let s = Sshd::parse(
            "port 22\npasswordauthentication no\npermitrootlogin no\nauthorizedkeysfile .ssh/authorized_keys /etc/ssh/keys/%u\nauthorizedkeyscommand none\nusepam yes\nkbdinteractiveauthentication no\n",
        )
        .unwrap();
        assert!(!s.password_login && !s.root_keys && !s.keys_command && s.strict_modes);
        assert_eq!(
            s.authorized_keys_files,
            [".ssh/authorized_keys", "/etc/ssh/keys/%u"]
        );
        let s = Sshd::parse(
            "passwordauthentication no\nkbdinteractiveauthentication yes\nusepam yes\n",
        )
        .unwrap();
        assert!(s.password_login);
        assert_eq!(Sshd::parse("garbage"), None);
    }

    #[test]
    fn keys_paths() {
        let a = Account {
            name: "alice".to_owned(),
            uid: 1000,
            gid: 1000,
            comment: String::new(),
            home: "/home/alice".to_owned(),
            shell: "/bin/bash".to_owned(),
        };
        assert_eq!(
            keys_path(".ssh/authorized_keys", &a),
            Path::new("/home/alice/.ssh/authorized_keys")
        );
        assert_eq!(
            keys_path("/etc/ssh/keys/%u.%U", &a),
            Path::new("/etc/ssh/keys/alice.1000")
        );
        assert_eq!(keys_path("%h/k%%", &a), Path::new("/home/alice/k%"));
    }
}
