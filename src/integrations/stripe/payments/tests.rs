use super::*;
use serde_json::json;

#[test]
fn keys_bind_tenant_operation_and_client_key() {
    let a = stripe_idempotency_key("ten_1", Operation::Checkout, "k1");
    assert_eq!(
        a,
        stripe_idempotency_key("ten_1", Operation::Checkout, "k1")
    );
    assert_ne!(
        a,
        stripe_idempotency_key("ten_2", Operation::Checkout, "k1")
    );
    assert_ne!(a, stripe_idempotency_key("ten_1", Operation::Portal, "k1"));
    assert_ne!(
        a,
        stripe_idempotency_key("ten_1", Operation::Checkout, "k2")
    );
    assert!(a.len() <= 255, "Stripe's limit");
}

#[test]
fn stripe_errors_map_to_clear_codes() {
    let card = json!({"error": {"type": "card_error", "code": "card_declined",
            "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."}});
    let e = stripe_error(402, &card);
    assert_eq!(e.error_code(), Code::CardDeclined);
    assert!(e.to_string().contains("insufficient funds"));
    let idem = json!({"error": {"type": "idempotency_error",
            "message": "Keys for idempotent requests can only be used with the same parameters they were first used with."}});
    assert_eq!(
        stripe_error(400, &idem).error_code(),
        Code::IdempotencyKeyReused
    );
    assert_eq!(
        stripe_error(409, &json!({})).error_code(),
        Code::IdempotencyKeyInUse
    );
    assert_eq!(
        stripe_error(429, &json!({"error": {"type": "invalid_request_error"}})).error_code(),
        Code::PaymentProviderRateLimited
    );
    assert_eq!(
        stripe_error(
            400,
            &json!({"error": {"type": "invalid_request_error", "message": "No such price"}})
        )
        .error_code(),
        Code::PaymentProviderError
    );
    assert_eq!(
        stripe_error(500, &Value::Null).error_code(),
        Code::PaymentProviderError
    );
}
