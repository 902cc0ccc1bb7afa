//! Replays the committed fuzz seeds (`fuzz/seeds/<target>/`: real CPython frames, JSON lines,
//! RESP replies, and every crash input found so far) through the checks the fuzz targets run,
//! so `cargo test` keeps them passing without cargo-fuzz. `scripts/fuzz.sh` runs the fuzzers.

use std::fs;
use std::path::Path;

#[allow(unreachable_pub)]
#[path = "../fuzz/checks.rs"]
mod checks;

/// Runs `check` on every seed of `target`.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut seeds: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("seed directory entry").path())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    for seed in seeds {
        let data = fs::read(&seed).expect("seed readable");
        eprintln!("{}", seed.display());
        check(&data);
    }
}

#[test]
fn framing_seeds() {
    replay("framing", checks::framing);
}

#[test]
fn pickle_seeds() {
    replay("pickle", checks::pickle);
}

#[test]
fn json_event_seeds() {
    replay("json_event", checks::json_event);
}

#[test]
fn resp_reply_seeds() {
    replay("resp_reply", checks::resp_reply);
}
