#![no_main]
//! Target `vfio_decode`: see `nic_fuzz::vfio::decode`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nic_fuzz::vfio::decode(data));
