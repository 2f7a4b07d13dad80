//! Expected charges, computed here from the published official prices (`../shared/prices-2026-11.md`,
//! `../shared/prices-2026-12.md`) and the contract's formula, independently of the code under test.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{json, Value};

pub fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_else(|e| panic!("{s} is not a decimal: {e}"))
}

/// Credits per token for an official price in USD per million tokens: x 0.70 / $0.005 / 1e6.
fn per_token(usd_per_mtok: &str) -> Decimal {
    dec(usd_per_mtok) * dec("0.70") / dec("0.005") / Decimal::from(1_000_000u32)
}

/// One model's rates in credits per token.
pub struct Rates {
    input: Decimal,
    write_5m: Decimal,
    write_1h: Decimal,
    read: Decimal,
    output: Decimal,
}

impl Rates {
    /// From official USD per million tokens: input, 5m write, 1h write, cache read, output.
    fn official(usd: [&str; 5]) -> Rates {
        Rates {
            input: per_token(usd[0]),
            write_5m: per_token(usd[1]),
            write_1h: per_token(usd[2]),
            read: per_token(usd[3]),
            output: per_token(usd[4]),
        }
    }
}

pub fn sonnet_4_5() -> Rates {
    Rates::official(["3", "3.75", "6", "0.30", "15"])
}

pub fn haiku_4_5() -> Rates {
    Rates::official(["1", "1.25", "2", "0.10", "5"])
}

pub fn haiku_5_5() -> Rates {
    Rates::official(["0.10", "0.125", "0.20", "0.01", "0.50"])
}

/// Above 100,000 prompt tokens every rate switches, output included.
pub fn haiku_5_5_long_prompt() -> Rates {
    Rates::official(["0.50", "0.625", "1.00", "0.05", "2.50"])
}

pub fn opus_5_5() -> Rates {
    Rates::official(["4", "5", "8", "0.20", "20"])
}

pub fn opus_4_8() -> Rates {
    Rates::official(["5", "6.25", "10", "0.50", "25"])
}

pub fn fable_5_2() -> Rates {
    Rates::official(["8", "10", "16", "0.20", "40"])
}

impl Rates {
    /// Every rate times `factor` (fast mode 2, US-only inference 1.1; they stack).
    pub fn times(&self, factor: &str) -> Rates {
        let f = dec(factor);
        Rates {
            input: self.input * f,
            write_5m: self.write_5m * f,
            write_1h: self.write_1h * f,
            read: self.read * f,
            output: self.output * f,
        }
    }
}

/// $10 per 1,000 searches, at 70%, in credits of $0.005.
pub fn web_search_fee() -> Decimal {
    dec("10") / Decimal::from(1000u32) * dec("0.70") / dec("0.005")
}

/// Token counts of one request, in the usage listing's categories.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub write_5m: u64,
    pub write_1h: u64,
    pub read: u64,
    /// Inclusive of thinking, as the upstream counts it.
    pub output: u64,
    pub thinking: u64,
    pub web_search: u64,
}

impl Tokens {
    /// The contract's formula; thinking is billed at the output rate (r_think defaults to r_out).
    pub fn cost(&self, r: &Rates) -> Decimal {
        let n = |v: u64| Decimal::from(v);
        n(self.input) * r.input
            + n(self.write_5m) * r.write_5m
            + n(self.write_1h) * r.write_1h
            + n(self.read) * r.read
            + n(self.output - self.thinking) * r.output
            + n(self.thinking) * r.output
            + n(self.web_search) * web_search_fee()
    }

    /// The `usage` object the Messages API reports for these counts.
    pub fn anthropic_usage(&self) -> Value {
        let mut u = json!({
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.write_5m + self.write_1h,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.write_5m,
                "ephemeral_1h_input_tokens": self.write_1h
            },
            "cache_read_input_tokens": self.read,
            "output_tokens": self.output,
            "service_tier": "standard"
        });
        if self.thinking > 0 {
            u["output_tokens_details"] = json!({"thinking_tokens": self.thinking});
        }
        if self.web_search > 0 {
            u["server_tool_use"] = json!({"web_search_requests": self.web_search});
        }
        u
    }
}

#[test]
fn expected_rates_match_hand_computed_figures() {
    // 3 USD/MTok x 0.7 / 0.005 / 1e6 = 0.00042 credits per token, and so on.
    let s = sonnet_4_5();
    assert_eq!(
        [s.input, s.write_5m, s.write_1h, s.read, s.output],
        [
            dec("0.00042"),
            dec("0.000525"),
            dec("0.00084"),
            dec("0.000042"),
            dec("0.0021")
        ]
    );
    assert_eq!(web_search_fee(), dec("1.4"));
    let all = Tokens {
        input: 1234,
        write_5m: 2000,
        write_1h: 3000,
        read: 5000,
        output: 777,
        thinking: 300,
        web_search: 3,
    };
    assert_eq!(all.cost(&s), dec("10.12998"));
}
