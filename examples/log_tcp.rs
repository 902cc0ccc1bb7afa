//! `log` records to Logstash's `tcp` input, one JSON event per line.
//!
//!     input { tcp { port => 5000 codec => json_lines } }
//!
//! Try it without Logstash: `nc -lk 127.0.0.1 5000` in one terminal, then
//! `cargo run --example log_tcp [127.0.0.1:5000]`.

use pystash::handler::{Builder, Destination};

fn main() -> Result<(), pystash::handler::HandlerError> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:5000".into());
    let handle = Builder::new(Destination::Tcp(addr))
        .message_type("example")
        .tags(["demo"])
        .init_log()?;

    log::info!(user = "ada", attempt = 1; "user {} logged in", "ada");
    let err = std::io::Error::other("connection reset");
    log::error!(err:err = err; "upstream failed");

    // Dropping the handle also does this: deliver what is queued, waiting a bounded time.
    let stats = handle.shutdown(std::time::Duration::from_secs(5));
    eprintln!("{stats:?}");
    Ok(())
}
