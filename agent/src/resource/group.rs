//! The `group` resource (being written).

use super::{Ctx, Error, Plan};
use crate::step::group::GroupStep;

pub fn plan(_step: &GroupStep, _ctx: &Ctx<'_>) -> Result<Plan, Error> {
    Err(Error::Refused(
        "the group step is not available yet".to_owned(),
    ))
}

pub fn apply(_step: &GroupStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<(), Error> {
    Err(Error::Refused(
        "the group step is not available yet".to_owned(),
    ))
}

/// What a notification does: `None` when nothing.
pub fn refresh(_step: &GroupStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<Option<String>, Error> {
    Ok(None)
}

#[must_use]
pub fn describe(_step: &GroupStep) -> String {
    "group".to_owned()
}
