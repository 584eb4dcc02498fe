//! Standard Webhooks signatures (standardwebhooks.com; what Svix signs with, so Clerk's,
//! Supabase's and Resend's webhooks): `webhook-id` (or `svix-id`), `webhook-timestamp`
//! (Unix seconds) and `webhook-signature`, a space-separated list of `v1,<base64 HMAC-SHA256
//! of "id.timestamp.body">`; the secret is `whsec_` + base64. One implementation for every
//! sender of this family: the raw body is verified before anything parses it, signatures
//! are compared in constant time, a timestamp outside the tolerance is refused (replays), and
//! any of several secrets may match (rotation).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A verified delivery: its id (for idempotency) and timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: String,
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("timestamp outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// The HMAC key of a `whsec_...` secret (or of a raw secret without the prefix).
pub fn secret_key(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    STANDARD
        .decode(b64)
        .map_err(|_| SignatureError::Malformed("secret"))
}

/// A header by its Standard Webhooks name or its Svix one.
fn header<'a>(
    headers: &'a http::HeaderMap,
    name: &'static str,
    svix: &'static str,
) -> Result<&'a str, SignatureError> {
    headers
        .get(name)
        .or_else(|| headers.get(svix))
        .ok_or(SignatureError::Missing(name))?
        .to_str()
        .map_err(|_| SignatureError::Malformed(name))
}

/// Verifies a delivery's headers and raw body against any of `secrets`.
pub fn verify(
    headers: &http::HeaderMap,
    body: &[u8],
    secrets: &[Vec<u8>],
    tolerance_secs: i64,
    now_secs: i64,
) -> Result<Delivery, SignatureError> {
    let id = header(headers, "webhook-id", "svix-id")?;
    let ts_text = header(headers, "webhook-timestamp", "svix-timestamp")?;
    let signatures = header(headers, "webhook-signature", "svix-signature")?;
    let timestamp: i64 = ts_text
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed("webhook-timestamp"))?;
    if now_secs.saturating_sub(timestamp).saturating_abs() > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let given: Vec<Vec<u8>> = signatures
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .take(super::MAX_SIGNATURES)
        .filter_map(|s| STANDARD.decode(s).ok())
        .collect();
    if given.is_empty() {
        return Err(SignatureError::Malformed("webhook-signature"));
    }
    let message = signed(id, ts_text.trim(), body);
    for secret in secrets {
        // The body is hashed once per secret; each candidate only finishes a copy.
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(&message);
        // verify_slice compares in constant time.
        if given.iter().any(|g| mac.clone().verify_slice(g).is_ok()) {
            return Ok(Delivery {
                id: id.to_string(),
                timestamp,
            });
        }
    }
    Err(SignatureError::Mismatch)
}

fn signed(id: &str, ts: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(id.len() + ts.len() + body.len() + 2);
    m.extend_from_slice(id.as_bytes());
    m.push(b'.');
    m.extend_from_slice(ts.as_bytes());
    m.push(b'.');
    m.extend_from_slice(body);
    m
}

/// Signs a delivery (tests, and a sender of our own): the `v1,...` signature.
pub fn sign(secret: &[u8], id: &str, ts: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, &signed(id, &ts.to_string(), body));
    format!("v1,{}", STANDARD.encode(tag.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str, ts: i64, sig: &str, svix: bool) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        let p = if svix { "svix" } else { "webhook" };
        h.insert(
            http::HeaderName::from_bytes(format!("{p}-id").as_bytes()).unwrap(),
            id.parse().unwrap(),
        );
        h.insert(
            http::HeaderName::from_bytes(format!("{p}-timestamp").as_bytes()).unwrap(),
            ts.to_string().parse().unwrap(),
        );
        h.insert(
            http::HeaderName::from_bytes(format!("{p}-signature").as_bytes()).unwrap(),
            sig.parse().unwrap(),
        );
        h
    }

    #[test]
    fn verifies_rotates_and_refuses() {
        // The Standard Webhooks specification's own example.
        let secret = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let h = headers("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, sig, false);
        let ok = verify(&h, body, &[secret.clone()], 300, 1614265330 + 10).unwrap();
        assert_eq!(ok.id, "msg_p5jXN8AQM9LWM0D4loKWxJek");
        assert_eq!(sign(&secret, &ok.id, 1614265330, body), sig);
        // Svix's header names; a list with an old signature first; another secret first.
        let h = headers(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            &format!("v1,AAAA {sig}"),
            true,
        );
        assert!(
            verify(
                &h,
                body,
                &[b"old".to_vec(), secret.clone()],
                300,
                1614265330
            )
            .is_ok()
        );
        // Stale, tampered, wrong secret, missing, malformed.
        let h = headers("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, sig, false);
        assert_eq!(
            verify(&h, body, &[secret.clone()], 300, 1614265330 + 301).unwrap_err(),
            SignatureError::Stale
        );
        assert_eq!(
            verify(&h, b"{\"test\": 1}", &[secret.clone()], 300, 1614265330).unwrap_err(),
            SignatureError::Mismatch
        );
        assert_eq!(
            verify(&h, body, &[b"nope".to_vec()], 300, 1614265330).unwrap_err(),
            SignatureError::Mismatch
        );
        assert_eq!(
            verify(&http::HeaderMap::new(), body, &[secret.clone()], 300, 0).unwrap_err(),
            SignatureError::Missing("webhook-id")
        );
        let h = headers("m", 1614265330, "v2,zzz", false);
        assert_eq!(
            verify(&h, body, &[secret], 300, 1614265330).unwrap_err(),
            SignatureError::Malformed("webhook-signature")
        );
    }

    #[test]
    fn only_the_first_signatures_of_a_long_list_count() {
        let secret = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let with_junk = |n: usize| {
            let junk = vec!["v1,AAAA"; n].join(" ");
            headers(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                &format!("{junk} {sig}"),
                false,
            )
        };
        let check = |h: &http::HeaderMap| verify(h, body, &[secret.clone()], 300, 1614265330);
        assert!(check(&with_junk(super::super::MAX_SIGNATURES - 1)).is_ok());
        assert_eq!(
            check(&with_junk(super::super::MAX_SIGNATURES)).unwrap_err(),
            SignatureError::Mismatch
        );
        // Thousands of candidates cost what eight do: the body is hashed once.
        assert_eq!(
            check(&with_junk(20_000)).unwrap_err(),
            SignatureError::Mismatch
        );
    }
}
