//! The `service` resource (being written).

use super::{Ctx, Error, Plan};
use crate::step::service::ServiceStep;

pub fn plan(_step: &ServiceStep, _ctx: &Ctx<'_>) -> Result<Plan, Error> {
    Err(Error::Refused(
        "the service step is not available yet".to_owned(),
    ))
}

pub fn apply(_step: &ServiceStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<(), Error> {
    Err(Error::Refused(
        "the service step is not available yet".to_owned(),
    ))
}

/// What a notification does: `None` when nothing.
pub fn refresh(_step: &ServiceStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<Option<String>, Error> {
    Ok(None)
}

#[must_use]
pub fn describe(_step: &ServiceStep) -> String {
    "service".to_owned()
}
