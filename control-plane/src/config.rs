//! Configuration: the contract's environment variables, optionally read first from a TOML file
//! (`--config FILE` or `CLAUDESTORE_CONFIG`) whose keys are the same names; the environment wins.
//! Missing tokens are generated once and kept (mode 0600) under the data directory ([`crate::secrets`]).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rust_decimal::Decimal;

use crate::secrets::{self, SecretError};

/// Every key the file or the environment may set.
pub const KEYS: &[&str] = &[
    "CONTROL_PORT",
    "BIND_ADDR",
    "ADMIN_TOKEN",
    "INTERNAL_TOKEN",
    "DATABASE_URL",
    "PRICE_FACTOR",
    "UPSTREAM_INFERENCE_GEO",
    "PUBLIC_URL",
    "DATA_DIR",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_BASE",
    "NOWPAYMENTS_API_KEY",
    "NOWPAYMENTS_IPN_SECRET",
    "NOWPAYMENTS_API_BASE",
    "SELLER_NAME",
    "SELLER_ADDRESS",
    "SELLER_TAX_ID",
    "PURCHASE_EXPIRY_SECONDS",
    "CRYPTO_UNDERPAY_POLICY",
    "INVOICE_TAX_RATE",
    "WEBHOOK_SIGNING_KEY",
    "WEBHOOK_ALLOW_PRIVATE",
    "SPEND_CONTROL",
    "SUPPORT_CONTACT",
    "TELEGRAM_CONTACT",
];

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/claudestore";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Io(String),
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// What to do with a crypto payment that brings less than the price (see `payments::crypto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderpayPolicy {
    /// `held` for review (default).
    Hold,
    /// Credit the share received at the plan's rate, rounded down to whole credits.
    CreditShare,
}

/// Payment settings: processors, seller on invoices, purchase expiry, crypto policy, tax.
#[derive(Clone)]
pub struct PaymentConfig {
    pub stripe_secret_key: Option<String>,
    pub stripe_webhook_secret: Option<String>,
    pub stripe_api_base: String,
    pub nowpayments_api_key: Option<String>,
    pub nowpayments_ipn_secret: Option<String>,
    pub nowpayments_api_base: String,
    pub seller_name: String,
    pub seller_address: String,
    pub seller_tax_id: String,
    /// How long a purchase stays pending before it expires (`PURCHASE_EXPIRY_SECONDS`, 24 h).
    pub purchase_expiry: chrono::Duration,
    pub underpay_policy: UnderpayPolicy,
    /// Tax included in plan prices, as a fraction (`INVOICE_TAX_RATE`, e.g. 0.2); 0 = none.
    pub tax_rate: Decimal,
    /// Where customers reach the operator (`SUPPORT_CONTACT`: an email address or an https URL).
    pub support_contact: Option<Contact>,
    /// Where customers buy credits over Telegram (`TELEGRAM_CONTACT`: `@name` or a t.me URL);
    /// the console confirms such sales.
    pub telegram_contact: Option<Contact>,
}

impl PaymentConfig {
    /// Whether the seller printed on invoices is still the placeholder of an unset variable.
    pub fn seller_placeholders(&self) -> Vec<&'static str> {
        let d = PaymentConfig::default();
        [
            ("SELLER_NAME", self.seller_name == d.seller_name),
            ("SELLER_ADDRESS", self.seller_address == d.seller_address),
            ("SELLER_TAX_ID", self.seller_tax_id == d.seller_tax_id),
        ]
        .into_iter()
        .filter_map(|(key, unset)| unset.then_some(key))
        .collect()
    }
}

/// A way to reach someone, as a page links to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// What the link says (`support@example.com`, `@claudestore_sales`).
    pub label: String,
    /// Where it goes (`mailto:...`, `https://...`).
    pub href: String,
}

impl Contact {
    /// An email address or an https URL.
    fn support(key: &'static str, v: &str) -> Result<Contact, ConfigError> {
        let v = v.trim();
        let printable = !v.is_empty() && v.len() <= 254 && v.bytes().all(|b| b.is_ascii_graphic());
        if printable && v.starts_with("https://") {
            return Ok(Contact {
                label: v.trim_start_matches("https://").to_owned(),
                href: v.to_owned(),
            });
        }
        match v.split_once('@') {
            Some((user, domain))
                if printable && !user.is_empty() && domain.contains('.') && !v.contains(':') =>
            {
                Ok(Contact {
                    label: v.to_owned(),
                    href: format!("mailto:{v}"),
                })
            }
            _ => Err(invalid(
                key,
                format!("{v:?} must be an email address or an https:// URL"),
            )),
        }
    }

