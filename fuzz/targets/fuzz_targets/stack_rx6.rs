#![no_main]
//! Target `stack_rx6`: see `nic_fuzz::stack::rx6`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nic_fuzz::stack::rx6(data));
