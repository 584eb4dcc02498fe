//! The warehouse export: the usage facts (every request log row, each day's usage per
//! tenant, key, end user and model with its spend and cache savings, Stripe's billing
//! events) as Parquet files in a landing zone a warehouse loader picks up (Fivetran,
//! Airbyte, Snowflake's `COPY INTO`, BigQuery's external tables, DuckDB):
//!
//! ```text
//! DIR/requests/day=2026-12-06/part-00000.parquet
//! DIR/usage_daily/day=2026-12-06/part-00000.parquet
//! DIR/billing_events/day=2026-12-06/part-00000.parquet
//! DIR/requests/_schema.json ...           the schema and what each column means
//! ```
//!
//! A periodic job (`warehouse.export`) exports every day from the watermark (the last day
//! exported after it had closed) to today, and moves the watermark past the days that have
//! closed (`settle_secs` after midnight UTC, so late request-log batches are in). Today's
//! partition is rewritten on each run until the day closes. Re-exporting a day rewrites it
//! identically (rows in id order, no timestamps of its own in the file); each file is
//! written whole or not at all (`parquet_file.rs`). `quartermaster export --since DAY`
//! does the same by hand.

mod parquet_file;
mod tables;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::now_ms;
use crate::jobs::{JobError, JobHandler, JobQueue, JobRow, NewJob};
use crate::store::{Store, StoreError, on_pool};

pub const JOB: &str = "warehouse.export";
const DAY_MS: i64 = 86_400_000;
const WATERMARK: &str = "warehouse";

/// `[warehouse]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarehouseConfig {
    /// The landing zone; none: no scheduled export.
    pub dir: Option<PathBuf>,
    /// How often the scheduled export runs.
    pub interval_secs: u64,
    /// A day counts as closed this long after its end: longer than the longest request
    /// (rows are dated by their start) and the request log's catching up after an outage.
    pub settle_secs: u64,
    /// The first day exported when there is no watermark yet (`YYYY-MM-DD`); default: the
    /// first day in the request log.
    pub start_day: Option<String>,
}

impl Default for WarehouseConfig {
    fn default() -> Self {
        Self {
            dir: None,
            interval_secs: 3600,
            settle_secs: 3600,
            start_day: None,
        }
    }
}

use crate::clock::{day_name, days_from_civil};

/// The day number of `YYYY-MM-DD`.
pub fn parse_day(s: &str) -> anyhow::Result<i64> {
    let parts: Vec<&str> = s.trim().split('-').collect();
    anyhow::ensure!(parts.len() == 3, "not a day (YYYY-MM-DD): {s}");
    let (y, m, d): (i64, i64, i64) = (parts[0].parse()?, parts[1].parse()?, parts[2].parse()?);
    anyhow::ensure!(
        (1..=12).contains(&m) && (1..=31).contains(&d),
        "not a day: {s}"
    );
    let days = days_from_civil(y, m as u32, d as u32);
    anyhow::ensure!(
        day_name(days) == format!("{:04}-{:02}-{:02}", parts[0].parse::<i64>()?, m, d),
        "not a day: {s}"
    );
    Ok(days)
}

/// What an export wrote.
#[derive(Debug, Default, Serialize)]
pub struct ExportReport {
    pub days: Vec<String>,
    /// Rows written per table.
    pub rows: std::collections::BTreeMap<String, u64>,
    pub files: u64,
}

impl ExportReport {
    fn add(&mut self, other: ExportReport) {
        self.days.extend(other.days);
        for (table, n) in other.rows {
            *self.rows.entry(table).or_default() += n;
        }
        self.files += other.files;
    }
}

/// Exports the days `from..=to` (day numbers) into `dir`.
pub async fn export_days(
    store: &Store,
    dir: &Path,
    from: i64,
    to: i64,
) -> anyhow::Result<ExportReport> {
    parquet_file::remove_leftovers(dir, std::time::Duration::from_secs(3600));
    let mut report = ExportReport::default();
    for table in tables::TABLES {
        let schema = json!({
            "table": table.name,
            "format": "parquet",
            "partitioning": "hive: day=YYYY-MM-DD (UTC)",
            "parquet_schema": table.schema,
            "columns": table.doc.iter().map(|(c, d)| json!({"name": c, "doc": d})).collect::<Vec<_>>(),
        });
        parquet_file::write_atomic(
            &dir.join(table.name).join("_schema.json"),
            serde_json::to_vec_pretty(&schema)?.as_slice(),
        )?;
    }
    for day in from..=to {
        let name = day_name(day);
        report.days.push(name.clone());
        for table in tables::TABLES {
            let folder = dir.join(table.name).join(format!("day={name}"));
            let path = folder.join("part-00000.parquet");
            let mut file: Option<parquet_file::PartFile> = None;
            let mut after = String::new();
            loop {
                let (cols, n, last) = tables::page(
                    store,
                    table,
                    day * DAY_MS,
                    (day + 1) * DAY_MS,
                    &name,
                    &after,
                )
                .await?;
                if n == 0 {
                    break;
                }
                if file.is_none() {
                    file = Some(parquet_file::PartFile::create(&path, table.schema)?);
                }
                file.as_mut().expect("created").append(&cols)?;
                match last {
                    Some(l) if (n as i64) == tables::PAGE => after = l,
                    _ => break,
                }
            }
            match file {
                Some(f) => {
                    let rows = f.commit()?;
                    *report.rows.entry(table.name.to_string()).or_default() += rows;
                    report.files += 1;
                }
                // A day with no rows (any more) has no file.
                None => {
                    if path.exists() {
                        std::fs::remove_file(&path)?;
                    }
                }
            }
        }
    }
    metrics::counter!("qm_warehouse_files_written_total").increment(report.files);
    Ok(report)
}