    /// A Telegram `@name` (5 to 32 letters, digits, underscores) or a `https://t.me/` URL.
    fn telegram(key: &'static str, v: &str) -> Result<Contact, ConfigError> {
        let v = v.trim();
        let name = v
            .strip_prefix('@')
            .or_else(|| v.strip_prefix("https://t.me/"))
            .unwrap_or_default();
        if (5..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            Ok(Contact {
                label: format!("@{name}"),
                href: format!("https://t.me/{name}"),
            })
        } else {
            Err(invalid(
                key,
                format!("{v:?} must be a Telegram @name or a https://t.me/ link"),
            ))
        }
    }
}

impl Default for PaymentConfig {
    /// Payments off, placeholders for the seller, 24 h expiry, hold under-payments, no tax.
    fn default() -> Self {
        Self {
            stripe_secret_key: None,
            stripe_webhook_secret: None,
            stripe_api_base: "https://api.stripe.com".into(),
            nowpayments_api_key: None,
            nowpayments_ipn_secret: None,
            nowpayments_api_base: "https://api.nowpayments.io".into(),
            seller_name: "(seller name not configured)".into(),
            seller_address: "(seller address not configured)".into(),
            seller_tax_id: "(seller tax id not configured)".into(),
            purchase_expiry: chrono::Duration::hours(24),
            underpay_policy: UnderpayPolicy::Hold,
            tax_rate: Decimal::ZERO,
            support_contact: None,
            telegram_contact: None,
        }
    }
}

/// Account webhooks (see `webhooks`).
#[derive(Clone)]
pub struct WebhookConfig {
    /// Each account's signing secret is derived from this and the account (nothing is stored):
    /// replicas of the control plane must share it.
    pub signing_key: String,
    /// Whether webhook URLs may name loopback, link-local or private addresses
    /// (`WEBHOOK_ALLOW_PRIVATE=true`; off by default, so that a customer cannot aim the control
    /// plane at the operator's own network).
    pub allow_private: bool,
}

#[derive(Clone)]
pub struct Config {
    pub control_port: u16,
    pub bind_addr: IpAddr,
    pub admin_token: String,
    pub internal_token: String,
    pub database_url: String,
    pub price_factor: Decimal,
    /// The upstream workspace's default `inference_geo`, billed where neither a request nor its
    /// answer names one; `None`: `global`.
    pub upstream_inference_geo: Option<String>,
    pub public_url: String,
    pub data_dir: PathBuf,
    pub payments: PaymentConfig,
    pub webhooks: WebhookConfig,
    /// The spend control of new accounts (`SPEND_CONTROL`: `reserve`, the default, or `balance`).
    pub spend_control: metering::wire::SpendControl,
}

/// Never prints a secret.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("control_port", &self.control_port)
            .field("bind_addr", &self.bind_addr)
            .field("price_factor", &self.price_factor)
            .field("upstream_inference_geo", &self.upstream_inference_geo)
            .field("public_url", &self.public_url)
            .field("data_dir", &self.data_dir)
            .field("card_payments", &self.payments.stripe_secret_key.is_some())
            .field("crypto_payments", &self.payments.nowpayments_api_key.is_some())
            .field("webhook_allow_private", &self.webhooks.allow_private)
            .field("spend_control", &self.spend_control)
            .finish_non_exhaustive()
    }
}

/// The configuration as given, before validation (as the filter's `RawConfig`): file values
/// overlaid with the environment; [`RawConfig::into_config`] validates it into a [`Config`].
#[derive(Debug, Default, Clone)]
pub struct RawConfig(HashMap<String, String>);

