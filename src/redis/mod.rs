//! Events out to a Redis list: [`resp`] encodes commands, [`pipeline`] keeps every event until
//! Redis acknowledged it, [`sink`] owns the connection.

pub mod pipeline;
pub mod resp;
pub mod sink;
