//! The `local` provider: a llama-architecture GGUF (SmolLM2-135M-Instruct by default) on
//! candle's quantized llama, so the gateway answers chat with no API key and no network.
//!
//! The tokenizer is built from the GGUF's own metadata, the prompt from its own chat
//! template (minijinja), and generation stops at the file's end-of-turn tokens. Each
//! generation runs on its own OS thread (never on the async runtime); a semaphore bounds how
//! many run at once and a counter bounds how many wait. Tokens reach the client through a
//! small channel: when the client goes away the channel closes and generation stops.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::Device;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_transformers::models::quantized_llama::ModelWeights;
use futures::StreamExt;
use serde::Deserialize;
use tokenizers::Tokenizer;
use tokio::sync::{Semaphore, mpsc};

mod generate;

pub use generate::{GenEvent, GenParams, generate};

use super::{ChunkStream, Provider, ProviderError};
use crate::clock::unix_now;
use crate::types::{
    ChatChunk, ChatCompletion, ChatCompletionRequest, ChunkChoice, CompletionChoice, Delta, Usage,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    pub enabled: bool,
    /// The model name clients send.
    pub model_name: String,
    pub gguf_path: PathBuf,
    /// Generations running at once (each uses all cores; 1 is right on a small machine).
    pub max_concurrent: usize,
    /// Requests waiting for a slot before new ones are refused with 503.
    pub queue_capacity: usize,
    /// Completion length when the request sets no `max_tokens`.
    pub default_max_tokens: u32,
    /// Longest prompt + completion in tokens.
    pub context_length: usize,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model_name: "smollm2-135m".into(),
            gguf_path: PathBuf::from("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            max_concurrent: 1,
            queue_capacity: 32,
            default_max_tokens: 256,
            context_length: 2048,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LocalModelError {
    #[error("local model not found at {0}: run `models/fetch.sh` to download it")]
    Missing(PathBuf),
    #[error("local model {path}: {message}")]
    Load { path: PathBuf, message: String },
}

/// The loaded model, shared by every generation (weights are reference-counted; each
/// generation clones the handle and gets its own KV cache).
pub struct LocalModel {
    weights: ModelWeights,
    pub tokenizer: Tokenizer,
    template: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
    stop_ids: Vec<u32>,
    context_length: usize,
}

impl LocalModel {
    pub fn load(path: &Path, context_length: usize) -> Result<Self, LocalModelError> {
        if !path.is_file() {
            return Err(LocalModelError::Missing(path.to_path_buf()));
        }
        let fail = |message: String| LocalModelError::Load {
            path: path.to_path_buf(),
            message,
        };
        let mut file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| fail(e.to_string()))?;
        let meta_str = |key: &str| {
            content
                .metadata
                .get(key)
                .and_then(|v| v.to_string().ok())
                .cloned()
        };
        let mut tokenizer =
            Tokenizer::from_gguf(&content).map_err(|e| fail(format!("tokenizer: {e}")))?;
        fix_pre_tokenizer(
            &mut tokenizer,
            meta_str("tokenizer.ggml.pre").as_deref().unwrap_or("gpt2"),
        );
        let meta_u32 = |key: &str| content.metadata.get(key).and_then(|v| v.to_u32().ok());
        let template_src = meta_str("tokenizer.chat_template")
            .ok_or_else(|| fail("no tokenizer.chat_template".into()))?;
        let token = |id: Option<u32>| {
            id.and_then(|i| tokenizer.id_to_token(i))
                .unwrap_or_default()
        };
        let bos_token = token(meta_u32("tokenizer.ggml.bos_token_id"));
        let eos_token = token(meta_u32("tokenizer.ggml.eos_token_id"));
        // Stop at the file's end-of-sequence token and at the chat format's end-of-turn
        // markers that the vocabulary has.
        let mut stop_ids: Vec<u32> = meta_u32("tokenizer.ggml.eos_token_id")
            .into_iter()
            .collect();
        for marker in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>"] {
            if let Some(id) = tokenizer.token_to_id(marker) {
                if !stop_ids.contains(&id) {
                    stop_ids.push(id);
                }
            }
        }
        let mut template = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut template);
        template.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        template.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        template
            .add_template_owned("chat", template_src)
            .map_err(|e| fail(format!("chat template: {e}")))?;
        let weights = load_weights(content, &mut file).map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            weights,
            tokenizer,
            template,
            bos_token,
            eos_token,
            stop_ids,
            context_length,
        })
    }

    /// The prompt for `request`'s messages, rendered with the model's own chat template.
    pub fn render_prompt(&self, request: &ChatCompletionRequest) -> Result<String, ProviderError> {
        #[derive(serde::Serialize)]
        struct Msg {
            role: String,
            content: String,
        }
        let messages: Vec<Msg> = request
            .messages
            .iter()
            .map(|m| Msg {
                role: serde_json::to_value(m.role)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                content: m.text(),
            })
            .collect();
        let tmpl = self
            .template
            .get_template("chat")
            .expect("template added at load");
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| invalid(format!("the chat template rejected these messages: {e}")))
    }

    /// A handle on the weights with an empty KV cache (benchmarks drive it directly).
    pub fn fresh_weights(&self) -> ModelWeights {
        self.weights.clone()
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ProviderError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ProviderError::Protocol(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }
}

