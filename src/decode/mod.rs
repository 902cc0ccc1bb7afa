//! Frame payloads to [`Value`](crate::Value)s: pure, bounded, no code execution.

pub mod json;
pub mod pickle;
