//! Sockets in, frames out.
