//! Property tests of the request parser: arbitrary bytes and arbitrary JSON never panic and
//! always produce either a request or an error in the API's shape.

use proptest::prelude::*;
use quartermaster::api::extract::parse_json;
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

mod stripe_signature_header {
    use proptest::prelude::*;
    use quartermaster::billing::signature::{parse_header, sign, verify};

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
