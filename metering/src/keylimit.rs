//! Key limits: the calendar periods a key's budget runs over (UTC) and which models a key may use.
//! Shared by the control plane (which sums a key's spend over its period) and the filter (which
//! refuses what a key may not do).

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::price::PriceTable;

/// The period a key's limit counts spend over: UTC calendar days, ISO weeks (from Monday), months,
/// or the key's whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitPeriod {
    Day,
    Week,
    Month,
    Total,
}

impl LimitPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitPeriod::Day => "day",
            LimitPeriod::Week => "week",
            LimitPeriod::Month => "month",
            LimitPeriod::Total => "total",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(LimitPeriod::Day),
            "week" => Some(LimitPeriod::Week),
            "month" => Some(LimitPeriod::Month),
            "total" => Some(LimitPeriod::Total),
            _ => None,
        }
    }

    /// The period holding `at`: its first instant (`None` for `total`: since ever) and the first
    /// instant of the next one (`None` for `total`: it never resets).
    pub fn bounds(self, at: DateTime<Utc>) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        let day = at.date_naive();
        let (start, next) = match self {
            LimitPeriod::Total => return (None, None),
            LimitPeriod::Day => (Some(day), day.succ_opt()),
            LimitPeriod::Week => {
                let monday = day - Duration::days(i64::from(day.weekday().num_days_from_monday()));
                (Some(monday), monday.checked_add_signed(Duration::days(7)))
            }
            LimitPeriod::Month => {
                let first = NaiveDate::from_ymd_opt(day.year(), day.month(), 1);
                let next = if day.month() == 12 {
                    NaiveDate::from_ymd_opt(day.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(day.year(), day.month() + 1, 1)
                };
                (first, next)
            }
        };
        (start.map(midnight), next.map(midnight))
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN))
}

/// The most entries `allowed_models` may have, and their longest.
pub const MAX_ALLOWED_MODELS: usize = 64;
pub const MAX_MODEL_PATTERN: usize = 100;

/// Whether a key whose `allowed_models` is `allowed` may use `model`. Empty allows every model.
/// An entry is a model id or family of the price table, which allows that family with its dated
/// ids and aliases (`claude-sonnet-4-5` allows `claude-sonnet-4-5-20250929`, not `claude-sonnet-4-6`),
/// or a prefix ending in `*` (`claude-opus-*` allows every id starting with `claude-opus-`).
pub fn model_allowed<S: AsRef<str>>(table: &PriceTable, allowed: &[S], model: &str) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let family = table.family_of(model);
    allowed.iter().any(|entry| {
        let entry = entry.as_ref();
        match entry.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix) || family.is_some_and(|f| f.starts_with(prefix)),
            None => entry == model || (family.is_some() && table.family_of(entry) == family),
        }
    })
}

/// Why an `allowed_models` entry is not usable, checked when it is set: it must name a priced
/// model or family, or be a prefix (`...*`) that at least one priced family has.
pub fn check_model_pattern(table: &PriceTable, entry: &str) -> Result<(), String> {
    if entry.is_empty() || entry.len() > MAX_MODEL_PATTERN {
        return Err(format!(
            "each allowed model must be 1 to {MAX_MODEL_PATTERN} characters"
        ));
    }
    if !entry
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'))
        || entry.find('*').is_some_and(|i| i + 1 != entry.len())
    {
        return Err(format!(
            "allowed model {entry:?}: use a model id or a prefix ending in * (letters, digits, '-', '.', '_')"
        ));
    }
    let known = match entry.strip_suffix('*') {
        Some(prefix) => table
            .entries()
            .iter()
            .any(|e| e.model.starts_with(prefix) || e.aliases.iter().any(|a| a.starts_with(prefix))),
        None => table.family_of(entry).is_some(),
    };
    if known {
        Ok(())
    } else {
        Err(format!(
            "allowed model {entry:?} names no model of the price table"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn periods_are_utc_calendar_periods() {
        let t = at("2026-12-06T23:59:59.999Z"); // a Sunday
        assert_eq!(
            LimitPeriod::Day.bounds(t),
            (Some(at("2026-12-06T00:00:00Z")), Some(at("2026-12-07T00:00:00Z")))
        );
        assert_eq!(
            LimitPeriod::Week.bounds(t),
            (Some(at("2026-11-30T00:00:00Z")), Some(at("2026-12-07T00:00:00Z")))
        );
        assert_eq!(
            LimitPeriod::Week.bounds(at("2026-12-07T00:00:00Z")),
            (Some(at("2026-12-07T00:00:00Z")), Some(at("2026-12-14T00:00:00Z")))
        );
        assert_eq!(
            LimitPeriod::Month.bounds(t),
            (Some(at("2026-12-01T00:00:00Z")), Some(at("2027-01-01T00:00:00Z")))
        );
        assert_eq!(
            LimitPeriod::Month.bounds(at("2028-02-29T12:00:00Z")),
            (Some(at("2028-02-01T00:00:00Z")), Some(at("2028-03-01T00:00:00Z")))
        );
        assert_eq!(LimitPeriod::Total.bounds(t), (None, None));
        for p in [
            LimitPeriod::Day,
            LimitPeriod::Week,
            LimitPeriod::Month,
            LimitPeriod::Total,
        ] {
            assert_eq!(LimitPeriod::parse(p.as_str()), Some(p));
        }
        assert_eq!(LimitPeriod::parse("year"), None);
    }

    fn table() -> PriceTable {
        PriceTable::default_table(rust_decimal::Decimal::new(70, 2)).unwrap()
    }

    #[test]
    fn allowed_models_match_families_and_prefixes_only() {
        let t = table();
        let none: [&str; 0] = [];
        assert!(model_allowed(&t, &none, "claude-opus-4-8"));
        let fam = ["claude-sonnet-4-5"];
        assert!(model_allowed(&t, &fam, "claude-sonnet-4-5"));
        assert!(model_allowed(&t, &fam, "claude-sonnet-4-5-20250929"));
        assert!(!model_allowed(&t, &fam, "claude-sonnet-4-6"));
        assert!(!model_allowed(&t, &fam, "claude-opus-4-8"));
        let fable = ["claude-fable-5"];
        assert!(!model_allowed(&t, &fable, "claude-fable-5-2"));
        let prefix = ["claude-opus-*"];
        assert!(model_allowed(&t, &prefix, "claude-opus-4-8"));
        assert!(model_allowed(&t, &prefix, "claude-opus-5-20270101"));
        assert!(!model_allowed(&t, &prefix, "claude-sonnet-4-5"));
        assert!(!model_allowed(&t, &prefix, "claude-opusx"));
    }

    #[test]
    fn patterns_must_name_priced_models() {
        let t = table();
        assert!(check_model_pattern(&t, "claude-sonnet-4-5").is_ok());
        assert!(check_model_pattern(&t, "claude-opus-*").is_ok());
        assert!(check_model_pattern(&t, "claude-*").is_ok());
        assert!(check_model_pattern(&t, "claude-sonet-4-5").is_err());
        assert!(check_model_pattern(&t, "gpt-*").is_err());
        assert!(check_model_pattern(&t, "claude-*-4").is_err());
        assert!(check_model_pattern(&t, "").is_err());
        assert!(check_model_pattern(&t, "claude opus").is_err());
    }
}
