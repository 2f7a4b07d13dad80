//! Fuzzes `metering::anthropic::AnthropicJsonMeter`: never a panic, and any split gives the whole body's result.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| metering_fuzz::check::<metering::anthropic::AnthropicJsonMeter>(data));
