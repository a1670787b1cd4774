//! The `package` resource (being written).

use super::{Ctx, Error, Plan};
use crate::step::package::PackageStep;

pub fn plan(_step: &PackageStep, _ctx: &Ctx<'_>) -> Result<Plan, Error> {
    Err(Error::Refused(
        "the package step is not available yet".to_owned(),
    ))
}

pub fn apply(_step: &PackageStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<(), Error> {
    Err(Error::Refused(
        "the package step is not available yet".to_owned(),
    ))
}

/// What a notification does: `None` when nothing.
pub fn refresh(_step: &PackageStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<Option<String>, Error> {
    Ok(None)
}

#[must_use]
pub fn describe(_step: &PackageStep) -> String {
    "package".to_owned()
}
