//! The warehouse export: the scheduled job and `quartermaster export` write the usage facts
//! as day-partitioned Parquet; DuckDB and pyarrow read the same totals as `GET
//! /admin/usage`; re-exporting a window rewrites it byte for byte; an export killed with
//! `kill -9` mid-way leaves no half-written Parquet file visible, and the next one completes.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Options, TestApp, wait_for};
use quartermaster::store::{Store, on_pool};
use serde_json::{Value, json};

const ADMIN: &str = "adm_warehouse";
const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    quartermaster::clock::now_ms()
}

/// `rows` request-log rows spread evenly over the `days` days before today, each with a
/// cost, some cache hits and some end users.
async fn seed_history(store: &Store, batch: &str, days: i64, rows: i64) {
    let today = now_ms().div_euclid(DAY_MS) * DAY_MS;
    let start = today - days * DAY_MS;
    let step = (days * DAY_MS) / rows;
    on_pool!(store, p => sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1 - 1) \
         INSERT INTO request_log (id, request_id, tenant_id, key_id, model, provider, stream, status, http_status, \
            error_code, tokens_in, tokens_out, latency_ms, ttft_ms, created_at, cost_usd, saved_usd, route_tier, route_reason, user_id) \
         SELECT printf('log_%s_%08d', $4, i), printf('req_%s_%d', $4, i), 'ten_hist', 'key_hist', \
            CASE WHEN i % 3 = 0 THEN 'mock-strong' ELSE 'mock-ok' END, 'mock', i % 2, \
            CASE WHEN i % 10 = 0 THEN 'cache_hit' ELSE 'ok' END, 200, NULL, 10 + i % 7, 20 + i % 11, 12.5, NULL, \
            $2 + i * $3, (i % 5) * 0.001, CASE WHEN i % 10 = 0 THEN 0.002 ELSE 0 END, 'cheap', 'classifier', \
            CASE WHEN i % 4 = 0 THEN NULL ELSE printf('user_%d', i % 4) END \
         FROM n")
        .bind(rows).bind(start).bind(step).bind(batch).execute(p).await.map(|_| ()))
    .unwrap();
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every visible `.parquet` file opens and its row groups' rows add up.
fn read_all(dir: &Path) -> u64 {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let mut rows = 0;
    for p in parquet_files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
    {
        let r = SerializedFileReader::new(std::fs::File::open(&p).unwrap())
            .unwrap_or_else(|e| panic!("{} is not a whole Parquet file: {e}", p.display()));
        rows += r.metadata().file_metadata().num_rows() as u64;
    }
    rows
}

fn export(config: &Path, dir: &Path, since: &str) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_quartermaster"));
    c.arg("--config")
        .arg(config)
        .args(["export", "--since", since, "--dir"])
        .arg(dir);
    c
}

