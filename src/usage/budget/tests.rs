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

/// Budgets on a fresh SQLite database in `dir`, keeping at most `max_scopes` states.
async fn budgets_with_cap(dir: &tempfile::TempDir, max_scopes: usize) -> Arc<Budgets> {
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let mut budgets = Budgets::new(Store::connect(&url, 2).await.unwrap());
    let b = Arc::get_mut(&mut budgets).unwrap();
    b.max_scopes = max_scopes;
    *b.prune_at.get_mut() = max_scopes;
    budgets
}

/// Every end user's limit: $1 a day.
fn per_user_budget() -> LimitsConfig {
    LimitsConfig {
        user_default: Limits {
            usd_per_day: Some(1.0),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Makes every state look `ms` older, as if that long had passed since it was last used.
fn age(budgets: &Budgets, ms: i64) {
    for s in budgets.scopes.lock().unwrap().values_mut() {
        s.last_used -= ms;
        s.minute -= ms / 60_000;
    }
}

/// One request, settled at no cost, for each user `u{i}` of `users`, every state then aged
/// by `idle_ms`; the map never holds more than `cap` states meanwhile.
async fn flood(budgets: &Arc<Budgets>, users: std::ops::Range<u32>, idle_ms: i64, cap: usize) {
    let config = per_user_budget();
    for i in users {
        let scopes = Budgets::scopes(&config, "t1", "acme", "k1", Some(&format!("u{i}")));
        budgets
            .admit(&scopes, 10, 0.1)
            .await
            .unwrap()
            .unwrap()
            .settle(10, 0.0);
        age(budgets, idle_ms);
        let len = budgets.scopes.lock().unwrap().len();
        assert!(len <= cap, "{len} states, cap {cap}");
    }
}

#[tokio::test]
async fn idle_user_scopes_are_dropped_past_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let budgets = budgets_with_cap(&dir, 8).await;
    let config = per_user_budget();
    let held_scopes = Budgets::scopes(&config, "t1", "acme", "k1", Some("held"));
    assert_eq!(held_scopes.len(), 1);
    // A request in flight through the whole flood: its scope is never dropped.
    let held = budgets.admit(&held_scopes, 10, 0.5).await.unwrap().unwrap();
    flood(&budgets, 0..500, IDLE_MS, 8).await;
    assert!(budgets.scopes.lock().unwrap().contains_key("user:t1:held"));
    held.settle(10, 0.5);
    let spent = budgets.scopes.lock().unwrap()["user:t1:held"].day_usd;
    assert!((spent - 0.5).abs() < 1e-9, "{spent}");
    // Scopes used within the last minute are kept even past the cap.
    flood(&budgets, 1_000..1_020, 0, usize::MAX).await;
    let states = budgets.scopes.lock().unwrap();
    assert!((1_000..1_020).all(|i| states.contains_key(&format!("user:t1:u{i}"))));
}

#[tokio::test]
async fn a_dropped_users_spend_still_counts() {
    let dir = tempfile::tempdir().unwrap();
    let budgets = budgets_with_cap(&dir, 4).await;
    let spender = Budgets::scopes(&per_user_budget(), "t1", "acme", "k1", Some("spender"));
    let refused = |e: Option<BudgetError>| e.map(|e| e.error_code().name());
    budgets
        .admit(&spender, 10, 1.0)
        .await
        .unwrap()
        .unwrap()
        .settle(10, 1.0);
    // The row the request log's writer makes of that request.
    crate::store::on_pool!(&budgets.store, p => sqlx::query(
        "INSERT INTO request_log (id, request_id, tenant_id, key_id, model, provider, stream, status, \
         http_status, tokens_in, tokens_out, latency_ms, created_at, cost_usd, user_id) \
         VALUES ('log_1', 'req_1', 't1', 'k1', 'm', 'p', FALSE, 'ok', 200, 5, 5, 1.0, $1, 1.0, 'spender')")
        .bind(now_ms()).execute(p).await.map(|_| ()))
    .unwrap();
    let over = Some("daily_budget_exceeded");
    assert_eq!(refused(budgets.admit(&spender, 10, 0.1).await.err()), over);
    // Idle for minutes, but with spend settled too recently for the request log to be sure
    // to hold it: kept, however many users come.
    flood(&budgets, 0..5, IDLE_MS, 4).await;
    assert!(
        budgets
            .scopes
            .lock()
            .unwrap()
            .contains_key("user:t1:spender")
    );
    // Long idle, but the request log has rows not yet written (a database outage): kept.
    age(&budgets, SPENT_IDLE_MS);
    let waiting = Arc::new(std::sync::atomic::AtomicU64::new(3));
    let probe = waiting.clone();
    budgets.watch_unwritten(move || probe.load(std::sync::atomic::Ordering::Relaxed));
    flood(&budgets, 10..15, IDLE_MS, 4).await;
    assert!(
        budgets
            .scopes
            .lock()
            .unwrap()
            .contains_key("user:t1:spender")
    );
    // Long idle and the log written: dropped first when room is needed.
    waiting.store(0, std::sync::atomic::Ordering::Relaxed);
    age(&budgets, SPENT_IDLE_MS);
    flood(&budgets, 5..10, IDLE_MS, 4).await;
    assert!(
        !budgets
            .scopes
            .lock()
            .unwrap()
            .contains_key("user:t1:spender")
    );
    // Summed from the store again: still over its budget.
    assert_eq!(refused(budgets.admit(&spender, 10, 0.1).await.err()), over);
    let spent = budgets.scopes.lock().unwrap()["user:t1:spender"].day_usd;
    assert!((spent - 1.0).abs() < 1e-9, "{spent}");
}

#[tokio::test]
async fn a_scope_dropped_after_its_load_is_not_checked_empty() {
    let dir = tempfile::tempdir().unwrap();
    let budgets = budgets_with_cap(&dir, 4).await;
    let scopes = Budgets::scopes(&per_user_budget(), "t1", "acme", "k1", Some("u"));
    let now = now_ms();
    budgets.load(&scopes[0], now).await.unwrap();
    budgets.scopes.lock().unwrap().clear();
    assert!(!budgets.reserve_locally(&scopes, now, 10, 0.1).unwrap());
    assert!(budgets.scopes.lock().unwrap().is_empty());
    // Through `admit` it is loaded again first.
    let _held = budgets.admit(&scopes, 10, 0.1).await.unwrap().unwrap();
    assert_eq!(budgets.scopes.lock().unwrap()["user:t1:u"].in_flight, 1);
}
