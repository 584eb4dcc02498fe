//! The `quartermaster` command: parses the command line, starts telemetry, calls the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use quartermaster::config::Config;
use quartermaster::server::{App, shutdown_signal};
use quartermaster::store::Store;
use quartermaster::{auth, telemetry};
use secrecy::ExposeSecret;

#[derive(Parser)]
#[command(name = "quartermaster", version, about = "An LLM gateway")]
struct Cli {
    /// Config file (TOML). Without this flag `quartermaster.toml` is read if it exists.
    #[arg(long, short, global = true, env = "QM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Ingest documents (files and folders: .md, .txt, .html, .pdf, BEIR .jsonl) into the
    /// retrieval store of the configured database.
    Ingest(IngestArgs),
    /// Evaluate a component offline.
    Eval {
        #[command(subcommand)]
        what: EvalWhat,
    },
}

#[derive(Subcommand)]
enum EvalWhat {
    /// The router's classifier: trained on the examples, scored on a separate labeled set;
    /// prints accuracy and the share sent to the strong tier per threshold.
    Router {
        #[arg(long, default_value = "prompts/router_examples.jsonl")]
        examples: PathBuf,
        #[arg(long, default_value = "tests/fixtures/router_eval.jsonl")]
        eval: PathBuf,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "0.2,0.3,0.4,0.5,0.6,0.7,0.8"
        )]
        thresholds: Vec<f32>,
    },
    /// The semantic cache: caches every text1, asks every text2; prints precision, recall
    /// and false-hit rate with and without the verification stage, the curve over
    /// thresholds, and a threshold tuned on half the pairs and tested on the other half.
    Cache(CacheEvalArgs),
    /// Retrieval on a BEIR dataset: ingests the corpus into a fresh store, asks every judged
    /// query; prints nDCG@10, recall@10, MRR@10 per mode and ingestion throughput.
    Retrieval(RetrievalEvalArgs),
}

#[derive(clap::Args)]
struct IngestArgs {
    /// Files or folders (folders are walked; hidden entries are skipped).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The tenant (by name) that owns the documents.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// JSON object merged into every document's metadata.
    #[arg(long)]
    metadata: Option<String>,
    /// Documents in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// No progress bar (e.g. in logs).
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct RetrievalEvalArgs {
    #[arg(long)]
    corpus: PathBuf,
    #[arg(long)]
    queries: PathBuf,
    #[arg(long)]
    qrels: PathBuf,
    /// Modes to compare.
    #[arg(long, value_delimiter = ',', default_value = "vector,text,hybrid")]
    modes: Vec<String>,
    /// Hybrid only: full-text RRF weights to compare (the vector ranking's weight is 1).
    /// Empty: the configured weights.
    #[arg(long, value_delimiter = ',')]
    text_weights: Vec<f32>,
    /// The store to evaluate: `embedded` (a throwaway SQLite file) or a PostgreSQL URL
    /// with pgvector (documents go to a throwaway tenant, deleted afterwards).
    #[arg(long, default_value = "embedded")]
    store: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CacheEvalArgs {
    /// Labeled pairs: text1<TAB>text2<TAB>label (1 = same meaning); repeat for several files.
    #[arg(long, required = true)]
    pairs: Vec<PathBuf>,
    /// The threshold to report (default: the configured `cache.threshold`).
    #[arg(long)]
    threshold: Option<f32>,
    /// False-hit rate the tuned threshold must stay under.
    #[arg(long, default_value_t = 0.01)]
    max_false_hit_rate: f64,
    /// Thresholds of the precision/recall curve.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.80,0.85,0.88,0.90,0.92,0.94,0.96,0.98"
    )]
    curve: Vec<f32>,
    /// Also fit the learned verifier on every pair and print its weights and settings.
    #[arg(long)]
    fit: bool,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key for a tenant (created if new). The key is printed once.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// List keys (never the secrets).
    List,
    /// Revoke a key by id or displayed prefix.
    Revoke { id: String },
}

