#!/usr/bin/env python3
"""A numpy forward pass of all-MiniLM-L6-v2 (BERT: 6 layers, hidden 384, 12 heads, GELU,
LayerNorm eps 1e-12), read from the model directory's model.safetensors, with the WordPiece
tokenizer from tokenizer.json (the `tokenizers` package; truncation to 256 tokens, no padding,
as the gateway's embedder does).

    enc = MiniLM("models/all-MiniLM-L6-v2")
    states, emb = enc.encode_one("How do I learn Python?")
    # states: [T, 384] final-layer token states (including [CLS] and [SEP]), float32
    # emb:    [384] mean-pooled over all T tokens, L2-normalised (the sentence embedding)

`python3 minilm.py --check` compares against tests/fixtures/embed_reference.json.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "models" / "all-MiniLM-L6-v2"
MAX_TOKENS = 256
EPS = 1e-12


def _erf(x: np.ndarray) -> np.ndarray:
    """Exact erf, from whichever library is at hand (scipy, torch), else math.erf per value."""
    try:
        from scipy.special import erf  # type: ignore
        return erf(x)
    except ImportError:
        pass
    try:
        import torch  # type: ignore
        return torch.special.erf(torch.from_numpy(x)).numpy()
    except ImportError:
        return np.vectorize(math.erf, otypes=[np.float64])(x)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as BERT's "gelu"."""
    return (0.5 * x * (1.0 + _erf(x.astype(np.float64) / math.sqrt(2.0)))).astype(x.dtype)


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = EPS) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


class MiniLM:
    def __init__(self, model_dir: str | Path = DEFAULT_MODEL, max_tokens: int = MAX_TOKENS):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        self.cfg = json.loads((model_dir / "config.json").read_text())
        w = load_file(str(model_dir / "model.safetensors"))
        # Some exports prefix names with "bert."; strip it.
        self.w = {k[5:] if k.startswith("bert.") else k: v.astype(np.float32) for k, v in w.items()}
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=max_tokens)
        self.heads = self.cfg["num_attention_heads"]
        self.layers = self.cfg["num_hidden_layers"]
        self.eps = self.cfg.get("layer_norm_eps", EPS)
        # Pre-transpose linear weights to [in, out].
        self.lin = {}
        for k, v in self.w.items():
            if k.endswith(".weight") and v.ndim == 2 and "embeddings" not in k:
                self.lin[k[: -len(".weight")]] = (np.ascontiguousarray(v.T), self.w[k[: -len(".weight")] + ".bias"])

    def ids(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def tokens(self, text: str) -> list[str]:
        return self.tok.encode(text).tokens

    def _linear(self, x, name):
        wt, b = self.lin[name]
        return x @ wt + b

    def forward_ids(self, ids: list[int], type_ids: list[int] | None = None,
                    layers: int | None = None) -> np.ndarray:
        """Token states [T, 384] after `layers` layers (all by default) for one sequence."""
        w = self.w
        T = len(ids)
        type_ids = type_ids or [0] * T
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:T]
             + w["embeddings.token_type_embeddings.weight"][type_ids])
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        for i in range(self.layers if layers is None else layers):
            x = self.layer(x, i)
        return x.astype(np.float32)

    def layer(self, x: np.ndarray, i: int) -> np.ndarray:
        p = f"encoder.layer.{i}."
        T, H = x.shape
        nh = self.heads
        hd = H // nh
        q = self._linear(x, p + "attention.self.query").reshape(T, nh, hd).transpose(1, 0, 2)
        k = self._linear(x, p + "attention.self.key").reshape(T, nh, hd).transpose(1, 0, 2)
        v = self._linear(x, p + "attention.self.value").reshape(T, nh, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        s = s - s.max(-1, keepdims=True)
        a = np.exp(s)
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(1, 0, 2).reshape(T, H)
        att = self._linear(ctx, p + "attention.output.dense")
        x = layer_norm(att + x, self.w[p + "attention.output.LayerNorm.weight"],
                       self.w[p + "attention.output.LayerNorm.bias"], self.eps)
        h = gelu(self._linear(x, p + "intermediate.dense"))
        o = self._linear(h, p + "output.dense")
        return layer_norm(o + x, self.w[p + "output.LayerNorm.weight"],
                          self.w[p + "output.LayerNorm.bias"], self.eps)

    def encode_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        states = self.forward_ids(self.ids(text))
        return states, pool(states)


def pool(states: np.ndarray) -> np.ndarray:
    """Mean over all tokens (no padding here), then L2 normalisation."""
    m = states.mean(0)
    return (m / max(float(np.linalg.norm(m)), 1e-12)).astype(np.float32)


def check(path: Path = ROOT / "tests" / "fixtures" / "embed_reference.json") -> float:
    ref = json.loads(path.read_text())
    enc = MiniLM()
    worst = 0.0
    for item in ref["items"]:
        ids = enc.ids(item["text"])
        assert len(ids) == item["tokens"], (item["text"][:40], len(ids), item["tokens"])
        _, e = enc.encode_one(item["text"])
        d = float(np.abs(e - np.asarray(item["embedding"], dtype=np.float32)).max())
        worst = max(worst, d)
    print(f"{len(ref['items'])} reference embeddings: max abs diff {worst:.2e}")
    return worst


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(0 if check() < 1e-4 else 1)
    enc = MiniLM()
    for t in sys.argv[1:]:
        s, e = enc.encode_one(t)
        print(t, s.shape, e[:5])
