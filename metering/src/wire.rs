//! Wire types of the internal API between the filter and the control plane.
//!
//! Every message carries `protocol`. Compatibility rules: fields are only ever added, always with a
//! default, and readers ignore fields they do not know, so an older filter and a newer control plane
//! (or the reverse) interoperate. A change that cannot follow these rules raises
//! [`PROTOCOL_VERSION`], and the control plane keeps answering the older version.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cost::ServedRequest;
use crate::price::PriceEntry;
use crate::request::RequestedOptions;
use crate::usage::Usage;

/// 2: price entries may carry modifiers and a code execution fee, which version 1 readers refuse
/// (their entries deny unknown fields): a snapshot for a version 1 reader leaves them out.
/// 3: price entries may carry `max_output_tokens` (left out for older readers); account rows carry
/// `spend_control` (ignored by older readers); gateways report their holds with the snapshot
/// request (`POST /internal/v1/snapshot`).
/// 4: key rows may carry `limit`, `allowed_models` and `expires_at` (ignored by older readers, which
/// then do not enforce them).
pub const PROTOCOL_VERSION: u32 = 4;

fn protocol_version() -> u32 {
    PROTOCOL_VERSION
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    Revoked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Suspended,
}

/// A key as the gateway needs it: no secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// Lowercase hex SHA-256 of the key ([`crate::apikey::hash`]).
    pub key_hash: String,
    pub key_id: Uuid,
    pub account_id: Uuid,
    pub status: KeyStatus,
    /// The sync version at which this state was committed. A key with a limit is re-versioned by
    /// every debit batch that spends on it and when its period ends, so `limit.remaining` is as of
    /// this version.
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<KeyLimitState>,
    /// Model ids, families or `prefix*` patterns the key may use (see
    /// [`crate::keylimit::model_allowed`]); empty: every model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_models: Vec<String>,
    /// From this instant on the key is refused (401).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key's spending limit as of its row's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLimitState {
    /// The limit per period, in credits.
    pub credits: Decimal,
    pub period: crate::keylimit::LimitPeriod,
    /// `credits` minus what the key spent in the current period (may be negative).
    pub remaining: Decimal,
    /// When the current period ends (`None`: `total`, never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<DateTime<Utc>>,
}

/// How an account's requests are admitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpendControl {
    /// A billed request is admitted only if its ceiling (the most it may cost) fits the spendable
    /// balance, which it holds until the request ends.
    #[default]
    Reserve,
    /// Admitted while the spendable balance is above zero.
    Balance,
}

impl SpendControl {
    pub fn as_str(self) -> &'static str {
        match self {
            SpendControl::Reserve => "reserve",
            SpendControl::Balance => "balance",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reserve" => Some(SpendControl::Reserve),
            "balance" => Some(SpendControl::Balance),
            _ => None,
        }
    }
}

/// An account's spendable state at a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub account_id: Uuid,
    pub status: AccountStatus,
    /// Credits, exact. Includes every debit applied at or below `version`.
    pub balance: Decimal,
    pub version: u64,
    #[serde(default)]
    pub spend_control: SpendControl,
}

/// Credits held on one account by requests in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountHold {
    pub account_id: Uuid,
    pub credits: Decimal,
}

/// A gateway's hold report: the credits its requests in flight hold, per account (accounts without
/// holds left out), sent by its sync leader once per sync period as the body of the first page's
/// `POST /internal/v1/snapshot`. The answer carries what the
/// *other* gateways hold, which this one subtracts from what its requests may hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldReport {
    #[serde(default = "protocol_version")]
    pub protocol: u32,
    /// Stable for the life of the Envoy process, unique among the gateways.
    pub gateway: Uuid,
    #[serde(default)]
    pub holds: Vec<AccountHold>,
    /// Keys this gateway refused for their limit since its last report (protocol 4): the control
    /// plane sends `key.limit_reached` for each, once per period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limited_keys: Vec<Uuid>,
}

/// `GET /internal/v1/snapshot?since=<version>&cursor=<cursor>&limit=<n>`.
///
/// A delta holds exactly the rows whose version is above `since`; `full` is true when `since` was
/// absent or older than the control plane keeps deltas for, and then the reader replaces its state.
/// When `next_cursor` is set the snapshot continues on another page (same `version`), and the
/// reader moves its own version to `version` only after the last page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(default = "protocol_version")]
    pub protocol: u32,
    /// Every change committed at or below this version is reflected.
    pub version: u64,
    pub full: bool,
    #[serde(default)]
    pub keys: Vec<KeyState>,
    #[serde(default)]
    pub accounts: Vec<AccountState>,
    /// The whole price table, present when it changed after `since` (and on full snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prices: Option<Prices>,
    #[serde(default)]
    pub next_cursor: Option<String>,
    /// Answering `POST /internal/v1/snapshot` (a gateway's hold report as the body): what the
    /// other gateways' requests in flight hold, per account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub others: Option<Vec<AccountHold>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prices {
    pub factor: Decimal,
    pub entries: Vec<PriceEntry>,
    /// The upstream's default `inference_geo` (the operator's workspace setting), billed where
    /// neither the request nor the answer names one; absent: `global`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_geo_default: Option<String>,
}

impl Prices {
    /// The table as a reader of `protocol` can parse it: a version 1 reader gets the entries
    /// without modifiers, code execution fee and default inference geo (it does not read requests' modifiers either; the
    /// control plane prices its debits as it sends them).
    pub fn for_protocol(mut self, protocol: u32) -> Self {
        if protocol < 2 {
            self.inference_geo_default = None;
            for e in &mut self.entries {
                e.speed.clear();
                e.inference_geo.clear();
                e.code_execution_usd_per_request = None;
            }
        }
        if protocol < 3 {
            for e in &mut self.entries {
                e.max_output_tokens = None;
            }
        }
        self
    }
}

