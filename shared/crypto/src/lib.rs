//! KMS envelope encryption for small secrets at rest (Google OAuth tokens, PKCE verifiers).
//!
//! `seal`: one `GenerateDataKey` (AES-256) on the stage key with an encryption context of
//! `{tenant_id, connection_id, purpose}`; the plaintext is encrypted with AES-256-GCM under that
//! data key, a random 96-bit nonce, and the same context (plus the format tag) as AAD. Stored: the
//! [`Envelope`] (format tag, KMS key id, encrypted data key, nonce, ciphertext+tag).
//! `open`: KMS `Decrypt` of the data key *with the same context* (KMS refuses another), then
//! AES-GCM open with the same AAD. A ciphertext copied onto another connection's item therefore
//! fails twice over. Data keys are used once and dropped.

use std::collections::HashMap;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// The format tag: bump it (and keep reading the old one) to change the algorithm or layout.
pub const FORMAT_V1: &str = "kms-envelope/aes-256-gcm/v1";

#[derive(Clone, Debug, thiserror::Error)]
pub enum CipherError {
    /// KMS unreachable, throttled, or refused (answered 503).
    #[error("kms unavailable: {0}")]
    Kms(String),
    /// KMS or AES-GCM refused the envelope: wrong context, swapped or corrupted ciphertext.
    #[error("envelope does not decrypt under this context")]
    Rejected,
    #[error("unsupported envelope format `{0}`")]
    UnsupportedFormat(String),
}

/// Who and what a secret belongs to. All three go into the KMS encryption context and the AAD.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub tenant_id: &'a str,
    pub connection_id: &'a str,
    pub purpose: &'a str,
}

impl Context<'_> {
    fn kms(&self) -> HashMap<String, String> {
        HashMap::from([
            ("tenant_id".to_string(), self.tenant_id.to_string()),
            ("connection_id".to_string(), self.connection_id.to_string()),
            ("purpose".to_string(), self.purpose.to_string()),
        ])
    }

    /// Canonical AAD: fixed order, length-prefixed, so no two contexts share an encoding.
    fn aad(&self, format: &str) -> Vec<u8> {
        let mut aad = Vec::new();
        for part in [format, self.purpose, self.tenant_id, self.connection_id] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }
}

/// What is stored. All binary fields are standard base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub format: String,
    /// The KMS key (ARN) that wrapped the data key; decryption pins it.
    pub key_id: String,
    pub encrypted_data_key: String,
    pub nonce: String,
    pub ciphertext: String,
}

/// Plaintext bytes that are wiped when dropped and never printed.
pub struct Plaintext(Vec<u8>);

impl Plaintext {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        for byte in self.0.iter_mut() {
            // Volatile so the wipe is not optimised away.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
    }
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Plaintext([redacted])")
    }
}

#[derive(Clone, Debug)]
pub struct TokenCipher {
    kms: aws_sdk_kms::Client,
    key_id: String,
}

fn kms_error<E: std::fmt::Display>(error: E) -> CipherError {
    CipherError::Kms(error.to_string())
}

impl TokenCipher {
    pub fn new(kms: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            kms,
            key_id: key_id.into(),
        }
    }

    pub async fn seal(
        &self,
        context: Context<'_>,
        plaintext: &[u8],
    ) -> Result<Envelope, CipherError> {
        let data_key = self
            .kms
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context.kms()))
            .send()
            .await
            .map_err(|e| kms_error(aws_sdk_kms::error::DisplayErrorContext(e)))?;
        let key_bytes = Plaintext(
            data_key
                .plaintext()
                .map(|b| b.as_ref().to_vec())
                .ok_or_else(|| CipherError::Kms("GenerateDataKey returned no plaintext".into()))?,
        );
        let encrypted_key = data_key
            .ciphertext_blob()
            .ok_or_else(|| CipherError::Kms("GenerateDataKey returned no ciphertext".into()))?;
        let key_id = data_key.key_id().unwrap_or(&self.key_id).to_string();

        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CipherError::Kms("random source".into()))?;
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key_bytes.as_bytes())
                .map_err(|_| CipherError::Rejected)?,
        );
        let mut in_out = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.aad(FORMAT_V1)),
            &mut in_out,
        )
        .map_err(|_| CipherError::Rejected)?;
        Ok(Envelope {
            format: FORMAT_V1.to_string(),
            key_id,
            encrypted_data_key: STANDARD.encode(encrypted_key.as_ref()),
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(in_out),
        })
    }

    pub async fn open(
        &self,
        context: Context<'_>,
        envelope: &Envelope,
    ) -> Result<Plaintext, CipherError> {
        if envelope.format != FORMAT_V1 {
            return Err(CipherError::UnsupportedFormat(envelope.format.clone()));
        }
        let decode = |s: &str| STANDARD.decode(s).map_err(|_| CipherError::Rejected);
        let encrypted_key = decode(&envelope.encrypted_data_key)?;
        let nonce: [u8; NONCE_LEN] = decode(&envelope.nonce)?
            .try_into()
            .map_err(|_| CipherError::Rejected)?;
        let mut in_out = decode(&envelope.ciphertext)?;

        let output = self
            .kms
            .decrypt()
            .key_id(&envelope.key_id)
            .ciphertext_blob(Blob::new(encrypted_key))
            .set_encryption_context(Some(context.kms()))
            .send()
            .await;
        let output = match output {
            Ok(output) => output,
            Err(error) => {
                let refused = error.as_service_error().is_some_and(|e| {
                    e.is_invalid_ciphertext_exception() || e.is_incorrect_key_exception()
                });
                return Err(if refused {
                    CipherError::Rejected
                } else {
                    kms_error(aws_sdk_kms::error::DisplayErrorContext(error))
                });
            }
        };
        let key_bytes = Plaintext(
            output
                .plaintext()
                .map(|b| b.as_ref().to_vec())
                .ok_or(CipherError::Rejected)?,
        );
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key_bytes.as_bytes())
                .map_err(|_| CipherError::Rejected)?,
        );
        let plaintext_len = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.aad(&envelope.format)),
                &mut in_out,
            )
            .map_err(|_| CipherError::Rejected)?
            .len();
        in_out.truncate(plaintext_len);
        Ok(Plaintext(in_out))
    }
}
