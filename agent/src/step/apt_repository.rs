//! The `apt_repository` step (being written: not in `KINDS` yet, so no repository can use it).

use super::{BuildCtx, KindSpec, Rendered, StepKind};
use crate::diag::Diagnostic;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AptRepositoryStep {}

pub const KIND: KindSpec = KindSpec {
    name: "apt_repository",
    doc: "",
    keys: &[],
    build,
};

fn build(f: &Rendered<'_>, _ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    Err(Diagnostic::new(
        f.file,
        Some(f.step_pos),
        "the apt_repository step is not available yet",
    ))
}
