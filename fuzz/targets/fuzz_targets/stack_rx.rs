#![no_main]
//! Target `stack_rx`: see `nic_fuzz::stack::rx`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nic_fuzz::stack::rx(data));
