//! The `compose` step: a Docker Compose project brought up (or stopped) with
//! `docker compose` (v2) where it is installed, else `docker-compose` (v1).

use super::{BuildCtx, Key, KindSpec, Rendered, Shape, StepKind};
use crate::diag::Diagnostic;

/// The compose file's name when the step names none.
pub const DEFAULT_FILE: &str = "compose.yml";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ComposeStep {
    /// The project name (`-p`).
    pub project: String,
    /// The project directory (absolute).
    pub directory: String,
    /// The compose file (absolute: `file` joined to `directory` when relative).
    pub file: String,
    pub pull_policy: PullPolicy,
    pub state: ProjectState,
}

/// When images are pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull only images that are not there (compose's own default).
    Missing,
    /// Pull every image before bringing the project up.
    Always,
    /// Never pull; an image that is not there fails the step.
    Never,
}

impl PullPolicy {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Always => "always",
            Self::Never => "never",
        }
    }
}

/// Whether the project's services should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectState {
    Running,
    Stopped,
}

const PULL_POLICIES: &[&str] = &["missing", "always", "never"];
const STATES: &[&str] = &["running", "stopped"];

pub const KIND: KindSpec = KindSpec {
    name: "compose",
    doc: "a Docker Compose project brought up (docker compose v2, else docker-compose v1); recreated on notify",
    keys: &[
        Key {
            name: "project",
            shape: Shape::Str,
            required: true,
            doc: "the project name (-p): lowercase letters, digits, - and _",
        },
        Key {
            name: "directory",
            shape: Shape::Path,
            required: true,
            doc: "the project directory (absolute)",
        },
        Key {
            name: "file",
            shape: Shape::Str,
            required: false,
            doc: "the compose file, relative to directory or absolute; default \"compose.yml\"",
        },
        Key {
            name: "pull_policy",
            shape: Shape::Choice(PULL_POLICIES),
            required: false,
            doc: "\"missing\" (default), \"always\" or \"never\"",
        },
        Key {
            name: "state",
            shape: Shape::Choice(STATES),
            required: false,
            doc: "\"running\" (default) or \"stopped\"",
        },
    ],
    build,
};

/// Why `name` is not a compose project name, if it is not one.
pub fn check_project(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("the name is empty".to_owned()),
        Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => {
            return Err(format!(
                "{name:?} must start with a lowercase letter or a digit"
            ));
        }
        Some(_) => {}
    }
    if let Some(c) =
        chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(*c)))
    {
        return Err(format!(
            "{name:?} contains {c:?}; project names use lowercase letters, digits, - and _"
        ));
    }
    Ok(())
}

fn build(f: &Rendered<'_>, _ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    let at = |key: &str| f.values.get(key).map_or(f.step_pos, |(_, pos)| *pos);
    let project = f.str("project")?;
    check_project(&project).map_err(|e| {
        Diagnostic::new(f.file, Some(at("project")), format!("`project`: {e}"))
            .hint("write a name such as project = \"media\"")
    })?;
    let directory = f.path("directory")?;
    let directory = if directory.len() > 1 {
        directory.trim_end_matches('/').to_owned()
    } else {
        directory
    };
    let file = f
        .opt_str("file")?
        .unwrap_or_else(|| DEFAULT_FILE.to_owned());
    if file.is_empty() || file.ends_with('/') || file.split('/').any(|part| part == "..") {
        return Err(Diagnostic::new(
            f.file,
            Some(at("file")),
            format!("`file` is {file:?}, which is not a file name"),
        )
        .hint("write the compose file's name in the directory, e.g. file = \"compose.yml\""));
    }
    let file = if file.starts_with('/') {
        file
    } else {
        format!("{}/{file}", directory.trim_end_matches('/'))
    };
    let pull_policy = match f.choice("pull_policy", PULL_POLICIES, "missing")? {
        "always" => PullPolicy::Always,
        "never" => PullPolicy::Never,
        _ => PullPolicy::Missing,
    };
    let state = match f.choice("state", STATES, "running")? {
        "stopped" => ProjectState::Stopped,
        _ => ProjectState::Running,
    };
    Ok(StepKind::Compose(ComposeStep {
        project,
        directory,
        file,
        pull_policy,
        state,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names() {
        assert!(check_project("media").is_ok());
        assert!(check_project("media-01_x").is_ok());
        assert!(check_project("1app").is_ok());
        assert!(check_project("").is_err());
        assert!(check_project("Media").is_err());
        assert!(check_project("-x").is_err());
        assert!(check_project("a b").is_err());
        assert!(check_project("a.b").is_err());
    }
}
