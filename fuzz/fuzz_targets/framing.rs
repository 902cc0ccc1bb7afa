//! `cargo fuzz run framing`: see [`pystash_fuzz::framing`] for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pystash_fuzz::framing(data));
