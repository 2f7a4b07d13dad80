//! Exact amounts on the wire: credits and USD are decimal strings in plain notation (trailing zeros
//! removed, never an exponent). Input accepts a decimal string or a JSON integer, never a JSON
//! fraction (a float is inexact).

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serializer};

/// What one credit costs at the list price (the smallest plan's): $0.005.
pub fn credit_usd() -> Decimal {
    Decimal::new(5, 3)
}

/// The most fractional digits an amount may have (the database keeps them all).
pub const MAX_SCALE: u32 = 18;

/// The canonical text of an amount: normalized, no exponent, zero without a sign.
pub fn plain(d: Decimal) -> String {
    if d.is_zero() {
        return "0".to_owned();
    }
    d.normalize().to_string()
}

/// The canonical value of an amount (for comparison and fingerprints).
pub fn canonical(d: Decimal) -> Decimal {
    if d.is_zero() {
        Decimal::ZERO
    } else {
        d.normalize()
    }
}

/// `serialize_with` for `Decimal` fields.
pub fn ser<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&plain(*d))
}

/// `serialize_with` for `Option<Decimal>` fields.
pub fn ser_opt<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&plain(*d)),
        None => s.serialize_none(),
    }
}

/// Parses a strictly plain decimal: optional minus, digits, optional fraction. No exponent, no
/// underscores, no spaces, at most [`MAX_SCALE`] fractional digits and 15 integer digits.
pub fn parse_plain(s: &str) -> Result<Decimal, String> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(digits.contains('.') && frac.is_empty());
    if !ok {
        return Err(format!("{s:?} is not a plain decimal number such as \"12.5\""));
    }
    if frac.len() > MAX_SCALE as usize {
        return Err(format!("{s:?} has more than {MAX_SCALE} fractional digits"));
    }
    if int.trim_start_matches('0').len() > 15 {
        return Err(format!("{s:?} is too large"));
    }
    Decimal::from_str(s).map_err(|e| format!("{s:?}: {e}"))
}

/// An exact amount given by an admin: `"12.5"` or `12`, never `12.5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(pub Decimal);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AmountVisitor;
        impl Visitor<'_> for AmountVisitor {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal string such as \"12.5\" or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
                parse_plain(v).map(Amount).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
                parse_plain(&v.to_string()).map(Amount).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
                parse_plain(&v.to_string()).map(Amount).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Amount, E> {
                Err(E::custom(format!(
                    "{v} is a JSON fraction, which is inexact; send the amount as a string, e.g. \"{v}\""
                )))
            }
        }
        d.deserialize_any(AmountVisitor)
    }
}

/// `deserialize_with` for a `Decimal` field given as an [`Amount`].
pub fn de_amount<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    Amount::deserialize(d).map(|a| a.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_has_no_trailing_zeros_or_exponent() {
        assert_eq!(plain(Decimal::from_str("6.489000").unwrap()), "6.489");
        assert_eq!(plain(Decimal::from_str("-0.000").unwrap()), "0");
        assert_eq!(plain(Decimal::from_str("1000000").unwrap()), "1000000");
        assert_eq!(
            plain(Decimal::from_str("0.000000000000000001").unwrap()),
            "0.000000000000000001"
        );
    }

    #[test]
    fn amounts_accept_strings_and_integers_only() {
        let a: Amount = serde_json::from_str("\"12.50\"").unwrap();
        assert_eq!(a.0, Decimal::new(125, 1));
        let b: Amount = serde_json::from_str("-7").unwrap();
        assert_eq!(b.0, Decimal::from(-7));
        for bad in [
            "12.5",
            "\"1e5\"",
            "\"1_000\"",
            "\" 1\"",
            "\"1.\"",
            "\".5\"",
            "\"0.0000000000000000001\"",
            "true",
        ] {
            assert!(serde_json::from_str::<Amount>(bad).is_err(), "{bad}");
        }
    }
}
