//! An in-memory host for unit tests (being written).
#[derive(Debug)]
pub struct FakeHost;