fn main() -> anyhow::Result<()> {
    // The PDF helper (see rag::extract::sandbox) is this binary run with one argument; it
    // starts no runtime and reads no config.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(quartermaster::rag::extract::pdf::HELPER_ARG) {
        std::process::exit(quartermaster::rag::extract::pdf::helper_main(&args[1..]));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (path, required) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from("quartermaster.toml"), false),
    };
    let config = Config::load(&path, required)
        .with_context(|| format!("loading config from {}", path.display()))?;
    telemetry::init_logging(&config.log);

    match cli.command {
        Command::Serve => {
            let addr = config.listen_addr();
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let mut app = App::build(config).await?;
            if path.exists() {
                app = app.with_config_path(&path);
            }
            app.serve(listener, shutdown_signal()).await
        }
        Command::Eval {
            what: EvalWhat::Cache(args),
        } => eval_cache(&config, args),
        Command::Eval {
            what: EvalWhat::Retrieval(args),
        } => eval_retrieval(config, args).await,
        Command::Ingest(args) => ingest(config, args).await,
        Command::Eval {
            what:
                EvalWhat::Router {
                    examples,
                    eval,
                    thresholds,
                },
        } => {
            let e = &config.embeddings;
            let model = quartermaster::embed::EmbedModel::load(
                &e.model_dir,
                e.backend,
                e.threads,
                e.max_seq_length,
            )?;
            let report = quartermaster::route::classifier::evaluate_files(
                &model,
                &examples,
                &eval,
                &thresholds,
            )
            .map_err(anyhow::Error::msg)?;
            println!(
                "router classifier: trained on {} examples ({}), evaluated on {} ({})",
                report.train_examples,
                examples.display(),
                report.eval_examples,
                eval.display()
            );
            println!(
                "| threshold | accuracy | sent to strong | hard sent to cheap | easy sent to strong |"
            );
            println!("| --- | --- | --- | --- | --- |");
            for r in &report.rows {
                println!(
                    "| {:.2} | {:.1} % | {:.1} % | {:.1} % | {:.1} % |",
                    r.threshold,
                    r.accuracy * 100.0,
                    r.strong_share * 100.0,
                    r.hard_to_cheap * 100.0,
                    r.easy_to_strong * 100.0
                );
            }
            println!(
                "(the code/math rule would route {:.1} % of these prompts before the classifier is asked)",
                report.rule_share * 100.0
            );
            Ok(())
        }
        Command::Keys { action } => {
            let store = Store::connect(config.database.url.expose_secret(), 1).await?;
            match action {
                KeysAction::Create { tenant, name } => {
                    let key = auth::create_key(&store, &tenant, &name).await?;
                    eprintln!(
                        "created key {} for tenant {} (shown once; store it now):",
                        key.id, key.tenant.name
                    );
                    println!("{}", key.secret);
                }
                KeysAction::List => {
                    println!(
                        "{:<40} {:<20} {:<16} {:<14} status",
                        "id", "tenant", "name", "prefix"
                    );
                    for k in store.list_keys().await? {
                        let status = if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        };
                        println!(
                            "{:<40} {:<20} {:<16} {:<14} {status}",
                            k.id, k.tenant_name, k.name, k.key_prefix
                        );
                    }
                }
                KeysAction::Revoke { id } => {
                    let id = store.revoke_key(&id).await?;
                    println!("revoked {id}");
                }
            }
            store.close().await;
            Ok(())
        }
    }
}

