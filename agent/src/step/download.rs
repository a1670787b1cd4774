//! The `download` step (being written: not in `KINDS` yet, so no repository can use it).

use super::{BuildCtx, KindSpec, Rendered, StepKind};
use crate::diag::Diagnostic;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DownloadStep {}

pub const KIND: KindSpec = KindSpec {
    name: "download",
    doc: "",
    keys: &[],
    build,
};

fn build(f: &Rendered<'_>, _ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    Err(Diagnostic::new(
        f.file,
        Some(f.step_pos),
        "the download step is not available yet",
    ))
}
