use super::*;
use crate::error::ErrorCode;
use crate::usage::Limits;

#[test]
fn prompt_cache_prices() {
    let p = Price {
        input: 3.0,
        output: 15.0,
        cache_read: 0.3,
        cache_write: 3.75,
    };
    let mut u = crate::types::Usage::new(1_000, 200);
    u.prompt_tokens_details = Some(crate::types::PromptTokensDetails {
        cached_tokens: 600,
        cache_write_tokens: 100,
    });
    // 300 plain, 600 read, 100 written, 200 out.
    assert!((p.cost(&u) - 4_455e-6).abs() < 1e-12, "{}", p.cost(&u));
    // No cache tokens: the plain price.
    let plain = crate::types::Usage::new(1_000, 200);
    assert!((p.cost(&plain) - cost_usd(1_000, 200, 3.0, 15.0)).abs() < 1e-12);
    // Reservations assume the dearest input price.
    assert!((p.worst(1_000, 200) - cost_usd(1_000, 200, 3.75, 15.0)).abs() < 1e-12);
    // Counts an upstream got wrong (more cached than prompt) never go negative.
    u.prompt_tokens_details = Some(crate::types::PromptTokensDetails {
        cached_tokens: 5_000,
        cache_write_tokens: 5_000,
    });
    assert!(p.cost(&u) >= 0.0);
}

#[test]
fn calendar() {
    // 2026-11-27 is day 20,784 since the epoch; November 2026 is month index 2026*12+10.
    let day = day_index(1_795_737_600_000);
    assert_eq!(day, 20_784);
    assert_eq!(month_index(day), 2026 * 12 + 10);
    assert_eq!(month_start_day(2026 * 12 + 10), 20_758); // 2026-11-01
    assert_eq!(month_start_day(2026 * 12 + 11), 20_788); // 2026-12-01
    assert_eq!(month_index(0), 1970 * 12);
    assert_eq!(month_start_day(2024 * 12 + 2), 19_783); // 2024-03-01 (leap year)
    for d in 0..30_000 {
        let m = month_index(d);
        assert!(month_start_day(m) <= d && d < month_start_day(m + 1));
    }
}

#[tokio::test]
async fn reservations_bound_concurrent_spend() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let budgets = Budgets::new(Store::connect(&url, 2).await.unwrap());
    let config = LimitsConfig {
        tenant_default: Limits {
            usd_per_day: Some(1.0),
            requests_per_minute: Some(1000),
            ..Default::default()
        },
        ..Default::default()
    };
    let scopes = Budgets::scopes(&config, "t1", "acme", "k1", None);
    assert_eq!(scopes.len(), 1);
    // Each request may cost up to $0.30: the fourth concurrent one is refused.
    let mut held = vec![];
    for _ in 0..4 {
        held.push(budgets.admit(&scopes, 10, 0.3).await.unwrap().unwrap());
    }
    let err = budgets.admit(&scopes, 10, 0.3).await.err().unwrap();
    assert_eq!(err.error_code().name(), "daily_budget_exceeded");
    // They cost less than feared: room again.
    for r in held.drain(..) {
        r.settle(10, 0.1);
    }
    let r = budgets.admit(&scopes, 10, 0.3).await.unwrap().unwrap();
    drop(r); // released, not charged
    let spent = budgets.scopes.lock().unwrap()["tenant:t1"].day_usd;
    assert!((spent - 0.4).abs() < 1e-9, "{spent}");
}

#[tokio::test]
async fn tokens_per_minute_and_monthly_budget_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let budgets = Budgets::new(Store::connect(&url, 2).await.unwrap());
    let mut config = LimitsConfig::default();
    config.keys.insert(
        "k1".into(),
        Limits {
            tokens_per_minute: Some(100),
            usd_per_month: Some(10.0),
            ..Default::default()
        },
    );
    // Only that key has limits.
    assert!(Budgets::scopes(&config, "t1", "acme", "k2", None).is_empty());
    let scopes = Budgets::scopes(&config, "t1", "acme", "k1", None);
    assert_eq!(scopes.len(), 1);
    // Admitted while under the limit, reserved tokens counting as used.
    let held = budgets.admit(&scopes, 60, 0.0).await.unwrap().unwrap();
    budgets
        .admit(&scopes, 50, 0.0)
        .await
        .unwrap()
        .unwrap()
        .settle(40, 0.0);
    drop(held); // released: 40 used
    budgets
        .admit(&scopes, 10, 0.0)
        .await
        .unwrap()
        .unwrap()
        .settle(60, 0.0);
    let err = budgets.admit(&scopes, 1, 0.0).await.err().unwrap();
    assert_eq!(err.error_code().name(), "tokens_per_minute_exceeded");
    assert_eq!(err.http_status(), 429);
    // The month's spend: a new minute frees the tokens, not the money.
    budgets
        .scopes
        .lock()
        .unwrap()
        .get_mut("key:k1")
        .unwrap()
        .minute -= 1;
    budgets
        .admit(&scopes, 1, 10.0)
        .await
        .unwrap()
        .unwrap()
        .settle(1, 10.0);
    let err = budgets.admit(&scopes, 1, 0.1).await.err().unwrap();
    assert_eq!(err.error_code().name(), "monthly_budget_exceeded");
    assert!(err.to_string().contains("monthly budget"), "{err}");
}
