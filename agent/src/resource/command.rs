//! The `command` resource (being written).

use super::{Ctx, Error, Plan};
use crate::step::command::CommandStep;

pub fn plan(_step: &CommandStep, _ctx: &Ctx<'_>) -> Result<Plan, Error> {
    Err(Error::Refused(
        "the command step is not available yet".to_owned(),
    ))
}

pub fn apply(_step: &CommandStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<(), Error> {
    Err(Error::Refused(
        "the command step is not available yet".to_owned(),
    ))
}

/// What a notification does: `None` when nothing.
pub fn refresh(_step: &CommandStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<Option<String>, Error> {
    Ok(None)
}

#[must_use]
pub fn describe(_step: &CommandStep) -> String {
    "command".to_owned()
}
