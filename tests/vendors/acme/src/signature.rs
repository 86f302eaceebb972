//! `acme-signature: sha256=<hex>`: HMAC-SHA256 of the raw body with the signing secret. Acme's
//! deliveries arrive on a per-link URL whose token already names the link; the signature is a
//! second, independent proof that Acme sent the bytes, so a leaked URL (proxy logs, a support
//! ticket) is not enough to forge a delivery.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header, lowercase as the listener hands headers over.
pub const HEADER: &str = "acme-signature";
const PREFIX: &str = "sha256=";

fn mac(secret: &str) -> Hmac<Sha256> {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length")
}

/// The header value Acme sends with `body`.
pub fn header_value(secret: &str, body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(body);
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a header does not prove the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not `sha256=` followed by 64 hex digits.
    Malformed(&'static str),
    Mismatch,
}

/// Whether `header` is `body` signed with `secret`, compared in constant time.
pub fn verify(secret: &str, header: &str, body: &[u8]) -> Result<(), Invalid> {
    let digest = header
        .trim()
        .strip_prefix(PREFIX)
        .ok_or(Invalid::Malformed("expected `sha256=<hex>`"))?;
    let expected = hex::decode(digest).map_err(|_| Invalid::Malformed("digest is not hex"))?;
    if expected.len() != 32 {
        return Err(Invalid::Malformed("digest is not 32 bytes"));
    }
    let mut mac = mac(secret);
    mac.update(body);
    // `verify_slice` compares in constant time: no timing tells a forger how close it got.
    mac.verify_slice(&expected).map_err(|_| Invalid::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_proves_its_body_and_nothing_else() {
        let header = header_value("whsec", b"{\"a\":1}");
        assert!(header.starts_with("sha256=") && header.len() == 7 + 64);
        assert_eq!(verify("whsec", &header, b"{\"a\":1}"), Ok(()));
        assert_eq!(
            verify("whsec", &header, b"{\"a\":2}"),
            Err(Invalid::Mismatch)
        );
        assert_eq!(
            verify("other", &header, b"{\"a\":1}"),
            Err(Invalid::Mismatch)
        );
        assert!(matches!(
            verify("whsec", "md5=00", b""),
            Err(Invalid::Malformed(_))
        ));
        assert!(matches!(
            verify("whsec", "sha256=zz", b""),
            Err(Invalid::Malformed(_))
        ));
        assert!(matches!(
            verify("whsec", "sha256=00", b""),
            Err(Invalid::Malformed(_))
        ));
    }
}
