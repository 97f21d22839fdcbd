//! Opaque, tamper-evident pagination cursors: `base64url(json(last key, scope)) "." base64url(mac)`.
//! The scope (tenant + list) is inside the MAC, so a cursor only resumes the list it came from.

use std::collections::HashMap;

use aws_lc_rs::hmac;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::StorageError;

/// Longest cursor accepted (ours are far shorter); bounds the work an attacker can cause.
const MAX_CURSOR_LEN: usize = 2048;

#[derive(Serialize, Deserialize)]
struct Payload {
    /// The last evaluated key; every key attribute of this table is a string.
    k: HashMap<String, String>,
    s: String,
}

#[derive(Clone)]
pub struct CursorSealer {
    key: hmac::Key,
}

impl std::fmt::Debug for CursorSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorSealer([redacted])")
    }
}

impl CursorSealer {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    pub fn seal(
        &self,
        last_key: &HashMap<String, AttributeValue>,
        scope: &str,
    ) -> Result<String, StorageError> {
        let k = last_key
            .iter()
            .map(|(name, value)| match value {
                AttributeValue::S(s) => Ok((name.clone(), s.clone())),
                _ => Err(StorageError::Corrupt(format!(
                    "key attribute `{name}` is not a string"
                ))),
            })
            .collect::<Result<_, _>>()?;
        let payload = serde_json::to_vec(&Payload {
            k,
            s: scope.to_string(),
        })
        .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let tag = hmac::sign(&self.key, &payload);
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        ))
    }

    pub fn open(
        &self,
        cursor: &str,
        scope: &str,
    ) -> Result<HashMap<String, AttributeValue>, StorageError> {
        if cursor.len() > MAX_CURSOR_LEN {
            return Err(StorageError::InvalidCursor);
        }
        let (payload_b64, tag_b64) = cursor.split_once('.').ok_or(StorageError::InvalidCursor)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| StorageError::InvalidCursor)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag_b64)
            .map_err(|_| StorageError::InvalidCursor)?;
        hmac::verify(&self.key, &payload, &tag).map_err(|_| StorageError::InvalidCursor)?;
        let payload: Payload =
            serde_json::from_slice(&payload).map_err(|_| StorageError::InvalidCursor)?;
        if payload.s != scope {
            return Err(StorageError::InvalidCursor);
        }
        Ok(payload
            .k
            .into_iter()
            .map(|(name, value)| (name, AttributeValue::S(value)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_string(), AttributeValue::S("T#a".into())),
            ("sk".to_string(), AttributeValue::S("DASH#1".into())),
        ])
    }

    #[test]
    fn round_trips_within_its_scope() {
        let sealer = CursorSealer::new(b"0123456789abcdef0123456789abcdef");
        let cursor = sealer.seal(&key(), "a/dashboards").unwrap();
        assert_eq!(sealer.open(&cursor, "a/dashboards").unwrap(), key());
    }

    #[test]
    fn rejects_tampering_other_scopes_and_other_keys() {
        let sealer = CursorSealer::new(b"0123456789abcdef0123456789abcdef");
        let cursor = sealer.seal(&key(), "a/dashboards").unwrap();
        let (payload, tag) = cursor.split_once('.').unwrap();
        let forged_payload =
            URL_SAFE_NO_PAD.encode(br#"{"k":{"pk":"T#b","sk":"DASH#1"},"s":"a/dashboards"}"#);
        let cases = [
            format!("{forged_payload}.{tag}"),
            format!("{payload}.AAAA"),
            format!("{payload}x.{tag}"),
            "garbage".to_string(),
            String::new(),
            "a".repeat(5000),
        ];
        for bad in cases {
            assert!(matches!(
                sealer.open(&bad, "a/dashboards"),
                Err(StorageError::InvalidCursor)
            ));
        }
        assert!(matches!(
            sealer.open(&cursor, "b/dashboards"),
            Err(StorageError::InvalidCursor)
        ));
        let other = CursorSealer::new(b"another-key-another-key-another-");
        assert!(matches!(
            other.open(&cursor, "a/dashboards"),
            Err(StorageError::InvalidCursor)
        ));
    }
}
