//! The floor of `cargo xtask bench`: a Proxy-Wasm HTTP filter that passes every request and answer
//! through untouched. Envoy loads it exactly as it loads the billing filter (same V8 runtime, same
//! SDK, same callbacks per request), so the gap between it and Envoy without any filter is what
//! running any Rust wasm filter costs; the gap between it and the billing filter is our own work.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Pass))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Pass;

impl Context for Pass {}

impl HttpContext for Pass {}
