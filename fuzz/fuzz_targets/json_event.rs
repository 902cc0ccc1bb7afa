//! `cargo fuzz run json_event`: see [`pystash_fuzz::json_event`] for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pystash_fuzz::json_event(data));
