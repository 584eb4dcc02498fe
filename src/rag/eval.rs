//! Bulk ingestion (the CLI, evaluation, benchmarks) and retrieval evaluation on a BEIR
//! dataset: nDCG@10, recall@10 and MRR@10 per retrieval mode, and ingestion throughput.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;

use super::extract::{ExtractConfig, Extractor, Format};
use super::{Filter, IngestDoc, IngestOutcome, Mode, Query, Rag, RagError};

/// Ingests documents with `concurrency` in flight (the embedder batches what arrives
/// together); `done` sees each result as it lands, in completion order.
pub async fn ingest_many(
    rag: &Rag,
    tenant: &str,
    docs: Vec<IngestDoc>,
    concurrency: usize,
    mut done: impl FnMut(&str, &Result<IngestOutcome, RagError>),
) -> Vec<(String, Result<IngestOutcome, RagError>)> {
    let mut results = Vec::with_capacity(docs.len());
    let mut stream = futures::stream::iter(docs.into_iter().map(|d| async move {
        let id = d.id.clone();
        (id, rag.ingest(tenant, d).await)
    }))
    .buffer_unordered(concurrency.max(1));
    while let Some((id, r)) = stream.next().await {
        done(&id, &r);
        results.push((id, r));
    }
    results
}

/// A BEIR corpus file as documents to ingest (lines that fail are returned as errors).
pub fn read_beir_corpus(path: &Path) -> anyhow::Result<(Vec<IngestDoc>, Vec<String>)> {
    let bytes = std::fs::read(path)?;
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for r in Extractor::new(ExtractConfig::default()).extract(Format::Jsonl, &bytes) {
        match r {
            Ok(d) => match d.id {
                Some(id) => docs.push(IngestDoc {
                    id,
                    title: d.title,
                    text: d.text,
                    format: Format::Jsonl,
                    source: Some(path.display().to_string()),
                    metadata: d.metadata,
                }),
                None => errors.push("a line without _id".into()),
            },
            Err(e) => errors.push(e.to_string()),
        }
    }
    Ok((docs, errors))
}

/// query id → text.
pub fn read_beir_queries(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), i + 1))?;
        let id = v["_id"].as_str().map(str::to_string);
        let q = v["text"].as_str().map(str::to_string);
        match (id, q) {
            (Some(id), Some(q)) => out.push((id, q)),
            _ => anyhow::bail!(
                "{} line {}: needs string _id and text",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(out)
}

/// query id → (document id → graded relevance); a header line is skipped.
pub fn read_qrels(path: &Path) -> anyhow::Result<HashMap<String, HashMap<String, i64>>> {
    let text = std::fs::read_to_string(path)?;
    let mut out: HashMap<String, HashMap<String, i64>> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 3 {
            continue;
        }
        let Ok(score) = cols[2].trim().parse::<i64>() else {
            if i == 0 {
                continue; // header
            }
            anyhow::bail!("{} line {}: score is not an integer", path.display(), i + 1);
        };
        out.entry(cols[0].to_string())
            .or_default()
            .insert(cols[1].to_string(), score);
    }
    Ok(out)
}

/// Metrics at 10 for one ranked list of document ids.
pub fn metrics_at_10(ranked: &[String], rels: &HashMap<String, i64>) -> (f64, f64, f64) {
    let top: Vec<&String> = ranked.iter().take(10).collect();
    let dcg: f64 = top
        .iter()
        .enumerate()
        .map(|(i, d)| *rels.get(*d).unwrap_or(&0) as f64 / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<i64> = rels.values().copied().filter(|&r| r > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, &r)| r as f64 / ((i + 2) as f64).log2())
        .sum();
    let relevant = rels.values().filter(|&&r| r > 0).count();
    let found = top
        .iter()
        .filter(|d| rels.get(**d).is_some_and(|&r| r > 0))
        .count();
    let mrr = top
        .iter()
        .position(|d| rels.get(*d).is_some_and(|&r| r > 0))
        .map_or(0.0, |p| 1.0 / (p + 1) as f64);
    let ndcg = if idcg > 0.0 { dcg / idcg } else { 0.0 };
    let recall = if relevant > 0 {
        found as f64 / relevant as f64
    } else {
        0.0
    };
    (ndcg, recall, mrr)
}

#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    pub mode: Mode,
    /// Hybrid only: the full-text ranking's RRF weight (the vector ranking's is 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_weight: Option<f32>,
    pub ndcg_at_10: f64,
    pub recall_at_10: f64,
    pub mrr_at_10: f64,
    /// Median retrieval latency per query (ms), the query's embedding excluded.
    pub p50_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub store: String,
    pub documents: usize,
    pub failed_documents: usize,
    pub chunks: usize,
    pub ingest_secs: f64,
    pub documents_per_sec: f64,
    pub chunks_per_sec: f64,
    pub queries: usize,
    pub modes: Vec<ModeReport>,
}

