#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rtvirt_fuzz::canlog::run(data));
