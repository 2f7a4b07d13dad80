//! The plugin configuration: the JSON Envoy hands to `on_configure`, parsed once into [`Config`],
//! validated, and shared read-only by every request of the worker.
//!
//! Schema (every field but `internal_token` or `internal_token_env` optional; defaults in brackets):
//!
//! | field | meaning |
//! |---|---|
//! | `internal_token` | bearer token for the control plane's internal API (required, non-empty) |
//! | `internal_token_env` | instead: the name of the VM's environment variable holding it (Envoy `vm_config.environment_variables`, Istio `vmConfig.env`), so that no manifest holds the secret |
//! | `control_plane_cluster` | Envoy cluster of the control plane [`billing-control`] |
//! | `control_plane_authority` | `:authority` of internal calls [the cluster name] |
//! | `upstream_api_key` | operator key set on upstream requests [none: no key set, e.g. fake upstream] |
//! | `upstream_api_key_header` | instead: copy the operator key from this request header (then removed) |
//! | `upstream_api_key_env` | instead: the name of the VM's environment variable holding the operator key |
//! | `routes` | `[{"method","path" or "path_prefix","kind"}]`, kind one of `anthropic_messages`, `openai_chat_completions`, `free`, `control_plane` [the contract's six routes] |
//! | `sync_period_ms` | snapshot pull period of the leader [250] |
//! | `flush_period_ms` | debit flush period, also the backoff base [500] |
//! | `flush_backoff_max_ms` | backoff cap for failed flushes [30000] |
//! | `fail_mode` | `open` or `closed` [open] |
//! | `stale_after_ms` | no snapshot answer for this long = control plane unreachable [5000] |
//! | `lease_ttl_ms` | sync leader lease, at least 2 x sync period [2000] |
//! | `debit_buffer_max` | debits buffered + billed requests in flight per worker before 503 [10000] |
//! | `debit_batch_max` | debits per POST [1000] |
//! | `negative_cache_size`, `negative_cache_ttl_ms` | per-worker cache of unknown keys [1024, 5000] |
//! | `lookup_timeout_ms`, `call_timeout_ms` | key lookup / snapshot and debit call timeouts [2000, 5000] |
//! | `lookup_rate_per_s`, `lookup_burst` | per-worker token bucket of key lookups (keys not cached yet); when empty, an unknown key gets 503 [50, 100] |
//! | `snapshot_page_limit` | `limit` of snapshot pages: rows applied per callback [500] |
//! | `cas_retries` | compare-and-swap attempts per shared-data update [32] |
//! | `spend_publish_fraction` | a worker adds its local spend to the shared account entry on the next tick while it stays at most this fraction of the account's spendable balance, at once beyond it; 0: at once always [0.01] |
//! | `price_factor` | factor of the built-in price table used until the first snapshot brings prices [0.70] |
//! | `gateway_id` | sent in debit batches, for operations [none] |
//! | `hold_ttl_ms` | how long a request's hold on its account's credits lasts at most: a request whose end never comes (its worker or VM gone) stops holding then; keep it above the route's timeout (spend control `reserve`) [960000] |
//! | `reserve_input_bytes_per_token` | request body bytes (base64 media left out) per input token in a request's ceiling [2.5] |
//! | `reserve_media_block_tokens` | input tokens a base64 image or document block counts for in a ceiling [4000] |
//! | `reserve_output_tokens_default` | output tokens of a ceiling when neither the request's `max_tokens` nor the price table bounds them [64000] |
//! | `reserve_web_searches_default` | searches a web search tool without `max_uses` counts for in a ceiling [10] |
//! | `reserve_input_tokens_max` | the most input tokens a ceiling counts (the largest context window: the upstream refuses longer prompts) [1000000] |
//!
//! Unknown fields are refused (`deny_unknown_fields`) so that a typo fails the load instead of
//! silently falling back to a default. Secrets (internal token, upstream key) never appear in
//! [`Config::summary`], the only thing that is logged.

use std::time::Duration;

use metering::wire::Route;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::request::route::{RouteKind, RouteRule, RouteTable};

