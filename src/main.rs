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
