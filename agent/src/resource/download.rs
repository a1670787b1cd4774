//! The `download` resource (being written).

use super::{Ctx, Error, Plan};
use crate::step::download::DownloadStep;

pub fn plan(_step: &DownloadStep, _ctx: &Ctx<'_>) -> Result<Plan, Error> {
    Err(Error::Refused(
        "the download step is not available yet".to_owned(),
    ))
}

pub fn apply(_step: &DownloadStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<(), Error> {
    Err(Error::Refused(
        "the download step is not available yet".to_owned(),
    ))
}

/// What a notification does: `None` when nothing.
pub fn refresh(
    _step: &DownloadStep,
    _plan: &Plan,
    _ctx: &Ctx<'_>,
) -> Result<Option<String>, Error> {
    Ok(None)
}

#[must_use]
pub fn describe(_step: &DownloadStep) -> String {
    "download".to_owned()
}