fn eval_cache(config: &Config, args: CacheEvalArgs) -> anyhow::Result<()> {
    use quartermaster::cache::eval::{Acceptance, Evaluation, Score, read_pairs, tune_threshold};
    use quartermaster::cache::verify::{Check, LearnedVerifier};
    let e = &config.embeddings;
    let model = quartermaster::embed::EmbedModel::load(
        &e.model_dir,
        e.backend,
        e.threads,
        e.max_seq_length,
    )?;
    let c = &config.cache;
    let threshold = args.threshold.unwrap_or(c.threshold);
    let shipped = quartermaster::cache::DEFAULT_VERIFIER;
    let row = |label: &str, s: &Score| {
        println!(
            "| {label} | {:.3} | {:.1} % | {:.1} % | {:.2} % | {} | {} |",
            s.threshold,
            s.precision() * 100.0,
            s.recall() * 100.0,
            s.false_hit_rate() * 100.0,
            s.hits,
            s.unjudged
        );
    };
    let header = || {
        println!(
            "| | threshold | precision | recall | false-hit rate | hits | unjudged false hits |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- |");
    };
    let mut evals = Vec::new();
    for path in &args.pairs {
        let pairs = read_pairs(path).map_err(anyhow::Error::msg)?;
        let eval = Evaluation::run(&model, &pairs, c.candidates).map_err(anyhow::Error::msg)?;
        let positives = pairs.iter().filter(|p| p.duplicate).count();
        evals.push((path.clone(), positives, eval));
    }
    let all = |_: usize| true;
    let tune_half = |i: usize| i % 2 == 0;
    let test_half = |i: usize| i % 2 == 1;
    let none: &[Check] = &[];
    for (path, positives, eval) in &evals {
        println!(
            "\n## {}: {} pairs ({} duplicates), {} cached entries, embedded in {:.1} s",
            path.display(),
            eval.pairs,
            positives,
            eval.entries,
            eval.embed_secs
        );
        println!(
            "\nAt the configured settings (similarity threshold {threshold}, learned verifier p >= {}):\n",
            c.min_probability
        );
        header();
        row("similarity only", &eval.score(threshold, none, all));
        row("+ rule checks", &eval.score(threshold, &Check::ALL, all));
        row(
            "+ rule checks + learned verifier",
            &eval.score_with(
                threshold,
                Acceptance::Learned(&shipped, c.min_probability),
                all,
            ),
        );
        println!("\nWhat each rule check gains (rule checks without it):\n");
        println!("| without | precision | recall | false-hit rate |");
        println!("| --- | --- | --- | --- |");
        for skip in Check::ALL {
            let checks: Vec<Check> = Check::ALL.iter().copied().filter(|c| *c != skip).collect();
            let s = eval.score(threshold, &checks, all);
            println!(
                "| {} | {:.1} % | {:.1} % | {:.2} % |",
                skip.as_str(),
                s.precision() * 100.0,
                s.recall() * 100.0,
                s.false_hit_rate() * 100.0
            );
        }
        println!("\nPrecision/recall curve over the similarity threshold:\n");
        header();
        for &t in &args.curve {
            row("similarity only", &eval.score(t, none, all));
            row("+ rule checks", &eval.score(t, &Check::ALL, all));
            row(
                "+ rule checks + learned verifier",
                &eval.score_with(t, Acceptance::Learned(&shipped, c.min_probability), all),
            );
        }
    }

    // Unseen data: everything below is tuned (and the verifier fitted) on the even-numbered
    // pairs of every file together, and scored on the odd-numbered pairs it never saw.
    let combined = |f: &dyn Fn(&Evaluation) -> Score| {
        evals
            .iter()
            .fold(Score::default(), |acc, (_, _, e)| acc.add(&f(e)))
    };
    let max = args.max_false_hit_rate;
    let t_sim = tune_threshold(max, |t| combined(&|e| e.score(t, none, tune_half)));
    let t_rules = tune_threshold(max, |t| combined(&|e| e.score(t, &Check::ALL, tune_half)));
    let fit_on = |select: &dyn Fn(usize) -> bool| {
        let samples: Vec<_> = evals
            .iter()
            .flat_map(|(_, _, e)| e.samples(LEARNED_FLOOR, select))
            .collect();
        LearnedVerifier::fit(&samples)
    };
    let half_model = fit_on(&tune_half);
    // The learned verifier's two knobs: the similarity floor and the probability.
    let best_learned = |v: &LearnedVerifier, select: &dyn Fn(usize) -> bool| {
        let mut best = (0.0f64, 1.0f32, 1.0f32);
        for floor in [0.70f32, 0.75, 0.80, 0.85, 0.90] {
            let p = tune_threshold(max, |q| {
                combined(&|e| e.score_with(floor, Acceptance::Learned(v, q), select))
            });
            let recall =
                combined(&|e| e.score_with(floor, Acceptance::Learned(v, p), select)).recall();
            if recall > best.0 {
                best = (recall, floor, p);
            }
        }
        (best.1, best.2)
    };
    let (floor, p) = best_learned(&half_model, &tune_half);
    println!(
        "\n## Unseen pairs: tuned for a false-hit rate <= {:.1} % on the even-numbered pairs of all files, scored on the odd-numbered ones\n",
        max * 100.0
    );
    for (path, _, eval) in &evals {
        println!("\n{}:\n", path.display());
        header();
        row("similarity only", &eval.score(t_sim, none, test_half));
        row(
            "+ rule checks",
            &eval.score(t_rules, &Check::ALL, test_half),
        );
        row(
            &format!("+ rule checks + learned verifier (p >= {p:.2})"),
            &eval.score_with(floor, Acceptance::Learned(&half_model, p), test_half),
        );
    }
    if args.fit {
        let full = fit_on(&all);
        let (floor, p) = best_learned(&full, &all);
        println!(
            "\nFitted on every pair (for src/cache/mod.rs): threshold = {floor}, min_probability = {p:.2}\n{full:?}"
        );
    }
    Ok(())
}

