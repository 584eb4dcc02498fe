//! Local embeddings: the tokenizer and a BERT encoder (all-MiniLM-L6-v2) on the CPU, behind a
//! batching service. Requests that arrive together share one forward pass; tokenization and
//! inference run on a dedicated thread, so the async runtime never blocks; the queue is
//! bounded and a full queue is reported, not waited on.

mod candle_bert;
pub mod fused;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};
use tokio::sync::{mpsc, oneshot};

pub use candle_bert::CandleBert;
pub use fused::FusedBert;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding model not found at {0}: run `models/fetch.sh` to download it")]
    MissingModel(PathBuf),
    #[error("embedding model: {0}")]
    Model(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("the embedding queue is full")]
    Overloaded,
    #[error("the embedding service has stopped")]
    Stopped,
}

/// Which forward pass to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Packed sequences, fused kernels (default; see `fused.rs`).
    #[default]
    Fused,
    /// candle-transformers' BertModel on padded batches (the reference).
    Candle,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedConfig {
    pub enabled: bool,
    /// The name clients use in `/v1/embeddings`.
    pub model_name: String,
    /// Folder with `model.safetensors`, `tokenizer.json`, `config.json`.
    pub model_dir: PathBuf,
    pub backend: Backend,
    /// Threads for the forward pass; 0 = all cores.
    pub threads: usize,
    /// Most tokens in one forward pass (requests beyond it wait for the next pass).
    pub max_batch_tokens: usize,
    /// Requests waiting for the model before new ones get 503.
    pub queue_capacity: usize,
    /// Longest input in tokens; longer ones are truncated (and said to be). 0 = the model's
    /// `sentence_bert_config.json` value, else 256.
    pub max_seq_length: usize,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model_name: "all-MiniLM-L6-v2".into(),
            model_dir: PathBuf::from("models/all-MiniLM-L6-v2"),
            backend: Backend::Fused,
            threads: 0,
            max_batch_tokens: 16_384,
            queue_capacity: 1024,
            max_seq_length: 0,
        }
    }
}

/// One input's result.
#[derive(Debug, Clone)]
pub struct Embedding {
    pub vector: Vec<f32>,
    /// Tokens the model saw, special tokens included.
    pub tokens: usize,
    /// The input was longer than the model's window and was cut.
    pub truncated: bool,
}

enum Encoder {
    Fused(FusedBert),
    Candle(CandleBert),
}

/// Tokenizer + encoder, used synchronously (benchmarks, the service's worker thread).
pub struct EmbedModel {
    tokenizer: Tokenizer,
    encoder: Encoder,
    pub max_seq_length: usize,
    pub dimensions: usize,
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EmbedError::Model(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| EmbedError::Model(format!("{}: {e}", path.display())))
}

impl EmbedModel {
    pub fn load(
        dir: &Path,
        backend: Backend,
        threads: usize,
        max_seq_length: usize,
    ) -> Result<Self, EmbedError> {
        for file in ["model.safetensors", "tokenizer.json", "config.json"] {
            if !dir.join(file).is_file() {
                return Err(EmbedError::MissingModel(dir.to_path_buf()));
            }
        }
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let max_seq_length = if max_seq_length > 0 {
            max_seq_length
        } else {
            #[derive(Deserialize)]
            struct StConfig {
                max_seq_length: usize,
            }
            read_json::<StConfig>(&dir.join("sentence_bert_config.json"))
                .map(|c| c.max_seq_length)
                .unwrap_or(256)
        };
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let encoder = match backend {
            Backend::Fused => Encoder::Fused(FusedBert::load(dir, threads)?),
            Backend::Candle => Encoder::Candle(CandleBert::load(dir)?),
        };
        let (dimensions, positions) = match &encoder {
            Encoder::Fused(m) => (m.hidden_size(), m.max_positions()),
            Encoder::Candle(m) => (m.hidden_size(), m.max_positions()),
        };
        if max_seq_length > positions {
            return Err(EmbedError::Model(format!(
                "max_seq_length {max_seq_length} exceeds the model's {positions} positions"
            )));
        }
        Ok(Self {
            tokenizer,
            encoder,
            max_seq_length,
            dimensions,
        })
    }

