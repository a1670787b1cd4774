//! The machine itself (being written).
#[derive(Debug)]
pub struct RealHost;
