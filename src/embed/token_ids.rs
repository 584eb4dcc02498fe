//! Token-id inputs. OpenAI's `/v1/embeddings` accepts an input as an array of token ids of
//! its own encodings, and clients use it: LangChain's `OpenAIEmbeddings` tokenizes with
//! tiktoken and sends ids by default (to split long texts at the model's window). The local
//! embedder has its own tokenizer, so ids are decoded back to text with the configured
//! encoding, whose ranks ship inside the `tiktoken-rs` crate (nothing is downloaded).

use serde::Deserialize;
use tiktoken_rs::CoreBPE;

/// An OpenAI encoding, named as tiktoken names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TokenEncoding {
    /// GPT-4, GPT-3.5 and the `text-embedding-3-*` models; tiktoken's fallback for a model
    /// it does not know (what LangChain uses with a non-OpenAI model name).
    #[serde(rename = "cl100k_base")]
    Cl100kBase,
    /// GPT-4o and later.
    #[serde(rename = "o200k_base")]
    O200kBase,
}

impl TokenEncoding {
    pub fn name(self) -> &'static str {
        match self {
            TokenEncoding::Cl100kBase => "cl100k_base",
            TokenEncoding::O200kBase => "o200k_base",
        }
    }

    /// The encoding's tables: built on first use (about a tenth of a second), then shared.
    fn bpe(self) -> &'static CoreBPE {
        match self {
            TokenEncoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
            TokenEncoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
        }
    }

    /// The text that `ids` encode. A piece of a character cut at the end (a long text split
    /// at a window boundary) becomes U+FFFD. Errs with the first id the encoding lacks.
    pub fn decode(self, ids: &[u32]) -> Result<String, u32> {
        let bpe = self.bpe();
        match bpe.decode_bytes(ids) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(_) => Err(ids
                .iter()
                .copied()
                .find(|&id| bpe.decode_bytes(&[id]).is_err())
                .unwrap_or(u32::MAX)),
        }
    }

    /// How many tokens `text` is in this encoding (special tokens read as text).
    pub fn count(self, text: &str) -> usize {
        self.bpe().encode_ordinary(text).len()
    }

    /// Builds the tables now, so the first request that sends ids does not wait for them.
    pub fn warm(self) {
        let _ = self.bpe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_tiktoken_encodes() {
        for enc in [TokenEncoding::Cl100kBase, TokenEncoding::O200kBase] {
            let text = "How do I rotate an API key? Ünïcödé, emoji 🦀 and spaces  .";
            let ids = enc.bpe().encode_ordinary(text);
            assert!(ids.len() > 5);
            assert_eq!(enc.decode(&ids).unwrap(), text);
        }
        // cl100k_base's ids for "hello world", as tiktoken gives them.
        assert_eq!(
            TokenEncoding::Cl100kBase.decode(&[15339, 1917]).unwrap(),
            "hello world"
        );
    }

    #[test]
    fn names_an_unknown_id() {
        assert_eq!(
            TokenEncoding::Cl100kBase.decode(&[15339, 4_000_000, 1917]),
            Err(4_000_000)
        );
    }
}
