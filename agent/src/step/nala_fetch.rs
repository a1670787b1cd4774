//! The `nala_fetch` step: `nala fetch --auto -y` once per host, to pick fast mirrors.
//! The resource remembers a successful fetch in the agent's state directory; a
//! failed fetch is a warning, not a failure (see `resource::nala_fetch`).

use std::time::Duration;

use super::{BuildCtx, Key, KindSpec, Rendered, Shape, StepKind};
use crate::diag::Diagnostic;

/// How long `nala fetch` may run when the step sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_mins(5);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NalaFetchStep {
    /// `--country CODE`: only mirrors of this country (ISO 3166 code, e.g. "DE").
    pub country: Option<String>,
    /// `--fetches N`: how many mirrors to keep (nala's default is 3).
    pub fetches: Option<u32>,
    /// `--https-only`.
    pub https_only: bool,
    /// `--non-free`: also the non-free components.
    pub non_free: bool,
    #[serde(with = "super::timeout_serde")]
    pub timeout: Duration,
}

impl NalaFetchStep {
    /// The arguments after `nala`.
    #[must_use]
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["fetch", "--auto", "-y"].map(str::to_owned).to_vec();
        if let Some(country) = &self.country {
            args.extend(["--country".to_owned(), country.clone()]);
        }
        if let Some(n) = self.fetches {
            args.extend(["--fetches".to_owned(), n.to_string()]);
        }
        if self.https_only {
            args.push("--https-only".to_owned());
        }
        if self.non_free {
            args.push("--non-free".to_owned());
        }
        args
    }
}

pub const KIND: KindSpec = KindSpec {
    name: "nala_fetch",
    doc: "`nala fetch --auto -y` once per host (remembered in the state directory); a failed fetch is a warning",
    keys: &[
        Key {
            name: "country",
            shape: Shape::Str,
            required: false,
            doc: "only mirrors of this country: an ISO 3166 code such as \"DE\" (nala fetch --country)",
        },
        Key {
            name: "fetches",
            shape: Shape::Int,
            required: false,
            doc: "how many mirrors to keep, 1 to 10 (nala fetch --fetches); default: nala's (3)",
        },
        Key {
            name: "https_only",
            shape: Shape::Bool,
            required: false,
            doc: "only https mirrors (nala fetch --https-only); default false",
        },
        Key {
            name: "non_free",
            shape: Shape::Bool,
            required: false,
            doc: "also the non-free components (nala fetch --non-free); default false",
        },
        Key {
            name: "timeout",
            shape: Shape::Duration,
            required: false,
            doc: "kill nala fetch after this long (a warning, tried again next run); default \"5m\"",
        },
    ],
    build,
};

fn build(f: &Rendered<'_>, _ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    let at = |key: &str| f.values.get(key).map_or(f.step_pos, |(_, pos)| *pos);
    let country = f.opt_str("country")?;
    if let Some(c) = &country
        && (c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_alphabetic()))
    {
        return Err(Diagnostic::new(
            f.file,
            Some(at("country")),
            format!("`country` is {c:?}, which is not a two-letter country code"),
        )
        .hint("write an ISO 3166 code, e.g. country = \"DE\""));
    }
    let fetches = f.opt_u32("fetches")?;
    if let Some(n) = fetches
        && !(1..=10).contains(&n)
    {
        return Err(Diagnostic::new(
            f.file,
            Some(at("fetches")),
            format!("`fetches` is {n}; nala keeps 1 to 10 mirrors"),
        )
        .hint("write fetches = 3"));
    }
    Ok(StepKind::NalaFetch(NalaFetchStep {
        country: country.map(|c| c.to_ascii_uppercase()),
        fetches,
        https_only: f.opt_bool("https_only")?.unwrap_or(false),
        non_free: f.opt_bool("non_free")?.unwrap_or(false),
        timeout: f.opt_duration("timeout")?.unwrap_or(DEFAULT_TIMEOUT),
    }))
}