/// Candidates below this similarity are never served, whatever the learned verifier says.
const LEARNED_FLOOR: f32 = 0.70;

fn progress_bar(total: usize, quiet: bool) -> indicatif::ProgressBar {
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
    fn walk(p: &std::path::Path, out: &mut Vec<PathBuf>) {
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

async fn open_rag(config: &Config, store: &Store) -> anyhow::Result<quartermaster::rag::Rag> {
    let embedder = quartermaster::embed::EmbedService::start(&config.embeddings)?;
    let cache = if config.cache.enabled {
        Some(std::sync::Arc::new(
            quartermaster::cache::Cache::new(config.cache.clone(), store.clone()).await?,
        ))
    } else {
        None
    };
    quartermaster::rag::Rag::open(
        config.rag.clone(),
        store,
        embedder,
        &config.embeddings,
        cache,
    )
    .await
}

async fn ingest(config: Config, args: IngestArgs) -> anyhow::Result<()> {
    use quartermaster::rag::{Format, IngestDoc};
    let metadata: quartermaster::rag::Metadata = match &args.metadata {
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
    let max = config.rag.max_document_bytes;
    let mut docs = Vec::new();
    let mut failures: Vec<(String, String)> = Vec::new();
    for path in collect_files(&args.paths) {
        let name = path.display().to_string();
        let Some(format) = Format::from_path(&path) else {
            failures.push((
                name,
                quartermaster::rag::ExtractError::Unsupported(
                    path.extension()
                        .and_then(|e| e.to_str())
                        .unwrap_or("(none)")
                        .to_string(),
                )
                .to_string(),
            ));
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
    let bar = progress_bar(docs.len(), args.quiet);
    let (mut chunks, mut embedded, mut unchanged) = (0usize, 0usize, 0usize);
    let started = std::time::Instant::now();
    let results =
        quartermaster::rag::eval::ingest_many(&rag, &tenant, docs, args.concurrency, |_, r| {
            if let Ok(o) = r {
                chunks += o.chunks;
                embedded += o.embedded;
                unchanged += usize::from(o.status == quartermaster::rag::IngestStatus::Unchanged);
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

async fn eval_retrieval(mut config: Config, args: RetrievalEvalArgs) -> anyhow::Result<()> {
    use quartermaster::rag::{Mode, eval};
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
        return Ok(());
    }
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
    Ok(())
}

fn tempdir_for_eval() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("qm-eval-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
