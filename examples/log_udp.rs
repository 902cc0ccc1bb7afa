//! `log` records to Logstash's `udp` input, one JSON event per datagram.
//!
//!     input { udp { port => 5959 codec => json } }
//!
//! Try it without Logstash: `nc -lku 127.0.0.1 5959` in one terminal, then
//! `cargo run --example log_udp [127.0.0.1:5959]`.

use log::LevelFilter;
use pystash::event::LogstashVersion;
use pystash::handler::{Builder, Destination};

fn main() -> Result<(), pystash::handler::HandlerError> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:5959".into());
    let _handle = Builder::new(Destination::Udp(addr))
        .version(LogstashVersion::V1)
        .level(LevelFilter::Debug)
        .init_log()?;

    for i in 0..3 {
        log::debug!(i = i, ratio = i as f64 / 2.0; "datagram number {i}");
    }
    log::warn!(target: "billing", amount = 12.5, currency = "EUR"; "refund issued");
    Ok(()) // dropping the handle delivers what is queued
}
