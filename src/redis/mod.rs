//! Events out to a Redis list.