/// What the filter does when the control plane cannot be reached (no successful sync for
/// `stale_after_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Serve known keys on the cached balances; debits stay buffered.
    #[default]
    Open,
    /// Refuse every request with 503.
    Closed,
}

/// The raw JSON shape. Field names are the public configuration schema (see the crate docs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_cluster")]
    control_plane_cluster: String,
    #[serde(default)]
    control_plane_authority: Option<String>,
    #[serde(default)]
    internal_token: Option<String>,
    #[serde(default)]
    internal_token_env: Option<String>,
    #[serde(default)]
    upstream_api_key: Option<String>,
    #[serde(default)]
    upstream_api_key_header: Option<String>,
    #[serde(default)]
    upstream_api_key_env: Option<String>,
    #[serde(default)]
    routes: Option<Vec<RouteRuleConfig>>,
    #[serde(default = "default_sync_period_ms")]
    sync_period_ms: u64,
    #[serde(default = "default_flush_period_ms")]
    flush_period_ms: u64,
    #[serde(default = "default_flush_backoff_max_ms")]
    flush_backoff_max_ms: u64,
    #[serde(default)]
    fail_mode: FailMode,
    #[serde(default = "default_stale_after_ms")]
    stale_after_ms: u64,
    #[serde(default = "default_lease_ttl_ms")]
    lease_ttl_ms: u64,
    #[serde(default = "default_debit_buffer_max")]
    debit_buffer_max: usize,
    #[serde(default = "default_debit_batch_max")]
    debit_batch_max: usize,
    #[serde(default = "default_negative_cache_size")]
    negative_cache_size: usize,
    #[serde(default = "default_negative_cache_ttl_ms")]
    negative_cache_ttl_ms: u64,
    #[serde(default = "default_lookup_timeout_ms")]
    lookup_timeout_ms: u64,
    #[serde(default = "default_call_timeout_ms")]
    call_timeout_ms: u64,
    #[serde(default = "default_lookup_rate_per_s")]
    lookup_rate_per_s: u32,
    #[serde(default = "default_lookup_burst")]
    lookup_burst: u32,
    #[serde(default = "default_snapshot_page_limit")]
    snapshot_page_limit: u32,
    #[serde(default = "default_cas_retries")]
    cas_retries: u32,
    #[serde(default = "default_spend_publish_fraction")]
    spend_publish_fraction: Decimal,
    #[serde(default)]
    price_factor: Option<Decimal>,
    #[serde(default)]
    gateway_id: Option<String>,
    #[serde(default = "default_hold_ttl_ms")]
    hold_ttl_ms: u64,
    #[serde(default)]
    reserve_input_bytes_per_token: Option<Decimal>,
    #[serde(default)]
    reserve_media_block_tokens: Option<u64>,
    #[serde(default)]
    reserve_output_tokens_default: Option<u64>,
    #[serde(default)]
    reserve_web_searches_default: Option<u64>,
    #[serde(default)]
    reserve_input_tokens_max: Option<u64>,
}

