//! The `user` step: a local account (shell, home, supplementary groups), or its removal.

use super::{BuildCtx, Key, KindSpec, Presence, Rendered, Shape, StepKind};
use crate::diag::Diagnostic;

#[allow(
    clippy::struct_excessive_bools,
    reason = "one field per key of the step, and these keys are yes/no"
)]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserStep {
    pub name: String,
    pub state: Presence,
    /// Checked and changed only when given.
    pub uid: Option<u32>,
    /// Used when the account is created (`useradd --system`); never changed later.
    pub system: bool,
    pub shell: Option<String>,
    pub home: Option<String>,
    /// Whether `useradd` creates the home directory (default: not for system users).
    pub create_home: bool,
    /// Supplementary groups; `None` leaves them alone.
    pub groups: Option<Vec<String>>,
    /// With `groups`: leave every group not listed (otherwise only join the missing ones).
    pub groups_exclusive: bool,
    /// The comment (GECOS) field.
    pub comment: Option<String>,
    /// With state = "absent": remove the home directory too (`userdel --remove`).
    pub remove_home: bool,
    /// Rollback removes the account (not its home) if this step created it, once the
    /// step goes away.
    pub prune: bool,
}

pub const KIND: KindSpec = KindSpec {
    name: "user",
    doc: "a local user account: shell, home, supplementary groups (absent: removed)",
    keys: &[
        Key {
            name: "name",
            shape: Shape::Str,
            required: true,
            doc: "the user name",
        },
        super::STATE,
        Key {
            name: "uid",
            shape: Shape::Int,
            required: false,
            doc: "numeric user id; default: chosen by useradd, unchanged when the user exists",
        },
        Key {
            name: "system",
            shape: Shape::Bool,
            required: false,
            doc: "create a system account (`useradd --system`); default false",
        },
        Key {
            name: "shell",
            shape: Shape::Path,
            required: false,
            doc: "login shell; default: useradd's when created, unchanged otherwise",
        },
        Key {
            name: "home",
            shape: Shape::Path,
            required: false,
            doc: "home directory; default: /home/NAME when created, unchanged otherwise",
        },
        Key {
            name: "create_home",
            shape: Shape::Bool,
            required: false,
            doc: "create the home directory with the account; default true, false for system users",
        },
        Key {
            name: "groups",
            shape: Shape::Strings,
            required: false,
            doc: "supplementary groups the user is in; default: unchanged",
        },
        Key {
            name: "groups_exclusive",
            shape: Shape::Bool,
            required: false,
            doc: "also leave groups not listed in `groups`; default false (only join)",
        },
        Key {
            name: "comment",
            shape: Shape::Str,
            required: false,
            doc: "the comment (GECOS) field, e.g. the full name; default: unchanged",
        },
        Key {
            name: "remove_home",
            shape: Shape::Bool,
            required: false,
            doc: "with state = \"absent\": remove the home directory too; default false",
        },
        Key {
            name: "prune",
            shape: Shape::Bool,
            required: false,
            doc: "when the step goes away, remove the account if the step created it; default false",
        },
    ],
    build,
};

/// Whether `name` is a user or group name useradd and groupadd accept without
/// `--badname`: a lower-case letter or `_`, then lower-case letters, digits, `_` and
/// `-`, optionally ending in `$`; at most 32 characters.
#[must_use]
pub fn valid_name(name: &str) -> bool {
    let body = name.strip_suffix('$').unwrap_or(name);
    let mut chars = body.chars();
    name.len() <= 32
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// A rendered name field checked with [`valid_name`].
pub(crate) fn name_field(f: &Rendered<'_>, key: &str, what: &str) -> Result<String, Diagnostic> {
    let name = f.str(key)?;
    if !valid_name(&name) {
        return Err(Diagnostic::new(
            f.file,
            Some(f.values[key].1),
            format!("`{key}` renders to {name:?}, which is not a valid {what} name"),
        )
        .hint("a name starts with a lower-case letter or _, then lower-case letters, digits, _ and -, at most 32 characters"));
    }
    Ok(name)
}

fn build(f: &Rendered<'_>, _ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    let name = name_field(f, "name", "user")?;
    let state = super::presence(f)?;
    let remove_home = f.opt_bool("remove_home")?.unwrap_or(false);
    if state == Presence::Absent {
        f.forbid(
            &[
                "uid",
                "system",
                "shell",
                "home",
                "create_home",
                "groups",
                "groups_exclusive",
                "comment",
                "prune",
            ],
            "with state = \"absent\"",
        )?;
    } else {
        f.forbid(
            &["remove_home"],
            "unless state = \"absent\" (it says what removing the user does)",
        )?;
    }
    let groups = f.opt_strings("groups")?;
    if let Some(groups) = &groups {
        for g in groups {
            if !valid_name(g) {
                return Err(Diagnostic::new(
                    f.file,
                    Some(f.values["groups"].1),
                    format!("`groups` contains {g:?}, which is not a valid group name"),
                )
                .hint("list group names, e.g. groups = [\"sudo\", \"docker\"]"));
            }
        }
    }
    let groups_exclusive = f.opt_bool("groups_exclusive")?;
    if groups_exclusive.is_some() && groups.is_none() {
        return Err(Diagnostic::new(
            f.file,
            Some(f.values["groups_exclusive"].1),
            "`groups_exclusive` needs `groups`",
        )
        .hint("list the groups with groups = [...], or remove groups_exclusive"));
    }
    let comment = f.opt_str("comment")?;
    if let Some(c) = &comment
        && (c.contains(':') || c.contains('\n'))
    {
        return Err(Diagnostic::new(
            f.file,
            Some(f.values["comment"].1),
            format!("`comment` {c:?} contains `:` or a newline, which /etc/passwd cannot hold"),
        )
        .hint("remove the `:` and newlines from the comment"));
    }
    let system = f.opt_bool("system")?.unwrap_or(false);
    Ok(StepKind::User(UserStep {
        name,
        state,
        uid: f.opt_u32("uid")?,
        system,
        shell: f.opt_path("shell")?,
        home: f.opt_path("home")?,
        create_home: f.opt_bool("create_home")?.unwrap_or(!system),
        groups,
        groups_exclusive: groups_exclusive.unwrap_or(false),
        comment,
        remove_home,
        prune: f.opt_bool("prune")?.unwrap_or(false),
    }))
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names() {
        for ok in [
            "alice",
            "_apt",
            "systemd-network",
            "a1",
            "machine$",
            "x_y-z",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Alice",
            "1abc",
            "-x",
            "a b",
            "a:b",
            "a$b",
            &"a".repeat(33),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
