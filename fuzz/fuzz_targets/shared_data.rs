//! Fuzzes the filter's decoders of what shared data holds (account and key entries, worker hold
//! reports): never a panic, and whatever decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| metering_fuzz::shared_data(data));
