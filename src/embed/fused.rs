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

mod kernels;
mod load;

use rayon::prelude::*;

use super::EmbedError;
use kernels::{
    add_bias_rows, bias_gelu_rows, first_rows, layer_norm_rows, residual_bias_layer_norm,
    softmax_in_place,
};

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

#[cfg(test)]
mod tests;
