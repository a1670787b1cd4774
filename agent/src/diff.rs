//! Unified diffs of file content (being written).
