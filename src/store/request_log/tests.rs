use super::insert::{MAX_ROWS_PER_INSERT, insert_batch, statement_chunks};
use super::spill::Spill;
use super::*;

fn record(i: usize) -> RequestLogRecord {
    RequestLogRecord {
        request_id: format!("req_{i}"),
        tenant_id: None,
        key_id: None,
        model: "m".into(),
        provider: None,
        stream: false,
        status: "ok",
        http_status: 200,
        error_code: None,
        tokens_in: 1,
        tokens_out: 1,
        latency_ms: 1.0,
        ttft_ms: None,
        created_at: 0,
        cost_usd: 0.0,
        saved_usd: 0.0,
        route_tier: None,
        route_reason: None,
        user_id: None,
    }
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    (dir, store)
}

fn journal_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().contains("journal"))
            })
            .count()
        })
        .unwrap_or(0)
}

/// Every row goes through the journal; written rows leave no journal file behind once
/// the writer is done.
#[tokio::test]
async fn journaled_rows_are_written_and_the_journal_emptied() {
    let (dir, store) = store().await;
    let spill = dir.path().join("spill");
    let mut options = RequestLogOptions::new(64, 16, Duration::from_millis(5));
    options.spill_dir = Some(spill.clone());
    options.journal = true;
    let (writer, task) = RequestLogWriter::spawn(store.clone(), options);
    for i in 0..100 {
        writer.send(record(i)).await;
    }
    assert!(journal_files(&spill) >= 1, "the rows were journaled");
    wait_for_rows(&store, 100).await;
    drop(writer);
    task.await.unwrap();
    assert_eq!(journal_files(&spill), 0, "nothing left to replay");
}

/// A process killed with rows in memory: its journal still holds them (and its locks
/// are gone with it), so the next writer on the folder writes them, once.
#[tokio::test]
async fn a_killed_process_rows_are_replayed_from_its_journal() {
    let (dir, store) = store().await;
    let spill = dir.path().join("spill");
    let journal = journal::Journal::open(&spill).unwrap();
    let mut rows: Vec<Row> = (0..10).map(|i| Row::from(record(i))).collect();
    for r in &mut rows {
        journal.append(r).unwrap();
    }
    // Two rows were written before the "kill": the replay must not add them again.
    insert::insert_batch(&store, &rows[..2]).await.unwrap();
    drop(journal); // rows outstanding: the file stays, its lock goes
    assert_eq!(journal_files(&spill), 1);
    let mut options = RequestLogOptions::new(16, 8, Duration::from_millis(5));
    options.spill_dir = Some(spill.clone());
    options.journal = true;
    let (writer, task) = RequestLogWriter::spawn(store.clone(), options);
    wait_for_rows(&store, 10).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.count_request_log().await.unwrap(), 10, "written once");
    drop(writer);
    task.await.unwrap();
    assert_eq!(journal_files(&spill), 0);
}

/// Segments rotate; a closed one goes as soon as its rows are done.
#[test]
fn closed_segments_go_when_their_rows_are_done() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal::Journal::open(dir.path()).unwrap();
    let mut first: Vec<Row> = (0..journal::SEGMENT_ROWS as usize)
        .map(|i| Row::from(record(i)))
        .collect();
    for r in &mut first {
        journal.append(r).unwrap();
    }
    let mut next = Row::from(record(99_999));
    journal.append(&mut next).unwrap();
    assert_eq!(journal.segments(), 2, "a full segment rotated");
    journal.done(&first[..10]);
    assert_eq!(journal.segments(), 2, "rows still outstanding");
    journal.done(&first[10..]);
    assert_eq!(journal.segments(), 1, "the closed segment is gone");
    assert_eq!(journal_files(dir.path()), 1);
}

