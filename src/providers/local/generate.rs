//! One generation, token by token, on the calling OS thread: sampling, stop sequences (text
//! held back while it could still be the start of one), and text sent only once it is whole
//! UTF-8.

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use tokio::sync::mpsc;

use super::LocalModel;
use crate::types::Usage;

/// Sampling settings for one generation.
#[derive(Debug, Clone)]
pub struct GenParams {
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    pub stop: Vec<String>,
}

#[derive(Debug)]
pub enum GenEvent {
    Text(String),
    Done {
        finish_reason: &'static str,
        usage: Usage,
    },
    Failed(String),
}

/// Generates on the calling thread, sending text deltas to `tx`; returns when finished, when
/// `tx` is closed (the client left) or on error.
pub fn generate(
    model: &LocalModel,
    prompt: &[u32],
    params: &GenParams,
    tx: &mpsc::Sender<GenEvent>,
) {
    if let Err(e) = generate_inner(model, prompt, params, tx) {
        let _ = tx.blocking_send(GenEvent::Failed(e.to_string()));
    }
}

/// Greedy at temperature 0, nucleus sampling under `top_p` < 1, else the whole distribution.
fn sampling_of(params: &GenParams) -> Sampling {
    if params.temperature < 1e-6 {
        Sampling::ArgMax
    } else if params.top_p < 1.0 {
        Sampling::TopP {
            p: params.top_p,
            temperature: params.temperature,
        }
    } else {
        Sampling::All {
            temperature: params.temperature,
        }
    }
}

/// Where the first stop sequence starts in the text not yet sent (byte offset in `text`).
fn first_stop(text: &str, emitted: usize, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter_map(|s| {
            text[emitted.min(text.len())..]
                .find(s.as_str())
                .map(|i| i + emitted)
        })
        .min()
}

/// The end of what can be sent: `hold` bytes are kept back (a possible stop prefix), on a
/// character boundary.
fn settled_end(text: &str, hold: usize) -> usize {
    let mut end = text.len().saturating_sub(hold);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

fn generate_inner(
    model: &LocalModel,
    prompt: &[u32],
    params: &GenParams,
    tx: &mpsc::Sender<GenEvent>,
) -> candle_core::Result<()> {
    let mut weights = model.weights.clone();
    let sampling = sampling_of(params);
    let mut sampler = LogitsProcessor::from_sampling(params.seed, sampling);
    let input = Tensor::new(prompt, &Device::Cpu)?.unsqueeze(0)?;
    let logits = weights.forward(&input, 0)?.squeeze(0)?;
    let mut next = sampler.sample(&logits)?;
    let mut generated: Vec<u32> = Vec::new();
    let mut emitted = 0usize; // bytes of the decoded text already sent
    let hold = params
        .stop
        .iter()
        .map(|s| s.len())
        .max()
        .unwrap_or(0)
        .saturating_sub(1);
    let mut cut_at_stop_sequence = false;
    let finish_reason = loop {
        if model.stop_ids.contains(&next) {
            break "stop";
        }
        generated.push(next);
        let text = model
            .tokenizer
            .decode(&generated, true)
            .map_err(candle_core::Error::wrap)?;
        // Stop sequences: cut at the first one and end.
        if let Some(at) = first_stop(&text, emitted, &params.stop) {
            if at > emitted
                && tx
                    .blocking_send(GenEvent::Text(text[emitted..at].to_string()))
                    .is_err()
            {
                return Ok(());
            }
            cut_at_stop_sequence = true;
            break "stop";
        }
        // Send what is settled: not a partial UTF-8 sequence, not a possible stop prefix.
        if !text.ends_with('\u{FFFD}') {
            let end = settled_end(&text, hold);
            if end > emitted {
                if tx
                    .blocking_send(GenEvent::Text(text[emitted..end].to_string()))
                    .is_err()
                {
                    return Ok(()); // the client is gone
                }
                emitted = end;
            }
        }
        if generated.len() >= params.max_tokens
            || prompt.len() + generated.len() >= model.context_length
        {
            break "length";
        }
        if tx.is_closed() {
            return Ok(());
        }
        let input = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
        let logits = weights
            .forward(&input, prompt.len() + generated.len() - 1)?
            .squeeze(0)?;
        next = sampler.sample(&logits)?;
    };
    if !cut_at_stop_sequence {
        flush_held(model, &generated, emitted, tx)?;
    }
    let usage = Usage::new(prompt.len() as u64, generated.len() as u64);
    let _ = tx.blocking_send(GenEvent::Done {
        finish_reason,
        usage,
    });
    Ok(())
}

/// Sends what was held back at the end (a possible stop prefix, a partial character).
fn flush_held(
    model: &LocalModel,
    generated: &[u32],
    emitted: usize,
    tx: &mpsc::Sender<GenEvent>,
) -> candle_core::Result<()> {
    let text = model
        .tokenizer
        .decode(generated, true)
        .map_err(candle_core::Error::wrap)?;
    if text.len() > emitted {
        let _ = tx.blocking_send(GenEvent::Text(text[emitted..].to_string()));
    }
    Ok(())
}