fn hashes(dir: &Path) -> Vec<(PathBuf, String)> {
    use sha2::Digest;
    parquet_files(dir)
        .into_iter()
        .map(|p| {
            let h = hex::encode(sha2::Sha256::digest(std::fs::read(&p).unwrap()));
            (p.strip_prefix(dir).unwrap().to_path_buf(), h)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_matches_usage_rewrites_identically_and_survives_kill_9() {
    let landing = tempfile::tempdir().unwrap();
    let mut app = TestApp::spawn_with(Options::extra(&format!(
        "[rate_limit]\nenabled = false\n[server]\nshutdown_grace_secs = 2\n[admin]\napi_key = \"{ADMIN}\"\n\
         [jobs]\npoll_interval_ms = 50\n[warehouse]\ndir = \"{}\"\ninterval_secs = 1\nsettle_secs = 0\n",
        landing.path().display()
    )))
    .await;
    let store = app.store().await;
    seed_history(&store, "a", 3, 3_000).await;
    for i in 0..6 {
        let r = app
            .post("/v1/chat/completions")
            .header("x-quartermaster-user", format!("live_{}", i % 2))
            .json(&json!({"model": "mock-ok", "messages": [{"role": "user", "content": format!("q {i}")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // The gateway's own view: totals, and per day.
    let total = |v: &Value| {
        let rows = v["data"].as_array().unwrap().clone();
        let sum = |f: &str| rows.iter().map(|r| r[f].as_f64().unwrap()).sum::<f64>();
        json!({"requests": sum("requests"), "tokens_in": sum("tokens_in"), "tokens_out": sum("tokens_out"),
               "spend_usd": sum("spend_usd"), "savings_usd": sum("savings_usd"), "cache_hits": sum("cache_hits")})
    };
    wait_for(10, "the live requests logged", || async {
        total(&app.get_json_as("/admin/usage?by=tenant", ADMIN).await)["requests"] == 3_006.0
    })
    .await;
    let usage = total(&app.get_json_as("/admin/usage?by=tenant", ADMIN).await);
    let by_day = app.get_json_as("/admin/usage?by=day", ADMIN).await;
    assert_eq!(
        by_day["data"].as_array().unwrap().len(),
        4,
        "three past days and today: {by_day}"
    );
    let days: serde_json::Map<String, Value> = by_day["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["day"].as_str().unwrap().to_string(), r.clone()))
        .collect();

    // The scheduled export writes every day up to today.
    let exported = || read_all(&landing.path().join("requests"));
    for _ in 0..400 {
        if exported() == 3_006 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if exported() != 3_006 {
        let jobs = app.get_json_as("/admin/jobs?limit=20", ADMIN).await;
        panic!(
            "the scheduled export wrote {} rows: {:?}; jobs {jobs}",
            exported(),
            parquet_files(landing.path())
        );
    }
    for table in ["requests", "usage_daily", "billing_events"] {
        assert!(
            landing.path().join(table).join("_schema.json").exists(),
            "{table}"
        );
    }
    let first_day = days.keys().next().unwrap().clone();
    assert!(
        landing
            .path()
            .join(format!("requests/day={first_day}/part-00000.parquet"))
            .exists()
    );
    // DuckDB and pyarrow read the same totals as the gateway's view.
    let expect = json!({"total": usage, "by_day": days});
    crate::python_sdk::run_script(
        "warehouse_read.py",
        &[
            ("QM_WAREHOUSE_DIR", landing.path().to_str().unwrap()),
            ("QM_EXPECT", &expect.to_string()),
        ],
    )
    .await;
    app.shutdown().await;

    // By hand, on the same database: the same files, byte for byte, and again on a re-run.
    let db = app.db_path().unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("qm.toml");
    std::fs::write(
        &config,
        format!("[database]\nurl = \"sqlite://{}\"\n", db.display()),
    )
    .unwrap();
    let manual = work.path().join("manual");
    let out = export(&config, &manual, &first_day).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = hashes(&manual);
    assert_eq!(
        first,
        hashes(landing.path()),
        "the job and the command write the same bytes"
    );
    let out = export(&config, &manual, &first_day).output().unwrap();
    assert!(out.status.success());
    assert_eq!(first, hashes(&manual), "a re-run rewrites identically");

    // kill -9 mid-export: enough rows that the export takes a while; killed once its first
    // file is in place. Every visible .parquet file is whole; the next export completes.
    seed_history(&store, "b", 6, 300_000).await;
    let since = quartermaster::clock::day_name(now_ms().div_euclid(DAY_MS) - 6);
    let killed = work.path().join("killed");
    let mut child = export(&config, &killed, &since)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let any = parquet_files(&killed)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "parquet"));
        if any || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the export was still running when killed"
    );
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    let partial = read_all(&killed.join("requests"));
    assert!(
        partial < 303_006,
        "the kill came before the end ({partial} rows)"
    );
    let leftovers: Vec<PathBuf> = parquet_files(&killed)
        .into_iter()
        .filter(|p| {
            !p.to_string_lossy().ends_with(".parquet") && !p.to_string_lossy().ends_with(".json")
        })
        .collect();
    eprintln!("after kill -9: {partial} rows in whole files, leftovers {leftovers:?}");
    let out = export(&config, &killed, &since).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_all(&killed.join("requests")), 303_006);
    // What a killed run may leave is hidden and not Parquet by name (loaders skip it); a
    // later run removes it once it is an hour old.
    for p in parquet_files(&killed) {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.ends_with(".parquet")
                || name == "_schema.json"
                || (name.starts_with('.') && name.ends_with(".inprogress")),
            "{name}"
        );
    }
}

/// The same export from PostgreSQL (the queries differ in no backend-specific way, but the
/// types do: `INTEGER` status codes, `BOOLEAN` stream flags).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_reads_postgresql_too() {
    let Some(db_url) = common::fresh_database().await else {
        return;
    };
    let mut app = TestApp::spawn_with(Options {
        extra: format!("[rate_limit]\nenabled = false\n[admin]\napi_key = \"{ADMIN}\"\n"),
        db_url: Some(db_url),
        config_file: false,
    })
    .await;
    for i in 0..4 {
        let r = app
            .post("/v1/chat/completions")
            .json(&json!({"model": "mock-ok", "stream": i % 2 == 0, "messages": [{"role": "user", "content": format!("pg {i}")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.text().await;
    }
    wait_for(10, "the requests logged", || async {
        app.get_json_as("/admin/usage?by=tenant", ADMIN).await["data"][0]["requests"] == 4
    })
    .await;
    let store = app.store().await;
    let dir = tempfile::tempdir().unwrap();
    let today = now_ms().div_euclid(DAY_MS);
    let report =
        quartermaster::integrations::warehouse::export_days(&store, dir.path(), today, today)
            .await
            .unwrap();
    assert_eq!(report.rows["requests"], 4, "{report:?}");
    assert_eq!(report.rows["usage_daily"], 1, "{report:?}");
    assert_eq!(read_all(&dir.path().join("requests")), 4);
    app.shutdown().await;
}

/// A request-log row that reaches the store after its day was exported and closed (a killed
/// replica's journal replayed at its next start) is in the files after the next run.
#[tokio::test]
async fn rows_logged_after_their_day_closed_are_exported_by_the_next_run() {
    use quartermaster::integrations::warehouse::{ExportJob, WarehouseConfig};
    use quartermaster::jobs::{JobHandler, JobRow};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("w.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    seed_history(&store, "a", 3, 300).await;
    let lake = dir.path().join("lake");
    let job = ExportJob {
        store: store.clone(),
        config: WarehouseConfig {
            dir: Some(lake.clone()),
            ..Default::default()
        },
    };
    let row = JobRow {
        id: "job_1".into(),
        kind: "warehouse.export".into(),
        payload: "{}".into(),
        status: "running".into(),
        attempts: 1,
        max_attempts: 3,
        run_at: 0,
        last_error: None,
        dedupe_key: None,
        created_at: 0,
        updated_at: 0,
    };
    job.run(&row).await.unwrap();
    let requests = lake.join("requests");
    assert_eq!(read_all(&requests), 300);
    // Two days ago (closed, below the watermark), written now.
    let two_days_ago = now_ms().div_euclid(DAY_MS) * DAY_MS - 2 * DAY_MS + 3_600_000;
    on_pool!(&store, p => sqlx::query(
        "INSERT INTO request_log (id, request_id, tenant_id, key_id, model, provider, stream, status, http_status, \
            tokens_in, tokens_out, latency_ms, created_at, logged_at, cost_usd) \
         VALUES ('log_late', 'req_late', 'ten_hist', 'key_hist', 'mock-ok', 'mock', 0, 'ok', 200, 1, 1, 1.0, $1, $2, 0.001)")
        .bind(two_days_ago).bind(now_ms()).execute(p).await.map(|_| ()))
    .unwrap();
    job.run(&row).await.unwrap();
    assert_eq!(read_all(&requests), 301, "the late row is exported");
    // The next run looks a little before its predecessor began, so it writes that day
    // again: byte for byte, the row once.
    let before = hashes(&lake);
    job.run(&row).await.unwrap();
    assert_eq!(read_all(&requests), 301);
    assert_eq!(hashes(&lake), before);
}
