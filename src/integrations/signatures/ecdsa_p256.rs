//! ECDSA P-256 signatures over a timestamp and the raw body: SendGrid's signed Event Webhook
//! (`X-Twilio-Email-Event-Webhook-Signature`, the base64 DER signature of SHA-256 over
//! `timestamp || body`, and `X-Twilio-Email-Event-Webhook-Timestamp` in Unix seconds). The
//! public key is the one the sender shows, base64 DER (SubjectPublicKeyInfo).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("timestamp outside the tolerance")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

/// The DER prefix of a P-256 SubjectPublicKeyInfo before its uncompressed point.
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The uncompressed point of a base64 DER P-256 public key.
pub fn public_key(spki_base64: &str) -> Result<Vec<u8>, SignatureError> {
    let der = STANDARD
        .decode(spki_base64.trim())
        .map_err(|_| SignatureError::Malformed("public key"))?;
    match der.strip_prefix(&SPKI_P256_PREFIX[..]) {
        Some(point) if point.len() == 65 && point[0] == 4 => Ok(point.to_vec()),
        _ => Err(SignatureError::Malformed("public key (not P-256)")),
    }
}

/// Verifies `signature` (base64 DER) over `timestamp || body` with any of `keys`
/// (uncompressed points).
pub fn verify(
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    keys: &[Vec<u8>],
    tolerance_secs: i64,
    now_secs: i64,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing("signature"))?;
    let ts = timestamp
        .ok_or(SignatureError::Missing("timestamp"))?
        .trim();
    let t: i64 = ts
        .parse()
        .map_err(|_| SignatureError::Malformed("timestamp"))?;
    if now_secs.saturating_sub(t).saturating_abs() > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let sig = STANDARD
        .decode(signature.trim())
        .map_err(|_| SignatureError::Malformed("signature"))?;
    let mut message = Vec::with_capacity(ts.len() + body.len());
    message.extend_from_slice(ts.as_bytes());
    message.extend_from_slice(body);
    for key in keys {
        let k =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, key);
        if k.verify(&message, &sig).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}
