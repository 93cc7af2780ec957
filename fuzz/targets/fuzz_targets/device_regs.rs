#![no_main]
//! Target `device_regs`: see `nic_fuzz::device::regs`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nic_fuzz::device::regs(data));
