//! `cargo fuzz run pickle`: see [`pystash_fuzz::pickle`] for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pystash_fuzz::pickle(data));
