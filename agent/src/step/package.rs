//! The `package` step: Debian packages present, absent or at their latest version, a
//! `.deb` from `files/` or a URL, or an upgrade of the whole system.

use std::fmt;

use super::{BuildCtx, Key, KindSpec, Rendered, Shape, StepKind};
use crate::diag::Diagnostic;

/// The desired state of a `package` step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackageStep {
    /// Packages to manage; empty only for a system upgrade.
    pub names: Vec<PackageName>,
    pub state: PackageState,
    /// `--no-install-recommends`.
    pub no_recommends: bool,
    pub update_lists: UpdateLists,
    pub upgrade: Upgrade,
    /// A `.deb` to install (then `names` is the one package it contains).
    pub deb: Option<DebSource>,
    /// Lower-case hex SHA-256 of the `.deb`.
    pub sha256: Option<String>,
    /// Rollback removes the packages this step installed once the step goes away.
    pub prune: bool,
}

/// A package as named in `names`: `name`, `name:arch`, `name=version`, `name:arch=version`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackageName {
    pub name: String,
    /// A multiarch qualifier (`libc6:i386`); `None` is the native architecture (or `all`).
    pub arch: Option<String>,
    /// An exact version the package must have.
    pub version: Option<String>,
}

impl PackageName {
    /// `name` or `name:arch`, without the version: what dpkg and apt call the package.
    #[must_use]
    pub fn qualified(&self) -> String {
        match &self.arch {
            Some(arch) => format!("{}:{arch}", self.name),
            None => self.name.clone(),
        }
    }

    /// Parses `name[:arch][=version]`, with Debian's rules for package names (policy
    /// 5.6.1: lower case letters, digits, `+`, `-`, `.`; at least two characters,
    /// starting with a letter or digit).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name_arch, version) = match text.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (text, None),
        };
        let (name, arch) = match name_arch.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (name_arch, None),
        };
        let valid_name = name.len() >= 2
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !valid_name {
            return Err(format!(
                "{text:?} is not a Debian package name (lower-case letters, digits, + - and ., at least two characters)"
            ));
        }
        if let Some(a) = arch
            && (a.is_empty()
                || !a
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            return Err(format!(
                "{text:?}: {a:?} is not an architecture (e.g. amd64, i386, arm64)"
            ));
        }
        if let Some(v) = version
            && (v.is_empty()
                || !v.starts_with(|c: char| c.is_ascii_digit())
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".+-~:".contains(c)))
        {
            return Err(format!(
                "{text:?}: {v:?} is not a Debian version (it starts with a digit)"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            arch: arch.map(str::to_owned),
            version: version.map(str::to_owned),
        })
    }
}

/// `name[:arch][=version]`, as written (and as apt-get and nala take it).
impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.qualified())?;
        if let Some(v) = &self.version {
            write!(f, "={v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageState {
    Present,
    Absent,
    Latest,
}

/// When to refresh the package lists (`apt-get update`) before a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateLists {
    /// When they are older than agent.toml's `apt_lists_max_age`, missing, or an
    /// earlier step changed the apt sources.
    Auto,
    /// Before every transaction of this step.
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Upgrade {
    None,
    /// `apt-get upgrade`: newer versions of installed packages, nothing new or removed.
    Upgrade,
    /// `apt-get dist-upgrade`: may install new dependencies and remove conflicting packages.
    DistUpgrade,
}

/// Where a `.deb` comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DebSource {
    /// A path relative to `files/`.
    File(String),
    /// An `http://` or `https://` URL.
    Url(String),
}

const STATES: &[&str] = &["present", "absent", "latest"];
const UPDATE_LISTS: &[&str] = &["auto", "always", "never"];
const UPGRADES: &[&str] = &["none", "upgrade", "dist-upgrade"];

