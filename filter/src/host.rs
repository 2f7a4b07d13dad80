//! The thin layer over the proxy-wasm host: every host call the filter makes goes through here,
//! through `proxy_wasm::hostcalls` (which return `Result`) rather than the trait helpers that
//! unwrap. Errors are logged or turned into neutral values; nothing here decides anything.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType, Status};

use filter_core::request::refusal::Refusal;
use filter_core::request::rewrite::Headers;
use filter_core::shared::accountcache::EPOCH_SHARDS;
use filter_core::shared::store::{SetError, SharedStore};

pub fn now() -> SystemTime {
    hostcalls::get_current_time().unwrap_or(UNIX_EPOCH)
}

pub fn now_ms() -> u64 {
    millis(now())
}

pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub fn now_utc() -> DateTime<Utc> {
    DateTime::<Utc>::from(now())
}

/// Random bytes from WASI (`random_get`), for debit ids and the worker id.
pub fn random<const N: usize>() -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).ok().map(|()| bytes)
}

/// Envoy shared data (one namespace per VM id, shared by every worker of the Envoy).
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }

    fn epoch(&self, shard: usize) -> Option<u64> {
        let id = epoch_id(shard)?;
        let mut value = 0u64;
        // SAFETY: the host writes one u64 through the pointer, which points at a live local.
        // 0 is `Ok`; on any other status the value is not used.
        (unsafe { proxy_get_metric(id, &mut value) } == 0).then_some(value)
    }

    fn bump_epoch(&self, shard: usize) {
        increment(epoch_id(shard), 1);
    }
}

/// A header value as text. The `_bytes` host calls are used because the SDK's string variants
/// unwrap UTF-8 decoding, and a caller can send any byte in a header value: a value that is not
/// UTF-8 reads as absent here instead of killing the VM.
fn map_value(map: MapType, name: &str) -> Option<String> {
    let bytes = hostcalls::get_map_value_bytes(map, name).ok().flatten()?;
    String::from_utf8(bytes).ok()
}

#[link(wasm_import_module = "env")]
extern "C" {
    // The SDK's own binding: its wrappers parse the map into a String and a Vec per header, and
    // panic on an unexpected status. The status is a plain integer here: a host may answer codes
    // the SDK's enum does not name.
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    // Also the SDK's binding, whose wrapper panics on a status it does not expect.
    fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
}

thread_local! {
    /// The account entries' write counters of this VM (see `accountcache`), once defined.
    static EPOCHS: std::cell::Cell<[Option<u32>; EPOCH_SHARDS]> =
        const { std::cell::Cell::new([None; EPOCH_SHARDS]) };
}

/// Defines the account entries' write counters (`claudestore.account_writes.N`): Envoy shares a
/// metric of one name between its workers, so every worker moves and reads the same ones.
pub fn define_epochs() {
    let mut ids = [None; EPOCH_SHARDS];
    for (shard, id) in ids.iter_mut().enumerate() {
        *id = define_counter(&format!("claudestore.account_writes.{shard}"));
    }
    EPOCHS.with(|e| e.set(ids));
}

fn epoch_id(shard: usize) -> Option<u32> {
    EPOCHS.with(|e| e.get().get(shard).copied().flatten())
}

/// A header map as the host serializes it, in one host call (empty when the host has none).
fn header_map(map: MapType) -> Headers {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and a size; on success the pointer is null or a buffer of
    // `size` bytes that it allocated through the SDK's `proxy_on_memory_allocate`, i.e. a boxed
    // slice of exactly `size` bytes owned by this VM, which the Vec takes over (as the SDK does).
    let raw = unsafe {
        match proxy_get_header_map_pairs(map, &mut data, &mut size) {
            // 0 is `Ok`.
            0 if !data.is_null() => Vec::from_raw_parts(data, size, size),
            _ => Vec::new(),
        }
    };
    Headers::from_serialized(raw)
}

/// The request's headers in one host call (each value stays bytes until read as text).
pub fn request_headers() -> Headers {
    header_map(MapType::HttpRequestHeaders)
}

pub fn set_request_header(name: &str, value: Option<&str>) {
    if let Err(e) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value) {
        log::warn!("could not set request header {name}: {e:?}");
    }
}

/// The response's headers in one host call.
pub fn response_headers() -> Headers {
    header_map(MapType::HttpResponseHeaders)
}

pub fn set_response_header(name: &str, value: Option<&str>) {
    if let Err(e) = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value) {
        log::warn!("could not set response header {name}: {e:?}");
    }
}

pub fn request_body(size: usize) -> Vec<u8> {
    hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Replaces the whole buffered request body.
pub fn replace_request_body(old_size: usize, body: &[u8]) -> bool {
    hostcalls::set_buffer(BufferType::HttpRequestBody, 0, old_size, body).is_ok()
}

pub fn response_body(size: usize) -> Vec<u8> {
    hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Answers the request locally; the upstream never gets (more of) it.
pub fn send_refusal(refusal: &Refusal) {
    let body = refusal.body();
    let headers = vec![("content-type", "application/json")];
    if let Err(e) = hostcalls::send_http_response(refusal.status(), headers, Some(&body)) {
        log::error!("could not send the {} refusal: {e:?}", refusal.status());
    }
}

pub fn resume_request() {
    if let Err(e) = hostcalls::resume_http_request() {
        log::warn!("could not resume the request: {e:?}");
    }
}

/// An HTTP call to the control plane. The token routes the answer to the calling context.
pub struct Call<'a> {
    pub cluster: &'a str,
    pub authority: &'a str,
    pub token: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub body: Option<&'a [u8]>,
    pub timeout: Duration,
}

pub fn dispatch(call: &Call<'_>) -> Result<u32, Status> {
    let bearer = format!("Bearer {}", call.token);
    let mut headers = vec![
        (":method", call.method),
        (":path", call.path),
        (":authority", call.authority),
        (":scheme", "http"),
        ("authorization", bearer.as_str()),
        ("accept", "application/json"),
    ];
    if call.body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    hostcalls::dispatch_http_call(call.cluster, headers, call.body, vec![], call.timeout)
}

/// The status of the call answer being handled (`None`: no answer, e.g. timeout or reset).
pub fn call_status() -> Option<u16> {
    map_value(MapType::HttpCallResponseHeaders, ":status").and_then(|s| s.parse().ok())
}

pub fn call_body(size: usize) -> Vec<u8> {
    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

pub fn set_tick_period(period: Duration) {
    if let Err(e) = hostcalls::set_tick_period(period) {
        log::error!("could not set the tick period: {e:?}");
    }
}

pub fn plugin_configuration() -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
}

/// Tells the host that a root context that answered `false` to `on_done` has finished.
pub fn done() {
    let _ = hostcalls::done();
}

pub fn define_counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

pub fn define_gauge(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Gauge, name).ok()
}

pub fn increment(id: Option<u32>, by: i64) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, by);
    }
}

pub fn record(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        let _ = hostcalls::record_metric(id, value);
    }
}
