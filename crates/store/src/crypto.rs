//! Encryption at rest for vendor secrets (access tokens, reconnect tokens): AES-256-GCM, each
//! ciphertext tagged with the id of the key that sealed it so that keys can rotate — new writes
//! use the active key, old rows stay readable while their key is still configured.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretSlice};

const NONCE_LEN: usize = 12;
/// A sealed blob is this much longer than its plaintext: the nonce and the GCM tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 16;
/// How a sealed text value starts; the key id and the base64 of the sealed bytes follow.
pub const SEALED_TEXT_PREFIX: &str = "sealed:v1:";

/// The key id of a text sealed by [`Keyring::seal_text`]; `None` for plaintext.
pub fn sealed_text_key_id(text: &str) -> Option<&str> {
    split_sealed_text(text).map(|(key_id, _)| key_id)
}

fn split_sealed_text(text: &str) -> Option<(&str, &str)> {
    text.strip_prefix(SEALED_TEXT_PREFIX)?.split_once(':')
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("encryption key `{0}` is not configured")]
    UnknownKey(String),
    #[error("encryption key `{id}` must be 32 bytes of base64 (got {len} bytes)")]
    BadKeyLength { id: String, len: usize },
    #[error("encryption key `{0}` is not valid base64")]
    BadKeyEncoding(String),
    #[error("encryption key id `{0}` may contain only letters, digits, `-` and `_`")]
    BadKeyId(String),
    #[error("no encryption key configured")]
    NoKeys,
    #[error("ciphertext sealed with key `{0}` could not be opened (wrong key or tampered data)")]
    Corrupt(String),
}

