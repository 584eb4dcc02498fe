//! Timestamped HMAC signatures in one header, `t=<timestamp>,v1=<signature>`: Sanity's
//! webhooks (`sanity-webhook-signature`, a millisecond timestamp and the base64url
//! HMAC-SHA256 of `"{t}.{body}"`, as `@sanity/webhook` makes it). The raw body is verified
//! before anything parses it, in constant time, within a replay window; any of several
//! secrets may match (rotation).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing signature header")]
    Missing,
    #[error("malformed signature header")]
    Malformed,
    #[error("timestamp outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// The signature of `body` at `timestamp_ms` with `secret`, as the header carries it.
pub fn sign(body: &[u8], secret: &[u8], timestamp_ms: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(timestamp_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp_ms},v1={}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// Verifies `header` over `body` against any of `secrets`; returns the timestamp (ms).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[Vec<u8>],
    tolerance_ms: i64,
    now_ms: i64,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let mut t = None;
    let mut sigs = vec![];
    for part in header.split([',', ' ']).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", _)) if sigs.len() == super::MAX_SIGNATURES => {}
            Some(("v1", v)) => sigs.push(
                URL_SAFE_NO_PAD
                    .decode(v.trim_end_matches('='))
                    .map_err(|_| SignatureError::Malformed)?,
            ),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now_ms.abs_diff(t) > tolerance_ms.max(0) as u64 {
        return Err(SignatureError::Stale);
    }
    let signed = |secret: &[u8]| {
        let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
        m.update(t.to_string().as_bytes());
        m.update(b".");
        m.update(body);
        m
    };
    // The body is hashed once per secret; each candidate only finishes a copy, and
    // verify_slice compares in constant time.
    if secrets.iter().any(|k| {
        let mac = signed(k);
        sigs.iter().any(|sig| mac.clone().verify_slice(sig).is_ok())
    }) {
        return Ok(t);
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_sanity_and_verifies() {
        // Made by @sanity/webhook 4.0.4: encodeSignatureHeader('{"a":1}', 1796558400000, 'sec').
        let header = "t=1796558400000,v1=xm0Bzo96DtwVCSZ4LLesH7miUE5Zcmu8Vd-mjQucgAc";
        assert_eq!(sign(br#"{"a":1}"#, b"sec", 1_796_558_400_000), header);
        let now = 1_796_558_400_000 + 1000;
        let secrets = vec![b"old".to_vec(), b"sec".to_vec()];
        assert_eq!(
            verify(Some(header), br#"{"a":1}"#, &secrets, 300_000, now),
            Ok(1_796_558_400_000)
        );
        assert_eq!(
            verify(Some(header), br#"{"a":2}"#, &secrets, 300_000, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                Some(header),
                br#"{"a":1}"#,
                &secrets,
                300_000,
                now + 600_000
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(None, b"", &secrets, 1, now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some("t=x,v1=y"), b"", &secrets, 1, now),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(Some("t=1796558400000"), b"", &secrets, 300_000, now),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn only_the_first_signatures_of_a_long_list_count() {
        let good = "v1=xm0Bzo96DtwVCSZ4LLesH7miUE5Zcmu8Vd-mjQucgAc";
        let header = |junk: usize| {
            let junk = vec!["v1=AAAA"; junk].join(",");
            format!("t=1796558400000,{junk},{good}")
        };
        let now = 1_796_558_400_000 + 1000;
        let check = |h: String| verify(Some(&h), br#"{"a":1}"#, &[b"sec".to_vec()], 300_000, now);
        assert_eq!(
            check(header(super::super::MAX_SIGNATURES - 1)),
            Ok(1_796_558_400_000)
        );
        assert_eq!(
            check(header(super::super::MAX_SIGNATURES)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(check(header(20_000)), Err(SignatureError::Mismatch));
    }
}
