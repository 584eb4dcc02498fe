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

use std::collections::HashMap;
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
        let want = meta
            .get("base_sha256")
            .ok_or_else(|| {
                EmbedError::Model("cross verifier: no base_sha256 in its metadata".into())
            })?
            .to_string();
        // How many of MiniLM's layers read the pair (trained so; 6 if unsaid).
        let layers: usize = match meta.get("layers") {
            None => 6,
            Some(n) => n
                .parse()
                .map_err(|_| EmbedError::Model(format!("cross verifier: layers = {n:?}")))?,
        };
        // Read once: checked, then laid out from the same bytes.
        let base_bytes = std::fs::read(&base)
            .map_err(|e| EmbedError::Model(format!("{}: {e}", base.display())))?;
        let got = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&base_bytes))
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
        let bert = FusedBert::from_bytes_adjusted(model_dir, &base_bytes, threads, &adjust)?
            .keep_layers(layers)?;
        drop(base_bytes);
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
fn metadata(weights: &[u8]) -> Result<HashMap<String, String>, EmbedError> {
    let (_, header) = safetensors::SafeTensors::read_metadata(weights).map_err(|e| {
        EmbedError::Model(format!(
            "cross verifier: unreadable safetensors header: {e}"
        ))
    })?;
    Ok(header.metadata().clone().unwrap_or_default())
}

pub fn sigmoid(logit: f32) -> f32 {
    1.0 / (1.0 + (-logit).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file with no tensors and this metadata.
    fn weights_with(meta: &str) -> Vec<u8> {
        let header = format!(r#"{{"__metadata__":{meta}}}"#);
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out
    }

    /// A model folder whose `model.safetensors` is the given bytes (enough for the checks that
    /// run before anything is laid out).
    fn base_of(bytes: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
        dir
    }

    fn refused(dir: &Path, weights: &[u8]) -> String {
        match CrossVerifier::from_weights(dir, weights) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn weights_that_do_not_fit_the_base_model_are_refused_with_the_reason() {
        let base = base_of(b"not the MiniLM weights");
        let err = refused(base.path(), b"\x05\0\0\0\0\0\0\0{}");
        assert!(err.contains("unreadable safetensors header"), "{err}");
        let err = refused(base.path(), &weights_with(r#"{"layers":"6"}"#));
        assert!(err.contains("no base_sha256"), "{err}");
        let err = refused(
            base.path(),
            &weights_with(r#"{"base_sha256":"00","layers":"six"}"#),
        );
        assert!(err.contains("layers = \"six\""), "{err}");
        // The adapters were trained over other weights: named, with the way out.
        let err = refused(base.path(), &weights_with(r#"{"base_sha256":"00"}"#));
        assert!(
            err.contains("SHA-256 00") && err.contains("models/fetch.sh"),
            "{err}"
        );
        // No base model at all: the embedder's own "run models/fetch.sh" error.
        let empty = tempfile::tempdir().unwrap();
        let missing = CrossVerifier::from_weights(empty.path(), &weights_with("{}"));
        assert!(matches!(missing, Err(EmbedError::MissingModel(_))));
    }

    #[test]
    fn the_shipped_weights_name_their_base_and_depth() {
        let meta = metadata(WEIGHTS).unwrap();
        assert_eq!(meta.get("base_sha256").map(String::len), Some(64));
        let layers: usize = meta.get("layers").map_or(Ok(6), |n| n.parse()).unwrap();
        assert!((1..=6).contains(&layers));
    }
}