/// Waits (up to 20 s) until the table holds `n` rows.
async fn wait_for_rows(store: &Store, n: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.count_request_log().await.unwrap() < n {
        assert!(std::time::Instant::now() < deadline, "never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Rows sent during the interval are held and then written together; closing the
/// channel drains every row.
#[tokio::test]
async fn waits_for_a_batch_then_writes_and_drains_at_close() {
    let (_dir, store) = store().await;
    let (writer, task) = RequestLogWriter::spawn(
        store.clone(),
        RequestLogOptions::new(64, 256, Duration::from_millis(1500)),
    );
    for i in 0..5 {
        writer.send(record(i)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.count_request_log().await.unwrap(),
        0,
        "rows are held during the interval"
    );
    wait_for_rows(&store, 5).await;
    writer.send(record(5)).await;
    drop(writer);
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the writer ended after draining")
        .unwrap();
    assert_eq!(store.count_request_log().await.unwrap(), 6);
}

/// Sends `n` rows through a writer, closes it, and returns how many rows were written.
async fn write_through(batch_size: usize, interval: Duration, n: usize) -> i64 {
    let (_dir, store) = store().await;
    let (writer, task) = RequestLogWriter::spawn(
        store.clone(),
        RequestLogOptions::new(2048, batch_size, interval),
    );
    for i in 0..n {
        writer.send(record(i)).await;
    }
    drop(writer);
    task.await.unwrap();
    store.count_request_log().await.unwrap()
}

/// More rows than one batch are written in several transactions, all of them.
#[tokio::test]
async fn a_backlog_is_written_in_batches() {
    assert_eq!(write_through(4, Duration::ZERO, 11).await, 11);
}

/// After a full batch, the few rows left over are not written at once in a transaction
/// of their own: they wait the interval for more (only full batches go back to back).
#[tokio::test]
async fn a_partial_rest_waits_for_the_next_interval() {
    let (_dir, store) = store().await;
    let interval = Duration::from_millis(300);
    let (writer, _task) =
        RequestLogWriter::spawn(store.clone(), RequestLogOptions::new(64, 8, interval));
    // Queued before the writer first runs (a current-thread runtime): one full batch
    // and a rest of three.
    for i in 0..11 {
        writer.send(record(i)).await;
    }
    wait_for_rows(&store, 11).await;
    // One `logged_at` per transaction.
    let batches: Vec<(i64, i64)> = crate::store::on_pool!(&store, p => sqlx::query_as(
            "SELECT logged_at, COUNT(*) FROM request_log GROUP BY logged_at ORDER BY logged_at")
            .fetch_all(p).await.unwrap());
    let sizes: Vec<i64> = batches.iter().map(|b| b.1).collect();
    assert_eq!(sizes, [8, 3], "{batches:?}");
    assert!(
        batches[1].0 - batches[0].0 >= interval.as_millis() as i64,
        "the rest was written without waiting: {batches:?}"
    );
}

/// A batch larger than one INSERT statement takes is written whole.
#[tokio::test]
async fn a_batch_over_one_statement_is_written_whole() {
    assert_eq!(
        write_through(1200, Duration::from_millis(300), 1100).await,
        1100
    );
}

/// Any batch is written with statements of the few prepared sizes, covering it exactly.
#[test]
fn statements_come_in_power_of_two_sizes() {
    let sizes = |n: usize| {
        let rows = vec![(); n];
        statement_chunks(&rows).map(<[()]>::len).collect::<Vec<_>>()
    };
    assert_eq!(sizes(0), Vec::<usize>::new());
    assert_eq!(sizes(1), [1]);
    assert_eq!(sizes(3), [2, 1]);
    assert_eq!(sizes(50), [32, 16, 2]);
    assert_eq!(sizes(64), [64]);
    assert_eq!(sizes(130), [64, 64, 2]);
    assert_eq!(sizes(1000)[0], MAX_ROWS_PER_INSERT);
    let mut shapes = std::collections::BTreeSet::new();
    for n in 1..=1000 {
        let chunks = sizes(n);
        assert_eq!(chunks.iter().sum::<usize>(), n);
        shapes.extend(chunks);
    }
    assert_eq!(shapes.len(), MAX_ROWS_PER_INSERT.ilog2() as usize + 1);
}

/// While the database refuses writes (another connection holds it locked, as a failing
/// disk would), rows keep coming without blocking the senders: some in memory, the rest
/// in the spill file; once it takes writes again every row is written exactly once and
/// the spill file is emptied.
#[tokio::test]
async fn rows_are_kept_through_an_outage_and_written_once() {
    use sqlx::Connection;
    let (dir, store) = store().await;
    let spill = dir.path().join("spill");
    let mut options = RequestLogOptions::new(16, 4, Duration::from_millis(10));
    options.memory_rows = 4;
    options.spill_dir = Some(spill.clone());
    let (writer, task) = RequestLogWriter::spawn(store.clone(), options);
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let mut lock = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for i in 0..40 {
        writer.send(record(i)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "senders waited on the locked database: {:?}",
        started.elapsed()
    );
    // The busy timeout passes, the writer spills what memory does not hold.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while writer.status().spilled == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing was spilled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(writer.status().state, "retrying");
    assert_eq!(writer.status().backlog, 40);
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    drop(lock);
    wait_for_rows(&store, 40).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while writer.status().backlog > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the backlog never drained"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: u64 = std::fs::read_dir(&spill)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(left, 0, "the spill file was emptied");
    drop(writer);
    task.await.unwrap();
    let distinct: i64 = crate::store::on_pool!(&store, p => sqlx::query_scalar(
            "SELECT COUNT(DISTINCT request_id) FROM request_log").fetch_one(p).await.unwrap());
    assert_eq!(
        (store.count_request_log().await.unwrap(), distinct),
        (40, 40)
    );
}

/// A spill file left by an earlier run (a shutdown during an outage) is written at the
/// next start, and rows already written are not written again.
#[tokio::test]
async fn a_spill_file_is_replayed_at_start() {
    let (dir, store) = store().await;
    let spill_dir = dir.path().join("spill");
    std::fs::create_dir_all(&spill_dir).unwrap();
    let path = spill_dir.join("request-log-earlier.jsonl");
    let rows: Vec<Row> = (0..5).map(|i| Row::from(record(i))).collect();
    let mut spill = Spill::open(&path).unwrap();
    spill.append(&rows).unwrap();
    drop(spill);
    insert_batch(&store, &rows[..2]).await.unwrap();
    let mut options = RequestLogOptions::new(16, 4, Duration::from_millis(10));
    options.spill_dir = Some(spill_dir.clone());
    let (writer, task) = RequestLogWriter::spawn(store.clone(), options);
    wait_for_rows(&store, 5).await;
    drop(writer);
    task.await.unwrap();
    assert_eq!(store.count_request_log().await.unwrap(), 5);
    assert!(!path.exists(), "the earlier run's file was adopted");
}
