//! The cross-encoder verifier: all-MiniLM-L6-v2 reading the cached question and the new one
//! together (`[CLS] cached [SEP] query [SEP]`, token types 0 and 1), so every word of one can
//! attend to every word of the other, and a linear head on the `[CLS]` state plus a linear term
//! in the two questions' cosine similarity (which the search already computed) giving the
//! logit that the cached answer is right for the query: the pair reading is trained as a
//! correction to what the similarity alone says.
//!
//! The fine-tuning is small: low-rank adapters on every linear layer plus the layer norms,
//! token-type embeddings and the head (`models/verifier/cross.safetensors`, ~1.4 MB, trained
//! by `scripts/verifier/cross.py` and compiled into the binary). The adapters are merged into
//! the MiniLM weights `models/fetch.sh` fetched when the verifier loads, so a check costs one
//! forward pass of the same small encoder over the two questions, on the fused kernels.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationParams};

use crate::embed::{EmbedError, FusedBert};

/// The trained adapters and head (see `scripts/verifier/cross.py` and its README).
pub const WEIGHTS: &[u8] = include_bytes!("../../../models/verifier/cross.safetensors");

/// Longest pair in tokens (both questions, `[CLS]` and two `[SEP]`); longer pairs lose
/// tokens from the longer question first, as in training.
pub const MAX_PAIR_TOKENS: usize = 128;

/// The linear layers that carry adapters, by their name inside `encoder.layer.N.`.
const ADAPTED: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

pub struct CrossVerifier {
    bert: FusedBert,
    tokenizer: Tokenizer,
    head_w: Vec<f32>,
    head_b: f32,
    cos_w: f32,
    cos_b: f32,
}

fn model_err(what: &str) -> impl Fn(candle_core::Error) -> EmbedError + '_ {
    move |e| EmbedError::Model(format!("cross verifier {what}: {e}"))
}

impl CrossVerifier {
    /// The shipped verifier over the MiniLM files in `model_dir`.
    pub fn load(model_dir: &Path) -> Result<Self, EmbedError> {
        Self::from_weights(model_dir, WEIGHTS)
    }

