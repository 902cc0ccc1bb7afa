//! Events out to a Redis list: [`resp`] encodes commands, [`pipeline`] keeps every event until
//! Redis acknowledged it, [`session`] runs the connection's protocol without a socket, and
//! [`sink`] drives it over a mio socket for the epoll engine.

pub mod pipeline;
pub mod resp;
pub mod session;
pub mod sink;
