//! `infra.toml`: the repository's format version, the minimum agent version and bootstrap settings.

use serde::Deserialize;
use toml::Spanned;

use crate::diag::{Diagnostic, LineIndex};

pub const FILE: &str = "infra.toml";

/// The only format version this agent reads.
pub const FORMAT: i64 = 1;

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