pub const KIND: KindSpec = KindSpec {
    name: "package",
    doc: "Debian packages through nala (apt-get where nala is absent or agent.toml prefers apt)",
    keys: &[
        Key {
            name: "names",
            shape: Shape::Strings,
            required: false,
            doc: "packages: name, name:arch, name=version (required unless upgrade is set)",
        },
        Key {
            name: "state",
            shape: Shape::Choice(STATES),
            required: false,
            doc: "\"present\" (default), \"absent\" or \"latest\"",
        },
        Key {
            name: "no_recommends",
            shape: Shape::Bool,
            required: false,
            doc: "install without recommended packages; default false",
        },
        Key {
            name: "update_lists",
            shape: Shape::Choice(UPDATE_LISTS),
            required: false,
            doc: "refresh package lists before a transaction: \"auto\" (default), \"always\", \"never\"",
        },
        Key {
            name: "upgrade",
            shape: Shape::Choice(UPGRADES),
            required: false,
            doc: "\"upgrade\" or \"dist-upgrade\" upgrades the whole system; default \"none\"",
        },
        Key {
            name: "deb",
            shape: Shape::Str,
            required: false,
            doc: "a .deb to install: a path under files/ or an http(s) URL",
        },
        Key {
            name: "sha256",
            shape: Shape::Str,
            required: false,
            doc: "SHA-256 of the .deb (required for a URL)",
        },
        Key {
            name: "prune",
            shape: Shape::Bool,
            required: false,
            doc: "when the step goes away, remove the packages it installed; default false",
        },
    ],
    build,
};

fn err(f: &Rendered<'_>, key: &str, message: String, hint: impl Into<String>) -> Diagnostic {
    let pos = f.values.get(key).map_or(f.step_pos, |(_, p)| *p);
    Diagnostic::new(f.file, Some(pos), message).hint(hint)
}

