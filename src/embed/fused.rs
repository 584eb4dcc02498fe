//! A BERT encoder forward pass written for CPU inference of short texts: weights are loaded
//! with candle, then the whole forward runs on flat `f32` buffers with the `gemm` crate.
//!
//! Why not candle's `BertModel` (kept as the `candle` backend for reference): on this size of
//! model the time goes to overhead, not FLOPs. Here
//! - sequences are *packed*, not padded: every linear layer runs once over all tokens of the
//!   batch (`[total_tokens, hidden]`), and only attention is per sequence, so a batch of
//!   mixed lengths costs what its real tokens cost;
//! - Q, K and V are one matmul with concatenated weights; bias, GELU, residual and
//!   LayerNorm are fused loops over rows that are already in cache;
//! - scratch buffers are reused between layers; nothing is allocated per op;
//! - small matmuls (one short query) run single-threaded, where threading costs more than it
//!   saves; large ones use all threads.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::EmbedError;

/// Encoder hyper-parameters (from the model's `config.json`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub hidden_act: Option<String>,
}

fn default_eps() -> f64 {
    1e-12
}

struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    /// `[hidden, 3*hidden]`, row-major (already transposed from PyTorch's `[out, in]`).
    wqkv: Vec<f32>,
    bqkv: Vec<f32>,
    wo: Vec<f32>,
    bo: Vec<f32>,
    ln1: LayerNorm,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    ln2: LayerNorm,
}

pub struct FusedBert {
    cfg: BertConfig,
    eps: f32,
    word: Vec<f32>,
    position: Vec<f32>,
    /// `[type_vocab, hidden]`: token type 0 (a single text, a pair's first) and 1 (its second).
    token_types: Vec<f32>,
    emb_ln: LayerNorm,
    layers: Vec<Layer>,
    threads: usize,
    /// Few-row products use the unpacked AVX2 kernel (`super::skinny`); the CPU has it and
    /// `QM_EMBED_SKINNY` is not `off`, `0` or `false` (the switch the benches compare with).
    skinny: bool,
}

/// Matmuls smaller than this many multiply-adds run on one thread.
const PARALLEL_MIN_MACS: usize = 1 << 21;

