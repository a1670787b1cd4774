//! Pulling the state repository from git (being written).
