//! Admission decisions, as plain functions of what the request carries and what shared data says.
//! The HTTP context gathers the inputs, calls these, and carries out the answer.
//!
//! Order of the checks (each refusal is decided before anything reaches the upstream):
//! route offered (403) -> key present, single and well-formed (401) -> gateway able to bill
//! (fail mode, debit buffer: 503) -> key known (else one lookup) -> key and account active
//! (401) -> credit for billed routes (402). The model check (400) follows once the body is read.

use metering::apikey;
use metering::wire::{AccountStatus, KeyStatus};
use rust_decimal::Decimal;

use crate::config::FailMode;
use crate::request::refusal::Refusal;
use crate::request::route::RouteKind;
use crate::shared::state::{AccountEntry, KeyEntry};

/// The caller's key from `x-api-key` or `Authorization: Bearer`. Another authorization scheme is
/// not a key (and is removed before the upstream all the same).
pub fn extract_key<'a>(
    x_api_key: Option<&'a str>,
    authorization: Option<&'a str>,
) -> Result<&'a str, Refusal> {
    let from_header = x_api_key.map(str::trim).filter(|k| !k.is_empty());
    let from_bearer = authorization.and_then(bearer_token);
    match (from_header, from_bearer) {
        (None, None) => Err(Refusal::MissingKey),
        (Some(a), Some(b)) if !apikey::constant_time_eq(a.as_bytes(), b.as_bytes()) => {
            Err(Refusal::ConflictingKeys)
        }
        (Some(k), _) | (None, Some(k)) => Ok(k),
    }
}

fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The key when it has a key's format; its checksum is checked by [`well_formed_key`] only when
/// the key is not known already (a known key's hash proves it was issued, and skips a SHA-256).
pub fn key_shaped(key: &str) -> Result<&str, Refusal> {
    if apikey::has_key_format(key) {
        Ok(key)
    } else {
        Err(Refusal::MalformedKey)
    }
}

/// The caller's key, checked for format and checksum: a made-up key costs no network call.
pub fn well_formed_key(key: &str) -> Result<&str, Refusal> {
    if apikey::is_well_formed(key) {
        Ok(key)
    } else {
        Err(Refusal::MalformedKey)
    }
}

/// What the worker knows about its ability to bill at this instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayState {
    pub fail_mode: FailMode,
    /// No successful sync within `stale_after`.
    pub control_plane_stale: bool,
    /// Debits buffered or in flight plus requests being served, against the bound.
    pub debit_buffer_full: bool,
}

/// Checks that do not depend on the key: fail-closed outage, full debit buffer (billed only).
pub fn gateway_ready(route: RouteKind, gw: GatewayState) -> Result<(), Refusal> {
    if gw.fail_mode == FailMode::Closed && gw.control_plane_stale {
        return Err(Refusal::ControlPlaneUnavailable);
    }
    if matches!(route, RouteKind::Billed(_)) && gw.debit_buffer_full {
        return Err(Refusal::DebitBufferFull);
    }
    Ok(())
}