impl RawConfig {
    /// Reads the TOML file (flat table of the [`KEYS`]); unknown keys are an error, not ignored.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ConfigError> {
        let file_err = |reason: String| ConfigError::File {
            path: path.to_owned(),
            reason,
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_err(e.to_string()))?;
        let mut map = HashMap::new();
        for (k, v) in table {
            if !KEYS.contains(&k.as_str()) {
                return Err(file_err(format!(
                    "unknown key {k}; known keys: {}",
                    KEYS.join(", ")
                )));
            }
            let value = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => return Err(file_err(format!("{k} must be a string or a number"))),
            };
            map.insert(k, value);
        }
        Ok(Self(map))
    }

    /// Lays the environment over these settings (empty variables count as unset).
    pub fn with_env(mut self, env: impl Fn(&str) -> Option<String>) -> Self {
        for key in KEYS {
            if let Some(v) = env(key).filter(|v| !v.is_empty()) {
                self.0.insert((*key).to_owned(), v);
            }
        }
        self
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.0.insert(key.to_owned(), value.to_owned());
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// Validates everything; tokens not given are taken from, or generated into, the data dir.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let control_port = match self.get("CONTROL_PORT") {
            None => 8080,
            Some(v) => v
                .parse::<u16>()
                .map_err(|_| invalid("CONTROL_PORT", format!("{v:?} is not a port number (0-65535)")))?,
        };
        let bind_addr = match self.get("BIND_ADDR") {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(v) => v
                .parse()
                .map_err(|_| invalid("BIND_ADDR", format!("{v:?} is not an IP address")))?,
        };
        let price_factor = match self.get("PRICE_FACTOR") {
            None => metering::price::default_price_factor(),
            Some(v) => parse_factor(v)?,
        };
        let upstream_inference_geo = match self.get("UPSTREAM_INFERENCE_GEO").map(str::trim) {
            None | Some("") | Some("global") => None,
            Some(v) if v.len() <= 64 && v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => {
                Some(v.to_owned())
            }
            Some(v) => {
                return Err(invalid(
                    "UPSTREAM_INFERENCE_GEO",
                    format!("{v:?} is not an inference_geo value such as us or global"),
                ))
            }
        };
        let database_url = self
            .get("DATABASE_URL")
            .unwrap_or(DEFAULT_DATABASE_URL)
            .to_owned();
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(invalid(
                "DATABASE_URL",
                "must start with postgres:// or postgresql://",
            ));
        }
        let public_url = self
            .get("PUBLIC_URL")
            .map(|s| s.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("http://127.0.0.1:{control_port}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(invalid("PUBLIC_URL", "must start with http:// or https://"));
        }
        let data_dir = PathBuf::from(self.get("DATA_DIR").unwrap_or(".data"));
        let admin_token = resolve_token("ADMIN_TOKEN", self.get("ADMIN_TOKEN"), &data_dir)?;
        let internal_token = resolve_token("INTERNAL_TOKEN", self.get("INTERNAL_TOKEN"), &data_dir)?;
        if admin_token == internal_token {
            return Err(invalid("INTERNAL_TOKEN", "must differ from ADMIN_TOKEN"));
        }
        let payments = self.payment_config()?;
        let webhooks = WebhookConfig {
            signing_key: resolve_token("WEBHOOK_SIGNING_KEY", self.get("WEBHOOK_SIGNING_KEY"), &data_dir)?,
            allow_private: match self.get("WEBHOOK_ALLOW_PRIVATE").map(str::trim) {
                None | Some("false") => false,
                Some("true") => true,
                Some(v) => {
                    return Err(invalid(
                        "WEBHOOK_ALLOW_PRIVATE",
                        format!("{v:?} must be true or false"),
                    ))
                }
            },
        };
        let spend_control = match self.get("SPEND_CONTROL").map(str::trim) {
            None => metering::wire::SpendControl::default(),
            Some(v) => metering::wire::SpendControl::parse(v)
                .ok_or_else(|| invalid("SPEND_CONTROL", format!("{v:?} must be reserve or balance")))?,
        };
        for (key, base) in [
            ("STRIPE_API_BASE", &payments.stripe_api_base),
            ("NOWPAYMENTS_API_BASE", &payments.nowpayments_api_base),
        ] {
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(invalid(key, "must start with http:// or https://"));
            }
        }
        Ok(Config {
            control_port,
            bind_addr,
            admin_token,
            internal_token,
            database_url,
            price_factor,
            upstream_inference_geo,
            public_url,
            data_dir,
            payments,
            webhooks,
            spend_control,
        })
    }
}

