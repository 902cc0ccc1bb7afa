//! `tracing` events into a Redis list, with the fields of the enclosing spans
//! (`cargo run --features tracing --example tracing_redis [redis://127.0.0.1:6379]`).

use pystash::handler::{Builder, Destination};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

fn main() -> Result<(), pystash::handler::HandlerError> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or("redis://127.0.0.1:6379".into());
    let (layer, _handle) = Builder::new(Destination::redis(&url)?)
        .message_type("example")
        .build_layer()?;
    tracing_subscriber::registry()
        .with(layer.with_filter(LevelFilter::INFO))
        .init();

    let span = tracing::info_span!("request", request_id = 7, route = "/pay");
    let _entered = span.enter();
    tracing::info!(user = "ada", amount = 12.5, "payment accepted");
    let err = std::io::Error::other("card expired");
    tracing::error!(error = &err as &dyn std::error::Error, "payment failed");
    Ok(())
}
