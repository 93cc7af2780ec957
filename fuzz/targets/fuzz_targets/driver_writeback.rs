#![no_main]
//! Target `driver_writeback`: see `nic_fuzz::driver::writeback`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nic_fuzz::driver::writeback(data));