/// Block formats whose dot products candle runs without SIMD on x86 (a plain loop, ~10×
/// slower than llama.cpp on Q4_1). Their tensors are re-quantized to Q8_0 at load, which
/// has an AVX2 kernel: Q4_1 values (`d·q + m`, q in 0..16) fit Q8_0's 256-level grid with a
/// rounding error far below Q4_1's own.
const SLOW_ON_CPU: [GgmlDType; 4] = [
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_1,
];

fn load_weights(
    content: gguf_file::Content,
    file: &mut std::fs::File,
) -> candle_core::Result<ModelWeights> {
    let dev = Device::Cpu;
    if !content
        .tensor_infos
        .values()
        .any(|t| SLOW_ON_CPU.contains(&t.ggml_dtype))
    {
        return ModelWeights::from_gguf(content, file, &dev);
    }
    let started = std::time::Instant::now();
    let mut tensors = Vec::with_capacity(content.tensor_infos.len());
    for (name, info) in &content.tensor_infos {
        let t = content.tensor(file, name, &dev)?;
        let t = if SLOW_ON_CPU.contains(&info.ggml_dtype) {
            QTensor::quantize(&t.dequantize(&dev)?, GgmlDType::Q8_0)?
        } else {
            t
        };
        tensors.push((name.clone(), t));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut buf = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &metadata, &refs)?;
    drop(tensors);
    buf.set_position(0);
    let requantized = gguf_file::Content::read(&mut buf)?;
    let weights = ModelWeights::from_gguf(requantized, &mut buf, &dev)?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "re-quantized slow block formats to Q8_0"
    );
    Ok(weights)
}

/// candle's GGUF conversion knows the qwen2 and llama3 pre-tokenizers; others fall back to
/// plain GPT-2 byte-level, which for SmolLM (llama.cpp's `smollm`, HF's
/// `Digits(individual) + ByteLevel(no prefix space)`) adds a prefix space and merges digits.
/// Checked against llama.cpp's token ids in tests/fixtures/smollm2_tokens.json.
fn fix_pre_tokenizer(tokenizer: &mut Tokenizer, pre: &str) {
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::digits::Digits;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    if pre == "smollm" {
        tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
    }
}

fn invalid(message: String) -> ProviderError {
    ProviderError::Status {
        status: 400,
        message,
        code: Some("invalid_request".into()),
        retry_after_secs: None,
    }
}

pub struct LocalProvider {
    name: String,
    model: Arc<LocalModel>,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    config: LocalConfig,
}

impl LocalProvider {
    pub fn load(config: &LocalConfig) -> Result<Self, LocalModelError> {
        let model = LocalModel::load(&config.gguf_path, config.context_length)?;
        tracing::info!(model = %config.model_name, path = %config.gguf_path.display(), "local model loaded");
        Ok(Self {
            name: "local".into(),
            model: Arc::new(model),
            slots: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            config: config.clone(),
        })
    }

    pub fn model(&self) -> &Arc<LocalModel> {
        &self.model
    }