// Above the shipped route timeout (900 s), which bounds every answer, streams included: a hold
// outlives its request. Longer would keep the credits of a request whose worker died unusable for
// longer.
fn default_hold_ttl_ms() -> u64 {
    960_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteRuleConfig {
    method: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    path_prefix: Option<String>,
    kind: RouteKindConfig,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RouteKindConfig {
    AnthropicMessages,
    OpenaiChatCompletions,
    Free,
    ControlPlane,
}

fn default_cluster() -> String {
    "billing-control".to_owned()
}
fn default_sync_period_ms() -> u64 {
    250
}
fn default_flush_period_ms() -> u64 {
    500
}
fn default_flush_backoff_max_ms() -> u64 {
    30_000
}
fn default_stale_after_ms() -> u64 {
    5_000
}
fn default_lease_ttl_ms() -> u64 {
    2_000
}
fn default_debit_buffer_max() -> usize {
    10_000
}
// One batch is in flight per worker at a time and takes tens of ms at the control plane: at 200
// per batch a busy worker served more requests than it could flush (`cargo xtask bench`: the
// buffer filled and answered 503 at 11,600 req/s); 1,000 keeps flushing ahead of one worker.
fn default_debit_batch_max() -> usize {
    1000
}
fn default_negative_cache_size() -> usize {
    1_024
}
fn default_negative_cache_ttl_ms() -> u64 {
    5_000
}
fn default_lookup_timeout_ms() -> u64 {
    2_000
}
fn default_call_timeout_ms() -> u64 {
    5_000
}
// Well-formed keys can be minted by anyone: this bounds the control-plane calls they can cause,
// far above what legitimate new keys need (a new key is looked up once per Envoy, then cached).
fn default_lookup_rate_per_s() -> u32 {
    50
}
fn default_lookup_burst() -> u32 {
    100
}
fn default_snapshot_page_limit() -> u32 {
    500
}
fn default_cas_retries() -> u32 {
    32
}
// Each worker's unpublished spend stays under 1% of what the account can spend, so the spend no
// other worker sees yet is at most workers x 1% of it: no overdraft below a hundred workers.
fn default_spend_publish_fraction() -> Decimal {
    Decimal::new(1, 2)
}

/// The routes of the public contract: the two billed APIs, the two free ones, and the customer
/// self-service routes that Envoy sends to the control plane.
fn default_routes() -> Vec<RouteRule> {
    let rule = |method: &str, path: &str, kind| RouteRule::exact(method, path, kind);
    vec![
        rule(
            "POST",
            "/v1/messages",
            RouteKind::Billed(Route::AnthropicMessages),
        ),
        rule(
            "POST",
            "/v1/chat/completions",
            RouteKind::Billed(Route::OpenaiChatCompletions),
        ),
        rule("POST", "/v1/messages/count_tokens", RouteKind::Free),
        rule("GET", "/v1/models", RouteKind::Free),
        rule("GET", "/v1/me", RouteKind::ControlPlane),
        rule("GET", "/v1/me/usage", RouteKind::ControlPlane),
    ]
}

/// Where the operator's upstream key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamKey {
    /// No key is set (a fake or keyless upstream, e.g. demo mode).
    None,
    /// The key itself.
    Inline(String),
    /// Copied from this request header, which Envoy (or the mesh) sets and which is then removed.
    FromHeader(String),
}

/// The validated configuration, immutable for the life of the plugin.
#[derive(Debug, Clone)]
pub struct Config {
    pub control_plane_cluster: String,
    pub control_plane_authority: String,
    pub internal_token: String,
    pub upstream_key: UpstreamKey,
    pub routes: RouteTable,
    pub sync_period: Duration,
    pub flush_period: Duration,
    pub flush_backoff_max: Duration,
    pub fail_mode: FailMode,
    pub stale_after: Duration,
    pub lease_ttl: Duration,
    pub debit_buffer_max: usize,
    pub debit_batch_max: usize,
    pub negative_cache_size: usize,
    pub negative_cache_ttl: Duration,
    pub lookup_timeout: Duration,
    pub call_timeout: Duration,
    pub lookup_rate_per_s: u32,
    pub lookup_burst: u32,
    pub snapshot_page_limit: u32,
    pub cas_retries: u32,
    /// Local spend a worker may keep to itself until its next tick, as a fraction of the account's
    /// spendable balance (see `Worker::record_debit`).
    pub spend_publish_fraction: Decimal,
    /// Factor of the built-in price table used until the first snapshot brings the real one.
    pub price_factor: Decimal,
    pub gateway_id: Option<String>,
    pub hold_ttl: Duration,
    pub ceiling: metering::ceiling::CeilingRules,
}

impl Config {
    /// Parses and validates the plugin configuration. The error names the field and what to do.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|e| format!("plugin configuration is not valid: {e}"))?;
        raw.validate()
    }

    /// The timer period: the root context does all periodic work on one tick.
    pub fn tick_period(&self) -> Duration {
        self.sync_period.min(self.flush_period)
    }

    /// A one-line description for the log, without secrets.
    pub fn summary(&self) -> String {
        let key = match &self.upstream_key {
            UpstreamKey::None => "none".to_owned(),
            UpstreamKey::Inline(_) => "inline (redacted)".to_owned(),
            UpstreamKey::FromHeader(h) => format!("from header {h}"),
        };
        format!(
            "control plane cluster={} authority={}, upstream key {key}, {} routes, sync {:?}, flush {:?}, \
             fail mode {:?}, stale after {:?}, debit buffer {} (batch {}), negative cache {} for {:?}",
            self.control_plane_cluster,
            self.control_plane_authority,
            self.routes.len(),
            self.sync_period,
            self.flush_period,
            self.fail_mode,
            self.stale_after,
            self.debit_buffer_max,
            self.debit_batch_max,
            self.negative_cache_size,
            self.negative_cache_ttl,
        )
    }
}

