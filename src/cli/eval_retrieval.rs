//! `quartermaster eval retrieval`: a BEIR dataset ingested into a fresh store (a throwaway
//! SQLite file or a throwaway tenant on PostgreSQL), every judged query asked; nDCG@10,
//! recall@10, MRR@10 per mode and the ingestion throughput.

use std::path::PathBuf;

use super::RetrievalEvalArgs;
use super::ingest::{open_rag, progress_bar};
use crate::config::Config;
use crate::rag::Mode;
use crate::rag::eval::{self, EvalReport as Report};
use crate::store::Store;

pub async fn run(mut config: Config, args: RetrievalEvalArgs) -> anyhow::Result<()> {
    let modes: Vec<Mode> = args
        .modes
        .iter()
        .map(|m| match m.as_str() {
            "vector" => Ok(Mode::Vector),
            "text" => Ok(Mode::Text),
            "hybrid" => Ok(Mode::Hybrid),
            other => Err(anyhow::anyhow!(
                "unknown mode `{other}` (vector, text, hybrid)"
            )),
        })
        .collect::<Result<_, _>>()?;
    let (docs, bad) = eval::read_beir_corpus(&args.corpus)?;
    for b in &bad {
        eprintln!("corpus: {b}");
    }
    let queries = eval::read_beir_queries(&args.queries)?;
    let qrels = eval::read_qrels(&args.qrels)?;
    let tmp = tempdir_for_eval()?;
    let (url, embedded) = if args.store == "embedded" {
        (format!("sqlite://{}/eval.db", tmp.display()), true)
    } else {
        (args.store.clone(), false)
    };
    config.cache.enabled = false;
    let store = Store::connect(&url, 4).await?;
    let rag = open_rag(&config, &store).await?;
    let tenant = format!("eval_{}", uuid::Uuid::new_v4().simple());
    let bar = progress_bar(docs.len(), args.json);
    let report = eval::evaluate(
        &rag,
        &tenant,
        docs,
        queries,
        &qrels,
        &modes,
        &args.text_weights,
        |_, _| bar.inc(1),
    )
    .await;
    bar.finish_and_clear();
    if !embedded {
        // The throwaway tenant's documents (chunks go with them).
        let ids: Vec<String> = rag
            .store()
            .list(&tenant, 1_000_000, None)
            .await?
            .into_iter()
            .map(|d| d.id)
            .collect();
        for id in ids {
            rag.store().delete(&tenant, &id).await?;
        }
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(&tmp);
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(report: &Report) {
    println!(
        "store {}: {} documents ({} failed), {} chunks ingested in {:.1} s: {:.1} documents/s, {:.1} chunks/s",
        report.store,
        report.documents,
        report.failed_documents,
        report.chunks,
        report.ingest_secs,
        report.documents_per_sec,
        report.chunks_per_sec
    );
    println!("{} judged queries", report.queries);
    println!(
        "{:<14} {:>8} {:>10} {:>8} {:>9}",
        "mode", "nDCG@10", "recall@10", "MRR@10", "p50 ms"
    );
    for m in &report.modes {
        let name = match m.text_weight {
            Some(w) => format!("hybrid t={w}"),
            None => m.mode.as_str().to_string(),
        };
        println!(
            "{:<14} {:>8.4} {:>10.4} {:>8.4} {:>9.2}",
            name, m.ndcg_at_10, m.recall_at_10, m.mrr_at_10, m.p50_ms
        );
    }
}

fn tempdir_for_eval() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("qm-eval-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