impl RawConfig {
    fn payment_config(&self) -> Result<PaymentConfig, ConfigError> {
        let opt = |k: &str| self.get(k).map(str::to_owned);
        let d = PaymentConfig::default();
        let purchase_expiry = match self.get("PURCHASE_EXPIRY_SECONDS") {
            None => d.purchase_expiry,
            Some(v) => match v.trim().parse::<i64>() {
                Ok(s) if (60..=30 * 86_400).contains(&s) => chrono::Duration::seconds(s),
                _ => {
                    return Err(invalid(
                        "PURCHASE_EXPIRY_SECONDS",
                        format!("{v:?} must be a whole number of seconds from 60 to 2592000 (30 days)"),
                    ))
                }
            },
        };
        let underpay_policy = match self.get("CRYPTO_UNDERPAY_POLICY").map(str::trim) {
            None | Some("hold") => UnderpayPolicy::Hold,
            Some("credit_share") => UnderpayPolicy::CreditShare,
            Some(v) => {
                return Err(invalid(
                    "CRYPTO_UNDERPAY_POLICY",
                    format!("{v:?} must be hold or credit_share"),
                ))
            }
        };
        let tax_rate = match self.get("INVOICE_TAX_RATE") {
            None => Decimal::ZERO,
            Some(v) => match Decimal::from_str(v.trim()) {
                Ok(r) if r >= Decimal::ZERO && r < Decimal::ONE => r,
                _ => {
                    return Err(invalid(
                        "INVOICE_TAX_RATE",
                        format!("{v:?} must be a fraction from 0 to below 1, e.g. 0.2 for 20%"),
                    ))
                }
            },
        };
        Ok(PaymentConfig {
            stripe_secret_key: opt("STRIPE_SECRET_KEY"),
            stripe_webhook_secret: opt("STRIPE_WEBHOOK_SECRET"),
            stripe_api_base: opt("STRIPE_API_BASE")
                .map(|s| s.trim_end_matches('/').to_owned())
                .unwrap_or(d.stripe_api_base),
            nowpayments_api_key: opt("NOWPAYMENTS_API_KEY"),
            nowpayments_ipn_secret: opt("NOWPAYMENTS_IPN_SECRET"),
            nowpayments_api_base: opt("NOWPAYMENTS_API_BASE")
                .map(|s| s.trim_end_matches('/').to_owned())
                .unwrap_or(d.nowpayments_api_base),
            seller_name: opt("SELLER_NAME").unwrap_or(d.seller_name),
            seller_address: opt("SELLER_ADDRESS").unwrap_or(d.seller_address),
            seller_tax_id: opt("SELLER_TAX_ID").unwrap_or(d.seller_tax_id),
            purchase_expiry,
            underpay_policy,
            tax_rate,
            support_contact: self
                .get("SUPPORT_CONTACT")
                .map(|v| Contact::support("SUPPORT_CONTACT", v))
                .transpose()?,
            telegram_contact: self
                .get("TELEGRAM_CONTACT")
                .map(|v| Contact::telegram("TELEGRAM_CONTACT", v))
                .transpose()?,
        })
    }
}

fn parse_factor(v: &str) -> Result<Decimal, ConfigError> {
    let f = Decimal::from_str(v.trim()).map_err(|_| {
        invalid(
            "PRICE_FACTOR",
            format!("{v:?} is not a decimal number such as 0.70"),
        )
    })?;
    metering::price::check_factor(f).map_err(|why| invalid("PRICE_FACTOR", why))
}

/// The token of `key` ([`secrets::resolve`]), its errors named with `key`.
fn resolve_token(key: &'static str, given: Option<&str>, data_dir: &Path) -> Result<String, ConfigError> {
    secrets::resolve(key, given, data_dir).map_err(|e| match e {
        SecretError::Invalid(reason) => invalid(key, reason),
        SecretError::Io(message) => ConfigError::Io(message),
    })
}

