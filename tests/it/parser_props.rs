//! Property tests of the request parser: arbitrary bytes and arbitrary JSON never panic and
//! always produce either a request or an error in the API's shape.

use proptest::prelude::*;
use quartermaster::api::extractors::parse_json;
use quartermaster::types::ChatCompletionRequest;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::json!(f)),
        any::<i64>().prop_map(|i| serde_json::json!(i)),
        "[a-z]{0,8}".prop_map(Value::String),
        prop_oneof![
            Just("user"),
            Just("system"),
            Just("assistant"),
            Just("tool")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("model".to_string()),
                    Just("messages".to_string()),
                    Just("role".to_string()),
                    Just("content".to_string()),
                    Just("stream".to_string()),
                    Just("temperature".to_string()),
                    Just("stop".to_string()),
                    "[a-z_]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        match parse_json::<ChatCompletionRequest>(&bytes) {
            Ok(req) => { let _ = req.validate(); }
            Err(e) => prop_assert!(e.status().is_client_error()),
        }
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        match parse_json::<ChatCompletionRequest>(&bytes) {
            Ok(req) => {
                let _ = req.validate();
                let _ = req.estimate_prompt_tokens();
                // A parsed request serializes back for the upstream.
                serde_json::to_vec(&req).unwrap();
            }
            Err(e) => {
                prop_assert!(e.status().is_client_error());
                let envelope: Value = serde_json::from_str(&e.to_json()).unwrap();
                prop_assert!(envelope["error"]["message"].is_string());
            }
        }
    }
}

/// The wire types as serde's derive reads them with `#[serde(flatten)]`: the reference the
/// hand-written deserializers must agree with.
#[path = "../wire_reference/mod.rs"]
mod wire_reference;
use wire_reference as reference;

