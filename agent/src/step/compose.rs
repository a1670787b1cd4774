//! The `compose` step (being written: not in `KINDS` yet, so no repository can use it).

use super::{BuildCtx, KindSpec, Rendered, StepKind};
use crate::diag::Diagnostic;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ComposeStep {}

pub const KIND: KindSpec = KindSpec {
    name: "compose",
    doc: "",
    keys: &[],
    build,
};

fn build(f: &Rendered<'_>, _ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    Err(Diagnostic::new(
        f.file,
        Some(f.step_pos),
        "the compose step is not available yet",
    ))
}
