//! The `apt_repository` resource (being written).

use super::{Ctx, Error, Plan};
use crate::step::apt_repository::AptRepositoryStep;

pub fn plan(_step: &AptRepositoryStep, _ctx: &Ctx<'_>) -> Result<Plan, Error> {
    Err(Error::Refused(
        "the apt_repository step is not available yet".to_owned(),
    ))
}

pub fn apply(_step: &AptRepositoryStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<(), Error> {
    Err(Error::Refused(
        "the apt_repository step is not available yet".to_owned(),
    ))
}

/// What a notification does: `None` when nothing.
pub fn refresh(
    _step: &AptRepositoryStep,
    _plan: &Plan,
    _ctx: &Ctx<'_>,
) -> Result<Option<String>, Error> {
    Ok(None)
}

#[must_use]
pub fn describe(_step: &AptRepositoryStep) -> String {
    "apt_repository".to_owned()
}
