#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fluxtrail_fuzz::flux_event(data));
