#![no_main]
//! Target `vfio_server`: see `nic_fuzz::vfio::server`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nic_fuzz::vfio::server(data));