    /// Validates, waits for a slot, and starts a generation thread.
    async fn start(
        &self,
        request: &ChatCompletionRequest,
    ) -> Result<(mpsc::Receiver<GenEvent>, String), ProviderError> {
        let prompt_text = self.model.render_prompt(request)?;
        let prompt = self.model.encode(&prompt_text)?;
        if prompt.len() >= self.config.context_length {
            return Err(invalid(format!(
                "the prompt is {} tokens; this model's context is {} tokens",
                prompt.len(),
                self.config.context_length
            )));
        }
        if request.n.is_some_and(|n| n > 1) {
            return Err(invalid(
                "the local model generates one choice per request (n = 1)".into(),
            ));
        }
        let max_tokens = request
            .max_completion_tokens
            .or(request.max_tokens)
            .unwrap_or(self.config.default_max_tokens) as usize;
        let params = GenParams {
            max_tokens,
            temperature: request.temperature.unwrap_or(1.0),
            top_p: request.top_p.unwrap_or(1.0),
            seed: request.seed.map(|s| s as u64).unwrap_or_else(rand::random),
            stop: request
                .stop
                .as_ref()
                .map(|s| s.as_vec())
                .unwrap_or_default()
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect(),
        };
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.config.queue_capacity {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ProviderError::Status {
                status: 503,
                message: "the local model is busy; retry shortly".into(),
                code: Some("overloaded".into()),
                retry_after_secs: Some(1),
            });
        }
        let permit = self.slots.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let permit = permit.map_err(|_| ProviderError::Connection("local model stopped".into()))?;
        let (tx, rx) = mpsc::channel(64);
        let model = self.model.clone();
        std::thread::Builder::new()
            .name("qm-local-gen".into())
            .spawn(move || {
                let _permit = permit;
                generate(&model, &prompt, &params, &tx);
            })
            .map_err(|e| ProviderError::Connection(format!("starting generation: {e}")))?;
        Ok((rx, self.config.model_name.clone()))
    }
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    fn protocol(&self) -> &'static str {
        "quartermaster.local"
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(
        &self,
        request: ChatCompletionRequest,
    ) -> Result<ChatCompletion, ProviderError> {
        let (mut rx, model) = self.start(&request).await?;
        let mut text = String::new();
        while let Some(event) = rx.recv().await {
            match event {
                GenEvent::Text(t) => text.push_str(&t),
                GenEvent::Done {
                    finish_reason,
                    usage,
                } => {
                    return Ok(ChatCompletion {
                        id: String::new(),
                        object: "chat.completion".into(),
                        created: unix_now(),
                        model,
                        choices: vec![CompletionChoice {
                            index: 0,
                            message: serde_json::json!({"role": "assistant", "content": text}),
                            finish_reason: Some(finish_reason.into()),
                            extra: Default::default(),
                        }],
                        usage: Some(usage),
                        extra: Default::default(),
                    });
                }
                GenEvent::Failed(e) => return Err(ProviderError::Protocol(e)),
            }
        }
        Err(ProviderError::Connection("generation ended early".into()))
    }

    async fn stream(&self, request: ChatCompletionRequest) -> Result<ChunkStream, ProviderError> {
        let (rx, model) = self.start(&request).await?;
        let created = unix_now();
        let mut first = true;
        let chunk =
            move |delta: Delta, finish: Option<&'static str>, usage: Option<Usage>| ChatChunk {
                id: String::new(),
                object: "chat.completion.chunk".into(),
                created,
                model: model.clone(),
                choices: if usage.is_some() {
                    vec![]
                } else {
                    vec![ChunkChoice {
                        index: 0,
                        delta,
                        finish_reason: finish.map(String::from),
                        extra: Default::default(),
                    }]
                },
                usage,
                extra: Default::default(),
            };
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).flat_map(move |event| {
            let items: Vec<Result<ChatChunk, ProviderError>> = match event {
                GenEvent::Text(t) => {
                    let role = first.then(|| "assistant".to_string());
                    first = false;
                    vec![Ok(chunk(
                        Delta {
                            role,
                            content: Some(t),
                            extra: Default::default(),
                        },
                        None,
                        None,
                    ))]
                }
                GenEvent::Done {
                    finish_reason,
                    usage,
                } => vec![
                    Ok(chunk(Delta::default(), Some(finish_reason), None)),
                    Ok(chunk(Delta::default(), None, Some(usage))),
                ],
                GenEvent::Failed(e) => vec![Err(ProviderError::Protocol(e))],
            };
            futures::stream::iter(items)
        });
        Ok(Box::pin(stream))
    }
}
