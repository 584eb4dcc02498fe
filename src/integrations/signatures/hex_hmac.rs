//! A hex HMAC-SHA256 of the raw body in one header, no timestamp: Cal.com's
//! `X-Cal-Signature-256`. Compared in constant time against each secret (rotation); with no
//! signed timestamp, replays are caught by the caller's idempotency on the event.

use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing signature header")]
    Missing,
    #[error("malformed signature header")]
    Malformed,
    #[error("the signature does not match")]
    Mismatch,
}

pub fn sign(body: &[u8], secret: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[Vec<u8>],
) -> Result<(), SignatureError> {
    let given = header.ok_or(SignatureError::Missing)?.trim();
    let given = given.strip_prefix("sha256=").unwrap_or(given);
    let given = hex::decode(given).map_err(|_| SignatureError::Malformed)?;
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(body);
        // verify_slice compares in constant time.
        if mac.verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let s = sign(b"{}", b"k");
        assert_eq!(verify(Some(&s), b"{}", &[b"k".to_vec()]), Ok(()));
        assert_eq!(
            verify(Some(&s), b"{ }", &[b"k".to_vec()]),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some("zz"), b"{}", &[b"k".to_vec()]),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(None, b"{}", &[b"k".to_vec()]),
            Err(SignatureError::Missing)
        );
    }
}
