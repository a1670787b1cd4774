//! The `user` resource (being written).

use super::{Ctx, Error, Plan};
use crate::step::user::UserStep;

pub fn plan(_step: &UserStep, _ctx: &Ctx<'_>) -> Result<Plan, Error> {
    Err(Error::Refused(
        "the user step is not available yet".to_owned(),
    ))
}

pub fn apply(_step: &UserStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<(), Error> {
    Err(Error::Refused(
        "the user step is not available yet".to_owned(),
    ))
}

/// What a notification does: `None` when nothing.
pub fn refresh(_step: &UserStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<Option<String>, Error> {
    Ok(None)
}

#[must_use]
pub fn describe(_step: &UserStep) -> String {
    "user".to_owned()
}