fn in_range(name: &str, value: u64, min: u64, max: u64) -> Result<u64, String> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{name} is {value}; it must be between {min} and {max}"))
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A secret given inline or by the name of the VM's environment variable that holds it (read
/// once, at configuration). The variable's name may be logged; its value never is.
fn secret(field: &str, inline: Option<String>, env: Option<String>) -> Result<Option<String>, String> {
    match (inline, env) {
        (Some(_), Some(_)) => Err(format!("set {field} or {field}_env, not both")),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(name)) => match std::env::var(&name) {
            Ok(v) => Ok(Some(v)),
            Err(_) => Err(format!(
                "{field}_env names {name:?}, which is not in the VM's environment (Envoy \
                 vm_config.environment_variables, Istio vmConfig.env)"
            )),
        },
        (None, None) => Ok(None),
    }
}

impl RawConfig {
    fn validate(mut self) -> Result<Config, String> {
        let internal_token = secret(
            "internal_token",
            self.internal_token.take(),
            self.internal_token_env.take(),
        )?
        .unwrap_or_default();
        if internal_token.trim().is_empty() {
            return Err("internal_token is empty; set it to the control plane's INTERNAL_TOKEN".into());
        }
        let upstream_api_key = secret(
            "upstream_api_key",
            self.upstream_api_key.take(),
            self.upstream_api_key_env.take(),
        )?;
        if self.control_plane_cluster.trim().is_empty() {
            return Err("control_plane_cluster is empty; name the Envoy cluster of the control plane".into());
        }
        let upstream_key = match (upstream_api_key, self.upstream_api_key_header) {
            (Some(_), Some(_)) => {
                return Err("set upstream_api_key or upstream_api_key_header, not both".into());
            }
            (Some(k), None) if k.is_empty() => UpstreamKey::None,
            (Some(k), None) => {
                if k.bytes().any(|b| b.is_ascii_control()) {
                    return Err("upstream_api_key contains control characters".into());
                }
                UpstreamKey::Inline(k)
            }
            (None, Some(h)) => {
                let h = h.to_ascii_lowercase();
                if !is_header_name(&h) || h == "x-api-key" || h == "authorization" {
                    return Err(format!(
                        "upstream_api_key_header {h:?} must be a lowercase header name other than the \
                         caller's key headers"
                    ));
                }
                UpstreamKey::FromHeader(h)
            }
            (None, None) => UpstreamKey::None,
        };
        let sync = in_range("sync_period_ms", self.sync_period_ms, 10, 60_000)?;
        let flush = in_range("flush_period_ms", self.flush_period_ms, 10, 60_000)?;
        let backoff = in_range(
            "flush_backoff_max_ms",
            self.flush_backoff_max_ms,
            flush,
            3_600_000,
        )?;
        let stale = in_range("stale_after_ms", self.stale_after_ms, sync, 3_600_000)?;
        // The lease must outlive a sync period, or leadership flaps between workers.
        let lease = in_range("lease_ttl_ms", self.lease_ttl_ms, sync.saturating_mul(2), 600_000)?;
        let buffer = in_range("debit_buffer_max", self.debit_buffer_max as u64, 1, 10_000_000)?;
        let batch = in_range("debit_batch_max", self.debit_batch_max as u64, 1, 10_000)?;
        let neg_size = in_range(
            "negative_cache_size",
            self.negative_cache_size as u64,
            0,
            1_000_000,
        )?;
        let neg_ttl = in_range("negative_cache_ttl_ms", self.negative_cache_ttl_ms, 0, 600_000)?;
        let lookup = in_range("lookup_timeout_ms", self.lookup_timeout_ms, 1, 60_000)?;
        let call = in_range("call_timeout_ms", self.call_timeout_ms, 1, 600_000)?;
        let lookup_rate = in_range(
            "lookup_rate_per_s",
            u64::from(self.lookup_rate_per_s),
            1,
            1_000_000,
        )?;
        let lookup_burst = in_range("lookup_burst", u64::from(self.lookup_burst), 1, 1_000_000)?;
        let page = in_range(
            "snapshot_page_limit",
            u64::from(self.snapshot_page_limit),
            1,
            10_000,
        )?;
        let cas = in_range("cas_retries", u64::from(self.cas_retries), 1, 1_000)?;
        if self.spend_publish_fraction.is_sign_negative() || self.spend_publish_fraction > Decimal::new(1, 1)
        {
            return Err(format!(
                "spend_publish_fraction is {}; it must be between 0 and 0.1",
                self.spend_publish_fraction
            ));
        }
        let price_factor = self
            .price_factor
            .unwrap_or_else(metering::price::default_price_factor);
        metering::price::check_factor(price_factor).map_err(|why| format!("price_factor {why}"))?;
        let hold_ttl = in_range("hold_ttl_ms", self.hold_ttl_ms, 1_000, 86_400_000)?;
        let defaults = metering::ceiling::CeilingRules::default();
        let bytes_per_token = self
            .reserve_input_bytes_per_token
            .unwrap_or(defaults.input_bytes_per_token);
        if bytes_per_token < Decimal::new(1, 1) || bytes_per_token > Decimal::from(100) {
            return Err(format!(
                "reserve_input_bytes_per_token is {bytes_per_token}; it must be between 0.1 and 100"
            ));
        }
        let ceiling = metering::ceiling::CeilingRules {
            input_bytes_per_token: bytes_per_token,
            media_block_tokens: in_range(
                "reserve_media_block_tokens",
                self.reserve_media_block_tokens
                    .unwrap_or(defaults.media_block_tokens),
                0,
                10_000_000,
            )?,
            output_tokens_default: in_range(
                "reserve_output_tokens_default",
                self.reserve_output_tokens_default
                    .unwrap_or(defaults.output_tokens_default),
                1,
                10_000_000,
            )?,
            web_searches_default: in_range(
                "reserve_web_searches_default",
                self.reserve_web_searches_default
                    .unwrap_or(defaults.web_searches_default),
                0,
                100_000,
            )?,
            input_tokens_max: in_range(
                "reserve_input_tokens_max",
                self.reserve_input_tokens_max.unwrap_or(defaults.input_tokens_max),
                1,
                100_000_000,
            )?,
        };
        let routes = match self.routes {
            None => RouteTable::new(default_routes())?,
            Some(rules) => RouteTable::new(
                rules
                    .into_iter()
                    .map(RouteRuleConfig::compile)
                    .collect::<Result<_, _>>()?,
            )?,
        };
        let authority = self
            .control_plane_authority
            .filter(|a| !a.trim().is_empty())
            .unwrap_or_else(|| self.control_plane_cluster.clone());
        Ok(Config {
            control_plane_cluster: self.control_plane_cluster,
            control_plane_authority: authority,
            internal_token,
            upstream_key,
            routes,
            sync_period: Duration::from_millis(sync),
            flush_period: Duration::from_millis(flush),
            flush_backoff_max: Duration::from_millis(backoff),
            fail_mode: self.fail_mode,
            stale_after: Duration::from_millis(stale),
            lease_ttl: Duration::from_millis(lease),
            debit_buffer_max: usize::try_from(buffer).unwrap_or(usize::MAX),
            debit_batch_max: usize::try_from(batch).unwrap_or(usize::MAX),
            negative_cache_size: usize::try_from(neg_size).unwrap_or(usize::MAX),
            negative_cache_ttl: Duration::from_millis(neg_ttl),
            lookup_timeout: Duration::from_millis(lookup),
            call_timeout: Duration::from_millis(call),
            lookup_rate_per_s: u32::try_from(lookup_rate).unwrap_or(u32::MAX),
            lookup_burst: u32::try_from(lookup_burst).unwrap_or(u32::MAX),
            snapshot_page_limit: u32::try_from(page).unwrap_or(u32::MAX),
            cas_retries: u32::try_from(cas).unwrap_or(u32::MAX),
            spend_publish_fraction: self.spend_publish_fraction,
            price_factor,
            gateway_id: self.gateway_id,
            hold_ttl: Duration::from_millis(hold_ttl),
            ceiling,
        })
    }
}

