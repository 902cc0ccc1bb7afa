//! `cargo fuzz run resp_reply`: see [`pystash_fuzz::resp_reply`] for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pystash_fuzz::resp_reply(data));
