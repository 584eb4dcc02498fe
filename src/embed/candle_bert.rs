//! The reference backend: candle-transformers' `BertModel` on padded batches with an
//! attention mask. Kept to check the fused backend against and to measure it by.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

use super::EmbedError;

pub struct CandleBert {
    model: BertModel,
    hidden: usize,
    max_positions: usize,
}

fn err(e: candle_core::Error) -> EmbedError {
    EmbedError::Model(e.to_string())
}

impl CandleBert {
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let config: Config = super::read_json(&dir.join("config.json"))?;
        let fused_cfg: super::fused::BertConfig = super::read_json(&dir.join("config.json"))?;
        // SAFETY: the weights file is not modified while mapped (it is ours, fetched once).
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &Device::Cpu,
            )
        }
        .map_err(err)?;
        let model = BertModel::load(vb, &config).map_err(err)?;
        Ok(Self {
            model,
            hidden: fused_cfg.hidden_size,
            max_positions: fused_cfg.max_position_embeddings,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    pub fn embed(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let n = seqs.len();
        let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; n * len];
        let mut mask = vec![0u32; n * len];
        for (i, s) in seqs.iter().enumerate() {
            ids[i * len..i * len + s.len()].copy_from_slice(s);
            mask[i * len..i * len + s.len()]
                .iter_mut()
                .for_each(|m| *m = 1);
        }
        let dev = Device::Cpu;
        let ids = Tensor::from_vec(ids, (n, len), &dev).map_err(err)?;
        let mask = Tensor::from_vec(mask, (n, len), &dev).map_err(err)?;
        let types = ids.zeros_like().map_err(err)?;
        let out = self.model.forward(&ids, &types, Some(&mask)).map_err(err)?; // [n, len, h]
        let maskf = mask
            .to_dtype(DType::F32)
            .map_err(err)?
            .unsqueeze(2)
            .map_err(err)?;
        let summed = out
            .broadcast_mul(&maskf)
            .map_err(err)?
            .sum(1)
            .map_err(err)?;
        let counts = maskf.sum(1).map_err(err)?;
        let mean = summed.broadcast_div(&counts).map_err(err)?;
        let norm = mean
            .sqr()
            .map_err(err)?
            .sum_keepdim(1)
            .map_err(err)?
            .sqrt()
            .map_err(err)?;
        let normed = mean.broadcast_div(&norm).map_err(err)?;
        normed.to_vec2::<f32>().map_err(err)
    }
}
