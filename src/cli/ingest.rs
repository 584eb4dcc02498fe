//! `quartermaster ingest`: files and folders into the retrieval store of the configured
//! database, with a progress bar; every file or document that failed is named at the end.

use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;

use super::IngestArgs;
use crate::config::Config;
use crate::rag::{ExtractError, Format, IngestDoc, IngestStatus, Metadata, Rag};
use crate::store::Store;

/// Something that was not ingested, and why.
type Failure = (String, String);

pub async fn run(config: Config, args: IngestArgs) -> anyhow::Result<()> {
    let metadata: Metadata = match &args.metadata {
        None => Default::default(),
        Some(text) => match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => anyhow::bail!("--metadata must be a JSON object"),
        },
    };
    let store = Store::connect(config.database.url.expose_secret(), 4).await?;
    let tenant = match store.tenant_id_by_name(&args.tenant).await? {
        Some(id) => id,
        None if args.tenant == "default" => "default".to_string(),
        None => store.ensure_tenant(&args.tenant).await?.id,
    };
    let rag = open_rag(&config, &store).await?;
    let (docs, mut failures) =
        read_documents(&rag, &args.paths, &metadata, config.rag.max_document_bytes);
    let bar = progress_bar(docs.len(), args.quiet);
    let (mut chunks, mut embedded, mut unchanged) = (0usize, 0usize, 0usize);
    let started = std::time::Instant::now();
    let results = crate::rag::eval::ingest_many(&rag, &tenant, docs, args.concurrency, |_, r| {
        if let Ok(o) = r {
            chunks += o.chunks;
            embedded += o.embedded;
            unchanged += usize::from(o.status == IngestStatus::Unchanged);
        }
        bar.inc(1);
        bar.set_message(format!("{chunks} chunks, {embedded} embedded"));
    })
    .await;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    for (id, r) in &results {
        if let Err(e) = r {
            failures.push((id.clone(), e.to_string()));
        }
    }
    let ok = results.iter().filter(|(_, r)| r.is_ok()).count();
    println!(
        "ingested {ok} documents ({unchanged} unchanged) into the {} store: {chunks} chunks, {embedded} embedded, in {secs:.1} s ({:.1} chunks/s)",
        rag.store_name(),
        chunks as f64 / secs.max(1e-9)
    );
    for (what, why) in &failures {
        eprintln!("error: {what}: {why}");
    }
    store.close().await;
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {} documents or files failed",
            failures.len(),
            failures.len() + ok
        )
    }
}

/// Reads and extracts every file under the paths: the documents to ingest, and the files
/// (or a JSONL file's documents) that could not be read or extracted.
fn read_documents(
    rag: &Rag,
    paths: &[PathBuf],
    metadata: &Metadata,
    max: usize,
) -> (Vec<IngestDoc>, Vec<Failure>) {
    let mut docs = Vec::new();
    let mut failures: Vec<Failure> = Vec::new();
    for path in collect_files(paths) {
        let name = path.display().to_string();
        let Some(format) = Format::from_path(&path) else {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("(none)");
            failures.push((name, ExtractError::Unsupported(ext.to_string()).to_string()));
            continue;
        };
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size as usize > max {
            failures.push((
                name,
                format!("the file is {size} bytes; the limit is {max} (rag.max_document_bytes)"),
            ));
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                failures.push((name, e.to_string()));
                continue;
            }
        };
        for (i, r) in rag
            .extractor()
            .extract(format, &bytes)
            .into_iter()
            .enumerate()
        {
            match r {
                Ok(d) => {
                    let mut meta = metadata.clone();
                    for (k, v) in d.metadata {
                        meta.entry(k).or_insert(v);
                    }
                    docs.push(IngestDoc {
                        id: d.id.unwrap_or_else(|| name.clone()),
                        title: d.title,
                        text: d.text,
                        format,
                        source: Some(name.clone()),
                        metadata: meta,
                    });
                }
                Err(e) if format == Format::Jsonl => {
                    failures.push((format!("{name} (document {})", i + 1), e.to_string()))
                }
                Err(e) => failures.push((name.clone(), e.to_string())),
            }
        }
    }
    (docs, failures)
}

pub(super) fn progress_bar(total: usize, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {pos}/{len} docs · {per_sec} · ETA {eta} · {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Every file under the paths (folders walked in name order, hidden entries skipped).
fn collect_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.sort();
            for e in entries {
                let hidden = e
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'));
                if !hidden {
                    walk(&e, out);
                }
            }
        } else {
            out.push(p.to_path_buf());
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out);
    }
    out
}

/// Retrieval on the configured store and embedder (and the cache, so that re-ingested
/// documents invalidate the answers grounded on them).
pub(super) async fn open_rag(config: &Config, store: &Store) -> anyhow::Result<Rag> {
    let embedder = crate::embed::EmbedService::start(&config.embeddings)?;
    let cache = if config.cache.enabled {
        Some(std::sync::Arc::new(
            crate::cache::Cache::new(config.cache.clone(), store.clone()).await?,
        ))
    } else {
        None
    };
    Rag::open(
        config.rag.clone(),
        store,
        embedder,
        &config.embeddings,
        cache,
    )
    .await
}
