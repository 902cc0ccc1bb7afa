//! `log` records to a pystash proxy, which formats them with its own settings and pushes them
//! to Redis: `tcp` (default), `udp` or `unix` as the first argument.
//!
//! Try it: `redis-server --save ''`, `cargo run -- --unix /tmp/pystash.sock`, then
//! `cargo run --example log_pystash [tcp 127.0.0.1:9020 | udp 127.0.0.1:9021 | unix /tmp/pystash.sock]`.

use pystash::handler::{Builder, Destination};

fn main() -> Result<(), pystash::handler::HandlerError> {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or("tcp".into());
    let destination = match (kind.as_str(), args.next()) {
        ("udp", addr) => Destination::PystashUdp(addr.unwrap_or("127.0.0.1:9021".into())),
        ("unix", path) => {
            Destination::PystashUnix(path.unwrap_or("/tmp/pystash.sock".into()).into())
        }
        (_, addr) => Destination::PystashTcp(addr.unwrap_or("127.0.0.1:9020".into())),
    };
    // The proxy applies its own --message-type, --host-name and --logstash-tags;
    // these tags go first in each record's own `tags`.
    let _handle = Builder::new(destination).tags(["from-rust"]).init_log()?;

    log::info!(request_id = 42, tags = "checkout"; "order {} placed", 1001);
    Ok(())
}
