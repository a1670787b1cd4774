//! Step types: the validated, rendered desired state of one step, and the table of
//! step types the loader dispatches on.
//!
//! Adding a step type: write `step/<type>.rs` with its `KEYS` and `build`, add a
//! variant to [`StepKind`] and a row to [`KINDS`].

pub mod apt_repository;
pub mod authorized_keys;
pub mod command;
pub mod compose;
pub mod directory;
pub mod download;
pub mod fields;
pub mod file;
pub mod group;
pub mod nala_fetch;
pub mod package;
pub mod service;
pub mod symlink;
pub mod template;
pub mod user;

use std::fmt;

use crate::diag::Diagnostic;
pub use fields::{Field, FieldValue, Key, Rendered, Shape};

/// What compiling a step needs from the repository: files and templates.
pub trait BuildCtx {
    /// Whether `files/<path>` exists.
    fn static_file_exists(&self, path: &str) -> Result<bool, Diagnostic>;
    /// Renders `templates/<path>` with the step's context.
    fn render_template_file(&self, path: &str) -> Result<String, Diagnostic>;
}

/// One step type: its name, the keys it accepts and how to build it from rendered fields.
#[derive(Debug)]
pub struct KindSpec {
    pub name: &'static str,
    pub doc: &'static str,
    pub keys: &'static [Key],
    pub build: fn(&Rendered<'_>, &dyn BuildCtx) -> Result<StepKind, Diagnostic>,
}

/// Every step type this agent knows.
pub static KINDS: &[KindSpec] = &[
    file::KIND,
    template::KIND,
    directory::KIND,
    symlink::KIND,
    package::KIND,
    apt_repository::KIND,
    group::KIND,
    user::KIND,
    authorized_keys::KIND,
    command::KIND,
    service::KIND,
    nala_fetch::KIND,
    download::KIND,
    compose::KIND,
];

#[must_use]
pub fn kind(name: &str) -> Option<&'static KindSpec> {
    KINDS.iter().find(|k| k.name == name)
}

/// Keys every step accepts, handled by the loader and the engine rather than the type.
pub const COMMON_KEYS: &[&str] = &[
    "id",
    "type",
    "description",
    "when",
    "requires",
    "notify",
    "for_each",
    "watch",
];

/// The desired state of one step, rendered for one host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepKind {
    File(file::FileStep),
    Template(template::TemplateStep),
    Directory(directory::DirectoryStep),
    Symlink(symlink::SymlinkStep),
    Package(package::PackageStep),
    Service(service::ServiceStep),
    Command(command::CommandStep),
    User(user::UserStep),
    Group(group::GroupStep),
    AuthorizedKeys(authorized_keys::AuthorizedKeysStep),
    NalaFetch(nala_fetch::NalaFetchStep),
    Download(download::DownloadStep),
    AptRepository(apt_repository::AptRepositoryStep),
    Compose(compose::ComposeStep),
}

/// Whether a file-like resource should exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Present,
    Absent,
}

pub(crate) const STATES: &[&str] = &["present", "absent"];

pub(crate) fn presence(f: &Rendered<'_>) -> Result<Presence, Diagnostic> {
    Ok(match f.choice("state", STATES, "present")? {
        "absent" => Presence::Absent,
        _ => Presence::Present,
    })
}

/// Owner, group and mode of a file-like resource; `None` leaves them as they are
/// (new files get root and the type's default mode).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attrs {
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Mode>,
}

impl Attrs {
    pub(crate) fn read(f: &Rendered<'_>) -> Result<Self, Diagnostic> {
        Ok(Self {
            owner: f.opt_str("owner")?,
            group: f.opt_str("group")?,
            mode: f.opt_mode("mode")?,
        })
    }
}

pub(crate) const OWNER: Key = Key {
    name: "owner",
    shape: Shape::Str,
    required: false,
    doc: "user name owning it; default: unchanged, root when created",
};
pub(crate) const GROUP: Key = Key {
    name: "group",
    shape: Shape::Str,
    required: false,
    doc: "group name owning it; default: unchanged, root when created",
};
pub(crate) const STATE: Key = Key {
    name: "state",
    shape: Shape::Choice(STATES),
    required: false,
    doc: "\"present\" (default) or \"absent\"",
};
pub(crate) const VALIDATE: Key = Key {
    name: "validate",
    shape: Shape::Strings,
    required: false,
    doc: "argv run on the candidate before it replaces the live file; `{path}` is the candidate's path",
};

/// A Unix permission mode, written in the repository as an octal string ("0644").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Mode {
    pub fn parse(text: &str) -> Result<Self, String> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        if !(3..=4).contains(&digits.len()) || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
            return Err(format!("{text:?} is not an octal mode"));
        }
        u32::from_str_radix(digits, 8)
            .map(Mode)
            .map_err(|e| format!("{text:?} is not an octal mode: {e}"))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

// Two encodings of a step: the run report's (JSON, for people and scripts: a mode
// as "0644", a timeout in whole seconds, a command's environment as its names only)
// and the compiled-catalog cache's (MessagePack, which serde calls not human-readable:
// every value whole, so a cached step is the step). Serializers say which they are;
// deserializing reads the cache's form, and also the report's where it is whole.

impl serde::Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u32(self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Mode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mode: an octal string or a number")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Mode, E> {
                u32::try_from(v)
                    .map(Mode)
                    .map_err(|_| E::custom(format!("{v} is not a mode")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Mode, E> {
                Mode::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A step's timeout: whole seconds in a report; seconds and nanoseconds in the cache.
pub(crate) mod timeout_serde {
    use std::fmt;
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_u64(d.as_secs())
        } else {
            serde::Serialize::serialize(&(d.as_secs(), d.subsec_nanos()), s)
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("seconds, or [seconds, nanoseconds]")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Duration, A::Error> {
                let secs: u64 = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
                let nanos: u32 = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(1, &self))?;
                Ok(Duration::new(secs, nanos))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("0644"), Ok(Mode(0o644)));
        assert_eq!(Mode::parse("644"), Ok(Mode(0o644)));
        assert_eq!(Mode::parse("1777"), Ok(Mode(0o1777)));
        assert!(Mode::parse("0844").is_err());
        assert!(Mode::parse("64").is_err());
        assert!(Mode::parse("07777").is_err());
        assert_eq!(Mode(0o640).to_string(), "0640");
    }

    #[test]
    fn every_kind_accepts_no_common_key_and_names_keys_once() {
        for kind in KINDS {
            let mut names: Vec<&str> = kind.keys.iter().map(|k| k.name).collect();
            names.sort_unstable();
            let len = names.len();
            names.dedup();
            assert_eq!(names.len(), len, "{} repeats a key", kind.name);
            for key in kind.keys {
                assert!(
                    !COMMON_KEYS.contains(&key.name),
                    "{} redefines {}",
                    kind.name,
                    key.name
                );
            }
        }
    }
}
