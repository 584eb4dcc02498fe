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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
    use quartermaster::cache::eval::{Evaluation, Score, read_pairs};
    use quartermaster::cache::verify::Check;
    let e = &config.embeddings;
    let model = quartermaster::embed::EmbedModel::load(
        &e.model_dir,
        e.backend,
        e.threads,
        e.max_seq_length,
    )?;
    let threshold = args.threshold.unwrap_or(config.cache.threshold);
    let row = |label: &str, s: &Score| {
        println!(
            "| {label} | {:.3} | {:.1} % | {:.1} % | {:.2} % | {} |",
            s.threshold,
            s.precision() * 100.0,
            s.recall() * 100.0,
            s.false_hit_rate() * 100.0,
            s.hits
        );
    };
    let header = || {
        println!("| | threshold | precision | recall | false-hit rate | hits |");
        println!("| --- | --- | --- | --- | --- | --- |");
    };
    for path in &args.pairs {
        let pairs = read_pairs(path).map_err(anyhow::Error::msg)?;
        let eval =
            Evaluation::run(&model, &pairs, config.cache.candidates).map_err(anyhow::Error::msg)?;
        let positives = pairs.iter().filter(|p| p.duplicate).count();
        println!(
            "\n## {}: {} pairs ({} duplicates), {} cached entries, embedded in {:.1} s",
            path.display(),
            eval.pairs,
            positives,
            eval.entries,
            eval.embed_secs
        );
        let all = |_: usize| true;
        let none: &[Check] = &[];
        println!("\nAt the configured threshold:\n");
        header();
        row("similarity only", &eval.score(threshold, none, all));
        row("+ verification", &eval.score(threshold, &Check::ALL, all));
        println!("\nWhat each check gains (verification without it):\n");
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
        println!("\nPrecision/recall curve:\n");
        header();
        for &t in &args.curve {
            row("similarity only", &eval.score(t, none, all));
            row("+ verification", &eval.score(t, &Check::ALL, all));
        }
        // Tuned on even-numbered pairs, reported on the odd ones it never saw.
        let tune = |i: usize| i % 2 == 0;
        let test = |i: usize| i % 2 == 1;
        println!(
            "\nThreshold tuned on half the pairs for a false-hit rate <= {:.1} %, scored on the other half:\n",
            args.max_false_hit_rate * 100.0
        );
        header();
        let t0 = eval.tune(args.max_false_hit_rate, none, tune);
        row("similarity only", &eval.score(t0, none, test));
        let t1 = eval.tune(args.max_false_hit_rate, &Check::ALL, tune);
        row("+ verification", &eval.score(t1, &Check::ALL, test));
    }
    Ok(())
}