/// The configured keys; the first one given is the active one.
pub struct Keyring {
    active: String,
    keys: BTreeMap<String, SecretSlice<u8>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// `keys` as (id, base64 key) pairs; the first is the one new secrets are sealed with.
    pub fn from_base64(keys: &[(String, String)]) -> Result<Self, KeyringError> {
        let (active, _) = keys.first().ok_or(KeyringError::NoKeys)?;
        let mut map = BTreeMap::new();
        for (id, encoded) in keys {
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(KeyringError::BadKeyId(id.clone()));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| KeyringError::BadKeyEncoding(id.clone()))?;
            if bytes.len() != 32 {
                return Err(KeyringError::BadKeyLength {
                    id: id.clone(),
                    len: bytes.len(),
                });
            }
            map.insert(id.clone(), SecretSlice::from(bytes));
        }
        Ok(Self {
            active: active.clone(),
            keys: map,
        })
    }

    /// A fresh random key, base64-encoded, for `coverwatch` to write a development key file.
    pub fn generate_key_base64() -> String {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        base64::engine::general_purpose::STANDARD.encode(key)
    }

    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// Seal `plaintext`; `aad` binds the ciphertext to its row so it cannot be moved to another.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<(String, Vec<u8>), KeyringError> {
        let cipher = self.cipher(&self.active)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| KeyringError::Corrupt(self.active.clone()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok((self.active.clone(), out))
    }

    pub fn open(&self, key_id: &str, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let cipher = self.cipher(key_id)?;
        if blob.len() < NONCE_LEN {
            return Err(KeyringError::Corrupt(key_id.to_owned()));
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| KeyringError::Corrupt(key_id.to_owned()))
    }

    /// Whether `key_id` is configured (a row sealed with it can be opened).
    pub fn has_key(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    /// Seal a text value into a self-describing text (`sealed:v1:{key id}:{base64}`), for
    /// secrets kept in a TEXT column or inside a JSON document.
    pub fn seal_text(&self, plaintext: &str, aad: &[u8]) -> Result<String, KeyringError> {
        let (key_id, blob) = self.seal(plaintext.as_bytes(), aad)?;
        Ok(format!(
            "{SEALED_TEXT_PREFIX}{key_id}:{}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        ))
    }

    /// Open what [`Keyring::seal_text`] sealed. Text without the prefix was stored before values
    /// were sealed and is returned as it is.
    pub fn open_text(&self, text: &str, aad: &[u8]) -> Result<String, KeyringError> {
        let Some((key_id, encoded)) = split_sealed_text(text) else {
            return Ok(text.to_owned());
        };
        let blob = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| KeyringError::Corrupt(key_id.to_owned()))?;
        let plain = self.open(key_id, &blob, aad)?;
        String::from_utf8(plain).map_err(|_| KeyringError::Corrupt(key_id.to_owned()))
    }

    fn cipher(&self, key_id: &str) -> Result<Aes256Gcm, KeyringError> {
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| KeyringError::UnknownKey(key_id.to_owned()))?;
        Aes256Gcm::new_from_slice(key.expose_secret())
            .map_err(|_| KeyringError::Corrupt(key_id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ids: &[&str]) -> (Keyring, Vec<(String, String)>) {
        let keys: Vec<_> = ids
            .iter()
            .map(|id| (id.to_string(), Keyring::generate_key_base64()))
            .collect();
        (Keyring::from_base64(&keys).unwrap(), keys)
    }

    #[test]
    fn seals_and_opens_with_the_same_row_binding() {
        let (ring, _) = ring(&["k1"]);
        let (kid, blob) = ring.seal(b"tok_secret", b"lnk_1").unwrap();
        assert_eq!(kid, "k1");
        assert!(!blob.windows(10).any(|w| w == b"tok_secret"));
        assert_eq!(ring.open(&kid, &blob, b"lnk_1").unwrap(), b"tok_secret");
        assert_eq!(
            ring.open(&kid, &blob, b"lnk_2"),
            Err(KeyringError::Corrupt("k1".into()))
        );
    }

    #[test]
    fn rotation_keeps_old_rows_readable() {
        let (old_ring, old_keys) = ring(&["2025"]);
        let (kid, blob) = old_ring.seal(b"secret", b"row").unwrap();
        let mut keys = vec![("2026".to_string(), Keyring::generate_key_base64())];
        keys.extend(old_keys);
        let new_ring = Keyring::from_base64(&keys).unwrap();
        assert_eq!(new_ring.active_key_id(), "2026");
        assert_eq!(new_ring.open(&kid, &blob, b"row").unwrap(), b"secret");
        let (only_new, _) = ring(&["2026"]);
        assert_eq!(
            only_new.open(&kid, &blob, b"row"),
            Err(KeyringError::UnknownKey("2025".into()))
        );
    }

    #[test]
    fn sealed_text_names_its_key_and_plaintext_passes_through() {
        let (ring, _) = ring(&["k1"]);
        let sealed = ring
            .seal_text("https://x/reconnect?reconnectToken=tok", b"lnk_1")
            .unwrap();
        assert!(sealed.starts_with("sealed:v1:k1:"), "{sealed}");
        assert!(!sealed.contains("tok"), "{sealed}");
        assert_eq!(sealed_text_key_id(&sealed), Some("k1"));
        assert_eq!(
            ring.open_text(&sealed, b"lnk_1").unwrap(),
            "https://x/reconnect?reconnectToken=tok"
        );
        assert_eq!(
            ring.open_text(&sealed, b"lnk_2"),
            Err(KeyringError::Corrupt("k1".into()))
        );
        assert_eq!(sealed_text_key_id("https://plain"), None);
        assert_eq!(
            ring.open_text("https://plain", b"lnk_1").unwrap(),
            "https://plain"
        );
        let (blob_kid, blob) = ring.seal(b"abc", b"").unwrap();
        assert_eq!(blob_kid, "k1");
        assert_eq!(blob.len(), 3 + SEAL_OVERHEAD);
    }

    #[test]
    fn bad_keys_are_refused_by_name() {
        assert_eq!(Keyring::from_base64(&[]).unwrap_err(), KeyringError::NoKeys);
        assert_eq!(
            Keyring::from_base64(&[("k".into(), "c2hvcnQ=".into())]).unwrap_err(),
            KeyringError::BadKeyLength {
                id: "k".into(),
                len: 5
            }
        );
        assert_eq!(
            Keyring::from_base64(&[("k".into(), "***".into())]).unwrap_err(),
            KeyringError::BadKeyEncoding("k".into())
        );
        assert_eq!(
            Keyring::from_base64(&[("k 1".into(), Keyring::generate_key_base64())]).unwrap_err(),
            KeyringError::BadKeyId("k 1".into())
        );
    }
}
