//! infra-bootstrap and infra-stage.
//!
//! `infra-bootstrap` turns a fresh server reachable over SSH into a host managed by
//! infra-agent ([`bootstrap::run`]; docs/bootstrap.md). `infra-stage` runs the hosts of
//! `inventory/staging.toml` as Docker containers that converge the working tree
//! ([`stage::run`]; docs/staging.md).

pub mod bootstrap;
pub mod cli;
pub mod failure;
pub mod install;
pub mod keys;
pub mod known_hosts;
pub mod remote;
pub mod scripts;
pub mod secret;
pub mod ssh;
pub mod stage;
pub mod stage_standins;
pub mod state;
pub mod target;

pub use failure::Failure;
