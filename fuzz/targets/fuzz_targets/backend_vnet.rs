#![no_main]
//! Target `backend_vnet`: see `nic_fuzz::device::vnet`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nic_fuzz::device::vnet(data));
