#![no_main]
//! Target `stack_l2`: see `nic_fuzz::l2::l2`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nic_fuzz::l2::l2(data));
