//! Signed canonical requests: Contentful's request verification (as
//! `@contentful/node-apps-toolkit` signs). `x-contentful-signature` is the hex HMAC-SHA256 of
//! `METHOD\nPATH\nHEADERS\nBODY`, where HEADERS are the headers named by
//! `x-contentful-signed-headers` (itself and `x-contentful-timestamp` among them), lowercased,
//! trimmed, sorted by name and joined as `name:value` with `;`; PATH is encoded as
//! JavaScript's `encodeURI` does (the query through `querystring.escape` first).
//! `x-contentful-timestamp` is in milliseconds and must be within the replay window.

use hmac::{Hmac, Mac};
use sha2::Sha256;

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

/// `encodeURI` of JavaScript, over UTF-8 bytes.
fn encode_uri(s: &str, keep: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || keep.as_bytes().contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path as the signer normalises it.
pub fn normalized_path(path_and_query: &str) -> String {
    const URI: &str = "-_.!~*'();/?:@&=+$,#";
    const ESCAPE: &str = "-_.!~*'()";
    match path_and_query.split_once('?') {
        Some((path, query)) if !query.is_empty() => {
            encode_uri(&format!("{path}?{}", encode_uri(query, ESCAPE)), URI)
        }
        Some((path, _)) => encode_uri(path, URI),
        None => encode_uri(path_and_query, URI),
    }
}

fn digest(
    secret: &[u8],
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Hmac<Sha256> {
    let joined = headers
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(";");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(
        format!(
            "{}\n{}\n{joined}\n",
            method.to_uppercase(),
            normalized_path(path)
        )
        .as_bytes(),
    );
    mac.update(body);
    mac
}

/// What a verified request's signature covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub timestamp_ms: i64,
    /// The headers the signature covers (lowercase): only these may be trusted.
    pub signed_headers: Vec<String>,
}

/// Verifies a request against any of `secrets`.
pub fn verify(
    method: &str,
    path_and_query: &str,
    headers: &http::HeaderMap,
    body: &[u8],
    secrets: &[Vec<u8>],
    tolerance_ms: i64,
    now_ms: i64,
) -> Result<Verified, SignatureError> {
    let get = |name: &'static str| -> Result<&str, SignatureError> {
        headers
            .get(name)
            .ok_or(SignatureError::Missing(name))?
            .to_str()
            .map_err(|_| SignatureError::Malformed(name))
    };
    let signature = hex::decode(get("x-contentful-signature")?.trim())
        .map_err(|_| SignatureError::Malformed("x-contentful-signature"))?;
    let timestamp: i64 = get("x-contentful-timestamp")?
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed("x-contentful-timestamp"))?;
    if now_ms.saturating_sub(timestamp).saturating_abs() > tolerance_ms {
        return Err(SignatureError::Stale);
    }
    let names: Vec<String> = get("x-contentful-signed-headers")?
        .split(',')
        .map(|n| n.trim().to_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    if !names.iter().any(|n| n == "x-contentful-timestamp") {
        return Err(SignatureError::Malformed("x-contentful-signed-headers"));
    }
    let mut signed = Vec::with_capacity(names.len());
    for name in &names {
        // A named header that is absent is not signed (as the toolkit picks only present ones).
        if let Some(v) = headers.get(name.as_str()) {
            let v = v
                .to_str()
                .map_err(|_| SignatureError::Malformed("a signed header"))?;
            signed.push((name.clone(), v.trim().to_string()));
        }
    }
    signed.sort();
    for secret in secrets {
        // verify_slice compares in constant time.
        if digest(secret, method, path_and_query, &signed, body)
            .verify_slice(&signature)
            .is_ok()
        {
            return Ok(Verified {
                timestamp_ms: timestamp,
                signed_headers: signed.into_iter().map(|(k, _)| k).collect(),
            });
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_as_the_toolkit_does() {
        assert_eq!(
            normalized_path("/webhooks/contentful"),
            "/webhooks/contentful"
        );
        assert_eq!(normalized_path("/a b"), "/a%20b");
        // The query is escaped, then the whole is encodeURI'd (its `%` again).
        assert_eq!(normalized_path("/h?x=1&y=2"), "/h?x%253D1%2526y%253D2");
    }
}