/// `POST /internal/v1/keys/lookup`: a key hash the gateway's cache has not seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLookup {
    #[serde(default = "protocol_version")]
    pub protocol: u32,
    pub key_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLookupResult {
    #[serde(default = "protocol_version")]
    pub protocol: u32,
    /// The version the answer is consistent with.
    pub version: u64,
    /// `None`: no such key.
    #[serde(default)]
    pub key: Option<KeyState>,
    #[serde(default)]
    pub account: Option<AccountState>,
}

/// Which upstream API shape the request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    #[default]
    AnthropicMessages,
    OpenaiChatCompletions,
}

/// One served request's debit, generated by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Debit {
    /// Generated by the filter for the request (never taken from the caller): the idempotency key.
    pub debit_id: Uuid,
    pub key_hash: String,
    pub account_id: Uuid,
    #[serde(default)]
    pub route: Route,
    pub model_requested: String,
    #[serde(default)]
    pub model_served: Option<String>,
    pub usage: Usage,
    /// What the request asked for that changes its price (billed where the answer does not
    /// report it). Left out when empty, so that a debit without it is fingerprinted as before.
    #[serde(default, skip_serializing_if = "RequestedOptions::is_empty")]
    pub requested: RequestedOptions,
    /// The body did not carry a complete final usage (cut stream, error event, no final usage).
    #[serde(default)]
    pub partial: bool,
    /// Output was estimated from the content forwarded because the upstream never reported it.
    #[serde(default)]
    pub output_estimated: bool,
    /// Input was estimated from the request body's size because the response was cut before the
    /// upstream reported any input-side usage. Left out when false, so a debit without it
    /// serializes (and is fingerprinted for idempotency) exactly as before the field existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub input_estimated: bool,
    /// When the gateway admitted the request: selects the price version.
    pub admitted_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// The upstream's `request-id` header.
    #[serde(default)]
    pub upstream_request_id: Option<String>,
    /// The upstream's message id (`msg_...`).
    #[serde(default)]
    pub upstream_message_id: Option<String>,
    /// The HTTP status the upstream answered.
    #[serde(default)]
    pub upstream_status: Option<u16>,
}

impl Debit {
    /// What its price depends on.
    pub fn served_request(&self) -> ServedRequest<'_> {
        ServedRequest {
            usage: &self.usage,
            model_requested: &self.model_requested,
            model_served: self.model_served.as_deref(),
            requested: &self.requested,
            admitted_at: self.admitted_at,
        }
    }
}

/// `POST /internal/v1/debits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebitBatch {
    #[serde(default = "protocol_version")]
    pub protocol: u32,
    /// The gateway instance that sends the batch (for operations only).
    #[serde(default)]
    pub gateway_id: Option<String>,
    pub debits: Vec<Debit>,
    /// Asks for a compact answer (see [`DebitAck::applied_at_version`]): the gateway then reads a
    /// few bytes instead of a result per debit. A control plane that does not know the field
    /// answers in full, which the gateway reads as well.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compact_ack: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DebitOutcome {
    /// Recorded now.
    Applied,
    /// Recorded before with the same content: nothing changed.
    Duplicate,
    /// The id was recorded before with different content: nothing changed; do not retry.
    Conflict,
    /// Can never be recorded (e.g. the account does not exist); do not retry.
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebitResult {
    pub debit_id: Uuid,
    pub outcome: DebitOutcome,
    /// The sync version whose snapshots include this debit (0 when not recorded).
    pub version: u64,
    /// Credits charged, when recorded.
    #[serde(default)]
    pub credits: Option<Decimal>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebitAck {
    #[serde(default = "protocol_version")]
    pub protocol: u32,
    /// One result per debit, in the order sent; in a compact answer, only the debits this batch
    /// did not apply (duplicates, conflicts, rejections).
    pub results: Vec<DebitResult>,
    /// Set in a compact answer only: every debit of the batch missing from `results` was applied
    /// by this batch, at this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at_version: Option<u64>,
    /// Set in a compact answer only: how many debits the batch carried, so that a reader checks
    /// that the answer covers the batch it sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_len: Option<u64>,
}

impl DebitAck {
    /// The answer in full (one result per debit, in order).
    pub fn full(results: Vec<DebitResult>) -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
            results,
            applied_at_version: None,
            batch_len: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debit_json(extra: &str) -> String {
        format!(
            r#"{{"debit_id":"00000000-0000-0000-0000-000000000001","key_hash":"h","account_id":"00000000-0000-0000-0000-000000000002","model_requested":"m","usage":{{"input_tokens":1,"output_tokens":2}},"admitted_at":"2027-01-01T00:00:00Z"{extra}}}"#
        )
    }

    #[test]
    fn input_estimated_defaults_to_false_and_is_left_out_when_false() {
        let old: Debit = serde_json::from_str(&debit_json("")).unwrap();
        assert!(!old.input_estimated);
        // Serialized as before the field existed: idempotency fingerprints do not change.
        assert!(!serde_json::to_string(&old).unwrap().contains("input_estimated"));
        let new: Debit = serde_json::from_str(&debit_json(r#","input_estimated":true"#)).unwrap();
        assert!(new.input_estimated);
        assert!(serde_json::to_string(&new)
            .unwrap()
            .contains(r#""input_estimated":true"#));
    }
}
