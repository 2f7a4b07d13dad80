//! Fuzzes pricing: whatever usage an answer reports (modifiers, iterations, huge counts) and
//! whatever the request asked, `cost` never panics, `credits` agrees with it, and a modifier
//! never makes a request cheaper.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| metering_fuzz::price(data));
