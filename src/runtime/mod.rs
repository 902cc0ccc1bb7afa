//! The event loops.
