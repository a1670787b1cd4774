//! `infra.toml`: the repository's format version, the minimum agent version and bootstrap settings.

use serde::Deserialize;
use toml::Spanned;

use crate::diag::{Diagnostic, LineIndex};

pub const FILE: &str = "infra.toml";

/// The only format version this agent reads.
pub const FORMAT: i64 = 1;

/// Every key `infra.toml` accepts, tables' keys as `table.key`: the reference
/// (docs/state-repo.md) has a row for each, which a test checks.
pub const KEYS: &[&str] = &[
    "format",
    "min_agent_version",
    "bootstrap",
    "bootstrap.repository",
    "bootstrap.branch",
];

/// Validated `infra.toml`.
#[derive(Debug, Clone)]
pub struct InfraToml {
    pub format: i64,
    pub min_agent_version: Option<Version>,
    pub bootstrap: Bootstrap,
}

/// Settings `infra-bootstrap` reads when it sets up a host.
#[derive(Debug, Clone, Default)]
pub struct Bootstrap {
    pub repository: Option<String>,
    pub branch: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InfraSpec {
    format: Spanned<i64>,
    min_agent_version: Option<Spanned<String>>,
    #[serde(default)]
    bootstrap: BootstrapSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapSpec {
    repository: Option<String>,
    branch: Option<String>,
}

/// A `MAJOR.MINOR.PATCH` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u64, pub u64, pub u64);

impl Version {
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().splitn(3, '.').map(str::parse::<u64>);
        let v = Version(
            parts.next()?.ok()?,
            parts.next()?.ok()?,
            parts.next()?.ok()?,
        );
        Some(v)
    }

    /// This agent's version.
    #[must_use]
    pub fn agent() -> Self {
        Self::parse(env!("CARGO_PKG_VERSION")).expect("Cargo versions are MAJOR.MINOR.PATCH")
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Parses and validates `infra.toml` for an agent of version `agent`.
pub fn parse(text: &str, agent: Version) -> Result<InfraToml, Diagnostic> {
    let spec: InfraSpec = super::toml_file::parse(FILE, text)?;
    let index = LineIndex::new(text);
    let format = *spec.format.get_ref();
    if format != FORMAT {
        return Err(Diagnostic::new(
            FILE,
            Some(index.pos(spec.format.span().start)),
            format!("format {format} is not a format this agent reads (it reads format {FORMAT})"),
        )
        .hint(if format > FORMAT {
            "upgrade infra-agent on this machine to a version that reads this format"
        } else {
            "set format = 1"
        }));
    }
    let min_agent_version = match spec.min_agent_version {
        None => None,
        Some(v) => {
            let pos = index.pos(v.span().start);
            let Some(min) = Version::parse(v.get_ref()) else {
                return Err(Diagnostic::new(
                    FILE,
                    Some(pos),
                    format!("min_agent_version {:?} is not a version", v.get_ref()),
                )
                .hint("write it as MAJOR.MINOR.PATCH, e.g. min_agent_version = \"0.1.0\""));
            };
            if min > agent {
                return Err(Diagnostic::new(
                    FILE,
                    Some(pos),
                    format!(
                        "this repository needs infra-agent {min} or newer; this agent is {agent}"
                    ),
                )
                .hint(format!(
                    "upgrade infra-agent to {min} or newer; nothing was applied"
                )));
            }
            Some(min)
        }
    };
    Ok(InfraToml {
        format,
        min_agent_version,
        bootstrap: Bootstrap {
            repository: spec.bootstrap.repository,
            branch: spec.bootstrap.branch.unwrap_or_else(|| "main".to_owned()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields serde accepts, from its "unknown field" error, with `prefix`.
    fn accepted<T: serde::de::DeserializeOwned + std::fmt::Debug>(prefix: &str) -> Vec<String> {
        let err = toml::from_str::<T>("no_such_key_anywhere = 1\n")
            .unwrap_err()
            .to_string();
        let list = err
            .split_once("expected one of ")
            .or_else(|| err.split_once("expected "))
            .unwrap_or_else(|| panic!("no list of fields in: {err}"))
            .1;
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(|field| format!("{prefix}{field}"))
            .collect()
    }

    #[test]
    fn keys_are_exactly_what_the_parser_accepts() {
        let mut parsed = accepted::<InfraSpec>("");
        parsed.extend(accepted::<BootstrapSpec>("bootstrap."));
        parsed.sort();
        let mut keys: Vec<String> = KEYS.iter().map(|&k| k.to_owned()).collect();
        keys.sort();
        assert_eq!(keys, parsed);
    }

    #[test]
    fn a_file_with_every_key_parses() {
        let t = parse(
            "format = 1\nmin_agent_version = \"0.1.0\"\n[bootstrap]\nrepository = \"git@h:r.git\"\nbranch = \"prod\"\n",
            Version(0, 1, 0),
        )
        .unwrap();
        assert_eq!(t.bootstrap.repository.as_deref(), Some("git@h:r.git"));
        assert_eq!(t.bootstrap.branch, "prod");
    }

    #[test]
    fn newer_min_version_is_refused_with_upgrade_hint() {
        let d = parse(
            "format = 1\nmin_agent_version = \"9.0.0\"\n",
            Version(0, 1, 0),
        )
        .unwrap_err();
        assert_eq!(d.line, Some(2));
        assert!(d.message.contains("needs infra-agent 9.0.0 or newer"));
        assert!(d.hint.unwrap().contains("upgrade infra-agent"));
    }

    #[test]
    fn equal_or_older_min_version_is_accepted() {
        let t = parse(
            "format = 1\nmin_agent_version = \"0.1.0\"\n",
            Version(0, 1, 0),
        )
        .unwrap();
        assert_eq!(t.min_agent_version, Some(Version(0, 1, 0)));
        assert_eq!(t.bootstrap.branch, "main");
    }

    #[test]
    fn unknown_format_is_refused() {
        let d = parse("format = 2\n", Version(0, 1, 0)).unwrap_err();
        assert!(d.message.contains("format 2"));
    }
}
