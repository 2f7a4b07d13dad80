//! Where a webhook may go, and the secret that signs it.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use reqwest::Url;
use sha2::Sha256;
use uuid::Uuid;

use crate::error::ApiError;

/// The longest webhook URL accepted.
pub const MAX_URL_BYTES: usize = 2048;

/// A URL an account's events may be sent to: http or https, with a host, no credentials, and
/// (unless `allow_private`) not a loopback, link-local or private address literal. A host name is
/// checked again at each delivery, against every address it then resolves to.
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url, ApiError> {
    let bad = |why: &str| ApiError::invalid(format!("webhook_url {why}"));
    if raw.is_empty() || raw.len() > MAX_URL_BYTES || raw.chars().any(char::is_control) {
        return Err(bad(&format!(
            "must be 1 to {MAX_URL_BYTES} bytes without control characters"
        )));
    }
    let url = Url::parse(raw).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an http or https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    let Some(host) = url.host_str() else {
        return Err(bad("has no host"));
    };
    if !allow_private {
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        if literal.is_some_and(|ip| !is_public(ip))
            || host.eq_ignore_ascii_case("localhost")
            || host.ends_with(".localhost")
        {
            return Err(bad(
                "names a loopback, link-local or private address; the operator allows those with WEBHOOK_ALLOW_PRIVATE=true",
            ));
        }
    }
    Ok(url)
}

/// Whether an address is reachable on the public internet (not loopback, private, link-local,
/// shared, unspecified, broadcast, documentation or multicast).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                // 100.64.0.0/10: carrier-grade NAT, often the operator's own network.
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments().first().copied().unwrap_or(0);
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link-local.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// The account's webhook secret for a version of its URL: derived from the signing key, so that
/// nothing secret is stored; a new URL (a new version) gives a new secret.
pub fn secret_for(signing_key: &str, account: Uuid, version: i32) -> String {
    let mac = hmac_hex(
        signing_key.as_bytes(),
        format!("claudestore-webhook-secret:{account}:{version}").as_bytes(),
    );
    format!("whsec_{mac}")
}

/// The `x-claudestore-signature` value of `body` sent at unix time `t`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mac = hmac_hex(secret.as_bytes(), format!("{t}.{body}").as_bytes());
    format!("t={t},v1={mac}")
}

fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn private_and_loopback_targets_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1/hook",
            "http://localhost:8080/",
            "http://api.localhost/",
            "https://10.1.2.3/",
            "http://192.168.0.1/",
            "http://172.16.5.5/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(check_url(url, false).is_err(), "{url}");
            assert!(check_url(url, true).is_ok(), "{url}");
        }
        for url in [
            "https://hooks.example.com/claudestore",
            "http://93.184.216.34:8443/x",
            "https://[2606:4700::1]/",
        ] {
            assert!(check_url(url, false).is_ok(), "{url}");
        }
        for url in [
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "not a url",
            "",
            "http://",
        ] {
            assert!(check_url(url, true).is_err(), "{url}");
        }
    }

    #[test]
    fn secrets_differ_by_account_and_version_and_signatures_follow_the_stripe_scheme() {
        let a = Uuid::from_u128(1);
        let s1 = secret_for("key-0123456789abcdef", a, 1);
        assert!(s1.starts_with("whsec_") && s1.len() == 6 + 64);
        assert_ne!(s1, secret_for("key-0123456789abcdef", a, 2));
        assert_ne!(s1, secret_for("key-0123456789abcdef", Uuid::from_u128(2), 1));
        assert_ne!(s1, secret_for("another-key-0123456789", a, 1));
        let sig = signature(&s1, 1_800_000_000, "{\"id\":1}");
        let (t, v1) = sig.split_once(",v1=").unwrap();
        assert_eq!(t, "t=1800000000");
        let mut mac = Hmac::<Sha256>::new_from_slice(s1.as_bytes()).unwrap();
        mac.update(b"1800000000.{\"id\":1}");
        assert_eq!(v1, hex::encode(mac.finalize().into_bytes()));
    }
}