/// The first day the request log holds (or today).
pub async fn first_day(store: &Store) -> Result<i64, StoreError> {
    let min: Option<i64> = on_pool!(store, p => sqlx::query_scalar(
        "SELECT MIN(created_at) FROM request_log").fetch_one(p).await)?;
    Ok(min.unwrap_or_else(now_ms).div_euclid(DAY_MS))
}

/// The last day exported after it had closed, and the time up to which request-log rows had
/// been written when that run started.
async fn watermark(store: &Store) -> Result<Option<(i64, i64)>, StoreError> {
    Ok(on_pool!(store, p => sqlx::query_as(
        "SELECT day, logged_through FROM warehouse_watermarks WHERE name = $1").bind(WATERMARK).fetch_optional(p).await)?)
}

async fn set_watermark(store: &Store, day: i64, logged_through: i64) -> Result<(), StoreError> {
    on_pool!(store, p => sqlx::query(
        "INSERT INTO warehouse_watermarks (name, day, updated_at, logged_through) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET day = excluded.day, updated_at = excluded.updated_at, \
         logged_through = excluded.logged_through")
        .bind(WATERMARK).bind(day).bind(now_ms()).bind(logged_through).execute(p).await.map(|_| ()))?;
    Ok(())
}

/// How far back of the last run's start rows are looked for again: a row stamped just before
/// it but committed after its query is not missed (exporting a day twice is harmless).
const LATE_OVERLAP_MS: i64 = 5 * 60_000;

/// The days in `[first, before)` with request-log rows written at or after `since`: rows that
/// arrived after their day was exported.
pub async fn late_days(
    store: &Store,
    since: i64,
    first: i64,
    before: i64,
) -> Result<Vec<i64>, StoreError> {
    Ok(on_pool!(store, p => sqlx::query_scalar(
        "SELECT DISTINCT created_at / 86400000 AS day FROM request_log \
         WHERE logged_at >= $1 AND created_at >= $2 AND created_at < $3 ORDER BY day")
        .bind(since).bind(first * DAY_MS).bind(before * DAY_MS).fetch_all(p).await)?)
}

/// The scheduled export: from the day after the watermark to today; the watermark moves
/// to the last day that has closed.
pub struct ExportJob {
    pub store: Store,
    pub config: WarehouseConfig,
}

#[async_trait::async_trait]
impl JobHandler for ExportJob {
    async fn run(&self, _job: &JobRow) -> Result<(), JobError> {
        let Some(dir) = &self.config.dir else {
            return Err(JobError::Permanent("no warehouse.dir configured".into()));
        };
        let now = now_ms();
        let first = match &self.config.start_day {
            Some(d) => Some(parse_day(d).map_err(|e| JobError::Permanent(e.to_string()))?),
            None => None,
        };
        let (from, mut report) = match watermark(&self.store).await? {
            Some((done, logged_through)) => {
                // Days already closed that received rows since the last run are exported
                // again, so the files keep matching the usage totals (0: a watermark from
                // before this was recorded; the scan starts with the next run).
                let late = if logged_through == 0 {
                    Vec::new()
                } else {
                    late_days(
                        &self.store,
                        logged_through - LATE_OVERLAP_MS,
                        first.unwrap_or(i64::MIN / DAY_MS),
                        done + 1,
                    )
                    .await?
                };
                let mut report = ExportReport::default();
                for day in late {
                    let again = export_days(&self.store, dir, day, day)
                        .await
                        .map_err(|e| JobError::Retry(format!("export: {e:#}")))?;
                    report.add(again);
                }
                (done + 1, report)
            }
            None => match first {
                Some(d) => (d, ExportReport::default()),
                None => (first_day(&self.store).await?, ExportReport::default()),
            },
        };
        let today = now.div_euclid(DAY_MS);
        let fresh = export_days(&self.store, dir, from, today)
            .await
            .map_err(|e| JobError::Retry(format!("export: {e:#}")))?;
        report.add(fresh);
        let closed = (now - self.config.settle_secs as i64 * 1000).div_euclid(DAY_MS) - 1;
        set_watermark(&self.store, closed.max(from - 1), now).await?;
        tracing::info!(days = report.days.len(), files = report.files, rows = ?report.rows, "warehouse export");
        Ok(())
    }
}

/// Enqueues the export once per `interval_secs` (de-duplicated across replicas).
pub async fn schedule(queue: &JobQueue, config: &WarehouseConfig) -> Result<(), StoreError> {
    if config.dir.is_none() {
        return Ok(());
    }
    let slot = now_ms() / (config.interval_secs.max(1) as i64 * 1000);
    queue
        .enqueue(NewJob::new(JOB, &json!({"slot": slot})).dedupe(format!("warehouse:{slot}")))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip() {
        for d in [0, 1, 59, 365, 20_428, 20_793] {
            assert_eq!(parse_day(&day_name(d)).unwrap(), d);
        }
        assert_eq!(day_name(20_793), "2026-12-06");
        assert!(parse_day("2026-02-30").is_err());
        assert!(parse_day("yesterday").is_err());
    }
}
