//! `pull-jwt`: an HS256 JWT naming one pull, as the white-label routes expect. Only the
//! simulator reads it, but it has the real shape so that clients which peek at it keep working.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How long a pull JWT stays valid (sandbox clock).
pub const LIFETIME_SECS: i64 = 24 * 3600;

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

pub fn issue(key: &[u8], pull_id: &str, team_id: &str, now: i64) -> String {
    let header = B64.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let claims =
        json!({"pull_id": pull_id, "team_id": team_id, "iat": now, "exp": now + LIFETIME_SECS});
    let payload = B64.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let sig = B64.encode(mac(key, signing_input.as_bytes()));
    format!("{signing_input}.{sig}")
}

/// The pull id the token was issued for, if the token is genuine and unexpired.
pub fn verify(key: &[u8], token: &str, now: i64) -> Option<String> {
    let mut parts = token.trim().splitn(3, '.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    let expected = mac(key, format!("{h}.{p}").as_bytes());
    let given = B64.decode(s).ok()?;
    if !bool::from(given.ct_eq(&expected)) {
        return None;
    }
    let claims: Value = serde_json::from_slice(&B64.decode(p).ok()?).ok()?;
    if claims["exp"].as_i64()? < now {
        return None;
    }
    claims["pull_id"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_expire_tamper() {
        let key = [7u8; 32];
        let t = issue(&key, "p1", "team", 1000);
        assert_eq!(verify(&key, &t, 1000).as_deref(), Some("p1"));
        assert_eq!(verify(&key, &t, 1000 + LIFETIME_SECS + 1), None);
        assert_eq!(verify(&[8u8; 32], &t, 1000), None);
        assert_eq!(verify(&key, "a.b.c", 1000), None);
    }
}
