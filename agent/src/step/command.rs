//! The `command` step: a program run as an argv, or through `/bin/sh -c` when the step
//! says `shell`, guarded by `creates`, `unless` and `onlyif`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{BuildCtx, Key, KindSpec, Rendered, Shape, StepKind};
use crate::diag::Diagnostic;

/// How long a command (and each of its guards) may run when the step sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_mins(10);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommandStep {
    pub run: Program,
    /// In sync when this path exists.
    pub creates: Option<String>,
    /// In sync when this argv exits 0.
    pub unless: Option<Vec<String>>,
    /// Runs only when this argv exits 0.
    pub onlyif: Option<Vec<String>>,
    /// Added to the agent's environment, for the command and its guards. Values may be
    /// secrets: only the names are ever shown (or serialized).
    #[serde(serialize_with = "names_only")]
    pub environment: BTreeMap<String, String>,
    /// Working directory of the command and its guards.
    pub cwd: Option<String>,
    /// Run the command and its guards as this user (`runuser -u USER --`).
    pub user: Option<String>,
    /// The command, and each guard, is killed after this long.
    #[serde(with = "super::timeout_serde")]
    pub timeout: Duration,
}

/// What the step runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Program {
    /// A program and its arguments, run without a shell.
    Argv(Vec<String>),
    /// A script for `/bin/sh -c`.
    Shell(String),
}

/// In a report, the names only; in the catalog cache (not human-readable), the whole
/// map: its values are the repository's text, a secret still a placeholder.
fn names_only<S: serde::Serializer>(
    env: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.collect_seq(env.keys())
    } else {
        serde::Serialize::serialize(env, s)
    }
}

pub const KIND: KindSpec = KindSpec {
    name: "command",
    doc: "a command run as an argv (or with /bin/sh -c), guarded by creates, unless, onlyif",
    keys: &[
        Key {
            name: "argv",
            shape: Shape::Strings,
            required: false,
            doc: "program and arguments, run without a shell (exactly one of argv and shell)",
        },
        Key {
            name: "shell",
            shape: Shape::Str,
            required: false,
            doc: "a script run with /bin/sh -c (exactly one of argv and shell)",
        },
        Key {
            name: "creates",
            shape: Shape::Path,
            required: false,
            doc: "in sync when this path exists",
        },
        Key {
            name: "unless",
            shape: Shape::Strings,
            required: false,
            doc: "argv; in sync when it exits 0",
        },
        Key {
            name: "onlyif",
            shape: Shape::Strings,
            required: false,
            doc: "argv; the command runs only when it exits 0",
        },
        Key {
            name: "environment",
            shape: Shape::StrMap,
            required: false,
            doc: "table of environment variables for the command and its guards",
        },
        Key {
            name: "cwd",
            shape: Shape::Path,
            required: false,
            doc: "working directory of the command and its guards",
        },
        Key {
            name: "user",
            shape: Shape::Str,
            required: false,
            doc: "run the command and its guards as this user",
        },
        Key {
            name: "timeout",
            shape: Shape::Duration,
            required: false,
            doc: "kill the command (or a guard) after this long; default \"10m\"",
        },
    ],
    build,
};

fn build(f: &Rendered<'_>, _ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    let at = |key: &str| f.values.get(key).map_or(f.step_pos, |(_, pos)| *pos);
    let err = |key: &str, message: String, hint: &str| {
        Diagnostic::new(f.file, Some(at(key)), message).hint(hint)
    };
    let run = match (f.opt_strings("argv")?, f.opt_str("shell")?) {
        (Some(argv), None) => {
            if argv.first().is_none_or(String::is_empty) {
                return Err(err(
                    "argv",
                    "`argv` must name a program: it is empty or starts with an empty string"
                        .to_owned(),
                    "write argv = [\"program\", \"arg\", ...]",
                ));
            }
            Program::Argv(argv)
        }
        (None, Some(script)) => {
            if script.trim().is_empty() {
                return Err(err(
                    "shell",
                    "`shell` is empty".to_owned(),
                    "write the script to run, e.g. shell = \"cmd1 && cmd2\"",
                ));
            }
            Program::Shell(script)
        }
        (Some(_), Some(_)) => {
            return Err(err(
                "shell",
                "a command step takes `argv` or `shell`, not both".to_owned(),
                "keep argv = [...] to run a program without a shell, or shell = \"...\" for /bin/sh -c",
            ));
        }
        (None, None) => {
            return Err(Diagnostic::new(
                f.file,
                Some(f.step_pos),
                "a command step needs exactly one of `argv` and `shell`",
            )
            .hint("write argv = [\"program\", \"arg\"] (no shell), or shell = \"...\" to run it with /bin/sh -c"));
        }
    };
    let guard = |key: &str| -> Result<Option<Vec<String>>, Diagnostic> {
        let argv = f.opt_strings(key)?;
        if argv
            .as_ref()
            .is_some_and(|a| a.first().is_none_or(String::is_empty))
        {
            return Err(err(
                key,
                format!("`{key}` must name a program: it is empty or starts with an empty string"),
                "write an argv such as [\"test\", \"-x\", \"/usr/bin/tool\"], or [\"sh\", \"-c\", \"...\"] for a shell",
            ));
        }
        Ok(argv)
    };
    let unless = guard("unless")?;
    let onlyif = guard("onlyif")?;
    let environment = f.opt_str_map("environment")?.unwrap_or_default();
    for (name, value) in &environment {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(err(
                "environment",
                format!("`environment`: {name:?} is not a variable name"),
                "a name is not empty and has no `=`, e.g. DEBIAN_FRONTEND",
            ));
        }
        if value.contains('\0') {
            return Err(err(
                "environment",
                format!("`environment.{name}` contains a NUL character"),
                "remove the NUL character",
            ));
        }
    }
    let user = f.opt_str("user")?;
    if let Some(u) = &user
        && (u.is_empty() || u.starts_with('-') || u.contains(char::is_whitespace))
    {
        return Err(err(
            "user",
            format!("`user` is {u:?}, which is not a user name"),
            "write the name of a user of the host, e.g. user = \"alice\"",
        ));
    }
    Ok(StepKind::Command(CommandStep {
        run,
        creates: f.opt_path("creates")?,
        unless,
        onlyif,
        environment,
        cwd: f.opt_path("cwd")?,
        user,
        timeout: f.opt_duration("timeout")?.unwrap_or(DEFAULT_TIMEOUT),
    }))
}
