//! Signature keys from a JWKS document: RSA, P-256 and Ed25519 public keys, each checked
//! against the algorithm a token names.
//!
//! Signatures are verified with `ring` (already the TLS stack's), from the JWK's own
//! parameters: RSA modulus and exponent, the P-256 point, the Ed25519 key.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, UnparsedPublicKey};
use serde_json::Value;

use super::JwtError;

/// A public key from a JWK.
#[derive(Debug, Clone)]
pub(super) enum PublicKey {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256 { point: Vec<u8> },
    Ed25519 { x: Vec<u8> },
}

impl PublicKey {
    fn from_jwk(jwk: &Value) -> Result<Self, String> {
        let field = |k: &str| -> Result<Vec<u8>, String> {
            let s = jwk
                .get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("a JWK without `{k}`"))?;
            URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .map_err(|e| format!("`{k}`: {e}"))
        };
        match (
            jwk.get("kty").and_then(Value::as_str),
            jwk.get("crv").and_then(Value::as_str),
        ) {
            (Some("RSA"), _) => Ok(PublicKey::Rsa {
                n: field("n")?,
                e: field("e")?,
            }),
            (Some("EC"), Some("P-256")) => {
                let (x, y) = (field("x")?, field("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err("a P-256 key with the wrong coordinate size".into());
                }
                let mut point = vec![0x04];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Ok(PublicKey::P256 { point })
            }
            (Some("OKP"), Some("Ed25519")) => Ok(PublicKey::Ed25519 { x: field("x")? }),
            (kty, crv) => Err(format!("unsupported key type {kty:?} / curve {crv:?}")),
        }
    }

    /// Verifies `sig` over `msg` with `alg`, if this key is for that algorithm.
    pub(super) fn verify(&self, alg: &str, msg: &[u8], sig: &[u8]) -> Result<(), JwtError> {
        let ok = match (self, alg) {
            (PublicKey::Rsa { n, e }, "RS256") => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                .is_ok(),
            (PublicKey::P256 { point }, "ES256") => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(msg, sig)
                    .is_ok()
            }
            (PublicKey::Ed25519 { x }, "EdDSA") => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(msg, sig)
                .is_ok(),
            // A key of another type than the algorithm's: refused, whatever the signature.
            _ => return Err(JwtError::Algorithm(alg.to_string())),
        };
        if ok { Ok(()) } else { Err(JwtError::Signature) }
    }
}

/// Keys by key id (`""` for a key without one).
pub(super) type KeySet = HashMap<String, PublicKey>;

pub(super) fn parse_jwks(text: &str) -> Result<KeySet, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let keys = match v.get("keys") {
        Some(Value::Array(keys)) => keys.clone(),
        Some(_) => return Err("`keys` is not a list".into()),
        None => vec![v],
    };
    let mut out = HashMap::new();
    for k in &keys {
        // Keys meant for encryption are not signature keys.
        if k.get("use").and_then(Value::as_str) == Some("enc") {
            continue;
        }
        let kid = k
            .get("kid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match PublicKey::from_jwk(k) {
            Ok(key) => {
                out.insert(kid, key);
            }
            Err(e) => tracing::debug!(kid, error = %e, "JWK skipped"),
        }
    }
    if out.is_empty() {
        return Err("no usable key".into());
    }
    Ok(out)
}
