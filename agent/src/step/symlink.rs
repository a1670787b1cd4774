//! The `symlink` step: a symbolic link pointing at a target.

use super::{BuildCtx, Key, KindSpec, Presence, Rendered, Shape, StepKind};
use crate::diag::Diagnostic;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SymlinkStep {
    pub path: String,
    pub state: Presence,
    /// What the link points at; `None` when absent.
    pub target: Option<String>,
}

pub const KIND: KindSpec = KindSpec {
    name: "symlink",
    doc: "a symbolic link",
    keys: &[
        Key {
            name: "path",
            shape: Shape::Path,
            required: true,
            doc: "absolute path of the link",
        },
        Key {
            name: "target",
            shape: Shape::Str,
            required: false,
            doc: "what the link points at (required unless absent); relative targets are relative to the link's directory",
        },
        super::STATE,
    ],
    build,
};

fn build(f: &Rendered<'_>, _ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    let path = f.path("path")?;
    let state = super::presence(f)?;
    if state == Presence::Absent {
        f.forbid(&["target"], "with state = \"absent\"")?;
        return Ok(StepKind::Symlink(SymlinkStep {
            path,
            state,
            target: None,
        }));
    }
    let target = f.str("target")?;
    if target.is_empty() {
        return Err(
            Diagnostic::new(f.file, Some(f.values["target"].1), "`target` is empty")
                .hint("write the path the link should point at"),
        );
    }
    Ok(StepKind::Symlink(SymlinkStep {
        path,
        state,
        target: Some(target),
    }))
}