    /// Token ids (special tokens included, truncated to the window) and whether each input
    /// was truncated.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<(Vec<u32>, bool)>, EmbedError> {
        let encodings = if texts.len() > 1 {
            self.tokenizer.encode_batch(texts.to_vec(), true)
        } else {
            texts
                .iter()
                .map(|t| self.tokenizer.encode(*t, true))
                .collect()
        }
        .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(encodings
            .into_iter()
            .map(|e| (e.get_ids().to_vec(), !e.get_overflowing().is_empty()))
            .collect())
    }

    pub fn encode_ids(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        match &self.encoder {
            Encoder::Fused(m) => Ok(m.embed(seqs)),
            Encoder::Candle(m) => m.embed(seqs),
        }
    }

    /// Tokenizes and embeds; sequences are grouped so no pass exceeds `max_batch_tokens`.
    pub fn embed(
        &self,
        texts: &[&str],
        max_batch_tokens: usize,
    ) -> Result<Vec<Embedding>, EmbedError> {
        let tokenized = self.tokenize(texts)?;
        // Sorting by length keeps padded backends' padding small and attention blocks even.
        let mut order: Vec<usize> = (0..tokenized.len()).collect();
        order.sort_by_key(|&i| tokenized[i].0.len());
        let mut out: Vec<Option<Embedding>> = vec![None; texts.len()];
        let mut start = 0;
        while start < order.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < order.len()
                && (end == start || tokens + tokenized[order[end]].0.len() <= max_batch_tokens)
            {
                tokens += tokenized[order[end]].0.len();
                end += 1;
            }
            let seqs: Vec<&[u32]> = order[start..end]
                .iter()
                .map(|&i| tokenized[i].0.as_slice())
                .collect();
            let vectors = self.encode_ids(&seqs)?;
            for (&i, vector) in order[start..end].iter().zip(vectors) {
                out[i] = Some(Embedding {
                    vector,
                    tokens: tokenized[i].0.len(),
                    truncated: tokenized[i].1,
                });
            }
            start = end;
        }
        Ok(out
            .into_iter()
            .map(|e| e.expect("every input embedded"))
            .collect())
    }
}

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Embedding>, EmbedError>>,
}

/// The async face of the model: a bounded queue in front of one worker thread that batches
/// whatever is waiting into one forward pass.
#[derive(Clone)]
pub struct EmbedService {
    tx: mpsc::Sender<Job>,
    pub model_name: String,
    pub dimensions: usize,
    pub max_seq_length: usize,
}

impl EmbedService {
    pub fn start(config: &EmbedConfig) -> Result<Self, EmbedError> {
        let model = Arc::new(EmbedModel::load(
            &config.model_dir,
            config.backend,
            config.threads,
            config.max_seq_length,
        )?);
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let service = Self {
            tx,
            model_name: config.model_name.clone(),
            dimensions: model.dimensions,
            max_seq_length: model.max_seq_length,
        };
        let max_batch_tokens = config.max_batch_tokens.max(model.max_seq_length);
        std::thread::Builder::new()
            .name("qm-embed".into())
            .spawn(move || worker(model, rx, max_batch_tokens))
            .map_err(|e| EmbedError::Model(format!("starting the embedding thread: {e}")))?;
        tracing::info!(model = %config.model_name, backend = ?config.backend, "embedding model loaded");
        Ok(service)
    }

    /// Embeds `texts`. Cancel-safe: dropping the future abandons the result, not the batch.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Embedding>, EmbedError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job { texts, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    metrics::counter!("qm_embed_rejected_total").increment(1);
                    EmbedError::Overloaded
                }
                mpsc::error::TrySendError::Closed(_) => EmbedError::Stopped,
            })?;
        rx.await.map_err(|_| EmbedError::Stopped)?
    }
}

/// Rough token count before tokenizing, to size batches: about 4 characters a token.
fn estimate_tokens(texts: &[String], cap: usize) -> usize {
    texts.iter().map(|t| (t.len() / 4 + 2).min(cap)).sum()
}

fn worker(model: Arc<EmbedModel>, mut rx: mpsc::Receiver<Job>, max_batch_tokens: usize) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        let mut budget = estimate_tokens(&jobs[0].texts, model.max_seq_length);
        // Dynamic batching: take what has queued up meanwhile, within the token budget.
        while budget < max_batch_tokens {
            match rx.try_recv() {
                Ok(job) => {
                    budget += estimate_tokens(&job.texts, model.max_seq_length);
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let started = Instant::now();
        let texts: Vec<&str> = jobs
            .iter()
            .flat_map(|j| j.texts.iter().map(String::as_str))
            .collect();
        let result = model.embed(&texts, max_batch_tokens);
        metrics::histogram!("qm_embed_batch_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("qm_embed_batch_inputs").record(texts.len() as f64);
        match result {
            Ok(mut all) => {
                for job in jobs.into_iter().rev() {
                    let mine = all.split_off(all.len() - job.texts.len());
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedding batch failed");
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