impl RouteRuleConfig {
    fn compile(self) -> Result<RouteRule, String> {
        let kind = match self.kind {
            RouteKindConfig::AnthropicMessages => RouteKind::Billed(Route::AnthropicMessages),
            RouteKindConfig::OpenaiChatCompletions => RouteKind::Billed(Route::OpenaiChatCompletions),
            RouteKindConfig::Free => RouteKind::Free,
            RouteKindConfig::ControlPlane => RouteKind::ControlPlane,
        };
        match (self.path, self.path_prefix) {
            (Some(p), None) => Ok(RouteRule::exact(&self.method, &p, kind)),
            (None, Some(p)) => Ok(RouteRule::prefix(&self.method, &p, kind)),
            _ => Err(format!(
                "route for {} must have exactly one of path and path_prefix",
                self.method
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, String> {
        Config::from_json(json.as_bytes())
    }

    #[test]
    fn minimal_config_gets_contract_defaults() {
        let s = parse(r#"{"internal_token":"t"}"#).unwrap();
        assert_eq!(s.control_plane_cluster, "billing-control");
        assert_eq!(s.control_plane_authority, "billing-control");
        assert_eq!(s.sync_period, Duration::from_millis(250));
        assert_eq!(s.flush_period, Duration::from_millis(500));
        assert_eq!(s.tick_period(), Duration::from_millis(250));
        assert_eq!(s.fail_mode, FailMode::Open);
        assert_eq!(s.upstream_key, UpstreamKey::None);
        assert_eq!(s.routes.len(), 6);
        assert_eq!(s.price_factor, Decimal::new(70, 2));
        assert_eq!((s.lookup_rate_per_s, s.lookup_burst), (50, 100));
    }

    #[test]
    fn lookup_budget_is_configurable_and_never_zero() {
        let s = parse(r#"{"internal_token":"t","lookup_rate_per_s":5,"lookup_burst":7}"#).unwrap();
        assert_eq!((s.lookup_rate_per_s, s.lookup_burst), (5, 7));
        let err = parse(r#"{"internal_token":"t","lookup_burst":0}"#).unwrap_err();
        assert!(err.contains("lookup_burst"), "{err}");
    }

    #[test]
    fn unknown_field_is_refused() {
        let err = parse(r#"{"internal_token":"t","sync_period":5}"#).unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn empty_internal_token_is_refused() {
        assert!(parse(r#"{"internal_token":"  "}"#)
            .unwrap_err()
            .contains("internal_token"));
    }

    #[test]
    fn both_upstream_key_sources_are_refused() {
        let err = parse(r#"{"internal_token":"t","upstream_api_key":"k","upstream_api_key_header":"x-k"}"#)
            .unwrap_err();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn upstream_key_header_cannot_be_a_caller_key_header() {
        assert!(parse(r#"{"internal_token":"t","upstream_api_key_header":"X-Api-Key"}"#).is_err());
        let s = parse(r#"{"internal_token":"t","upstream_api_key_header":"X-Operator-Key"}"#).unwrap();
        assert_eq!(s.upstream_key, UpstreamKey::FromHeader("x-operator-key".into()));
    }

    #[test]
    fn summary_never_contains_secrets() {
        let s = parse(r#"{"internal_token":"sekrit-token","upstream_api_key":"sk-ant-secret"}"#).unwrap();
        let line = s.summary();
        assert!(!line.contains("sekrit") && !line.contains("sk-ant"), "{line}");
    }

    #[test]
    fn out_of_range_periods_are_refused_with_the_field_name() {
        let err = parse(r#"{"internal_token":"t","sync_period_ms":0}"#).unwrap_err();
        assert!(err.contains("sync_period_ms"), "{err}");
        let err = parse(r#"{"internal_token":"t","sync_period_ms":1000,"lease_ttl_ms":1500}"#).unwrap_err();
        assert!(err.contains("lease_ttl_ms"), "{err}");
    }

    #[test]
    fn spend_publish_fraction_defaults_to_one_percent_and_is_bounded() {
        let s = parse(r#"{"internal_token":"t"}"#).unwrap();
        assert_eq!(s.spend_publish_fraction, Decimal::new(1, 2));
        let s = parse(r#"{"internal_token":"t","spend_publish_fraction":0}"#).unwrap();
        assert_eq!(s.spend_publish_fraction, Decimal::ZERO);
        let s = parse(r#"{"internal_token":"t","spend_publish_fraction":"0.05"}"#).unwrap();
        assert_eq!(s.spend_publish_fraction, Decimal::new(5, 2));
        for bad in ["-0.01", "0.2"] {
            let err = parse(&format!(
                r#"{{"internal_token":"t","spend_publish_fraction":"{bad}"}}"#
            ))
            .unwrap_err();
            assert!(err.contains("spend_publish_fraction"), "{err}");
        }
    }

    #[test]
    fn fail_mode_closed_parses() {
        let s = parse(r#"{"internal_token":"t","fail_mode":"closed"}"#).unwrap();
        assert_eq!(s.fail_mode, FailMode::Closed);
        assert!(parse(r#"{"internal_token":"t","fail_mode":"ajar"}"#).is_err());
    }

    #[test]
    fn custom_routes_replace_the_defaults() {
        let s = parse(
            r#"{"internal_token":"t","routes":[
                {"method":"POST","path":"/v1/messages","kind":"anthropic_messages"},
                {"method":"GET","path_prefix":"/v1/models/","kind":"free"}]}"#,
        )
        .unwrap();
        assert_eq!(s.routes.len(), 2);
        assert!(parse(r#"{"internal_token":"t","routes":[{"method":"GET","kind":"free"}]}"#).is_err());
    }

    #[test]
    fn secrets_can_come_from_the_vm_environment_and_only_one_way() {
        // Names no other test uses: the process environment is shared by the tests.
        std::env::set_var("CS_TEST_INTERNAL_TOKEN", "from-env");
        std::env::set_var("CS_TEST_UPSTREAM_KEY", "sk-ant-env");
        let s = parse(
            r#"{"internal_token_env":"CS_TEST_INTERNAL_TOKEN","upstream_api_key_env":"CS_TEST_UPSTREAM_KEY"}"#,
        )
        .unwrap();
        assert_eq!(s.internal_token, "from-env");
        assert_eq!(s.upstream_key, UpstreamKey::Inline("sk-ant-env".into()));
        assert!(!s.summary().contains("from-env") && !s.summary().contains("sk-ant-env"));
        let e = parse(r#"{"internal_token":"t","internal_token_env":"CS_TEST_INTERNAL_TOKEN"}"#).unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = parse(r#"{"internal_token_env":"CS_TEST_NOT_SET_ANYWHERE"}"#).unwrap_err();
        assert!(
            e.contains("CS_TEST_NOT_SET_ANYWHERE") && e.contains("environment"),
            "{e}"
        );
        let e = parse(r#"{}"#).unwrap_err();
        assert!(e.contains("internal_token"), "{e}");
    }
}