fn request_like() -> impl Strategy<Value = Value> {
    // Mostly well-formed requests with wrong types, nulls and extra fields mixed in.
    let part = (
        prop_oneof![
            Just(Value::from("text")),
            Just(Value::from("image_url")),
            json_value()
        ],
        prop::option::of(json_value()),
        prop::option::of(json_value()),
    )
        .prop_map(|(kind, text, other)| {
            let mut m = serde_json::Map::new();
            m.insert("type".into(), kind);
            if let Some(t) = text {
                m.insert("text".into(), t);
            }
            if let Some(o) = other {
                m.insert("image_url".into(), o);
            }
            Value::Object(m)
        });
    let content = prop_oneof![
        "[a-z ]{0,12}".prop_map(Value::String),
        prop::collection::vec(part, 0..3).prop_map(Value::Array),
        json_value(),
    ];
    let message = (
        prop_oneof![Just("user"), Just("assistant"), Just("wizard")],
        prop::option::of(content),
        prop::option::of(json_value()),
    )
        .prop_map(|(role, content, name)| {
            let mut m = serde_json::Map::new();
            m.insert("role".into(), role.into());
            if let Some(c) = content {
                m.insert("content".into(), c);
            }
            if let Some(n) = name {
                m.insert("name".into(), n);
            }
            Value::Object(m)
        });
    (
        prop::collection::vec(message, 0..3),
        prop::collection::btree_map(
            prop_oneof![
                Just("model"),
                Just("stream"),
                Just("stream_options"),
                Just("temperature"),
                Just("max_tokens"),
                Just("stop"),
                Just("seed"),
                Just("tools"),
                Just("user"),
            ],
            prop_oneof![
                json_value(),
                Just(serde_json::json!({"include_usage": true}))
            ],
            0..6,
        ),
    )
        .prop_map(|(messages, fields)| {
            let mut m: serde_json::Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            m.entry("model").or_insert_with(|| "m".into());
            m.insert("messages".into(), Value::Array(messages));
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// The hand-written deserializer accepts exactly what serde's derive accepts, and what
    /// it reads serializes back to the same JSON.
    #[test]
    fn parser_agrees_with_serde_derive(value in prop_oneof![request_like(), json_value()]) {
        let text = serde_json::to_string(&value).unwrap();
        agree::<ChatCompletionRequest, reference::Request>(&text)?;
        let ours = serde_json::from_str::<ChatCompletionRequest>(&text);
        // From a `Value` (as the cache and tests read stored requests) as from text.
        prop_assert_eq!(serde_json::from_value::<ChatCompletionRequest>(value).is_ok(), ours.is_ok());
    }
}

fn chunk_like() -> impl Strategy<Value = Value> {
    // Chunks and answers as upstreams send them, with fields missing, null or mistyped.
    let field = |name: &'static str, good: Value| {
        prop_oneof![
            3 => Just(Some((name, good))),
            1 => Just(None),
            1 => json_value().prop_map(move |v| Some((name, v))),
        ]
    };
    let object = |fields: Vec<Option<(&'static str, Value)>>| {
        Value::Object(
            fields
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    };
    let delta = (
        field("role", "assistant".into()),
        field("content", "hi".into()),
        field("tool_calls", serde_json::json!([])),
    )
        .prop_map(move |(a, b, c)| object(vec![a, b, c]));
    let choice = (
        field("index", 0.into()),
        delta.clone().prop_map(|d| Some(("delta", d))),
        delta.prop_map(|d| Some(("message", d))),
        field("finish_reason", Value::Null),
        field("logprobs", Value::Null),
    )
        .prop_map(move |(a, b, c, d, e)| object(vec![a, b, c, d, e]));
    (
        field("id", "chatcmpl-1".into()),
        field("object", "chat.completion.chunk".into()),
        field("created", 1.into()),
        field("model", "m".into()),
        prop::collection::vec(choice, 0..3).prop_map(|c| Some(("choices", Value::Array(c)))),
        field(
            "usage",
            serde_json::json!({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}),
        ),
        field("system_fingerprint", "fp".into()),
    )
        .prop_map(move |(a, b, c, d, e, f, g)| object(vec![a, b, c, d, e, f, g]))
}

/// Both parsers accept the same inputs and read them to the same JSON.
fn agree<A, B>(text: &str) -> Result<(), TestCaseError>
where
    A: serde::de::DeserializeOwned + serde::Serialize,
    B: serde::de::DeserializeOwned + serde::Serialize,
{
    let ours = serde_json::from_str::<A>(text);
    let reference = serde_json::from_str::<B>(text);
    match (&ours, &reference) {
        (Ok(a), Ok(b)) => prop_assert_eq!(
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap()
        ),
        (Err(_), Err(_)) => {}
        _ => prop_assert!(
            false,
            "{text}: ours {:?}, derive {:?}",
            ours.is_ok(),
            reference.is_ok()
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Stream chunks and non-streamed answers, as for requests.
    #[test]
    fn answer_parsers_agree_with_serde_derive(value in prop_oneof![chunk_like(), json_value()]) {
        let text = serde_json::to_string(&value).unwrap();
        agree::<quartermaster::types::ChatChunk, reference::Chunk>(&text)?;
        agree::<quartermaster::types::ChatCompletion, reference::Completion>(&text)?;
    }
}

mod stripe_signature_header {
    use proptest::prelude::*;
    use quartermaster::integrations::stripe::signature::{parse_header, sign, verify};

    fn header_like() -> impl Strategy<Value = String> {
        // Mostly header-shaped pieces (t=, v1=, v0=, separators, digits, hex) and noise.
        prop::collection::vec(
            prop_oneof![
                Just("t=".to_string()),
                Just("v1=".to_string()),
                Just("v0=".to_string()),
                Just(",".to_string()),
                Just("=".to_string()),
                Just(" ".to_string()),
                "[0-9]{0,20}",
                "[0-9a-f]{0,64}",
                any::<String>(),
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn parser_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_header(&text);
            let _ = verify(&bytes, Some(&text), &["whsec_x".to_string()], 300, 1_700_000_000);
        }

        #[test]
        fn parser_never_panics_on_header_shaped_input(header in header_like(), body in any::<Vec<u8>>()) {
            let _ = parse_header(&header);
            let _ = verify(&body, Some(&header), &["whsec_x".to_string()], 300, i64::MAX);
            let _ = verify(&body, Some(&header), &["whsec_x".to_string()], 300, i64::MIN);
        }

        /// Only the right signature verifies: a flipped hex digit, another body or another
        /// timestamp never does.
        #[test]
        fn only_the_exact_signature_verifies(body in any::<Vec<u8>>(), t in 0i64..4_000_000_000, flip in 0usize..64) {
            let secrets = ["whsec_prop".to_string()];
            let sig = sign(&body, "whsec_prop", t);
            let good = format!("t={t},v1={sig}");
            prop_assert!(verify(&body, Some(&good), &secrets, 300, t).is_ok());
            let mut bad: Vec<char> = sig.chars().collect();
            bad[flip] = if bad[flip] == '0' { '1' } else { '0' };
            let bad = format!("t={t},v1={}", bad.into_iter().collect::<String>());
            prop_assert!(verify(&body, Some(&bad), &secrets, 300, t).is_err());
            let mut other = body.clone();
            other.push(b'x');
            prop_assert!(verify(&other, Some(&good), &secrets, 300, t).is_err());
            let shifted = format!("t={},v1={sig}", t + 1);
            prop_assert!(verify(&body, Some(&shifted), &secrets, 300, t).is_err());
        }
    }
}

/// The communication webhooks' parsers and verifiers: arbitrary input never panics, and
/// only the exact signature verifies.
mod comms_webhooks {
    use super::json_value;
    use proptest::prelude::*;
    use quartermaster::integrations::cal;
    use quartermaster::integrations::cms::text_of;
    use quartermaster::integrations::email::events;
    use quartermaster::integrations::signatures::{canonical_request, ecdsa_p256, hex_hmac};

    fn headers(pairs: &[(&'static str, String)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            if let Ok(v) = http::HeaderValue::from_str(v) {
                h.insert(*k, v);
            }
        }
        h
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn payload_parsers_never_panic(value in json_value()) {
            let _ = cal::parse(&value);
            let _ = cal::parse(&serde_json::json!({"triggerEvent": "BOOKING_CREATED", "createdAt": "2026-12-06T10:00:00Z", "payload": value.clone()}));
            for p in ["resend", "postmark", "sendgrid"] {
                let _ = events::parse(p, &value, Some("msg_1"));
            }
            let _ = text_of(&value);
            let _ = text_of(&serde_json::json!({"nodeType": "document", "content": [value]}));
        }

        #[test]
        fn verifiers_never_panic(sig in any::<String>(), ts in any::<String>(), names in any::<String>(),
                                 path in any::<String>(), body in any::<Vec<u8>>()) {
            let _ = hex_hmac::verify(Some(&sig), &body, &[b"k".to_vec()]);
            let _ = ecdsa_p256::public_key(&sig);
            let point = [4u8; 65].to_vec();
            let _ = ecdsa_p256::verify(Some(&sig), Some(&ts), &body, &[point], 300, i64::MAX);
            let _ = ecdsa_p256::verify(Some(&sig), Some("-9223372036854775808"), &body, &[], 300, 1);
            let h = headers(&[("x-contentful-signature", sig.clone()), ("x-contentful-timestamp", ts.clone()),
                              ("x-contentful-signed-headers", names.clone())]);
            let _ = canonical_request::verify("POST", &path, &h, &body, &[b"k".to_vec()], 30_000, i64::MIN);
            let _ = canonical_request::normalized_path(&path);
        }

        #[test]
        fn only_the_exact_cal_signature_verifies(body in any::<Vec<u8>>(), flip in 0usize..64) {
            let good = hex_hmac::sign(&body, b"cal");
            prop_assert!(hex_hmac::verify(Some(&good), &body, &[b"cal".to_vec()]).is_ok());
            let mut bad: Vec<char> = good.chars().collect();
            bad[flip] = if bad[flip] == '0' { '1' } else { '0' };
            let bad: String = bad.into_iter().collect();
            prop_assert!(hex_hmac::verify(Some(&bad), &body, &[b"cal".to_vec()]).is_err());
            let mut other = body.clone();
            other.push(b'x');
            prop_assert!(hex_hmac::verify(Some(&good), &other, &[b"cal".to_vec()]).is_err());
        }
    }
}
