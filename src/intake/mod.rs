//! Sockets in, frames out: framing is pure ([`framing`]); the engines in
//! [`runtime`](crate::runtime) own the sockets. [`Decoder`] turns one frame into one event.

pub mod framing;
