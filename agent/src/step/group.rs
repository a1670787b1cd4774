//! The `group` step: a local group, or its removal.

use super::{BuildCtx, Key, KindSpec, Presence, Rendered, Shape, StepKind};
use crate::diag::Diagnostic;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupStep {
    pub name: String,
    pub state: Presence,
    /// Checked and changed only when given.
    pub gid: Option<u32>,
    /// Used when the group is created (`groupadd --system`); never changed later.
    pub system: bool,
}

pub const KIND: KindSpec = KindSpec {
    name: "group",
    doc: "a local group (absent: removed)",
    keys: &[
        Key {
            name: "name",
            shape: Shape::Str,
            required: true,
            doc: "the group name",
        },
        super::STATE,
        Key {
            name: "gid",
            shape: Shape::Int,
            required: false,
            doc: "numeric group id; default: chosen by groupadd, unchanged when the group exists",
        },
        Key {
            name: "system",
            shape: Shape::Bool,
            required: false,
            doc: "create a system group (`groupadd --system`); default false",
        },
    ],
    build,
};

fn build(f: &Rendered<'_>, _ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    let name = super::user::name_field(f, "name", "group")?;
    let state = super::presence(f)?;
    if state == Presence::Absent {
        f.forbid(&["gid", "system"], "with state = \"absent\"")?;
    }
    Ok(StepKind::Group(GroupStep {
        name,
        state,
        gid: f.opt_u32("gid")?,
        system: f.opt_bool("system")?.unwrap_or(false),
    }))
}
