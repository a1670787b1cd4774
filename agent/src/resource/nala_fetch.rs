//! The `nala_fetch` resource (being written).

use super::{Ctx, Error, Plan};
use crate::step::nala_fetch::NalaFetchStep;

pub fn plan(_step: &NalaFetchStep, _ctx: &Ctx<'_>) -> Result<Plan, Error> {
    Err(Error::Refused(
        "the nala_fetch step is not available yet".to_owned(),
    ))
}

pub fn apply(_step: &NalaFetchStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<(), Error> {
    Err(Error::Refused(
        "the nala_fetch step is not available yet".to_owned(),
    ))
}

/// What a notification does: `None` when nothing.
pub fn refresh(
    _step: &NalaFetchStep,
    _plan: &Plan,
    _ctx: &Ctx<'_>,
) -> Result<Option<String>, Error> {
    Ok(None)
}

#[must_use]
pub fn describe(_step: &NalaFetchStep) -> String {
    "nala_fetch".to_owned()
}
