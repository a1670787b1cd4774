//! The `package` step (being written: not in `KINDS` yet, so no repository can use it).

use super::{BuildCtx, KindSpec, Rendered, StepKind};
use crate::diag::Diagnostic;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PackageStep {}

pub const KIND: KindSpec = KindSpec {
    name: "package",
    doc: "",
    keys: &[],
    build,
};

fn build(f: &Rendered<'_>, _ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    Err(Diagnostic::new(
        f.file,
        Some(f.step_pos),
        "the package step is not available yet",
    ))
}
