use super::*;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::json;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn token(header: Value, claims: Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let h = b64(header.to_string().as_bytes());
    let p = b64(claims.to_string().as_bytes());
    let sig = sign(format!("{h}.{p}").as_bytes());
    format!("{h}.{p}.{}", b64(&sig))
}

fn config(jwks: &str) -> JwtIssuerConfig {
    serde_json::from_value(json!({"issuer": "https://id.example", "jwks": jwks,
            "audience": ["app"], "tenant_claim": "org_id", "roles_claim": "roles"}))
    .unwrap()
}

fn claims(exp_in: i64) -> Value {
    json!({"iss": "https://id.example", "sub": "user_1", "aud": "app", "org_id": "acme",
            "roles": ["admin"], "exp": now_secs() + exp_in})
}

#[tokio::test]
async fn ec_and_ed25519_tokens_and_what_is_refused() {
    let rng = SystemRandom::new();
    let ec_pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        ec_pkcs8.as_ref(),
        &rng,
    )
    .unwrap();
    let point = ec.public_key().as_ref();
    let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
    let jwks = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec1", "x": b64(&point[1..33]), "y": b64(&point[33..65])},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "x": b64(ed.public_key().as_ref())},
    ]});
    let mut configs = BTreeMap::new();
    configs.insert("clerk".to_string(), config(&jwks.to_string()));
    let v = JwtVerifier::new(&configs).unwrap();
    let es = |c: Value| {
        token(json!({"alg": "ES256", "kid": "ec1"}), c, |m| {
            ec.sign(&rng, m).unwrap().as_ref().to_vec()
        })
    };
    let eddsa = |c: Value| {
        token(json!({"alg": "EdDSA", "kid": "ed1"}), c, |m| {
            ed.sign(m).as_ref().to_vec()
        })
    };

    let ok = v.verify(&es(claims(60))).await.unwrap();
    assert_eq!(
        (ok.tenant.as_str(), ok.user.as_deref()),
        ("acme", Some("user_1"))
    );
    assert_eq!(ok.roles, vec!["admin".to_string()]);
    assert!(v.verify(&eddsa(claims(60))).await.is_ok());
    // Expired beyond the leeway; within it still fine.
    assert_eq!(
        v.verify(&es(claims(-120))).await.unwrap_err(),
        JwtError::Expired
    );
    assert!(v.verify(&es(claims(-10))).await.is_ok());
    // Wrong audience, unknown issuer, no exp, not yet valid.
    let mut c = claims(60);
    c["aud"] = json!("other");
    assert_eq!(v.verify(&es(c)).await.unwrap_err(), JwtError::Audience);
    let mut c = claims(60);
    c["iss"] = json!("https://evil.example");
    assert!(matches!(
        v.verify(&es(c)).await.unwrap_err(),
        JwtError::UnknownIssuer(_)
    ));
    let mut c = claims(60);
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(v.verify(&es(c)).await.unwrap_err(), JwtError::NoExpiry);
    let mut c = claims(60);
    c["nbf"] = json!(now_secs() + 600);
    assert_eq!(v.verify(&es(c)).await.unwrap_err(), JwtError::NotYetValid);
    // A forged claim under a real signature.
    let good = es(claims(60));
    let mut parts: Vec<&str> = good.split('.').collect();
    let mut forged = claims(60);
    forged["org_id"] = json!("victim");
    let forged_payload = b64(forged.to_string().as_bytes());
    parts[1] = &forged_payload;
    assert_eq!(
        v.verify(&parts.join(".")).await.unwrap_err(),
        JwtError::Signature
    );
    // alg none; HS256 signed with the public key as the secret (algorithm confusion);
    // the algorithm of one key with another's id.
    let none = token(json!({"alg": "none", "kid": "ec1"}), claims(60), |_| {
        Vec::new()
    });
    assert!(matches!(
        v.verify(&none).await.unwrap_err(),
        JwtError::Algorithm(_)
    ));
    let confused = token(json!({"alg": "HS256", "kid": "ec1"}), claims(60), |m| {
        ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, point), m)
            .as_ref()
            .to_vec()
    });
    assert!(matches!(
        v.verify(&confused).await.unwrap_err(),
        JwtError::Algorithm(_)
    ));
    let crossed = token(json!({"alg": "EdDSA", "kid": "ec1"}), claims(60), |m| {
        ed.sign(m).as_ref().to_vec()
    });
    assert!(matches!(
        v.verify(&crossed).await.unwrap_err(),
        JwtError::Algorithm(_)
    ));
    // An unknown key id.
    let unknown = token(json!({"alg": "ES256", "kid": "nope"}), claims(60), |m| {
        ec.sign(&rng, m).unwrap().as_ref().to_vec()
    });
    assert!(matches!(
        v.verify(&unknown).await.unwrap_err(),
        JwtError::UnknownKey(_)
    ));
    assert!(JwtVerifier::looks_like_jwt(&good));
    assert!(!JwtVerifier::looks_like_jwt("qm_0123"));
}

#[test]
fn config_is_checked() {
    let mut c = config("{\"keys\": []}");
    assert!(c.validate("x").is_err(), "no usable key");
    c.jwks = None;
    assert!(c.validate("x").is_err(), "no key source");
    c.jwks_url = Some("https://id.example/jwks".into());
    assert!(c.validate("x").is_ok());
    c.algorithms = vec!["HS256".into()];
    assert!(
        c.validate("x").is_err(),
        "HMAC only through hmac_secret_env"
    );
}
