//! Fuzzes the ceiling of a request (`metering::ceiling`): whatever the body, it never panics, is
//! never negative, never counts more input than the largest context window, and never shrinks
//! when the request may produce more output.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| metering_fuzz::ceiling(data));
