//! Loading the weights. The safetensors tensors become flat row-major buffers (Q, K and V
//! concatenated), each optionally adjusted on the way (a verifier's adapters merged in).

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{BertConfig, EmbedError, FusedBert, Layer, LayerNorm};

impl FusedBert {
    pub fn load(dir: &Path, threads: usize) -> Result<Self, EmbedError> {
        Self::load_adjusted(dir, threads, &|_, t| Ok(t))
    }

    /// As [`FusedBert::load`], passing every weight through `adjust` (by its name, e.g.
    /// `encoder.layer.0.attention.self.query.weight`, in PyTorch's `[out, in]` layout) before
    /// it is laid out: fine-tuned adapters are merged into the base weights here.
    pub fn load_adjusted(
        dir: &Path,
        threads: usize,
        adjust: &dyn Fn(&str, Tensor) -> Result<Tensor, EmbedError>,
    ) -> Result<Self, EmbedError> {
        let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
            .map_err(|e| EmbedError::Model(format!("reading model.safetensors: {e}")))?;
        Self::from_tensors(dir, tensors, threads, adjust)
    }

    /// As [`FusedBert::load_adjusted`], with `model.safetensors` already read into `weights`
    /// (a caller that checks the file's checksum reads it once).
    pub fn from_bytes_adjusted(
        dir: &Path,
        weights: &[u8],
        threads: usize,
        adjust: &dyn Fn(&str, Tensor) -> Result<Tensor, EmbedError>,
    ) -> Result<Self, EmbedError> {
        let tensors = candle_core::safetensors::load_buffer(weights, &Device::Cpu)
            .map_err(|e| EmbedError::Model(format!("reading model.safetensors: {e}")))?;
        Self::from_tensors(dir, tensors, threads, adjust)
    }

    fn from_tensors(
        dir: &Path,
        tensors: std::collections::HashMap<String, Tensor>,
        threads: usize,
        adjust: &dyn Fn(&str, Tensor) -> Result<Tensor, EmbedError>,
    ) -> Result<Self, EmbedError> {
        let cfg: BertConfig = super::super::read_json(&dir.join("config.json"))?;
        if cfg.hidden_act.as_deref().is_some_and(|a| a != "gelu") {
            return Err(EmbedError::Model(format!(
                "unsupported activation {:?}",
                cfg.hidden_act
            )));
        }
        // Checkpoints saved from BertForX carry a `bert.` prefix; sentence-transformers' do not.
        let get = |name: &str| -> Result<Tensor, EmbedError> {
            let t = tensors
                .get(name)
                .or_else(|| tensors.get(&format!("bert.{name}")))
                .ok_or_else(|| {
                    EmbedError::Model(format!("tensor {name} missing from model.safetensors"))
                })?;
            adjust(name, t.clone())
        };
        let vec = |name: &str| -> Result<Vec<f32>, EmbedError> { flat(&get(name)?, false) };
        let weight_t = |name: &str| -> Result<Vec<f32>, EmbedError> { flat(&get(name)?, true) };
        let ln = |prefix: &str| -> Result<LayerNorm, EmbedError> {
            Ok(LayerNorm {
                gamma: vec(&format!("{prefix}.weight"))?,
                beta: vec(&format!("{prefix}.bias"))?,
            })
        };
        let h = cfg.hidden_size;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let (wq, wk, wv) = (
                weight_t(&format!("{p}.attention.self.query.weight"))?,
                weight_t(&format!("{p}.attention.self.key.weight"))?,
                weight_t(&format!("{p}.attention.self.value.weight"))?,
            );
            // Interleave rows so that row r of wqkv is [wq[r], wk[r], wv[r]].
            let mut wqkv = Vec::with_capacity(h * 3 * h);
            for r in 0..h {
                wqkv.extend_from_slice(&wq[r * h..(r + 1) * h]);
                wqkv.extend_from_slice(&wk[r * h..(r + 1) * h]);
                wqkv.extend_from_slice(&wv[r * h..(r + 1) * h]);
            }
            let mut bqkv = vec(&format!("{p}.attention.self.query.bias"))?;
            bqkv.extend(vec(&format!("{p}.attention.self.key.bias"))?);
            bqkv.extend(vec(&format!("{p}.attention.self.value.bias"))?);
            layers.push(Layer {
                wqkv,
                bqkv,
                wo: weight_t(&format!("{p}.attention.output.dense.weight"))?,
                bo: vec(&format!("{p}.attention.output.dense.bias"))?,
                ln1: ln(&format!("{p}.attention.output.LayerNorm"))?,
                w1: weight_t(&format!("{p}.intermediate.dense.weight"))?,
                b1: vec(&format!("{p}.intermediate.dense.bias"))?,
                w2: weight_t(&format!("{p}.output.dense.weight"))?,
                b2: vec(&format!("{p}.output.dense.bias"))?,
                ln2: ln(&format!("{p}.output.LayerNorm"))?,
            });
        }
        let mut token_types = vec("embeddings.token_type_embeddings.weight")?;
        if token_types.len() < h {
            return Err(EmbedError::Model("the model has no token types".into()));
        }
        // A model with one token type (RoBERTa-like) reads type 1 as type 0.
        if token_types.len() < 2 * h {
            token_types.truncate(h);
            token_types.extend_from_within(..h);
        }
        Ok(Self {
            eps: cfg.layer_norm_eps as f32,
            word: vec("embeddings.word_embeddings.weight")?,
            position: vec("embeddings.position_embeddings.weight")?,
            token_types: token_types[..2 * h].to_vec(),
            emb_ln: ln("embeddings.LayerNorm")?,
            layers,
            threads: threads.max(1),
            skinny: super::super::skinny::available()
                && !std::env::var("QM_EMBED_SKINNY")
                    .is_ok_and(|v| matches!(v.as_str(), "off" | "0" | "false")),
            cfg,
        })
    }
}

fn flat(t: &Tensor, transpose: bool) -> Result<Vec<f32>, EmbedError> {
    let t = t.to_dtype(DType::F32).map_err(model_err)?;
    let t = if transpose {
        t.t().map_err(model_err)?.contiguous().map_err(model_err)?
    } else {
        t
    };
    t.flatten_all()
        .map_err(model_err)?
        .to_vec1::<f32>()
        .map_err(model_err)
}

fn model_err(e: candle_core::Error) -> EmbedError {
    EmbedError::Model(e.to_string())
}
