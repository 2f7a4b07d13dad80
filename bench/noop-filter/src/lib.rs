//! The floors of `cargo xtask bench`: Proxy-Wasm HTTP filters that bill nothing, loaded exactly
//! like the billing filter (same V8 runtime, same SDK, same callbacks per request).
//!
//! - With any plugin configuration but `host-calls` (the bench passes the billing filter's own),
//!   it passes every request and answer through untouched: the gap between it and Envoy without
//!   any filter is what running any Rust wasm filter costs.
//! - With the plugin configuration `host-calls`, it makes the host calls that any filter billing
//!   a request as the contract says cannot do without, and nothing else: it reads the request's
//!   headers (the caller's key, the route), holds the request body to its end and reads it (the
//!   model is checked before the upstream gets a byte), replaces the key and asks for an
//!   uncompressed answer (two header edits), reads the response's headers (status, content type)
//!   and sets `x-claudestore-request-id`, reads every response body chunk (the usage), and reads
//!   the clock at admission and at the end. Each read takes the data into the VM and drops it
//!   unparsed. Its gap to Envoy without a filter is therefore a lower bound of any billing
//!   filter's cost in this Envoy; the gap between it and the billing filter is the billing
//!   filter's own code and the host calls beyond that minimum.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { host_calls: false }) });
}}

/// The plugin configuration that selects the host-call floor.
const HOST_CALLS: &[u8] = b"host-calls";

/// Stands for the operator's key the billing filter puts in the caller's key's place (as long as
/// an Anthropic key).
const UPSTREAM_KEY: &str =
    "sk-ant-api03-floor-floor-floor-floor-floor-floor-floor-floor-floor-floor-floor-floor-floor-floor-floorAA";

/// Stands for the debit id the billing filter sends back (a hyphenated UUID).
const REQUEST_ID: &str = "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";

struct Root {
    host_calls: bool,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.host_calls = config == HOST_CALLS;
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.host_calls {
            Some(Box::new(HostCalls))
        } else {
            Some(Box::new(Pass))
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Pass;

impl Context for Pass {}

impl HttpContext for Pass {}

struct HostCalls;

impl Context for HostCalls {}

#[link(wasm_import_module = "env")]
extern "C" {
    // The SDK's own binding, called directly as the billing filter does (the SDK's wrapper parses
    // the map into a String and a Vec per header: work of our own, not the host's).
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

/// Takes a header map into the VM and drops it, as the billing filter takes it (one host call).
fn read_header_map(map: MapType) {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: on success the host hands over a buffer of `size` bytes it allocated through the
    // SDK's `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes owned by this VM),
    // or null; the Vec takes it over and frees it, as the SDK does.
    unsafe {
        if proxy_get_header_map_pairs(map, &mut data, &mut size) == 0 && !data.is_null() {
            drop(Vec::from_raw_parts(data, size, size));
        }
    }
}

fn read_body(buffer: BufferType, size: usize) {
    let _ = hostcalls::get_buffer(buffer, 0, size);
}

fn read_clock() {
    let _ = hostcalls::get_current_time();
}

fn set_header(map: MapType, name: &str, value: &str) {
    let _ = hostcalls::set_map_value(map, name, Some(value));
}

impl HttpContext for HostCalls {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        read_header_map(MapType::HttpRequestHeaders);
        read_clock();
        set_header(MapType::HttpRequestHeaders, "x-api-key", UPSTREAM_KEY);
        set_header(MapType::HttpRequestHeaders, "accept-encoding", "identity");
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        read_body(BufferType::HttpRequestBody, body_size);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        read_header_map(MapType::HttpResponseHeaders);
        set_header(
            MapType::HttpResponseHeaders,
            "x-claudestore-request-id",
            REQUEST_ID,
        );
        if end_of_stream {
            read_clock();
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        read_body(BufferType::HttpResponseBody, body_size);
        if end_of_stream {
            read_clock();
        }
        Action::Continue
    }
}