/// Reads the config file named by `--config FILE` (or `CLAUDESTORE_CONFIG`), then the environment.
pub fn load(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut file = env("CLAUDESTORE_CONFIG").filter(|s| !s.is_empty());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--config" {
            file = Some(
                it.next()
                    .cloned()
                    .ok_or_else(|| ConfigError::Io("--config needs a FILE".into()))?,
            );
        } else if let Some(f) = arg.strip_prefix("--config=") {
            file = Some(f.to_owned());
        } else {
            return Err(ConfigError::Io(format!(
                "unknown argument {arg}; usage: control-plane [--config FILE]"
            )));
        }
    }
    let settings = match file {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            RawConfig::from_toml(&text, &path)?
        }
        None => RawConfig::default(),
    };
    settings.with_env(env).into_config()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;

    /// A data directory of its own for a test.
    pub(crate) fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("cs-config-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn contacts_are_an_email_or_https_and_a_telegram_name() {
        let config = |pairs: &[(&str, &str)]| {
            let mut s = RawConfig::default();
            s.set("DATA_DIR", &temp_dir().display().to_string());
            for (k, v) in pairs {
                s.set(k, v);
            }
            s.into_config()
        };
        let c = config(&[
            ("SUPPORT_CONTACT", "help@example.com"),
            ("TELEGRAM_CONTACT", "@claudestore_sales"),
        ])
        .unwrap();
        let support = c.payments.support_contact.unwrap();
        assert_eq!(
            (support.label.as_str(), support.href.as_str()),
            ("help@example.com", "mailto:help@example.com")
        );
        let telegram = c.payments.telegram_contact.unwrap();
        assert_eq!(
            (telegram.label.as_str(), telegram.href.as_str()),
            ("@claudestore_sales", "https://t.me/claudestore_sales")
        );
        let c = config(&[
            ("SUPPORT_CONTACT", "https://help.example.com/x"),
            ("TELEGRAM_CONTACT", "https://t.me/sales_bot"),
        ])
        .unwrap();
        assert_eq!(
            c.payments.support_contact.unwrap().href,
            "https://help.example.com/x"
        );
        assert_eq!(c.payments.telegram_contact.unwrap().label, "@sales_bot");
        for (key, bad) in [
            ("SUPPORT_CONTACT", "javascript:alert(1)"),
            ("SUPPORT_CONTACT", "http://plain.example.com"),
            ("SUPPORT_CONTACT", "no at sign"),
            ("TELEGRAM_CONTACT", "@ab"),
            ("TELEGRAM_CONTACT", "https://evil.example/x"),
            ("TELEGRAM_CONTACT", "@bad name"),
        ] {
            let err = config(&[(key, bad)]).err().unwrap().to_string();
            assert!(err.starts_with(key), "{bad}: {err}");
        }
        let unset = config(&[]).unwrap();
        assert_eq!(
            unset.payments.seller_placeholders(),
            ["SELLER_NAME", "SELLER_ADDRESS", "SELLER_TAX_ID"]
        );
        let set = config(&[
            ("SELLER_NAME", "Example Ltd"),
            ("SELLER_ADDRESS", "1 Road"),
            ("SELLER_TAX_ID", "GB1"),
        ])
        .unwrap();
        assert!(set.payments.seller_placeholders().is_empty());
    }

    #[test]
    fn environment_overrides_the_file_and_defaults_apply() {
        let dir = temp_dir();
        let file = format!(
            "CONTROL_PORT = 9000\nPRICE_FACTOR = \"0.5\"\nDATA_DIR = \"{}\"\nADMIN_TOKEN = \"file-admin-token-0123\"\n",
            dir.display()
        );
        let settings = RawConfig::from_toml(&file, "test.toml").unwrap();
        let env = |k: &str| (k == "CONTROL_PORT").then(|| "9100".to_owned());
        let config = settings.with_env(env).into_config().unwrap();
        assert_eq!(config.control_port, 9100);
        assert_eq!(config.price_factor, Decimal::new(5, 1));
        assert_eq!(config.admin_token, "file-admin-token-0123");
        assert_eq!(config.public_url, "http://127.0.0.1:9100");
        assert_eq!(config.database_url, DEFAULT_DATABASE_URL);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (key, value) in [
            ("CONTROL_PORT", "80000"),
            ("BIND_ADDR", "localhost:1"),
            ("PRICE_FACTOR", "-1"),
            ("PRICE_FACTOR", "abc"),
            ("DATABASE_URL", "mysql://x"),
            ("ADMIN_TOKEN", "short"),
            ("PUBLIC_URL", "ftp://x"),
            ("PURCHASE_EXPIRY_SECONDS", "10"),
            ("CRYPTO_UNDERPAY_POLICY", "credit"),
            ("INVOICE_TAX_RATE", "20"),
            ("STRIPE_API_BASE", "api.stripe.com"),
            ("UPSTREAM_INFERENCE_GEO", "US East"),
            ("WEBHOOK_ALLOW_PRIVATE", "yes"),
            ("WEBHOOK_SIGNING_KEY", "short"),
            ("SPEND_CONTROL", "prepaid"),
        ] {
            let mut s = RawConfig::default();
            s.set("ADMIN_TOKEN", "admin-token-0123456789");
            s.set("INTERNAL_TOKEN", "internal-token-0123456789");
            s.set("WEBHOOK_SIGNING_KEY", "webhook-signing-key-0123456789");
            s.set(key, value);
            let err = s.into_config().unwrap_err().to_string();
            assert!(err.starts_with(key), "{key}={value}: {err}");
        }
        let err = RawConfig::from_toml("NOPE = 1", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key NOPE"), "{err}");
    }

    #[test]
    fn config_file_comes_from_the_flag_or_the_variable_and_bad_arguments_are_named() {
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cp.toml");
        std::fs::write(&file, "ADMIN_TOKEN = \"file-admin-token-0123\"\nINTERNAL_TOKEN = \"file-internal-token-0123\"\nWEBHOOK_SIGNING_KEY = \"file-webhook-key-0123\"\nCONTROL_PORT = 9001\n").unwrap();
        let path = file.display().to_string();
        let by_flag = load(&["--config".into(), path.clone()], |_| None).unwrap();
        assert_eq!(
            (by_flag.control_port, by_flag.admin_token.as_str()),
            (9001, "file-admin-token-0123")
        );
        let env = |k: &str| match k {
            "CLAUDESTORE_CONFIG" => Some(path.clone()),
            "CONTROL_PORT" => Some("9002".to_owned()),
            _ => None,
        };
        assert_eq!(load(&[], env).unwrap().control_port, 9002);
        let err = load(&["--verbose".into()], |_| None).unwrap_err().to_string();
        assert!(err.contains("--verbose"), "{err}");
        let err = load(&["--config=/nonexistent/cp.toml".into()], |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/cp.toml"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn payment_settings_parse_with_defaults() {
        let mut s = RawConfig::default();
        s.set("ADMIN_TOKEN", "admin-token-0123456789");
        s.set("INTERNAL_TOKEN", "internal-token-0123456789");
        s.set("WEBHOOK_SIGNING_KEY", "webhook-signing-key-0123456789");
        let defaults = s.clone().into_config().unwrap().payments;
        assert_eq!(defaults.purchase_expiry, chrono::Duration::hours(24));
        assert_eq!(defaults.underpay_policy, UnderpayPolicy::Hold);
        assert_eq!(defaults.tax_rate, Decimal::ZERO);
        assert_eq!(defaults.stripe_api_base, "https://api.stripe.com");
        s.set("PURCHASE_EXPIRY_SECONDS", "3600");
        s.set("CRYPTO_UNDERPAY_POLICY", "credit_share");
        s.set("INVOICE_TAX_RATE", "0.19");
        s.set("STRIPE_API_BASE", "http://127.0.0.1:9999/");
        let p = s.into_config().unwrap().payments;
        assert_eq!(p.purchase_expiry, chrono::Duration::hours(1));
        assert_eq!(p.underpay_policy, UnderpayPolicy::CreditShare);
        assert_eq!(p.tax_rate, Decimal::new(19, 2));
        assert_eq!(p.stripe_api_base, "http://127.0.0.1:9999");
    }

    #[test]
    fn debug_output_has_no_secret() {
        let mut s = RawConfig::default();
        s.set("ADMIN_TOKEN", "admin-token-0123456789");
        s.set("INTERNAL_TOKEN", "internal-token-0123456789");
        s.set("WEBHOOK_SIGNING_KEY", "webhook-signing-key-0123456789");
        let text = format!("{:?}", s.into_config().unwrap());
        assert!(
            !text.contains("admin-token")
                && !text.contains("internal-token")
                && !text.contains("signing-key"),
            "{text}"
        );
    }
}
