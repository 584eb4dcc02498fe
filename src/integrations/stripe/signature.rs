//! `Stripe-Signature` verification, as Stripe's own libraries do it: the header carries
//! `t=<unix seconds>` and one or more `v1=<hex HMAC-SHA256>`; the MAC is over
//! `"{t}.{raw body}"` keyed with the whole `whsec_...` string; any `v1` matching any
//! configured secret (several during a rotation) passes, compared in constant time; a
//! timestamp older than the tolerance (300 s) fails. Other schemes (`v0`) are ignored.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    #[error("unable to extract timestamp and signatures from the Stripe-Signature header")]
    Malformed,
    #[error("no signatures found with expected scheme v1")]
    NoV1,
    #[error(
        "timestamp outside the tolerance zone ({age_secs} s old, tolerance {tolerance_secs} s)"
    )]
    Stale { age_secs: i64, tolerance_secs: i64 },
    #[error("no signatures found matching the expected signature for payload")]
    Mismatch,
    #[error("no webhook secret is configured")]
    NoSecret,
}

/// The parsed header: the timestamp and every `v1` signature (hex, undecoded).
#[derive(Debug, PartialEq, Eq)]
pub struct SignatureHeader<'a> {
    pub timestamp: i64,
    pub v1: Vec<&'a str>,
}

/// Parses `t=...,v1=...,v1=...,v0=...`. Like Stripe's libraries: items split on `,` and
/// then on the first `=`; the first `t` wins; unknown keys are ignored.
pub fn parse_header(header: &str) -> Result<SignatureHeader<'_>, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" if timestamp.is_none() => {
                timestamp = Some(
                    value
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            // As every other scheme: the first few count, the rest cost nothing.
            "v1" if v1.len() < crate::integrations::signatures::MAX_SIGNATURES => {
                v1.push(value.trim())
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if v1.is_empty() {
        return Err(SignatureError::NoV1);
    }
    Ok(SignatureHeader { timestamp, v1 })
}

/// The MAC over `"{timestamp}.{payload}"`, keyed with the whole secret string.
fn signed_payload_mac(payload: &[u8], secret: &str, timestamp: i64) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// The hex `v1` signature of `payload` at `timestamp` (what Stripe sends; tests use it).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    hex::encode(
        signed_payload_mac(payload, secret, timestamp)
            .finalize()
            .into_bytes(),
    )
}

/// Verifies `header` for `payload` against any of `secrets` at time `now` (unix seconds).
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secrets: &[String],
    tolerance_secs: i64,
    now: i64,
) -> Result<i64, SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let header = header
        .filter(|h| !h.trim().is_empty())
        .ok_or(SignatureError::MissingHeader)?;
    let parsed = parse_header(header)?;
    let matched = secrets.iter().any(|secret| {
        let base = signed_payload_mac(payload, secret, parsed.timestamp);
        parsed
            .v1
            .iter()
            .any(|candidate| match hex::decode(candidate) {
                // `verify_slice` compares in constant time.
                Ok(bytes) => base.clone().verify_slice(&bytes).is_ok(),
                Err(_) => false,
            })
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    if tolerance_secs > 0 && parsed.timestamp < now.saturating_sub(tolerance_secs) {
        return Err(SignatureError::Stale {
            age_secs: now.saturating_sub(parsed.timestamp),
            tolerance_secs,
        });
    }
    Ok(parsed.timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;
    // Computed independently: python3 -c 'import hmac,hashlib;
    // print(hmac.new(b"whsec_test_secret", b"1700000000.{\"id\":\"evt_1\",\"object\":\"event\"}",
    // hashlib.sha256).hexdigest())'
    const VECTOR: &str = "0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd";

    #[test]
    fn fixed_vector() {
        assert_eq!(sign(BODY, SECRET, 1_700_000_000), VECTOR);
    }

    #[test]
    fn accepts_valid_rejects_tampered() {
        let t = 1_700_000_000;
        let header = format!("t={t},v1={}", sign(BODY, SECRET, t));
        let secrets = vec![SECRET.to_string()];
        assert_eq!(verify(BODY, Some(&header), &secrets, 300, t + 10), Ok(t));
        let tampered = br#"{"id":"evt_2","object":"event"}"#;
        assert_eq!(
            verify(tampered, Some(&header), &secrets, 300, t),
            Err(SignatureError::Mismatch)
        );
        let other_t = format!("t={},v1={}", t + 1, sign(BODY, SECRET, t));
        assert_eq!(
            verify(BODY, Some(&other_t), &secrets, 300, t),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(BODY, Some(&header), &["whsec_other".into()], 300, t),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn tolerance() {
        let t = 1_700_000_000;
        let header = format!("t={t},v1={}", sign(BODY, SECRET, t));
        let secrets = vec![SECRET.to_string()];
        assert!(verify(BODY, Some(&header), &secrets, 300, t + 300).is_ok());
        assert_eq!(
            verify(BODY, Some(&header), &secrets, 300, t + 301),
            Err(SignatureError::Stale {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn rotation_and_multiple_signatures() {
        let t = 1_700_000_000;
        // During a rotation Stripe signs with both secrets; either configured secret passes.
        let header = format!(
            "t={t},v1={},v1={},v0=ignored",
            sign(BODY, "whsec_old", t),
            sign(BODY, "whsec_new", t)
        );
        assert!(verify(BODY, Some(&header), &["whsec_new".into()], 300, t).is_ok());
        assert!(verify(BODY, Some(&header), &["whsec_old".into()], 300, t).is_ok());
        let only_new = format!("t={t},v1={}", sign(BODY, "whsec_new", t));
        let both = vec!["whsec_old".to_string(), "whsec_new".to_string()];
        assert!(verify(BODY, Some(&only_new), &both, 300, t).is_ok());
    }

    #[test]
    fn malformed_headers() {
        let secrets = vec![SECRET.to_string()];
        let v = |h: Option<&str>| verify(BODY, h, &secrets, 300, 0);
        assert_eq!(v(None), Err(SignatureError::MissingHeader));
        assert_eq!(v(Some("")), Err(SignatureError::MissingHeader));
        assert_eq!(v(Some("garbage")), Err(SignatureError::Malformed));
        assert_eq!(v(Some("t=abc,v1=00")), Err(SignatureError::Malformed));
        assert_eq!(v(Some("t=1")), Err(SignatureError::NoV1));
        assert_eq!(v(Some("t=1,v0=abcd")), Err(SignatureError::NoV1));
        assert_eq!(v(Some("t=1,v1=zz")), Err(SignatureError::Mismatch));
        assert_eq!(
            verify(BODY, Some("t=1,v1=00"), &[], 300, 0),
            Err(SignatureError::NoSecret)
        );
    }
}
