//! `canopy-signature: t=<unix seconds>,s=<hex>`: lowercase hex HMAC-SHA256, keyed with the
//! webhook's `signing_secret` (its UTF-8 bytes, not base64-decoded), over `"{t}.{raw body}"`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const HEADER: &str = "canopy-signature";

/// The hex HMAC of `"{t}.{body}"`.
pub fn compute(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The header value for a body sent at `t`.
pub fn header_value(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},s={}", compute(secret, t, body))
}

/// Checks a header the way Canopy tells receivers to: any `s=` may match, compared in constant
/// time, and `t` must be within `tolerance_secs` of `now`.
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64, tolerance_secs: i64) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("s", v)) => sigs.push(v.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if (now - t).abs() > tolerance_secs {
        return false;
    }
    let expected = compute(secret, t, body);
    sigs.iter()
        .any(|s| s.as_bytes().ct_eq(expected.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let h = header_value("secret", 1_645_638_136, b"{\"a\":1}");
        assert!(h.starts_with("t=1645638136,s="));
        assert!(verify("secret", &h, b"{\"a\":1}", 1_645_638_136, 300));
        assert!(!verify("secret", &h, b"{\"a\":2}", 1_645_638_136, 300));
        assert!(!verify("other", &h, b"{\"a\":1}", 1_645_638_136, 300));
        assert!(!verify(
            "secret",
            &h,
            b"{\"a\":1}",
            1_645_638_136 + 301,
            300
        ));
    }
}
