//! The `directory` step: a directory with owner, group and mode.

use super::{Attrs, BuildCtx, Key, KindSpec, Presence, Rendered, Shape, StepKind};
use crate::diag::Diagnostic;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirectoryStep {
    pub path: String,
    pub state: Presence,
    pub attrs: Attrs,
}

pub const KIND: KindSpec = KindSpec {
    name: "directory",
    doc: "a directory (absent: removed only when empty)",
    keys: &[
        Key {
            name: "path",
            shape: Shape::Path,
            required: true,
            doc: "absolute path of the directory",
        },
        super::OWNER,
        super::GROUP,
        Key {
            name: "mode",
            shape: Shape::Mode,
            required: false,
            doc: "octal mode; default: unchanged, \"0755\" when created",
        },
        super::STATE,
    ],
    build,
};

fn build(f: &Rendered<'_>, _ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    let path = f.path("path")?;
    let state = super::presence(f)?;
    if state == Presence::Absent {
        f.forbid(&["owner", "group", "mode"], "with state = \"absent\"")?;
    }
    Ok(StepKind::Directory(DirectoryStep {
        path,
        state,
        attrs: Attrs::read(f)?,
    }))
}
