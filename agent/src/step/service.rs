//! The `service` step: a systemd unit enabled or disabled, running or stopped, and what
//! a notification does to it (restart or reload).

use super::{BuildCtx, Key, KindSpec, Rendered, Shape, StepKind};
use crate::diag::Diagnostic;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceStep {
    /// The full unit name (`nginx.service`).
    pub unit: String,
    /// Enabled at boot; `None` leaves it as it is.
    pub enabled: Option<bool>,
    /// Running or stopped; `None` leaves it as it is.
    pub state: Option<RunState>,
    pub on_notify: OnNotify,
    /// Rollback puts `enabled` and `state` back as they were once the step goes away.
    pub prune: bool,
}

/// Whether a service should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Stopped,
}

/// What a notification does to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnNotify {
    Restart,
    Reload,
    ReloadOrRestart,
}

impl OnNotify {
    /// The `systemctl` verb.
    #[must_use]
    pub fn verb(self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::Reload => "reload",
            Self::ReloadOrRestart => "reload-or-restart",
        }
    }
}

const STATES: &[&str] = &["running", "stopped"];
const ON_NOTIFY: &[&str] = &["restart", "reload", "reload-or-restart"];

/// Unit type suffixes systemd knows; a name without one is a `.service`.
pub const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".timer",
    ".target",
    ".path",
    ".mount",
    ".automount",
    ".swap",
    ".slice",
    ".scope",
    ".device",
];

pub const KIND: KindSpec = KindSpec {
    name: "service",
    doc: "a systemd unit: enabled or disabled, running or stopped; restarted or reloaded on notify",
    keys: &[
        Key {
            name: "name",
            shape: Shape::Str,
            required: true,
            doc: "the unit; \".service\" is appended when it has no unit suffix",
        },
        Key {
            name: "enabled",
            shape: Shape::Bool,
            required: false,
            doc: "started at boot (systemctl enable / disable); default: unchanged",
        },
        Key {
            name: "state",
            shape: Shape::Choice(STATES),
            required: false,
            doc: "\"running\" or \"stopped\"; default: unchanged",
        },
        Key {
            name: "on_notify",
            shape: Shape::Choice(ON_NOTIFY),
            required: false,
            doc: "what a notification does: \"restart\" (default), \"reload\" or \"reload-or-restart\"",
        },
        Key {
            name: "prune",
            shape: Shape::Bool,
            required: false,
            doc: "when the step goes away, put `enabled` and `state` back as they were; default false",
        },
    ],
    build,
};

/// The unit name systemd uses for `name`: `nginx` → `nginx.service`. `Err` says why a
/// name is not a unit name.
pub fn unit_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("the name is empty".to_owned());
    }
    if name.starts_with('-') || name.starts_with('.') {
        return Err(format!("{name:?} is not a unit name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ":-_.\\@".contains(*c)))
    {
        return Err(format!(
            "{name:?} is not a unit name: it contains {c:?}; unit names use letters, digits and : - _ . \\ @"
        ));
    }
    if UNIT_SUFFIXES
        .iter()
        .any(|s| name.len() > s.len() && name.ends_with(s))
    {
        Ok(name.to_owned())
    } else {
        Ok(format!("{name}.service"))
    }
}

fn build(f: &Rendered<'_>, _ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    let name = f.str("name")?;
    let unit = unit_name(&name).map_err(|e| {
        Diagnostic::new(f.file, Some(f.values["name"].1), format!("`name`: {e}"))
            .hint("write the unit's name, e.g. name = \"nginx\" or name = \"apt-daily.timer\"")
    })?;
    let state = match f.opt_str("state")? {
        None => None,
        Some(_) => Some(match f.choice("state", STATES, "running")? {
            "stopped" => RunState::Stopped,
            _ => RunState::Running,
        }),
    };
    let on_notify = match f.choice("on_notify", ON_NOTIFY, "restart")? {
        "reload" => OnNotify::Reload,
        "reload-or-restart" => OnNotify::ReloadOrRestart,
        _ => OnNotify::Restart,
    };
    Ok(StepKind::Service(ServiceStep {
        unit,
        enabled: f.opt_bool("enabled")?,
        state,
        on_notify,
        prune: f.opt_bool("prune")?.unwrap_or(false),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names() {
        assert_eq!(unit_name("nginx").as_deref(), Ok("nginx.service"));
        assert_eq!(unit_name("nginx.service").as_deref(), Ok("nginx.service"));
        assert_eq!(
            unit_name("apt-daily.timer").as_deref(),
            Ok("apt-daily.timer")
        );
        assert_eq!(unit_name("getty@tty1").as_deref(), Ok("getty@tty1.service"));
        assert_eq!(unit_name("foo.bar").as_deref(), Ok("foo.bar.service"));
        assert!(unit_name("").is_err());
        assert!(unit_name("-x").is_err());
        assert!(unit_name("a b").is_err());
        assert!(unit_name("../x").is_err());
        assert!(unit_name(".service").is_err());
    }
}
