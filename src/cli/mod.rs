//! The `quartermaster` command line: `serve`, `keys`, `ingest` and the offline evaluations.
//! `main.rs` only hands over to [`main`].

mod eval_cache;
mod eval_retrieval;
mod ingest;
mod keys;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::server::{App, shutdown_signal};
use crate::telemetry;

#[derive(Parser)]
#[command(name = "quartermaster", version, about = "An LLM gateway")]
pub struct Cli {
    /// Config file (TOML). Without this flag `quartermaster.toml` is read if it exists.
    #[arg(long, short, global = true, env = "QM_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// The audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Export the usage facts as day-partitioned Parquet (what the scheduled export writes),
    /// for the days from `--since` to `--until` (default: today), into `--dir` (default:
    /// `warehouse.dir`). Re-running a window rewrites it identically.
    Export {
        /// The first day, `YYYY-MM-DD` (UTC).
        #[arg(long)]
        since: String,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum AuditAction {
    /// Checks the hash chain from the first row: exits non-zero at the first row that was
    /// edited, removed or inserted.
    Verify,
}

#[derive(Subcommand)]
pub enum EvalWhat {
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
pub struct IngestArgs {
    /// Files or folders (folders are walked; hidden entries are skipped).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The tenant (by name) that owns the documents.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// JSON object merged into every document's metadata.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Documents in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// No progress bar (e.g. in logs).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(clap::Args)]
pub struct RetrievalEvalArgs {
    #[arg(long)]
    pub corpus: PathBuf,
    #[arg(long)]
    pub queries: PathBuf,
    #[arg(long)]
    pub qrels: PathBuf,
    /// Modes to compare.
    #[arg(long, value_delimiter = ',', default_value = "vector,text,hybrid")]
    pub modes: Vec<String>,
    /// Hybrid only: full-text RRF weights to compare (the vector ranking's weight is 1).
    /// Empty: the configured weights.
    #[arg(long, value_delimiter = ',')]
    pub text_weights: Vec<f32>,
    /// The store to evaluate: `embedded` (a throwaway SQLite file) or a PostgreSQL URL
    /// with pgvector (documents go to a throwaway tenant, deleted afterwards).
    #[arg(long, default_value = "embedded")]
    pub store: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct CacheEvalArgs {
    /// Labeled pairs: text1<TAB>text2<TAB>label (1 = same meaning); repeat for several files.
    #[arg(long, required = true)]
    pub pairs: Vec<PathBuf>,
    /// The threshold to report (default: the configured `cache.threshold`).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// False-hit rate the tuned threshold must stay under.
    #[arg(long, default_value_t = 0.01)]
    pub max_false_hit_rate: f64,
    /// Thresholds of the precision/recall curve.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.80,0.85,0.88,0.90,0.92,0.94,0.96,0.98"
    )]
    pub curve: Vec<f32>,
    /// Also fit the learned verifier on every pair and print its weights and settings.
    #[arg(long)]
    pub fit: bool,
    /// Calibrate `cache.max_false_hit_rate`: for each bound, the threshold chosen on the
    /// even-numbered pairs (the upper end of its 95 % interval under the bound), checked on
    /// the odd-numbered ones; prints the table `src/cache/config.rs` ships.
    #[arg(long)]
    pub calibrate: bool,
    /// A trap set (`text1<TAB>text2<TAB>label<TAB>kind`, from scripts/verifier/traps.py):
    /// the share of traps (label 0) answered with another question's answer and of
    /// paraphrases (label 1) answered rightly, per kind and over the threshold.
    #[arg(long)]
    pub traps: Option<PathBuf>,
    /// Cross-encoder weights to evaluate instead of the ones compiled in (a file written by
    /// scripts/verifier/cross.py --out), to compare a training run before shipping it.
    #[arg(long)]
    pub cross_weights: Option<PathBuf>,
    /// Hand verdicts on hits (`KEY<TAB>same|different|unclear`, keys as --list-to-judge
    /// writes them): the table of the best precision at recall >= 30 % also gives the
    /// precision by hand (a hit is right when judged the same question; a hit without a
    /// verdict keeps the labels' reading).
    #[arg(long)]
    pub verdicts: Option<PathBuf>,
    /// Write every hit of that table that has no verdict yet (all but a cached text
    /// identical to the query) to this file (`KEY<TAB>query<TAB>cached question`, in key
    /// order, without the label, stage or score), to be judged blind.
    #[arg(long)]
    pub list_to_judge: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum KeysAction {
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

/// The process entry point: the PDF helper, or the command line on a multi-threaded runtime.
pub fn main() -> anyhow::Result<()> {
    // The PDF helper (see rag::extract::sandbox) is this binary run with one argument; it
    // starts no runtime and reads no config.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(crate::rag::extract::pdf::HELPER_ARG) {
        std::process::exit(crate::rag::extract::pdf::helper_main(&args[1..]));
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
        Command::Keys { action } => keys::run(&config, action).await,
        Command::Export { since, until, dir } => {
            use crate::integrations::warehouse::{export_days, parse_day};
            use secrecy::ExposeSecret;
            let dir = dir
                .or_else(|| config.warehouse.dir.clone())
                .context("give --dir or set warehouse.dir")?;
            let from = parse_day(&since)?;
            let to = match until {
                Some(u) => parse_day(&u)?,
                None => crate::clock::now_ms().div_euclid(86_400_000),
            };
            anyhow::ensure!(from <= to, "--since is after --until");
            let store =
                crate::store::Store::connect(config.database.url.expose_secret(), 2).await?;
            let report = export_days(&store, &dir, from, to).await?;
            store.close().await;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Audit {
            action: AuditAction::Verify,
        } => {
            use secrecy::ExposeSecret;
            let store =
                crate::store::Store::connect(config.database.url.expose_secret(), 1).await?;
            let outcome = crate::audit::verify(&store).await?;
            store.close().await;
            match outcome {
                Ok(n) => {
                    println!("audit log intact: {n} rows, each chained to the one before");
                    Ok(())
                }
                Err((seq, why)) => anyhow::bail!("audit log broken at row {seq}: {why}"),
            }
        }
        Command::Ingest(args) => ingest::run(config, args).await,
        Command::Eval { what } => match what {
            EvalWhat::Cache(args) => eval_cache::run(&config, args),
            EvalWhat::Retrieval(args) => eval_retrieval::run(config, args).await,
            EvalWhat::Router {
                examples,
                eval,
                thresholds,
            } => eval_router(&config, &examples, &eval, &thresholds),
        },
    }
}

/// The configured embedding model, loaded in this process (the offline evaluations).
fn load_embed_model(config: &Config) -> anyhow::Result<crate::embed::EmbedModel> {
    let e = &config.embeddings;
    Ok(crate::embed::EmbedModel::load(
        &e.model_dir,
        e.backend,
        e.threads,
        e.max_seq_length,
    )?)
}

fn eval_router(
    config: &Config,
    examples: &std::path::Path,
    eval: &std::path::Path,
    thresholds: &[f32],
) -> anyhow::Result<()> {
    let model = load_embed_model(config)?;
    let report = crate::route::classifier::evaluate_files(&model, examples, eval, thresholds)
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