/// The decision for a known key at `now_ms` (its limit is judged apart, on its budget entry).
pub fn admit_known(
    route: RouteKind,
    key: &KeyEntry,
    account: &AccountEntry,
    now_ms: u64,
) -> Result<(), Refusal> {
    if key.status != KeyStatus::Active {
        return Err(Refusal::RevokedKey);
    }
    if key.expired(now_ms) {
        let at = key.rules.as_ref().and_then(|r| r.expires_at_ms).unwrap_or(now_ms);
        return Err(Refusal::ExpiredKey(at));
    }
    if account.status != AccountStatus::Active {
        return Err(Refusal::SuspendedAccount);
    }
    if matches!(route, RouteKind::Billed(_)) && account.spendable() <= Decimal::ZERO {
        return Err(Refusal::NoCredit);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use metering::wire::Route;
    use uuid::Uuid;

    const BILLED: RouteKind = RouteKind::Billed(Route::AnthropicMessages);

    fn key() -> String {
        apikey::generate(&[7; apikey::RANDOM_BYTES])
    }

    #[test]
    fn key_from_x_api_key() {
        let k = key();
        assert_eq!(extract_key(Some(&k), None), Ok(k.as_str()));
    }

    #[test]
    fn key_from_bearer_any_case_and_spacing() {
        let k = key();
        let h = format!("bearer   {k} ");
        assert_eq!(extract_key(None, Some(&h)), Ok(k.as_str()));
    }

    #[test]
    fn same_key_in_both_headers_is_fine() {
        let k = key();
        let h = format!("Bearer {k}");
        assert_eq!(extract_key(Some(&k), Some(&h)), Ok(k.as_str()));
    }

    #[test]
    fn different_keys_in_both_headers_are_refused() {
        let k = key();
        let other = apikey::generate(&[8; apikey::RANDOM_BYTES]);
        let h = format!("Bearer {other}");
        assert_eq!(extract_key(Some(&k), Some(&h)), Err(Refusal::ConflictingKeys));
    }

    #[test]
    fn no_key_or_non_bearer_authorization_is_missing() {
        assert_eq!(extract_key(None, None), Err(Refusal::MissingKey));
        assert_eq!(
            extract_key(Some("  "), Some("Basic abc")),
            Err(Refusal::MissingKey)
        );
        assert_eq!(extract_key(None, Some("Bearer")), Err(Refusal::MissingKey));
    }

    #[test]
    fn malformed_or_bad_checksum_key_is_refused() {
        let k = key();
        assert_eq!(well_formed_key(&k), Ok(k.as_str()));
        let mut bad = k.clone();
        bad.pop();
        bad.push(if k.ends_with('0') { '1' } else { '0' });
        assert_eq!(well_formed_key(&bad), Err(Refusal::MalformedKey));
        assert_eq!(well_formed_key("sk-ant-api03-xyz"), Err(Refusal::MalformedKey));
    }

    fn gw(fail_mode: FailMode, stale: bool, full: bool) -> GatewayState {
        GatewayState {
            fail_mode,
            control_plane_stale: stale,
            debit_buffer_full: full,
        }
    }

    #[test]
    fn fail_closed_during_outage_refuses_everything() {
        assert_eq!(
            gateway_ready(RouteKind::Free, gw(FailMode::Closed, true, false)),
            Err(Refusal::ControlPlaneUnavailable)
        );
        assert_eq!(gateway_ready(BILLED, gw(FailMode::Open, true, false)), Ok(()));
        assert_eq!(gateway_ready(BILLED, gw(FailMode::Closed, false, false)), Ok(()));
    }

    #[test]
    fn full_debit_buffer_refuses_billed_routes_only() {
        assert_eq!(
            gateway_ready(BILLED, gw(FailMode::Open, false, true)),
            Err(Refusal::DebitBufferFull)
        );
        assert_eq!(
            gateway_ready(RouteKind::Free, gw(FailMode::Open, false, true)),
            Ok(())
        );
    }

    fn entries(key_status: KeyStatus, status: AccountStatus, balance: i64) -> (KeyEntry, AccountEntry) {
        let k = KeyEntry {
            key_id: Uuid::from_u128(1),
            account_id: Uuid::from_u128(2),
            status: key_status,
            version: 1,
            rules: None,
        };
        (k, AccountEntry::new(status, Decimal::from(balance), 1))
    }

    #[test]
    fn active_key_with_credit_is_admitted() {
        let (k, a) = entries(KeyStatus::Active, AccountStatus::Active, 5);
        assert_eq!(admit_known(BILLED, &k, &a, 0), Ok(()));
    }

    #[test]
    fn revoked_key_and_suspended_account_are_refused() {
        let (k, a) = entries(KeyStatus::Revoked, AccountStatus::Active, 5);
        assert_eq!(admit_known(RouteKind::Free, &k, &a, 0), Err(Refusal::RevokedKey));
        let (k, a) = entries(KeyStatus::Active, AccountStatus::Suspended, 5);
        assert_eq!(
            admit_known(RouteKind::Free, &k, &a, 0),
            Err(Refusal::SuspendedAccount)
        );
    }

    #[test]
    fn zero_balance_is_refused_on_billed_routes_and_allowed_on_free_ones() {
        let (k, a) = entries(KeyStatus::Active, AccountStatus::Active, 0);
        assert_eq!(admit_known(BILLED, &k, &a, 0), Err(Refusal::NoCredit));
        assert_eq!(admit_known(RouteKind::Free, &k, &a, 0), Ok(()));
    }

    #[test]
    fn local_pending_spend_counts_against_the_balance() {
        let (k, mut a) = entries(KeyStatus::Active, AccountStatus::Active, 5);
        a.add_unacked(Decimal::from(5));
        assert_eq!(admit_known(BILLED, &k, &a, 0), Err(Refusal::NoCredit));
    }
}