/// Ingests the corpus under `tenant`, then asks every judged query in each mode.
pub async fn evaluate(
    rag: &Rag,
    tenant: &str,
    docs: Vec<IngestDoc>,
    queries: Vec<(String, String)>,
    qrels: &HashMap<String, HashMap<String, i64>>,
    modes: &[Mode],
    text_weights: &[f32],
    progress: impl FnMut(&str, &Result<IngestOutcome, RagError>),
) -> anyhow::Result<EvalReport> {
    let started = Instant::now();
    let results = ingest_many(rag, tenant, docs, 16, progress).await;
    let ingest_secs = started.elapsed().as_secs_f64();
    let (chunks, failed) = tally_ingested(&results);
    let judged: Vec<&(String, String)> = queries
        .iter()
        .filter(|(id, _)| qrels.get(id).is_some_and(|r| r.values().any(|&s| s > 0)))
        .collect();
    // Query vectors once: every mode and weight ranks the same embeddings.
    let texts: Vec<String> = judged.iter().map(|(_, t)| t.clone()).collect();
    let vectors = rag.embed(texts).await?;
    let mut reports = Vec::new();
    for (mode, text_weight) in runs(modes, text_weights) {
        let run = Run {
            mode,
            text_weight,
            judged: &judged,
            vectors: &vectors,
            qrels,
        };
        reports.push(run.report(rag, tenant).await?);
    }
    Ok(EvalReport {
        store: rag.store_name().to_string(),
        documents: results.len() - failed,
        failed_documents: failed,
        chunks,
        ingest_secs,
        documents_per_sec: (results.len() - failed) as f64 / ingest_secs.max(1e-9),
        chunks_per_sec: chunks as f64 / ingest_secs.max(1e-9),
        queries: judged.len(),
        modes: reports,
    })
}

/// Chunks stored and documents failed over an ingestion; each failure is logged, since
/// the report only counts them.
fn tally_ingested(results: &[(String, Result<IngestOutcome, RagError>)]) -> (usize, usize) {
    let mut chunks = 0;
    let mut failed = 0;
    for (id, r) in results {
        match r {
            Ok(o) => chunks += o.chunks,
            Err(e) => {
                failed += 1;
                tracing::warn!(document = %id, error = %e, "not ingested");
            }
        }
    }
    (chunks, failed)
}

/// The (mode, text weight) pairs to evaluate: hybrid once per text weight when weights are
/// given, every other mode once.
fn runs(modes: &[Mode], text_weights: &[f32]) -> Vec<(Mode, Option<f32>)> {
    let mut runs: Vec<(Mode, Option<f32>)> = Vec::new();
    for &mode in modes {
        if mode == Mode::Hybrid && !text_weights.is_empty() {
            runs.extend(text_weights.iter().map(|&w| (mode, Some(w))));
        } else {
            runs.push((mode, None));
        }
    }
    runs
}

/// One evaluated setting over the judged queries (and their precomputed vectors).
struct Run<'a> {
    mode: Mode,
    text_weight: Option<f32>,
    judged: &'a [&'a (String, String)],
    vectors: &'a [Vec<f32>],
    qrels: &'a HashMap<String, HashMap<String, i64>>,
}

impl Run<'_> {
    /// Asks every judged query under this run's settings and averages its metrics.
    async fn report(&self, rag: &Rag, tenant: &str) -> anyhow::Result<ModeReport> {
        let mut settings = rag.config.retrieval.clone();
        if let Some(w) = self.text_weight {
            settings.vector_weight = 1.0;
            settings.text_weight = w;
        }
        let (mut ndcg, mut recall, mut mrr) = (0.0, 0.0, 0.0);
        let mut latencies = Vec::with_capacity(self.judged.len());
        for ((id, text), vector) in self.judged.iter().zip(self.vectors) {
            let t = Instant::now();
            // Several chunks may come from one document: ask for more, keep 10 documents.
            let hits = rag
                .retrieve_with(
                    tenant,
                    &Query {
                        text: text.clone(),
                        top_k: 30,
                        filter: Filter::default(),
                        mode: self.mode,
                    },
                    Some(vector.clone()),
                    &settings,
                )
                .await?;
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            let mut seen = HashSet::new();
            let ranked: Vec<String> = hits
                .into_iter()
                .map(|h| h.chunk.document_id)
                .filter(|d| seen.insert(d.clone()))
                .collect();
            let (n, r, m) = metrics_at_10(&ranked, &self.qrels[id]);
            ndcg += n;
            recall += r;
            mrr += m;
        }
        let q = self.judged.len().max(1) as f64;
        latencies.sort_by(f64::total_cmp);
        Ok(ModeReport {
            mode: self.mode,
            text_weight: self.text_weight,
            ndcg_at_10: ndcg / q,
            recall_at_10: recall / q,
            mrr_at_10: mrr / q,
            p50_ms: latencies.get(latencies.len() / 2).copied().unwrap_or(0.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computation() {
        let rels: HashMap<String, i64> = [("a", 2), ("b", 1), ("c", 0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let ranked: Vec<String> = ["x", "b", "a"].iter().map(|s| s.to_string()).collect();
        let (ndcg, recall, mrr) = metrics_at_10(&ranked, &rels);
        let dcg = 1.0 / 3f64.log2() + 2.0 / 4f64.log2();
        let idcg = 2.0 + 1.0 / 3f64.log2();
        assert!((ndcg - dcg / idcg).abs() < 1e-12);
        assert_eq!(recall, 1.0);
        assert_eq!(mrr, 0.5);
        let (n0, r0, m0) = metrics_at_10(&["c".to_string()], &rels);
        assert_eq!((n0, r0, m0), (0.0, 0.0, 0.0));
    }
}