fn build(f: &Rendered<'_>, ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    let state = match f.choice("state", STATES, "present")? {
        "absent" => PackageState::Absent,
        "latest" => PackageState::Latest,
        _ => PackageState::Present,
    };
    let update_lists = match f.choice("update_lists", UPDATE_LISTS, "auto")? {
        "always" => UpdateLists::Always,
        "never" => UpdateLists::Never,
        _ => UpdateLists::Auto,
    };
    let upgrade = match f.choice("upgrade", UPGRADES, "none")? {
        "upgrade" => Upgrade::Upgrade,
        "dist-upgrade" => Upgrade::DistUpgrade,
        _ => Upgrade::None,
    };
    let no_recommends = f.opt_bool("no_recommends")?.unwrap_or(false);
    let prune = f.opt_bool("prune")?.unwrap_or(false);

    if upgrade != Upgrade::None {
        f.forbid(
            &["names", "state", "deb", "sha256", "prune"],
            "in a step with `upgrade` (it upgrades the whole system; manage packages in another step)",
        )?;
        return Ok(StepKind::Package(PackageStep {
            names: Vec::new(),
            state,
            no_recommends,
            update_lists,
            upgrade,
            deb: None,
            sha256: None,
            prune: false,
        }));
    }

    let Some(raw) = f.opt_strings("names")? else {
        return Err(err(
            f,
            "names",
            "a package step needs `names` (or `upgrade`)".to_owned(),
            "write names = [\"zsh\", \"ripgrep\"], or upgrade = \"upgrade\" to upgrade the system",
        ));
    };
    if raw.is_empty() {
        return Err(err(
            f,
            "names",
            "`names` is empty".to_owned(),
            "name at least one package, or remove the step",
        ));
    }
    let mut names: Vec<PackageName> = Vec::with_capacity(raw.len());
    for text in &raw {
        let name = PackageName::parse(text).map_err(|e| {
            err(
                f,
                "names",
                format!("`names`: {e}"),
                "write name, name:arch or name=version, e.g. \"libc6:i386\" or \"zsh=5.9-4+b2\"",
            )
        })?;
        if names.iter().any(|n| n.qualified() == name.qualified()) {
            return Err(err(
                f,
                "names",
                format!("`names` lists {} twice", name.qualified()),
                "list each package once",
            ));
        }
        names.push(name);
    }

    if state != PackageState::Present {
        let why = if state == PackageState::Absent {
            "with state = \"absent\""
        } else {
            "with state = \"latest\""
        };
        f.forbid(&["deb", "sha256"], why)?;
        if state == PackageState::Absent {
            f.forbid(&["no_recommends", "update_lists", "prune"], why)?;
        }
        if let Some(pinned) = names.iter().find(|n| n.version.is_some()) {
            return Err(err(
                f,
                "names",
                format!("{pinned} names a version, which is not allowed {why}"),
                format!("write {} without =version", pinned.qualified()),
            ));
        }
    }

    let sha256 = match f.opt_str("sha256")? {
        None => None,
        Some(s) => {
            let s = s.trim().to_ascii_lowercase();
            if s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(err(
                    f,
                    "sha256",
                    format!("`sha256` is {s:?}, which is not 64 hexadecimal digits"),
                    "write the output of `sha256sum FILE.deb` (the first field)",
                ));
            }
            Some(s)
        }
    };
    let deb = match f.opt_str("deb")? {
        None => {
            if sha256.is_some() {
                return Err(err(
                    f,
                    "sha256",
                    "`sha256` is only allowed with `deb`".to_owned(),
                    "remove `sha256`, or add deb = \"...\"",
                ));
            }
            None
        }
        Some(text) => {
            if names.len() != 1 {
                return Err(err(
                    f,
                    "names",
                    format!(
                        "with `deb`, `names` must be the one package the .deb contains, but it lists {}",
                        names.len()
                    ),
                    "write names = [\"PACKAGE\"] (dpkg-deb --field FILE.deb Package shows it); install other packages in another step",
                ));
            }
            if text.starts_with("https://") || text.starts_with("http://") {
                if sha256.is_none() {
                    return Err(err(
                        f,
                        "deb",
                        "a .deb from a URL needs `sha256`".to_owned(),
                        "add sha256 = \"...\" (the first field of `sha256sum FILE.deb`)",
                    ));
                }
                Some(DebSource::Url(text))
            } else if text.contains("://") {
                return Err(err(
                    f,
                    "deb",
                    format!("`deb` is {text:?}: only http:// and https:// URLs are supported"),
                    "use an http(s) URL, or put the .deb under files/",
                ));
            } else {
                let rel = f.rel_path("deb", "files")?;
                if !ctx.static_file_exists(&rel)? {
                    return Err(err(
                        f,
                        "deb",
                        format!("files/{rel} does not exist"),
                        "add the .deb under files/ or fix `deb`",
                    ));
                }
                Some(DebSource::File(rel))
            }
        }
    };

    Ok(StepKind::Package(PackageStep {
        names,
        state,
        no_recommends,
        update_lists,
        upgrade,
        deb,
        sha256,
        prune,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names() {
        let n = PackageName::parse("libc6:i386=2.36-9").unwrap();
        assert_eq!(n.name, "libc6");
        assert_eq!(n.arch.as_deref(), Some("i386"));
        assert_eq!(n.version.as_deref(), Some("2.36-9"));
        assert_eq!(n.to_string(), "libc6:i386=2.36-9");
        assert_eq!(n.qualified(), "libc6:i386");
        let n = PackageName::parse("zsh=5.9-4+b2").unwrap();
        assert_eq!((n.arch, n.version.as_deref()), (None, Some("5.9-4+b2")));
        assert_eq!(
            PackageName::parse("g++").unwrap().to_string(),
            "g++".to_owned()
        );
        for bad in [
            "",
            "Z",
            "Zsh",
            "zsh tools",
            "-zsh",
            "zsh:",
            "zsh=",
            "zsh=v1",
            "z",
        ] {
            assert!(PackageName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