    pub fn from_weights(model_dir: &Path, weights: &[u8]) -> Result<Self, EmbedError> {
        let base = model_dir.join("model.safetensors");
        if !base.is_file() {
            return Err(EmbedError::MissingModel(model_dir.to_path_buf()));
        }
        // The adapters only mean something over the weights they were trained on.
        let meta = metadata(weights)?;
        let want = meta["base_sha256"]
            .as_str()
            .ok_or_else(|| {
                EmbedError::Model("cross verifier: no base_sha256 in its metadata".into())
            })?
            .to_string();
        // How many of MiniLM's layers read the pair (trained so; 6 if unsaid).
        let layers: usize = match meta["layers"].as_str() {
            None => 6,
            Some(n) => n
                .parse()
                .map_err(|_| EmbedError::Model(format!("cross verifier: layers = {n:?}")))?,
        };
        let got = {
            use sha2::Digest;
            let bytes = std::fs::read(&base)
                .map_err(|e| EmbedError::Model(format!("{}: {e}", base.display())))?;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        if got != want {
            return Err(EmbedError::Model(format!(
                "the cache's cross-encoder was trained over the MiniLM weights with SHA-256 {want}, \
                 but {} has {got}: point embeddings.model_dir at models/all-MiniLM-L6-v2 \
                 (models/fetch.sh) or use another cache.verifier",
                base.display()
            )));
        }
        // The pass over a pair is about twice the query's own embedding: its larger matmuls
        // split over the cores, as the embedder's do.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let w = candle_core::safetensors::load_buffer(weights, &Device::Cpu)
            .map_err(model_err("weights"))?;
        let get = |k: &str| -> Result<&Tensor, EmbedError> {
            w.get(k)
                .ok_or_else(|| EmbedError::Model(format!("cross verifier: {k} missing")))
        };
        let adjust = |name: &str, base: Tensor| -> Result<Tensor, EmbedError> {
            let replaced = match name {
                "embeddings.token_type_embeddings.weight" => Some("token_type_embeddings"),
                "embeddings.LayerNorm.weight" => Some("embeddings_ln_w"),
                "embeddings.LayerNorm.bias" => Some("embeddings_ln_b"),
                _ => None,
            };
            if let Some(k) = replaced {
                return Ok(get(k)?.clone());
            }
            let Some(rest) = name.strip_prefix("encoder.layer.") else {
                return Ok(base);
            };
            let (layer, rest) = rest.split_once('.').unwrap_or((rest, ""));
            if layer.parse::<usize>().map_or(true, |l| l >= layers) {
                return Ok(base); // not run: dropped below
            }
            let norm = match rest {
                "attention.output.LayerNorm.weight" => Some("ln1_w"),
                "attention.output.LayerNorm.bias" => Some("ln1_b"),
                "output.LayerNorm.weight" => Some("ln2_w"),
                "output.LayerNorm.bias" => Some("ln2_b"),
                _ => None,
            };
            if let Some(n) = norm {
                return Ok(get(&format!("layer{layer}.{n}"))?.clone());
            }
            match rest.strip_suffix(".weight") {
                Some(linear) if ADAPTED.contains(&linear) => {
                    let key = format!("layer{layer}.{}", linear.replace('.', "_"));
                    // W' = W + B·A (the adapter's scale is folded into B).
                    let a = get(&format!("{key}.lora_a"))?;
                    let b = get(&format!("{key}.lora_b"))?;
                    let delta = b.matmul(a).map_err(model_err("merge"))?;
                    (base + delta).map_err(model_err("merge"))
                }
                _ => Ok(base),
            }
        };
        let bert = FusedBert::load_adjusted(model_dir, threads, &adjust)?.keep_layers(layers)?;
        let head_w = get("head_w")?.to_vec1::<f32>().map_err(model_err("head"))?;
        let head_b = get("head_b")?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(model_err("head"))?;
        let scalar = |k: &str| -> Result<f32, EmbedError> {
            get(k)?
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(model_err("head"))?
                .first()
                .copied()
                .ok_or_else(|| EmbedError::Model(format!("cross verifier: {k} is empty")))
        };
        let (cos_w, cos_b) = (scalar("cos_w")?, scalar("cos_b")?);
        if head_w.len() != bert.hidden_size() || head_b.len() != 1 {
            return Err(EmbedError::Model("cross verifier: head shape".into()));
        }
        let mut tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json"))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_PAIR_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        Ok(Self {
            bert,
            tokenizer,
            head_w,
            head_b: head_b[0],
            cos_w,
            cos_b,
        })
    }

    /// The logit that each `(cached, query, similarity)` pair's cached answer is right for
    /// the query (`similarity`: the cosine of the two questions' embeddings), in one packed
    /// forward pass.
    pub fn logits(&self, pairs: &[(&str, &str, f32)]) -> Result<Vec<f32>, EmbedError> {
        let mut ids = Vec::with_capacity(pairs.len());
        let mut types = Vec::with_capacity(pairs.len());
        for (cached, query, _) in pairs {
            let e = self
                .tokenizer
                .encode((*cached, *query), true)
                .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
            ids.push(e.get_ids().to_vec());
            types.push(e.get_type_ids().to_vec());
        }
        let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let tys: Vec<&[u32]> = types.iter().map(Vec::as_slice).collect();
        Ok(self
            .bert
            .cls_states(&seqs, &tys)
            .iter()
            .zip(pairs)
            .map(|(h, (_, _, similarity))| {
                h.iter().zip(&self.head_w).map(|(x, w)| x * w).sum::<f32>()
                    + self.head_b
                    + self.cos_w * similarity
                    + self.cos_b
            })
            .collect())
    }
}

/// The file's safetensors metadata (`base_sha256`: the base weights the adapters were
/// trained over; `layers`: how many of its layers read the pair).
fn metadata(weights: &[u8]) -> Result<serde_json::Value, EmbedError> {
    let bad = || EmbedError::Model("cross verifier: unreadable safetensors header".into());
    let len = u64::from_le_bytes(
        weights
            .get(..8)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let header = weights
        .get(8..8usize.saturating_add(len as usize))
        .ok_or_else(bad)?;
    let header: serde_json::Value = serde_json::from_slice(header).map_err(|_| bad())?;
    Ok(header["__metadata__"].clone())
}

pub fn sigmoid(logit: f32) -> f32 {
    1.0 / (1.0 + (-logit).exp())
}
