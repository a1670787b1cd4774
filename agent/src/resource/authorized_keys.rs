//! The `authorized_keys` resource (being written).

use super::{Ctx, Error, Plan};
use crate::step::authorized_keys::AuthorizedKeysStep;

pub fn plan(_step: &AuthorizedKeysStep, _ctx: &Ctx<'_>) -> Result<Plan, Error> {
    Err(Error::Refused(
        "the authorized_keys step is not available yet".to_owned(),
    ))
}

pub fn apply(_step: &AuthorizedKeysStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<(), Error> {
    Err(Error::Refused(
        "the authorized_keys step is not available yet".to_owned(),
    ))
}

/// What a notification does: `None` when nothing.
pub fn refresh(
    _step: &AuthorizedKeysStep,
    _plan: &Plan,
    _ctx: &Ctx<'_>,
) -> Result<Option<String>, Error> {
    Ok(None)
}

#[must_use]
pub fn describe(_step: &AuthorizedKeysStep) -> String {
    "authorized_keys".to_owned()
}