/// Few-row products are split into one run per this many multiply-adds (at least two runs
/// once they reach it), up to one run per thread.
const SKINNY_SPLIT_MIN_MACS: usize = 1 << 20;

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
        let cfg: BertConfig = super::read_json(&dir.join("config.json"))?;
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
            skinny: super::skinny::available()
                && !std::env::var("QM_EMBED_SKINNY")
                    .is_ok_and(|v| matches!(v.as_str(), "off" | "0" | "false")),
            cfg,
        })
    }

    /// Keeps the first `n` encoder layers only (a verifier trained to read a pair with
    /// fewer layers than the embedder uses).
    pub fn keep_layers(mut self, n: usize) -> Result<Self, EmbedError> {
        if n == 0 || n > self.layers.len() {
            return Err(EmbedError::Model(format!(
                "{n} layers asked of a model with {}",
                self.layers.len()
            )));
        }
        self.layers.truncate(n);
        Ok(self)
    }

    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    pub fn max_positions(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    /// Mean-pooled, L2-normalised embeddings of already tokenized sequences.
    pub fn embed(&self, seqs: &[&[u32]]) -> Vec<Vec<f32>> {
        self.embed_yielding(seqs, &mut || {})
    }

    /// As [`FusedBert::embed`], calling `between_layers` after each encoder layer: the
    /// caller may run other (short) passes there, so a long pass can be interleaved with
    /// urgent work at layer granularity. The call is reentrant (all buffers are local).
    pub fn embed_yielding(
        &self,
        seqs: &[&[u32]],
        between_layers: &mut dyn FnMut(),
    ) -> Vec<Vec<f32>> {
        let h = self.cfg.hidden_size;
        let (x, offsets) = self.forward(seqs, None, between_layers, false);
        offsets
            .windows(2)
            .map(|w| {
                let (a, b) = (w[0], w[1]);
                let mut pooled = vec![0f32; h];
                for row in x[a * h..b * h].chunks_exact(h) {
                    for (p, v) in pooled.iter_mut().zip(row) {
                        *p += v;
                    }
                }
                let n = (b - a).max(1) as f32;
                pooled.iter_mut().for_each(|p| *p /= n);
                let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                pooled.iter_mut().for_each(|p| *p /= norm);
                pooled
            })
            .collect()
    }

    /// The final hidden state of each sequence's first token (`[CLS]`), for sequences with
    /// token types (`types[s][p]` is 0 or 1, as a cross-encoder reads a pair of texts).
    pub fn cls_states(&self, seqs: &[&[u32]], types: &[&[u32]]) -> Vec<Vec<f32>> {
        let h = self.cfg.hidden_size;
        // Only the first token's final state is read, so the last layer runs its attention
        // query, output projection and feed-forward for that token alone.
        let (x, _) = self.forward(seqs, Some(types), &mut || {}, true);
        x.chunks_exact(h)
            .zip(seqs)
            .map(|(row, seq)| {
                if seq.is_empty() {
                    vec![0.0; h]
                } else {
                    row.to_vec()
                }
            })
            .collect()
    }

    /// The encoder over packed sequences: the final hidden states `[total_tokens, hidden]`
    /// and each sequence's start offset (plus the total at the end). With `first_only`, the
    /// final states are those of each sequence's first token alone, `[sequences, hidden]`.
    fn forward(
        &self,
        seqs: &[&[u32]],
        types: Option<&[&[u32]]>,
        between_layers: &mut dyn FnMut(),
        first_only: bool,
    ) -> (Vec<f32>, Vec<usize>) {
        let h = self.cfg.hidden_size;
        let inter = self.cfg.intermediate_size;
        let total: usize = seqs.iter().map(|s| s.len()).sum();
        let mut offsets = Vec::with_capacity(seqs.len() + 1);
        offsets.push(0);
        for s in seqs {
            offsets.push(offsets.last().unwrap() + s.len());
        }
        let mut x = vec![0f32; total * h];
        for (s, seq) in seqs.iter().enumerate() {
            for (p, &id) in seq.iter().enumerate() {
                let row = &mut x[(offsets[s] + p) * h..(offsets[s] + p + 1) * h];
                let w = &self.word[id as usize * h..(id as usize + 1) * h];
                let pe = &self.position[p * h..(p + 1) * h];
                let ty = types
                    .and_then(|t| t.get(s))
                    .and_then(|t| t.get(p))
                    .map_or(0, |&t| (t as usize).min(1));
                let te = &self.token_types[ty * h..(ty + 1) * h];
                for i in 0..h {
                    row[i] = w[i] + pe[i] + te[i];
                }
            }
        }
        layer_norm_rows(&mut x, h, &self.emb_ln, self.eps);

        let mut qkv = vec![0f32; total * 3 * h];
        let mut ctx = vec![0f32; total * h];
        let mut tmp = vec![0f32; total * h];
        let mut mid = vec![0f32; total * inter];
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            self.matmul(&x, &layer.wqkv, &mut qkv, total, h, 3 * h);
            add_bias_rows(&mut qkv, &layer.bqkv);
            if first_only && i == last {
                return (self.first_token_layer(layer, &x, &qkv, &offsets), offsets);
            }
            self.attention(&qkv, &mut ctx, &offsets);
            self.after_attention(layer, &mut x, &ctx, &mut tmp, &mut mid);
            between_layers();
        }
        if first_only {
            // No layers at all: the first tokens' embeddings.
            return (first_rows(&x, &offsets, h), offsets);
        }
        (x, offsets)
    }

    /// The rest of `layer` (after its Q, K, V projection into `qkv`) for each sequence's
    /// first token only: its attention over the whole sequence, output projection and
    /// feed-forward. Returns `[sequences, hidden]`.
    fn first_token_layer(
        &self,
        layer: &Layer,
        x: &[f32],
        qkv: &[f32],
        offsets: &[usize],
    ) -> Vec<f32> {
        let h = self.cfg.hidden_size;
        let heads = self.cfg.num_attention_heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let n = offsets.len() - 1;
        let mut ctx = vec![0f32; n * h];
        let mut rows = first_rows(x, offsets, h);
        let mut scores = Vec::new();
        for (s, w) in offsets.windows(2).enumerate() {
            let (start, len) = (w[0], w[1] - w[0]);
            if len == 0 {
                continue;
            }
            let q = &qkv[start * 3 * h..start * 3 * h + h];
            for hd in 0..heads {
                scores.clear();
                scores.extend((0..len).map(|t| {
                    let k = &qkv[(start + t) * 3 * h + h + hd * d..][..d];
                    q[hd * d..(hd + 1) * d]
                        .iter()
                        .zip(k)
                        .map(|(a, b)| a * b)
                        .sum::<f32>()
                        * scale
                }));
                softmax_in_place(&mut scores);
                let out = &mut ctx[s * h + hd * d..s * h + (hd + 1) * d];
                for (t, p) in scores.iter().enumerate() {
                    let v = &qkv[(start + t) * 3 * h + 2 * h + hd * d..][..d];
                    for (o, v) in out.iter_mut().zip(v) {
                        *o += p * v;
                    }
                }
            }
        }
        let mut tmp = vec![0f32; n * h];
        let mut mid = vec![0f32; n * self.cfg.intermediate_size];
        self.after_attention(layer, &mut rows, &ctx, &mut tmp, &mut mid);
        rows
    }

    /// The rest of `layer` once its attention output is in `ctx`, for the rows of `x`
    /// (`tmp` and `mid` are scratch of `x`'s rows): the output projection, residual and
    /// LayerNorm, then the feed-forward, residual and LayerNorm.
    fn after_attention(
        &self,
        layer: &Layer,
        x: &mut [f32],
        ctx: &[f32],
        tmp: &mut [f32],
        mid: &mut [f32],
    ) {
        let (h, inter) = (self.cfg.hidden_size, self.cfg.intermediate_size);
        let rows = x.len() / h;
        self.matmul(ctx, &layer.wo, tmp, rows, h, h);
        residual_bias_layer_norm(x, tmp, &layer.bo, &layer.ln1, self.eps);
        self.matmul(x, &layer.w1, mid, rows, h, inter);
        bias_gelu_rows(mid, &layer.b1);
        self.matmul(mid, &layer.w2, tmp, rows, inter, h);
        residual_bias_layer_norm(x, tmp, &layer.b2, &layer.ln2, self.eps);
    }

    /// `c[m,n] = a[m,k] · b[k,n]`, all row-major.
    fn matmul(&self, a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
        debug_assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
        if self.skinny && m <= super::skinny::MAX_ROWS {
            let macs = m * k * n;
            let parts = match macs < SKINNY_SPLIT_MIN_MACS {
                true => 1,
                false => self.threads.min(1 + macs / SKINNY_SPLIT_MIN_MACS),
            };
            return super::skinny::matmul(a, b, c, m, k, n, parts);
        }
        let par = self.parallelism(m * k * n);
        // SAFETY: the slices hold at least m*k, k*n and m*n elements (checked above), and
        // the strides describe dense row-major matrices inside them.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    }

    fn parallelism(&self, macs: usize) -> gemm::Parallelism {
        if self.threads > 1 && macs >= PARALLEL_MIN_MACS {
            gemm::Parallelism::Rayon(self.threads)
        } else {
            gemm::Parallelism::None
        }
    }

    /// Scaled dot-product attention per sequence and head, reading Q, K, V from the packed
    /// `qkv` rows and writing each head's output into its columns of `ctx`.
    fn attention(&self, qkv: &[f32], ctx: &mut [f32], offsets: &[usize]) {
        let h = self.cfg.hidden_size;
        let heads = self.cfg.num_attention_heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let work: Vec<(usize, usize, usize)> = offsets
            .windows(2)
            .filter(|w| w[1] > w[0]) // an empty sequence has nothing to attend to
            .flat_map(|w| (0..heads).map(move |hd| (w[0], w[1] - w[0], hd)))
            .collect();
        let ctx_ptr = SendPtr(ctx.as_mut_ptr());
        let run = |&(start, len, hd): &(usize, usize, usize), scores: &mut Vec<f32>| {
            scores.clear();
            scores.resize(len * len, 0.0);
            let q = qkv[start * 3 * h + hd * d..].as_ptr();
            let k = qkv[start * 3 * h + h + hd * d..].as_ptr();
            let v = qkv[start * 3 * h + 2 * h + hd * d..].as_ptr();
            let row = (3 * h) as isize;
            // SAFETY: q, k, v point into qkv at rows start..start+len with row stride 3h and
            // d columns each, all within bounds; each (sequence, head) pair writes a disjoint
            // block of ctx (its rows, its d columns), so concurrent writes never overlap.
            unsafe {
                // scores[len,len] = scale * Q[len,d] · Kᵀ[d,len]
                gemm::gemm(
                    len,
                    len,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    len as isize,
                    false,
                    q,
                    1,
                    row,
                    k,
                    row,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for r in scores.chunks_exact_mut(len) {
                softmax_in_place(r);
            }
            unsafe {
                let out = ctx_ptr.get().add(start * h + hd * d);
                // ctx[len,d] = P[len,len] · V[len,d]
                gemm::gemm(
                    len,
                    d,
                    len,
                    out,
                    1,
                    h as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    len as isize,
                    v,
                    1,
                    row,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        };
        let total: usize = work.iter().map(|w| w.1 * w.1).sum();
        if self.threads > 1 && total * d >= PARALLEL_MIN_MACS / 4 {
            work.par_iter()
                .for_each_init(Vec::new, |scores, w| run(w, scores));
        } else {
            let mut scores = Vec::new();
            work.iter().for_each(|w| run(w, &mut scores));
        }
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint regions of one buffer to parallel workers.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Each sequence's first row of `x` (`[tokens, h]`), `[sequences, h]`; zeros for an empty one.
fn first_rows(x: &[f32], offsets: &[usize], h: usize) -> Vec<f32> {
    let mut first = vec![0f32; (offsets.len() - 1) * h];
    for (s, w) in offsets.windows(2).enumerate() {
        if w[1] > w[0] {
            first[s * h..(s + 1) * h].copy_from_slice(&x[w[0] * h..(w[0] + 1) * h]);
        }
    }
    first
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

fn add_bias_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

fn bias_gelu_rows(x: &mut [f32], bias: &[f32]) {
    const INV_SQRT2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            let t = *v + b;
            *v = 0.5 * t * (1.0 + erf(t * INV_SQRT2));
        }
    }
}

/// erf for f32 as a rational approximation on [-4, 4] (Eigen's and XLA's `fast_erf`;
/// absolute error below 1e-7 there, and erf is ±1 to f32 precision outside). Branch-free,
/// so the GELU loop vectorizes; `libm::erff` made GELU a third of the forward pass.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_2e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_2e-3;
    q = x2 * q + -1.426_474e-2;
    p / q
}

/// `x = LayerNorm(x + y + bias)`, row by row.
fn residual_bias_layer_norm(x: &mut [f32], y: &[f32], bias: &[f32], ln: &LayerNorm, eps: f32) {
    let h = bias.len();
    for (xr, yr) in x.chunks_exact_mut(h).zip(y.chunks_exact(h)) {
        for i in 0..h {
            xr[i] += yr[i] + bias[i];
        }
        normalize_row(xr, ln, eps);
    }
}

fn layer_norm_rows(x: &mut [f32], h: usize, ln: &LayerNorm, eps: f32) {
    for row in x.chunks_exact_mut(h) {
        normalize_row(row, ln, eps);
    }
}

fn normalize_row(row: &mut [f32], ln: &LayerNorm, eps: f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(&ln.gamma).zip(&ln.beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small encoder with pseudo-random weights (no model file needed).
    fn random_bert(layers: usize) -> FusedBert {
        let (h, inter, vocab, pos) = (16, 32, 50, 40);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |n: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
                })
                .collect()
        };
        let ln = |rand: &mut dyn FnMut(usize, f32) -> Vec<f32>| LayerNorm {
            gamma: rand(h, 0.2).iter().map(|g| 1.0 + g).collect(),
            beta: rand(h, 0.2),
        };
        let layers = (0..layers)
            .map(|_| Layer {
                wqkv: rand(h * 3 * h, 0.5),
                bqkv: rand(3 * h, 0.1),
                wo: rand(h * h, 0.5),
                bo: rand(h, 0.1),
                ln1: ln(&mut rand),
                w1: rand(h * inter, 0.5),
                b1: rand(inter, 0.1),
                w2: rand(inter * h, 0.5),
                b2: rand(h, 0.1),
                ln2: ln(&mut rand),
            })
            .collect();
        FusedBert {
            cfg: BertConfig {
                hidden_size: h,
                intermediate_size: inter,
                num_attention_heads: 4,
                num_hidden_layers: 3,
                max_position_embeddings: pos,
                vocab_size: vocab,
                layer_norm_eps: 1e-12,
                hidden_act: None,
            },
            eps: 1e-12,
            word: rand(vocab * h, 1.0),
            position: rand(pos * h, 1.0),
            token_types: rand(2 * h, 1.0),
            emb_ln: ln(&mut rand),
            layers,
            threads: 1,
            skinny: false,
        }
    }

    #[test]
    fn the_first_token_shortcut_equals_the_full_last_layer() {
        let seqs: [&[u32]; 4] = [&[1, 7, 9, 2, 30, 31, 2], &[1, 4, 2, 5, 2], &[], &[1, 2]];
        let types: [&[u32]; 4] = [&[0, 0, 0, 0, 1, 1, 1], &[0, 0, 0, 1, 1], &[], &[0, 0]];
        // With the general GEMM and (where the CPU has it) the unpacked few-row kernel.
        for (layers, skinny) in [(1, false), (3, false), (3, true)] {
            let mut bert = random_bert(layers);
            bert.skinny = skinny && crate::embed::skinny::available();
            let (full, offsets) = bert.forward(&seqs, Some(&types), &mut || {}, false);
            let cls = bert.cls_states(&seqs, &types);
            for (s, seq) in seqs.iter().enumerate() {
                if seq.is_empty() {
                    assert!(cls[s].iter().all(|v| *v == 0.0));
                    continue;
                }
                let want = &full[offsets[s] * 16..(offsets[s] + 1) * 16];
                for (a, b) in cls[s].iter().zip(want) {
                    assert!(
                        (a - b).abs() < 1e-5,
                        "{layers} layers, sequence {s}: {a} vs {b}"
                    );
                }
            }
            // Each sequence is read on its own: its state does not depend on its neighbours.
            let alone = bert.cls_states(&seqs[1..2], &types[1..2]);
            for (a, b) in alone[0].iter().zip(&cls[1]) {
                assert!((a - b).abs() < 1e-5);
            }
        }
        let three = random_bert(3);
        assert_eq!(three.keep_layers(1).unwrap().layers(), 1);
        assert!(random_bert(3).keep_layers(4).is_err());
        assert!(random_bert(3).keep_layers(0).is_err());
    }

    #[test]
    fn fast_erf_matches_reference_values() {
        // erf at these points, to 10 digits.
        let table = [
            (0.0, 0.0),
            (0.1, 0.1124629160),
            (0.5, 0.5204998778),
            (1.0, 0.8427007929),
            (1.5, 0.9661051465),
            (2.0, 0.9953222650),
            (3.0, 0.9999779095),
            (5.0, 1.0),
        ];
        for (x, want) in table {
            assert!(
                (erf(x) - want).abs() < 2e-7,
                "erf({x}) = {} vs {want}",
                erf(x)
            );
            assert!((erf(-x) + want).abs() < 2e-7, "erf is odd at {x}");
        }
    }
}
