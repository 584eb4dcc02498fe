//! Local embeddings: the tokenizer and a BERT encoder (all-MiniLM-L6-v2) on the CPU, behind a
//! batching service (`service.rs`). Requests that arrive together share one forward pass;
//! tokenization and inference run on a dedicated thread, so the async runtime never blocks;
//! interactive work goes before bulk work and tenants take turns; the queue is bounded and a
//! full queue is reported, not waited on.

mod candle_bert;
pub mod fused;
mod service;
mod skinny;
mod token_ids;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

pub use candle_bert::CandleBert;
pub use fused::FusedBert;
pub use service::{EmbedService, Priority};
pub use token_ids::TokenEncoding;

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
    /// Most tokens of bulk work (ingestion, large embedding requests) in one pass: an
    /// interactive request waits for at most one such slice.
    pub slice_tokens: usize,
    /// Requests waiting for the model before new ones get 503.
    pub queue_capacity: usize,
    /// Longest input in tokens; longer ones are truncated (and said to be). 0 = the model's
    /// `sentence_bert_config.json` value, else 256.
    pub max_seq_length: usize,
    /// The OpenAI encoding that token-id inputs (`input: [[9906, 1917]]`, as LangChain's
    /// `OpenAIEmbeddings` sends by default) are decoded with before embedding.
    pub token_encoding: TokenEncoding,
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
            slice_tokens: 512,
            queue_capacity: 1024,
            max_seq_length: 0,
            token_encoding: TokenEncoding::Cl100kBase,
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
        self.encode_ids_yielding(seqs, &mut || {})
    }

    /// `between_layers` runs after each encoder layer (the fused backend; the candle
    /// reference backend runs its pass whole and calls it once at the end).
    fn encode_ids_yielding(
        &self,
        seqs: &[&[u32]],
        between_layers: &mut dyn FnMut(),
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        match &self.encoder {
            Encoder::Fused(m) => Ok(m.embed_yielding(seqs, between_layers)),
            Encoder::Candle(m) => {
                let out = m.embed(seqs);
                between_layers();
                out
            }
        }
    }

    /// Tokenizes and embeds; sequences are grouped so no pass exceeds `max_batch_tokens`.
    pub fn embed(
        &self,
        texts: &[&str],
        max_batch_tokens: usize,
    ) -> Result<Vec<Embedding>, EmbedError> {
        self.embed_yielding(texts, max_batch_tokens, &mut || {})
    }

    /// As [`EmbedModel::embed`], with `between_layers` called after each encoder layer of
    /// every pass (see [`FusedBert::embed_yielding`]).
    pub fn embed_yielding(
        &self,
        texts: &[&str],
        max_batch_tokens: usize,
        between_layers: &mut dyn FnMut(),
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
            let vectors = self.encode_ids_yielding(&seqs, between_layers)?;
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
