//! `log` records into a Redis list, for Logstash's `redis` input (batched multi-value RPUSH).
//!
//!     input { redis { host => "127.0.0.1" data_type => "list" key => "logstash" codec => json } }
//!
//! Try it: `redis-server --port 6379 --save ''`, then
//! `cargo run --example log_redis [redis://127.0.0.1:6379/0]`, then
//! `redis-cli lrange logstash 0 -1`.

use std::time::Duration;

use pystash::handler::{Builder, Destination, OnFull};

fn main() -> Result<(), pystash::handler::HandlerError> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or("redis://127.0.0.1:6379/0".into());
    let handle = Builder::new(Destination::redis(&url)?)
        .redis_key("logstash")
        .on_full(OnFull::Drop)
        .init_log()?;

    for i in 0..10_000 {
        log::info!(seq = i; "record {i}");
    }
    let delivered = handle.flush(Duration::from_secs(5));
    eprintln!("delivered: {delivered}, {:?}", handle.stats());
    if let Some(err) = handle.last_error() {
        eprintln!("last error: {err}");
    }
    Ok(())
}
