#![no_main]
//! Target `stack_nat`: see `nic_fuzz::netfilter::nat`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nic_fuzz::netfilter::nat(data));
