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
