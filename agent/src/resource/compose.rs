//! The `compose` resource (being written).

use super::{Ctx, Error, Plan};
use crate::step::compose::ComposeStep;

pub fn plan(_step: &ComposeStep, _ctx: &Ctx<'_>) -> Result<Plan, Error> {
    Err(Error::Refused(
        "the compose step is not available yet".to_owned(),
    ))
}

pub fn apply(_step: &ComposeStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<(), Error> {
    Err(Error::Refused(
        "the compose step is not available yet".to_owned(),
    ))
}

/// What a notification does: `None` when nothing.
pub fn refresh(_step: &ComposeStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<Option<String>, Error> {
    Ok(None)
}

#[must_use]
pub fn describe(_step: &ComposeStep) -> String {
    "compose".to_owned()
}
